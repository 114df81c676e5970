"""One training step's forward and backward (``Seq2Seq.forward_backward``) of the attention model with input feeding
on the numba backend: the reference decoder loop (Python over the time steps, BLAS per step) vs the compiled one
(``attention``), at the Keras example's shape by default.

    python -m bench.attention_step --attention general --steps 20

Both contestants hold the same weights and see the same real batches (the first 10,000 built-in pairs, batch 64,
latent 256, 16 + 59 steps), alternating step by step so that drifting load hits both alike; each gets 3 untimed
steps first (the compile, on first use, is not timed). Prints the median seconds per step of each, their ratio, and
the machine's load average before and after (other jobs on the machine change the numbers; nothing is written).

    python -m bench.attention_step --decoder-only --rows 32

times the decoder alone instead (``AttentionDecoder.forward`` and ``backward``, the latter with its weight-gradient
GEMMs) on one thread with BLAS held to one thread, as one row shard of a training step runs it: where the step's
time goes between the time loop and the rest.

    python -m bench.attention_step --profile

times whole training steps of the compiled model (forward_backward and the RMSprop update) with a timer around each
of the backend's operations, per thread (each row shard is one): the compiled loops, the BLAS GEMMs, the encoder's
time loops, the rest.
"""

import argparse
import os
import statistics
import time

import numpy as np

from minilstm.backends.numba import NumbaBackend
from minilstm.data import Dataset, resolve_pairs, split_validation
from minilstm.seq2seq import Seq2Seq


def contestants(dataset, args):
    """name -> Seq2Seq: the reference loop (a backend that offers no compiled attention loop) and the compiled."""
    out = {}
    for name in ("reference", "compiled"):
        backend = NumbaBackend()
        if name == "reference":
            backend.attention_feed_scores = ()  # AttentionDecoder._compiled then says no
        out[name] = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                            dataset.max_decoder_len, latent_dim=args.latent_dim, dtype=args.dtype,
                            attention=args.attention,
                            input_feed=not args.no_input_feed).initialize(0)
    return out


