"""Correctness at scale: our attention model and PyTorch's, trained from the same weights on the same batches.

    python bench/attention_training_parity.py --steps 300 --json bench/results/attention/training-parity.json

PyTorch's model is the issue's (a), written as OpenNMT-py runs it: an ``nn.LSTM`` encoder, the decoder an
``nn.LSTMCell`` loop with input feeding, ``general`` attention in torch ops (scores ``h . (hbar W_a)``, softmax
over the real source characters, ``tanh([c, h] W_c)``), ``nn.Linear`` logits, cross-entropy over real characters,
``torch.optim.RMSprop`` (alpha 0.9, eps 1e-7, lr 0.001: Keras's RMSprop, ours), float32 (``--dtype float64``:
both in float64). It starts from our
model's initial weights (seed 0, as ``minilstm.train`` draws them) and takes our batches in our order (the whole
file, ``--mask-padding``, the random held-out split: the quality runs' data); after every ``--report-every``
steps both are scored on the same held-out batches (every ``--val-stride``-th of the 256-row validation batches).
The issue's target: PyTorch's held-out loss within 3% of ours. Floating-point order differs (their BLAS, our
compiled loops), so the two drift apart like any two float32 runs; 3% says the math is the same at scale.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minilstm.backend import get_backend  # noqa: E402
from minilstm.data import Batches  # noqa: E402
from minilstm.layers import IGNORE  # noqa: E402
from minilstm.optim import make_optimizer  # noqa: E402
from minilstm.seq2seq import Seq2Seq  # noqa: E402
from minilstm.train import build_parser, training_data  # noqa: E402


class TorchModel(torch.nn.Module):
    """Model (a) in PyTorch, its weights copied from ``model`` (one layer each side, general attention, feeding)."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.dtype = torch.float64 if model.dtype == np.float64 else torch.float32
        w = {k: torch.from_numpy(v) for k, v in model.get_weights().items()}
        (_, _, enc_cell), = model.encoder.cells()
        (_, _, dec_cell), = model.decoder.cells()
        units, self.n_in, self.n_out = model.latent_dim, len(model.input_vocab), len(model.target_vocab)
        self.encoder = torch.nn.LSTM(self.n_in, units, dtype=self.dtype)
        self.cell = torch.nn.LSTMCell(w[f"{dec_cell}.kernel"].shape[0], units, dtype=self.dtype)
        with torch.no_grad():  # Keras's gate order i, f, c, o is PyTorch's i, f, g, o; one bias, the other 0
            for ih, hh, b_ih, b_hh, cell in ((self.encoder.weight_ih_l0, self.encoder.weight_hh_l0,
                                              self.encoder.bias_ih_l0, self.encoder.bias_hh_l0, enc_cell),
                                             (self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih,
                                              self.cell.bias_hh, dec_cell)):
                ih.copy_(w[f"{cell}.kernel"].T)
                hh.copy_(w[f"{cell}.recurrent_kernel"].T)
                b_ih.copy_(w[f"{cell}.bias"])
                b_hh.zero_()
                b_hh.requires_grad_(False)
        self.score_kernel = torch.nn.Parameter(w["attention.score_kernel"].clone())
        self.output_kernel = torch.nn.Parameter(w["attention.output_kernel"].clone())
        self.dense_kernel = torch.nn.Parameter(w["dense.kernel"].clone())
        self.dense_bias = torch.nn.Parameter(w["dense.bias"].clone())

    def loss_sum(self, enc_ids, dec_ids, targets, lengths=None):
        """Summed cross-entropy over the real target characters of a (B, S) / (B, T) batch."""
        onehot = torch.nn.functional.one_hot
        enc = onehot(torch.from_numpy(np.ascontiguousarray(enc_ids.T)).long(), self.n_in).to(self.dtype)
        dec = onehot(torch.from_numpy(np.ascontiguousarray(dec_ids.T)).long(), self.n_out).to(self.dtype)
        memory, (h, c) = self.encoder(enc)
        memory = memory.transpose(0, 1)  # (B, S, H)
        keys = memory @ self.score_kernel
        lengths = torch.full((enc.shape[1],), enc.shape[0]) if lengths is None else torch.from_numpy(lengths)
        valid = torch.arange(enc.shape[0])[None, :] < lengths[:, None]
        h, c, feed, outputs = h[0], c[0], torch.zeros_like(h[0]), []
        for step in range(dec.shape[0]):
            h, c = self.cell(torch.cat([dec[step], feed], dim=1), (h, c))
            scores = torch.einsum("bh,bsh->bs", h, keys).masked_fill(~valid, float("-inf"))
            context = torch.einsum("bs,bsh->bh", torch.softmax(scores, dim=1), memory)
            feed = torch.tanh(torch.cat([context, h], dim=1) @ self.output_kernel)
            outputs.append(feed)
        logits = torch.stack(outputs, dim=1) @ self.dense_kernel + self.dense_bias  # (B, T, V)
        target = torch.from_numpy(np.ascontiguousarray(targets)).long()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, self.n_out), target.reshape(-1),
                                                 ignore_index=IGNORE, reduction="sum")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/fra-eng/fra.txt")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--report-every", type=int, default=100)
    p.add_argument("--val-stride", type=int, default=4, help="score every N-th validation batch (256 rows each)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch's threads (ours: MINILSTM_THREADS)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float64: the two runs should agree far more closely (same math, less rounding to amplify)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    args = build_parser().parse_args(["--data", a.data, "--num-samples", "all", "--mask-padding",
                                      "--validation-split-mode", "random", "--attention", "general",
                                      "--dtype", a.dtype])
    dataset, train_idx, val_idx = training_data(args)
    backend = get_backend("numba")
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, args.latent_dim, args.dtype, True, attention="general")
    init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)  # as minilstm.train draws them
    model.initialize(np.random.default_rng(init_seed))
    optimizer = make_optimizer("rmsprop", backend, model.params.flat.size, model.dtype, learning_rate=0.001,
                               rho=0.9, epsilon=1e-7, epsilon_inside_sqrt=False)
    theirs = TorchModel(model)
    torch_optimizer = torch.optim.RMSprop([q for q in theirs.parameters() if q.requires_grad], lr=0.001, alpha=0.9,
                                          eps=1e-7)
    batches = Batches(dataset, backend, True)
    plan = batches.plan(train_idx, args.batch_size, np.random.default_rng(shuffle_seed))[: a.steps]
    val_plan = batches.plan(val_idx, 256, None)[:: a.val_stride]
    print(f"{len(plan)} training steps of batch {args.batch_size}; held out: {sum(map(len, val_plan)):,} pairs "
          f"in {len(val_plan)} batches; PyTorch {torch.__version__}, {a.threads} threads", flush=True)

    def held_out() -> tuple[float, float]:
        ours_sum = torch_sum = positions = 0.0
        with torch.no_grad():
            for batch in batches.epoch(val_plan):
                arrays = [backend.to_numpy(x) for x in batch.arrays]
                ours_sum += float(model.forward_backward(*batch.arrays, compute_grads=False,
                                                         positions=batch.positions)[0])
                torch_sum += float(theirs.loss_sum(*arrays))
                positions += batch.positions
        return ours_sum / positions, torch_sum / positions

    rows, seconds = [], {"minilstm": 0.0, "pytorch": 0.0}
    for step, batch in enumerate(batches.epoch(plan), start=1):
        arrays = [backend.to_numpy(x) for x in batch.arrays]
        started = time.perf_counter()
        model.forward_backward(*batch.arrays, positions=batch.positions)
        optimizer.step(model.params.flat, model.grads.flat)
        seconds["minilstm"] += time.perf_counter() - started
        started = time.perf_counter()
        torch_optimizer.zero_grad(set_to_none=True)
        (theirs.loss_sum(*arrays) / batch.positions).backward()
        torch_optimizer.step()
        seconds["pytorch"] += time.perf_counter() - started
        if step % a.report_every == 0 or step == len(plan):
            ours, torch_loss = held_out()
            rows.append({"step": step, "ours": ours, "pytorch": torch_loss, "ratio": torch_loss / ours})
            print(f"step {step}: held-out loss ours {ours:.6f}, PyTorch {torch_loss:.6f} "
                  f"({100 * (torch_loss / ours - 1):+.4f}%); training time so far ours {seconds['minilstm']:.0f} s, "
                  f"PyTorch {seconds['pytorch']:.0f} s", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"steps": len(plan), "dtype": a.dtype, "rows": rows, "training_seconds": seconds,
                                      "val_pairs": int(sum(map(len, val_plan))), "torch": torch.__version__},
                                     indent=1) + "\n")
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"largest gap {100 * worst:.2f}% (target: within 3%): {'met' if worst <= 0.03 else 'NOT met'}")


if __name__ == "__main__":
    main()
