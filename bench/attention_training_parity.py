"""Correctness at scale: our attention model and PyTorch's, trained from the same weights on the same batches.

    python -m bench.attention_training_parity --steps 300 --json bench/results/attention/training-parity.json

PyTorch's model is ``bench.torch_models.TorchSeq2Seq`` (the reference of the tests; bench.attention times it as
(a)), written as OpenNMT-py runs it: an ``nn.LSTM`` encoder, the decoder an ``nn.LSTMCell`` loop with input feeding,
``general`` attention (scores ``linear_in(h) . hbar``, softmax over the real source characters,
``tanh(linear_out([c, h]))``), ``nn.Linear`` logits, cross-entropy over real characters, ``torch.optim.RMSprop``
(alpha 0.9, eps 1e-7, lr 0.001: Keras's RMSprop, ours), float32 (``--dtype float64``: both in float64).
It starts from our
model's initial weights (seed 0, as ``minilstm.train`` draws them) and takes our batches in our order (the whole
file, ``--mask-padding``, the random held-out split: the quality runs' data); after every ``--report-every``
steps both are scored on the same held-out batches (every ``--val-stride``-th of the 256-row validation batches).
What it checks: PyTorch's held-out loss within 3% of ours. Floating-point order differs (their BLAS, our
compiled loops), so the two drift apart like any two float32 runs; 3% says the math is the same at scale.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.torch_models import TorchSeq2Seq
from minilstm.backends import get_backend
from minilstm.data import Batches
from minilstm.optim import make_optimizer
from minilstm.seq2seq import Seq2Seq
from minilstm.train import build_parser
from minilstm.training import training_data


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
                    dataset.max_decoder_len, latent_dim=args.latent_dim, dtype=args.dtype, mask_padding=True,
                    attention="general")
    init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)  # as minilstm.train draws them
    model.initialize(np.random.default_rng(init_seed))
    optimizer = make_optimizer("rmsprop", backend, model.params.flat.size, model.dtype, learning_rate=0.001,
                               rho=0.9, epsilon=1e-7, epsilon_inside_sqrt=False)
    theirs = TorchSeq2Seq.from_minilstm(model)  # our initial weights, in our dtype
    torch_optimizer = theirs.keras_rmsprop()
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
                torch_sum += float(theirs.loss(*arrays, reduction="sum"))
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
        (theirs.loss(*arrays, reduction="sum") / batch.positions).backward()
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
    print(f"largest gap {100 * worst:.2f}% (the check: within 3%): {'within' if worst <= 0.03 else 'NOT within'}")


if __name__ == "__main__":
    main()