def decoder_only(args):
    """Median forward and backward seconds of the attention decoder alone, reference vs compiled, interleaved."""
    from threadpoolctl import threadpool_limits

    from minilstm.attention import AttentionDecoder
    from minilstm.nn import Parameters

    steps, positions, vocab, rows, units = 59, 16, 93, args.rows, args.latent_dim
    decoder = AttentionDecoder(units, vocab_size=vocab, score=args.attention)
    params = {}
    for name in ("reference", "compiled"):
        backend = NumbaBackend(workers=1)
        if name == "reference":
            backend.attention_feed_scores = ()
        params[name] = Parameters(backend, [decoder], args.dtype, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (steps, rows))
    state = tuple(rng.standard_normal((2, 1, rows, units)).astype(args.dtype))
    memory = rng.standard_normal((positions, rows, units)).astype(args.dtype)
    lengths = rng.integers(positions // 2, positions + 1, rows)
    d_outputs = rng.standard_normal((steps, rows, units)).astype(args.dtype)
    times = {(name, part): [] for name in params for part in ("forward", "backward")}
    with threadpool_limits(limits=1, user_api="blas"):
        for step in range(2 + args.steps):
            for name, p in params.items():
                start = time.perf_counter()
                _, _, cache = decoder.forward(p, ids, state, memory, lengths)
                middle = time.perf_counter()
                decoder.backward(p, cache, d_outputs)
                if step >= 2:
                    times[name, "forward"].append(middle - start)
                    times[name, "backward"].append(time.perf_counter() - middle)
    print(f"attention decoder alone: {args.attention}, input feeding, {rows} rows, latent {units}, {steps} steps, "
          f"{positions} source positions, {args.dtype}, one thread; median (min) of {args.steps}")
    for (name, part), t in times.items():
        print(f"  {name:9s} {part:8s} {1000 * statistics.median(t):8.1f} ms  ({1000 * min(t):.1f})")


def profile(args):
    """Mean ms per step of each backend operation, per thread, over ``args.steps`` training steps."""
    import threading

    from minilstm.optim import RMSprop

    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    train_idx, _ = split_validation(len(dataset))
    lengths = dataset.input_lengths()
    model = contestants(dataset, args)["compiled"]
    backend = model.backend
    optimizer = RMSprop(backend, model.params.flat.size, model.dtype)
    totals = {}

    def timed(name, function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            result = function(*a, **k)
            key = (name, threading.get_ident())
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
            return result
        return wrapper

    for name in ("attention_feed_forward", "attention_feed_backward", "lstm_recurrence_forward",
                 "lstm_recurrence_backward", "matmul", "gather_rows_add", "scatter_add_rows", "softmax_cross_entropy",
                 "rmsprop_update"):
        if getattr(backend, name, None) is not None:
            setattr(backend, name, timed(name, getattr(backend, name)))
    model._forward_backward_shard = timed("whole row shard", model._forward_backward_shard)
    rng = np.random.default_rng(0)
    times = []
    for step in range(3 + args.steps):
        if step == 3:
            totals.clear()
        idx = rng.choice(train_idx, args.batch_size, replace=False)
        start = time.perf_counter()
        model.forward_backward(dataset.encoder_input_ids[idx], dataset.decoder_input_ids[idx],
                               dataset.decoder_target_ids[idx], source_lengths=lengths[idx])
        optimizer.step(model.params.flat, model.grads.flat)
        if step >= 3:
            times.append(time.perf_counter() - start)
    threads = sorted({t for _, t in totals})
    print(f"training step, attention {args.attention}, input feeding {'off' if args.no_input_feed else 'on'}, batch "
          f"{args.batch_size}, latent {args.latent_dim}, {args.dtype}, numba {backend.workers} thread(s): median "
          f"{1000 * statistics.median(times):.1f} ms; mean ms per step of each operation, per thread:")
    for name in sorted({n for n, _ in totals}):
        print(f"  {name:28s}" + "".join(f"{1000 * totals.get((name, t), 0.0) / args.steps:9.2f}" for t in threads))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--attention", default="general", choices=("dot", "general", "concat"))
    p.add_argument("--no-input-feed", action="store_true")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latent-dim", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--steps", type=int, default=20, help="timed steps per contestant")
    p.add_argument("--only", choices=("reference", "compiled"), help="time one contestant alone")
    p.add_argument("--decoder-only", action="store_true", help="time the attention decoder alone (module doc)")
    p.add_argument("--rows", type=int, default=32, help="rows for --decoder-only (a row shard's)")
    p.add_argument("--profile", action="store_true", help="time each backend operation of a step (module doc)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    if args.profile:
        profile(args)
        print(f"  load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        return
    if args.decoder_only:
        decoder_only(args)
        print(f"  load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        return
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    train_idx, _ = split_validation(len(dataset))
    lengths = dataset.input_lengths()
    models = contestants(dataset, args)
    if args.only:
        models = {args.only: models[args.only]}
    rng = np.random.default_rng(0)
    times = {name: [] for name in models}
    for step in range(3 + args.steps):
        idx = rng.choice(train_idx, args.batch_size, replace=False)
        batch = (dataset.encoder_input_ids[idx], dataset.decoder_input_ids[idx], dataset.decoder_target_ids[idx])
        losses = {}
        for name, model in models.items():
            start = time.perf_counter()
            losses[name] = float(model.forward_backward(*batch, source_lengths=lengths[idx])[0])
            if step >= 3:
                times[name].append(time.perf_counter() - start)
        if len(losses) == 2 and abs(losses["compiled"] - losses["reference"]) > 1e-4 * abs(losses["reference"]):
            raise SystemExit(f"the two loops disagree: loss sums {losses}")
    load_after = os.getloadavg()
    workers = next(iter(models.values())).backend.workers
    print(f"attention {args.attention}, input feeding {'off' if args.no_input_feed else 'on'}, batch "
          f"{args.batch_size}, latent {args.latent_dim}, {dataset.max_encoder_len} + {dataset.max_decoder_len} steps, "
          f"{args.dtype}, numba {workers} thread(s); median of {args.steps} forward_backward calls each")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"  {name:9s} {1000 * median:8.1f} ms  (min {1000 * min(times[name]):.1f}, "
              f"max {1000 * max(times[name]):.1f})")
    if len(medians) == 2:
        print(f"  compiled / reference: {medians['compiled'] / medians['reference']:.3f}")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
