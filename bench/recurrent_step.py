"""The recurrent time loop alone, on one core and split over the cores: each version checked against the float64
reference, then timed.

    python -m bench.recurrent_step                      # rows 16, 32, 64; hidden 256; 75 steps (the example's 16 + 59)
    python -m bench.recurrent_step --rows 1,8,32 --units 512 --json out.json
    python -m bench.recurrent_step --rows 1,4,16,64 --units 256,512 --threads 2     # the splits over 2 threads

Like llm.c's dev/cuda: every version runs on the same random inputs, its outputs are compared with the NumPy
float64 loop (``lstm.recurrence_forward/backward``) first, and only then timed (interleaved, median of
``--repeats``). GFLOP/s count the recurrent GEMMs only (2 x rows x H x 4H per step, forward or backward), so the
cell's time shows up as a lower rate. ``sgemm`` is OpenBLAS alone at the same shape, once per step, without any
cell: what the per-step path pays for its GEMMs.

Versions:
- ``forward/per-step BLAS``: the numba backend before the compiled loops: a BLAS call and a cell kernel per step;
- ``forward/compiled``: ``recurrence`` (packing included);
- the same two for backward (cell backward and ``dz @ recurrent_kernel^T`` per step);
- ``sgemm``: (rows x H) @ (H x 4H) per step, one BLAS thread;
- with ``--threads N`` (N > 1), the compiled loops over N threads, both ways the numba backend can split them:
  ``row shards xN`` (the batch split: seq2seq's shards, min(N, rows // MIN_SHARD_ROWS), each thread its rows' whole
  sequence, as ``parallel_map`` runs them) and ``unit split xN`` (every thread on every row, each owning a range of
  hidden units, a barrier per time step). GFLOP/s are then those of all N threads together.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from minilstm import lstm
from minilstm.backends.base import Backend
from minilstm.backends.numba import NumbaBackend
from minilstm.backends.numba.kernels import lstm_cell_backward, lstm_cell_forward
from minilstm.seq2seq import MIN_SHARD_ROWS


class PerStepNumba(Backend):
    """The numba backend's kernels with the reference time loops: one BLAS GEMM and one cell kernel per step."""

    name = "numba per-step"

    def lstm_cell_forward(self, gates, z_recurrent, c_prev, c, h):
        lstm_cell_forward(gates, z_recurrent, c_prev, c, h)

    def lstm_cell_backward(self, gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev):
        lstm_cell_backward(gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "cpu"


def blas_kernel() -> str:
    return ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()
                     if i.get("user_api") == "blas")


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run(rows, units, steps, dtype, repeats, rng, threads=1):
    recurrent_kernel = (rng.standard_normal((units, 4 * units)) / np.sqrt(units)).astype(dtype)
    gates_in = rng.standard_normal((steps, rows, 4 * units)).astype(dtype)
    h0, c0 = rng.standard_normal((2, rows, units)).astype(dtype)
    d_outputs = rng.standard_normal((steps, rows, units)).astype(dtype)
    compiled, per_step = NumbaBackend(1), PerStepNumba()

    def forward(backend, dtype=dtype, part=slice(None)):
        gates = gates_in[:, part].astype(dtype)
        hs, cs = np.empty((2, steps + 1, gates.shape[1], units), dtype)
        hs[0], cs[0] = h0[part], c0[part]
        backend.lstm_recurrence_forward(gates, recurrent_kernel.astype(dtype), hs, cs, lstm.Workspace(np))
        return gates, hs, cs

    def backward(backend, gates, cs, dtype=dtype, part=slice(None)):
        dh, dc = h0[part].astype(dtype), c0[part].astype(dtype)
        dz = np.empty(gates.shape, dtype)
        backend.lstm_recurrence_backward(gates.astype(dtype), cs.astype(dtype), recurrent_kernel.astype(dtype),
                                         d_outputs[:, part].astype(dtype), dh, dc, dz, lstm.Workspace(np))
        return dz, dh, dc

    reference_forward = forward(Backend(), np.float64)
    fixed_gates, _, fixed_cs = forward(compiled)
    versions = {
        "forward/per-step BLAS": (lambda: forward(per_step), reference_forward),
        "forward/compiled": (lambda: forward(compiled), reference_forward),
        "backward/per-step BLAS": (lambda: backward(per_step, fixed_gates, fixed_cs), None),
        "backward/compiled": (lambda: backward(compiled, fixed_gates, fixed_cs), None),
    }
    if threads > 1:
        by_rows, by_units = NumbaBackend(threads, "rows"), NumbaBackend(threads, "units")
        n_shards = by_rows.row_shards(rows, units, MIN_SHARD_ROWS)
        bounds = [rows * k // n_shards for k in range(n_shards + 1)]
        shards = [slice(bounds[k], bounds[k + 1]) for k in range(n_shards)]
        shard_gates = [np.ascontiguousarray(fixed_gates[:, part]) for part in shards]
        shard_cs = [np.ascontiguousarray(fixed_cs[:, part]) for part in shards]

        def joined(results):  # the shards' outputs side by side again (time-major arrays: rows on axis 1; dh, dc: 0)
            return tuple(np.concatenate(arrays, axis=1 if arrays[0].ndim == 3 else 0)
                         for arrays in zip(*results, strict=True))

        versions.update({
            f"forward/row shards x{threads}": (lambda: joined(by_rows.parallel_map(
                lambda k: forward(by_rows, part=shards[k]), range(n_shards))), reference_forward),
            f"forward/unit split x{threads}": (lambda: forward(by_units), reference_forward),
            f"backward/row shards x{threads}": (lambda: joined(by_rows.parallel_map(
                lambda k: backward(by_rows, shard_gates[k], shard_cs[k], part=shards[k]), range(n_shards))), None),
            f"backward/unit split x{threads}": (lambda: backward(by_units, fixed_gates, fixed_cs), None),
        })
    errors = {}
    for name, (fn, expected) in versions.items():
        outputs = fn()
        if expected is None:  # backward from the compiled forward's gates: its own float64 reference
            expected = backward(Backend(), fixed_gates.astype(np.float64), fixed_cs.astype(np.float64), np.float64)
        errors[name] = max(relative_error(a, b) for a, b in zip(outputs, expected, strict=True))
        limit = 1e-4 if dtype == np.float32 else 1e-10
        if not errors[name] < limit:
            raise SystemExit(f"{name} disagrees with the float64 reference: relative error {errors[name]:.2e}")

    a = rng.standard_normal((rows, units)).astype(dtype)
    product = np.empty((rows, 4 * units), dtype)

    def sgemm():
        for _ in range(steps):
            np.matmul(a, recurrent_kernel, out=product)

    versions["sgemm"] = (sgemm, None)
    times = {name: [] for name in versions}
    with threadpool_limits(1, user_api="blas"):
        for fn, _ in versions.values():
            fn()  # warm-up (and compilation)
        for _ in range(repeats):
            for name, (fn, _) in versions.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    flops = 2 * rows * units * 4 * units * steps
    return [{"rows": rows, "units": units, "steps": steps, "version": name, "median_s": statistics.median(t),
             "gflops": flops / statistics.median(t) / 1e9, "relative_error": errors.get(name),
             "shards": n_shards if threads > 1 and "row shards" in name else None}
            for name, t in times.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="16,32,64")
    p.add_argument("--units", default="256", help="hidden sizes, comma-separated")
    p.add_argument("--steps", type=int, default=75)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1,
                   help="also time the compiled loops split over this many threads (rows, units)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    records = []
    load_before = os.getloadavg()[0]
    for units in map(int, args.units.split(",")):
        for rows in map(int, args.rows.split(",")):
            records += run(rows, units, args.steps, np.dtype(args.dtype).type, args.repeats, rng, args.threads)
    env = {"cpu": cpu_name(), "blas": blas_kernel(), "dtype": args.dtype, "threads": args.threads,
           "date": time.strftime("%Y-%m-%d"), "load_before": load_before, "load_after": os.getloadavg()[0]}
    print(f"# {env['cpu']}; {env['blas']}; {args.dtype}; {args.steps} steps; per-step and one-thread versions on one"
          f" thread{f', the splits on {args.threads}' if args.threads > 1 else ''}; load average (1 min) "
          f"{env['load_before']:.2f} before, {env['load_after']:.2f} after")
    print("| hidden | rows | version | median | GFLOP/s (recurrent GEMMs) | rel. error vs float64 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in records:
        error = "-" if r["relative_error"] is None else f"{r['relative_error']:.1e}"
        shards = f" ({r['shards']} shard{'s' if r['shards'] > 1 else ''})" if r["shards"] else ""
        print(f"| {r['units']} | {r['rows']} | {r['version']}{shards} | {r['median_s'] * 1e3:.2f} ms | "
              f"{r['gflops']:.1f} | {error} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{**r, **env} for r in records], indent=1) + "\n")
    return records


if __name__ == "__main__":
    main()
