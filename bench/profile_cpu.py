"""Where the numba backend's training step goes on this CPU: the GEMM shapes on its critical path, timed alone with
single-threaded BLAS, and one training step split into its parts, per shard.

    python bench/profile_cpu.py

Used for the analysis in the README's performance section; numbers vary with the machine's load.
"""

import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minilstm import lstm  # noqa: E402
from minilstm import seq2seq as s2s  # noqa: E402
from minilstm.data import Dataset, resolve_pairs  # noqa: E402
from minilstm.optim import RMSprop  # noqa: E402
from minilstm.seq2seq import Seq2Seq  # noqa: E402


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


def step_profile(steps=10):
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    model = Seq2Seq("numba", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, 256, "float32").initialize(0)
    optimizer = RMSprop(model.backend, model.params.flat.size, model.dtype)
    rng = np.random.default_rng(0)
    totals: dict[tuple[str, int], float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            key = (name, threading.get_ident())
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
            return result
        return wrapper

    s2s.lstm_forward = timed("LSTM forward (both layers)", lstm.lstm_forward)
    s2s.lstm_backward = timed("LSTM backward + weight-gradient GEMMs", lstm.lstm_backward)
    model._forward_backward_shard = timed("whole shard", model._forward_backward_shard)

    def step():
        idx = rng.choice(8000, 64, replace=False)
        model.forward_backward(dataset.encoder_input_ids[idx], dataset.decoder_input_ids[idx],
                               dataset.decoder_target_ids[idx])
        optimizer.step(model.params.flat, model.grads.flat)

    for _ in range(3):
        step()
    totals.clear()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median_ms = statistics.median(times) * 1e3
    print(f"\ntraining step, numba backend ({model.backend.describe()}): median {median_ms:.1f} ms")
    threads = sorted({t for _, t in totals})
    print("| part (ms per step) | " + " | ".join(f"shard {k}" for k in range(len(threads))) + " |")
    print("| --- |" + " --- |" * len(threads))
    for name in sorted({n for n, _ in totals}):
        print(f"| {name} | " + " | ".join(f"{totals.get((name, t), 0) / steps * 1e3:.1f}" for t in threads) + " |")


if __name__ == "__main__":
    gemm_table()
    step_profile()
