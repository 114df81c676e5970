"""The input-feeding decoder's gate GEMM at the training step's per-shard shape (32 rows in groups of 16, depth 2H =
512, 4H = 1024 columns, 59 steps), one thread: ``attention._gate_panels`` (each pair of rows streams a whole
panel of depth 512, 64 KiB, from L2) against the same micro-kernel blocked along k (``kc`` rows of the panel, 8-32
KiB, stay in L1 while every pair of rows of the group passes; the accumulators are stored and reloaded between
blocks, which changes no bit: a float32 store and load is exact). Asserts the blocked results equal the unblocked
ones bit for bit, prints ms and GFLOP/s per kc (0: unblocked).

    python -m bench.experiments.kblock [DEPTH]
"""

import sys
import time

import numpy as np
from numba import njit

from minilstm.backends.numba import simd
from minilstm.backends.numba.attention_train import _gate_panels, pack_gates, packed_gates_size

F = np.float32
H, G, T, R = 256, 16, 59, 32
DEPTH = int(sys.argv[1]) if len(sys.argv) > 1 else 2 * H


@njit(inline="always")
def _accumulate2(a, start, depth, k0, k1, packed, base, acc, row, fresh):
    """Rows a[start], a[start + depth] times panel rows k0..k1, added to (or, fresh, written as) acc's rows."""
    lanes = simd.lanes_of(packed)
    if fresh:
        c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = simd.zeros(packed)
    else:
        o = row * 4 * lanes
        c00, c01 = simd.load(acc, o), simd.load(acc, o + lanes)
        c02, c03 = simd.load(acc, o + 2 * lanes), simd.load(acc, o + 3 * lanes)
        o += 4 * lanes
        c10, c11 = simd.load(acc, o), simd.load(acc, o + lanes)
        c12, c13 = simd.load(acc, o + 2 * lanes), simd.load(acc, o + 3 * lanes)
    for k in range(k0, k1):
        offset = base + k * 4 * lanes
        b0, b1 = simd.load(packed, offset), simd.load(packed, offset + lanes)
        b2, b3 = simd.load(packed, offset + 2 * lanes), simd.load(packed, offset + 3 * lanes)
        x = simd.broadcast(a, start + k)
        c00, c01, c02, c03 = simd.fma(x, b0, c00), simd.fma(x, b1, c01), simd.fma(x, b2, c02), simd.fma(x, b3, c03)
        x = simd.broadcast(a, start + depth + k)
        c10, c11, c12, c13 = simd.fma(x, b0, c10), simd.fma(x, b1, c11), simd.fma(x, b2, c12), simd.fma(x, b3, c13)
    o = row * 4 * lanes
    simd.store(acc, o, c00)
    simd.store(acc, o + lanes, c01)
    simd.store(acc, o + 2 * lanes, c02)
    simd.store(acc, o + 3 * lanes, c03)
    o += 4 * lanes
    simd.store(acc, o, c10)
    simd.store(acc, o + lanes, c11)
    simd.store(acc, o + 2 * lanes, c12)
    simd.store(acc, o + 3 * lanes, c13)


@njit(inline="always")
def _blocked_panels(x, rows, depth, units, packed, z, acc, kc):
    lanes = simd.lanes_of(packed)
    for panel in range(units // lanes):
        base = panel * depth * 4 * lanes
        unit = panel * lanes
        for k0 in range(0, depth, kc):
            for row in range(0, rows, 2):
                _accumulate2(x, row * depth, depth, k0, min(depth, k0 + kc), packed, base, acc, row, k0 == 0)
        for row in range(rows):
            for gate in range(4):
                out = row * 4 * units + gate * units + unit
                z[out : out + lanes] = acc[row * 4 * lanes + gate * lanes : row * 4 * lanes + (gate + 1) * lanes]


@njit(nogil=True)
def run(packed, depth, kc):
    x = np.ones(G * depth, F) * np.float32(0.01)
    z = np.empty(G * 4 * H, F)
    acc = np.empty(G * 4 * simd.lanes_of(x), F)
    spill = np.empty(4 * simd.lanes_of(x), F)
    for _ in range(R // G):
        for _ in range(T):
            if kc == 0:
                _gate_panels(x, G, depth, H, packed, z, spill)
            else:
                _blocked_panels(x, G, depth, H, packed, z, acc, kc)
    return z


def main():
    kernel = (np.random.default_rng(0).standard_normal((DEPTH, 4 * H)) * 0.05).astype(F)
    packed = np.empty(packed_gates_size(DEPTH, H, F), F)
    pack_gates(kernel, packed)
    flops = T * R * 2 * DEPTH * 4 * H
    reference = run(packed, DEPTH, 0)
    for kc in (0, 64, 128, 256, 512, 0):
        assert np.array_equal(run(packed, DEPTH, kc), reference), kc
        times = []
        for _ in range(30):
            start = time.perf_counter()
            run(packed, DEPTH, kc)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        print(f"depth {DEPTH} kc {kc:4d}  {median * 1e3:7.2f} ms  {flops / median / 1e9:6.1f} GFLOP/s "
              f"(best {flops / min(times) / 1e9:.1f})")


if __name__ == "__main__":
    main()
