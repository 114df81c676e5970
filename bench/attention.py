"""Attention with input feeding, side by side: minilstm's training step and batched greedy decoding against PyTorch's
same model written the two ways OpenNMT-py runs it.

    python -m bench.attention --json bench/results/attention/cpu.json
    python -m bench.attention --quick          # seconds; a test runs it so the script cannot rot

Contestants of the training step (batch 64, latent 256, the example's 16 + 59 steps, ``general`` score, RMSprop):
- ``minilstm-feed``: our model with input feeding (``--attention general``), on the given backend;
- ``minilstm-no-feed``: ours without input feeding (``--no-input-feed``);
- ``minilstm-plain``: ours without attention (the Keras example's model);
- ``torch-feed`` (a): PyTorch with input feeding, an ``nn.LSTMCell`` loop (OpenNMT-py's ``InputFeedRNNDecoder``);
- ``torch-no-feed`` (b): PyTorch without it, one fused ``nn.LSTM`` decoder then batched attention
  (OpenNMT-py's ``StdRNNDecoder``).
Interleaved round-robin with pauses, as bench.py times its contestants (``time_train_steps``). The FLOP floor of
the input-feeding step is printed beside them (GEMMs only, counted in ``attention_step_flops``). Decoding: the
validation sentences (the data's last 20%) by batched greedy decoding, ours against (a)'s batched loop.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench import cpu_name, sgemm_peak, time_train_steps
from minilstm.backends import get_backend
from minilstm.data import END, START, Dataset, encode_inputs, resolve_pairs, split_validation
from minilstm.layers import IGNORE
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq


def attention_step_flops(batch, latent, encoder_len, decoder_len, n_out, input_feed=True) -> float:
    """GEMM FLOPs of one training step with ``general`` attention (forward, input gradients, weight gradients:
    3x each product): both recurrences, the fed htilde's projection, [c, h] @ W_c, the keys, the scores and
    contexts, and the output layer."""
    b, h, s, t = batch, latent, encoder_len, decoder_len
    recurrent = 2 * b * h * 4 * h * (s + t)
    feed = 2 * b * h * 4 * h * t if input_feed else 0
    output = 2 * b * 2 * h * h * t
    keys = 2 * b * s * h * h
    scores_and_context = 2 * (2 * b * t * s * h)
    dense = 2 * b * t * h * n_out
    return 3 * (recurrent + feed + output + keys + scores_and_context + dense)


class Ours:
    def __init__(self, name, backend, dataset, latent, attention, input_feed):
        self.name, self.dataset = name, dataset
        self.backend = get_backend(backend)
        self.model = Seq2Seq(self.backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                             dataset.max_decoder_len, latent, "float32", attention=attention,
                             input_feed=input_feed).initialize(0)
        self.optimizer = RMSprop(self.backend, self.model.params.flat.size, self.model.dtype)
        self.lengths = dataset.input_lengths()

    def prepare(self, idx):
        d = self.dataset
        return (*(self.backend.asarray(a[idx]) for a in (d.encoder_input_ids, d.decoder_input_ids,
                                                          d.decoder_target_ids)), self.lengths[idx])

    def train_step(self, batch):
        self.model.forward_backward(*batch[:3], source_lengths=batch[3])
        self.optimizer.step(self.model.params.flat, self.model.grads.flat)

    def decode(self, texts, batch_size):
        return self.model.translate(texts, batch_size=batch_size)

    def synchronize(self):
        self.backend.synchronize()


class TorchAttention:
    """PyTorch's model: nn.LSTM encoder, decoder as an nn.LSTMCell loop with input feeding (``feed``) or one fused
    nn.LSTM, general attention (linear_in, linear_out without bias, tanh), nn.Linear, torch.optim.RMSprop."""

    def __init__(self, name, dataset, latent, feed, threads, dtype="float32"):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch, self.name, self.dataset, self.feed = torch, name, dataset, feed
        self.dtype = torch.float64 if dtype == "float64" else torch.float32
        self.n_in, self.n_out = len(dataset.input_vocab), len(dataset.target_vocab)
        nn, kind = torch.nn, {"dtype": self.dtype}
        self.encoder = nn.LSTM(self.n_in, latent, **kind)
        self.cell = nn.LSTMCell(self.n_out + latent, latent, **kind) if feed else None
        self.decoder = None if feed else nn.LSTM(self.n_out, latent, **kind)
        self.linear_in = nn.Linear(latent, latent, bias=False, **kind)
        self.linear_out = nn.Linear(2 * latent, latent, bias=False, **kind)
        self.dense = nn.Linear(latent, self.n_out, **kind)
        self._make_optimizer()
        self.lengths = dataset.input_lengths()

    def _make_optimizer(self):
        modules = [m for m in (self.encoder, self.cell, self.decoder, self.linear_in, self.linear_out, self.dense)
                   if m is not None]
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.optimizer = self.torch.optim.RMSprop(self.params, lr=0.001, alpha=0.9, eps=1e-7)

    def copy_weights(self, model: Seq2Seq):
        """Start from ``model``'s weights (one layer each side, ``general`` attention with input feeding), in
        OpenNMT-py's names as ``minilstm.convert`` exports them: Keras's gate order i, f, c, o is PyTorch's i, f, g,
        o; our one bias goes into ``bias_ih`` and ``bias_hh`` is held at 0 (two trained biases would each get their
        own RMSprop update: not our model); ``linear_in.weight`` = score_kernel, ``linear_out.weight`` =
        output_kernelᵀ."""
        t = self.torch
        w = {k: t.from_numpy(v).to(self.dtype) for k, v in model.get_weights().items()}
        (_, _, enc_cell), = model.encoder.cells()
        (_, _, dec_cell), = model.decoder.cells()
        with t.no_grad():
            for ih, hh, b_ih, b_hh, cell in ((self.encoder.weight_ih_l0, self.encoder.weight_hh_l0,
                                              self.encoder.bias_ih_l0, self.encoder.bias_hh_l0, enc_cell),
                                             (self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih,
                                              self.cell.bias_hh, dec_cell)):
                ih.copy_(w[f"{cell}.kernel"].T)
                hh.copy_(w[f"{cell}.recurrent_kernel"].T)
                b_ih.copy_(w[f"{cell}.bias"])
                b_hh.zero_()
                b_hh.requires_grad_(False)
            self.linear_in.weight.copy_(w["attention.score_kernel"])
            self.linear_out.weight.copy_(w["attention.output_kernel"].T)
            self.dense.weight.copy_(w["dense.kernel"].T)
            self.dense.bias.copy_(w["dense.bias"])
        self._make_optimizer()

    def _one_hot(self, ids, classes):
        t = self.torch
        return t.nn.functional.one_hot(t.from_numpy(np.ascontiguousarray(ids.T)).long(), classes).to(self.dtype)

    def prepare(self, idx):
        t, d = self.torch, self.dataset
        enc = self._one_hot(d.encoder_input_ids[idx], self.n_in)
        dec = self._one_hot(d.decoder_input_ids[idx], self.n_out)
        target = t.from_numpy(np.ascontiguousarray(d.decoder_target_ids[idx].T)).long().reshape(-1)
        valid = t.arange(enc.shape[0])[None, :] < t.from_numpy(self.lengths[idx])[:, None]
        return enc, dec, target, valid

    def loss_sum(self, enc_ids, dec_ids, targets, lengths=None):
        """Summed cross-entropy over the real target characters (IGNORE elsewhere) of a batch of ids (B, S) /
        (B, T), each sentence attending over its first ``lengths[b]`` characters (None: all)."""
        t = self.torch
        enc, dec = self._one_hot(enc_ids, self.n_in), self._one_hot(dec_ids, self.n_out)
        lengths = np.full(enc.shape[1], enc.shape[0]) if lengths is None else np.asarray(lengths)
        valid = t.arange(enc.shape[0])[None, :] < t.from_numpy(lengths)[:, None]
        logits = self.logits(enc, dec, valid)  # (T, B, V)
        target = t.from_numpy(np.ascontiguousarray(targets.T)).long()
        return t.nn.functional.cross_entropy(logits.reshape(-1, self.n_out), target.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")

    def attend(self, h, memory, valid):
        """h (B, H) or (B, T, H); memory (B, S, H) -> htilde like h."""
        t = self.torch
        query = self.linear_in(h)
        squeeze = query.dim() == 2
        query = query[:, None] if squeeze else query
        scores = query @ memory.transpose(1, 2)
        weights = t.softmax(scores.masked_fill(~valid[:, None, :], float("-inf")), dim=2)
        htilde = t.tanh(self.linear_out(t.cat([weights @ memory, h[:, None] if squeeze else h], dim=2)))
        return htilde[:, 0] if squeeze else htilde

    def logits(self, enc, dec, valid):
        memory, (h, c) = self.encoder(enc)
        memory = memory.transpose(0, 1)
        if not self.feed:
            states, _ = self.decoder(dec, (h, c))
            return self.dense(self.attend(states.transpose(0, 1), memory, valid)).transpose(0, 1)
        h, c, feed, out = h[0], c[0], self.torch.zeros_like(h[0]), []
        for step in range(dec.shape[0]):
            h, c = self.cell(self.torch.cat([dec[step], feed], dim=1), (h, c))
            feed = self.attend(h, memory, valid)
            out.append(feed)
        return self.dense(self.torch.stack(out))

    def train_step(self, batch):
        enc, dec, target, valid = batch
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.logits(enc, dec, valid)
        self.torch.nn.functional.cross_entropy(logits.reshape(-1, self.n_out), target).backward()
        self.optimizer.step()

    def decode(self, texts, batch_size):
        """Batched greedy decoding with input feeding, rows kept until every one has ended."""
        t, d = self.torch, self.dataset
        start, end = d.target_vocab.index[START], d.target_vocab.index[END]
        with t.no_grad():
            for first in range(0, len(texts), batch_size):
                chunk = texts[first : first + batch_size]
                ids = encode_inputs(chunk, d.input_vocab, d.max_encoder_len)
                enc = self._one_hot(ids, self.n_in)
                valid = t.arange(enc.shape[0])[None, :] < t.tensor([len(text) for text in chunk])[:, None]
                idx = range(len(chunk))
                memory, (h, c) = self.encoder(enc)
                memory, h, c = memory.transpose(0, 1), h[0], c[0]
                prev = t.full((len(idx),), start, dtype=t.long)
                feed, done = t.zeros_like(h), t.zeros(len(idx), dtype=t.bool)
                for _ in range(d.max_decoder_len + 1):
                    x = t.nn.functional.one_hot(prev, self.n_out).to(self.dtype)
                    h, c = self.cell(t.cat([x, feed], dim=1), (h, c))
                    feed = self.attend(h, memory, valid)
                    prev = self.dense(feed).argmax(dim=1)
                    done |= prev == end
                    if bool(done.all()):
                        break

    def synchronize(self):
        pass


def time_decoding(contestants, texts, batch_size, repeats):
    times = {c.name: [] for c in contestants}
    for c in contestants:
        c.decode(texts[:batch_size], batch_size)  # warm-up: compiles, fills caches
    for _ in range(repeats):
        for c in contestants:
            time.sleep(0.2)
            start = time.perf_counter()
            c.decode(texts, batch_size)
            times[c.name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="numba")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latent-dim", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps-per-round", type=int, default=4)
    p.add_argument("--decode-repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a tiny run that only checks the script works")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.num_samples, args.latent_dim, args.batch_size = 300, 16, 8
        args.rounds, args.steps_per_round, args.decode_repeats = 1, 1, 1
    os.environ.setdefault("MINILSTM_THREADS", str(args.threads))
    pairs = resolve_pairs(args.data, args.num_samples)
    dataset = Dataset.from_pairs(pairs)
    train_idx, val_idx = split_validation(len(dataset), 0.2)
    latent = args.latent_dim
    contestants = [Ours("minilstm-feed", args.backend, dataset, latent, "general", True),
                   Ours("minilstm-no-feed", args.backend, dataset, latent, "general", False),
                   Ours("minilstm-plain", args.backend, dataset, latent, "none", True),
                   TorchAttention("torch-feed", dataset, latent, True, args.threads),
                   TorchAttention("torch-no-feed", dataset, latent, False, args.threads)]
    steps = time_train_steps(contestants, dataset, train_idx, args.batch_size, 2, args.rounds, args.steps_per_round,
                             settle=0.2, turn_warmup=0.0 if args.quick else 0.1)
    flops = attention_step_flops(args.batch_size, latent, dataset.max_encoder_len, dataset.max_decoder_len,
                                 len(dataset.target_vocab))
    peak = sgemm_peak(args.threads, size=256 if args.quick else 2048)
    texts = [pairs[i][0] for i in val_idx]
    decoders = [contestants[0], contestants[3]]
    decoding = time_decoding(decoders, texts, 512 if not args.quick else 16, args.decode_repeats)
    record = {"cpu": cpu_name(), "threads": args.threads, "backend": args.backend,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "batch": args.batch_size, "latent": latent,
              "steps": {name: {"median_ms": s * 1e3, "n": n} for name, (s, n) in steps.items()},
              "flop_floor": {"gflop_per_step": flops / 1e9, "sgemm_gflops": peak / 1e9,
                             "ms": flops / peak * 1e3},
              "decode_validation": {name: {"seconds": s, "sentences": len(texts)} for name, s in decoding.items()}}
    ours = steps["minilstm-feed"][0]
    print(f"training step, {args.batch_size} x {latent}, general attention (median ms):")
    for name, (s, n) in steps.items():
        print(f"  {name:18s} {s * 1e3:8.1f}  (n={n})")
    print(f"  minilstm-feed / torch-feed (a): {ours / steps['torch-feed'][0]:.2f}x;  / torch-no-feed (b): "
          f"{ours / steps['torch-no-feed'][0]:.2f}x;  / its FLOP floor ({flops / 1e9:.2f} GFLOP at "
          f"{peak / 1e9:.0f} GFLOP/s = {flops / peak * 1e3:.1f} ms): {ours / (flops / peak):.2f}x")
    print(f"batched greedy decoding of {len(texts)} sentences: minilstm {decoding['minilstm-feed']:.2f} s, "
          f"torch {decoding['torch-feed']:.2f} s ({decoding['minilstm-feed'] / decoding['torch-feed']:.2f}x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
