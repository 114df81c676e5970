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
Both PyTorch models are ``bench.torch_models.TorchSeq2Seq`` (the reference the tests check ours against), run by
bench.py's ``TorchContestant``. Interleaved round-robin with pauses, as bench.py times its contestants
(``time_train_steps``). The FLOP floor of the input-feeding step is printed beside them (GEMMs only, counted in
``attention_step_flops``). Decoding: the validation sentences (the data's last 20%) by batched greedy decoding to
strings, ours against (a)'s batched loop.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench.bench import TorchContestant, cpu_name, sgemm_peak, time_train_steps
from minilstm.backends import get_backend
from minilstm.data import Dataset, resolve_pairs, split_validation
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
                             dataset.max_decoder_len, latent_dim=latent, dtype="float32", attention=attention,
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
        return self.model.translate(texts, batch_size=batch_size, split_sentences=False)

    def synchronize(self):
        self.backend.synchronize()


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
                   TorchContestant("cpu", dataset, latent, "float32", args.threads, "general", True, "torch-feed"),
                   TorchContestant("cpu", dataset, latent, "float32", args.threads, "general", False, "torch-no-feed")]
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
