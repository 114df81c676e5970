"""Where the numba backend's training step goes on this CPU: the GEMM shapes on its critical path, timed alone with
single-threaded BLAS, and one training step split into the backend's operations, per thread.

    python -m bench.profile_cpu

Used for the analysis in docs/experiments/compiled-loops.md; numbers vary with the machine's load.
"""

import statistics
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

from minilstm.backends.numba import NumbaBackend
from minilstm.data import Dataset, resolve_pairs
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq


def median_us(fn, repeats=100):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def gemm_table():
    rng = np.random.default_rng(0)
    recurrent = rng.standard_normal((256, 1024)).astype(np.float32)
    print("| rows M | (M x 256) @ (256 x 1024), 1 BLAS thread | GFLOP/s |")
    print("| --- | --- | --- |")
    with threadpool_limits(1, user_api="blas"):
        for rows in (8, 16, 32, 64, 128, 256, 1024):
            h = rng.standard_normal((rows, 256)).astype(np.float32)
            out = np.empty((rows, 1024), np.float32)
            us = median_us(lambda h=h, out=out: np.matmul(h, recurrent, out=out))
            print(f"| {rows} | {us:.0f} us | {2 * rows * 256 * 1024 / us / 1e3:.1f} |")
        big = rng.standard_normal((2048, 2048)).astype(np.float32)
        us = median_us(lambda: big @ big, 5)
        print(f"| 2048^3 | {us / 1e3:.0f} ms | {2 * 2048**3 / us / 1e3:.1f} |")


def step_profile(batch=64, latent=256, steps=30):
    """One training step of the numba backend split into the backend's operations, timed per thread (each row
    shard is a thread), with the GFLOP/s of the GEMM parts. Timers wrap the backend object's methods, so the
    model's code runs unchanged."""
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    backend = NumbaBackend()
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=latent, dtype="float32").initialize(0)
    optimizer = RMSprop(backend, model.params.flat.size, model.dtype)
    rng = np.random.default_rng(0)
    totals: dict[tuple[str, int], float] = {}
    flops: dict[str, float] = {}

    def timed(name, fn, count_flops=None):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            key = (name, threading.get_ident())
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
            if count_flops:
                flops[name] = flops.get(name, 0.0) + count_flops(*args)
            return result
        return wrapper

    def recurrent_flops(gates, *_):
        return 2 * gates.shape[0] * gates.shape[1] * gates.shape[2] * gates.shape[2] // 4

    backend.lstm_recurrence_forward = timed("time loop forward (GEMMs + cell)", backend.lstm_recurrence_forward,
                                            recurrent_flops)
    backend.lstm_recurrence_backward = timed("time loop backward (GEMMs + cell)", backend.lstm_recurrence_backward,
                                             recurrent_flops)
    backend.matmul = timed("weight-gradient and output-layer GEMMs (BLAS)", backend.matmul,
                           lambda a, b, out=None: 2 * a.shape[0] * a.shape[1] * b.shape[1])
    for name in ("gather_rows_add", "scatter_add_rows", "softmax_cross_entropy", "rmsprop_update"):
        setattr(backend, name, timed(name, getattr(backend, name)))
    model._forward_backward_shard = timed("whole shard", model._forward_backward_shard)

    def step():
        idx = rng.choice(8000, batch, replace=False)
        model.forward_backward(dataset.encoder_input_ids[idx], dataset.decoder_input_ids[idx],
                               dataset.decoder_target_ids[idx])
        optimizer.step(model.params.flat, model.grads.flat)

    for _ in range(5):
        step()
    totals.clear()
    flops.clear()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median_ms = statistics.median(times) * 1e3
    print(f"\ntraining step, batch {batch}, latent {latent}, {backend.describe()}: median {median_ms:.1f} ms "
          f"(mean ms per step below, by thread)")
    threads = sorted({t for _, t in totals})
    print("| part | " + " | ".join(f"thread {k}" for k in range(len(threads))) + " | GFLOP/s per thread |")
    print("| --- |" + " --- |" * (len(threads) + 1))
    for name in sorted({n for n, _ in totals}):
        seconds = [totals.get((name, t), 0) for t in threads]
        rate = f"{flops[name] / sum(seconds) / 1e9:.0f}" if name in flops and sum(seconds) else ""
        print(f"| {name} | " + " | ".join(f"{s / steps * 1e3:.2f}" for s in seconds) + f" | {rate} |")


if __name__ == "__main__":
    gemm_table()
    step_profile()
