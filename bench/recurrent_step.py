"""The recurrent time loop alone, one core: each version checked against the float64 reference, then timed.

    python bench/recurrent_step.py                      # rows 16, 32, 64; hidden 256; 75 steps (the example's 16 + 59)
    python bench/recurrent_step.py --rows 1,8,32 --units 512 --json out.json

Like llm.c's dev/cuda: every version runs on the same random inputs, its outputs are compared with the NumPy
float64 loop (``lstm.recurrence_forward/backward``) first, and only then timed (interleaved, median of
``--repeats``). GFLOP/s count the recurrent GEMMs only (2 x rows x H x 4H per step, forward or backward), so the
cell's time shows up as a lower rate. ``sgemm`` is OpenBLAS alone at the same shape, once per step, without any
cell: what the per-step path pays for its GEMMs.

Versions:
- ``forward/per-step BLAS``: the numba backend before the compiled loops: a BLAS call and a cell kernel per step;
- ``forward/compiled``: ``numba_recurrence`` (packing included);
- the same two for backward (cell backward and ``dz @ recurrent_kernel^T`` per step);
- ``sgemm``: (rows x H) @ (H x 4H) per step, one BLAS thread.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minilstm import lstm  # noqa: E402
from minilstm.backend import Backend, get_backend  # noqa: E402
from minilstm.numba_kernels import lstm_cell_backward, lstm_cell_forward  # noqa: E402


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


def run(rows, units, steps, dtype, repeats, rng):
    recurrent_kernel = (rng.standard_normal((units, 4 * units)) / np.sqrt(units)).astype(dtype)
    gates_in = rng.standard_normal((steps, rows, 4 * units)).astype(dtype)
    h0, c0 = rng.standard_normal((2, rows, units)).astype(dtype)
    d_outputs = rng.standard_normal((steps, rows, units)).astype(dtype)
    compiled, per_step = get_backend("numba"), PerStepNumba()

    def forward(backend, dtype=dtype):
        gates = gates_in.astype(dtype)
        hs, cs = np.empty((2, steps + 1, rows, units), dtype)
        hs[0], cs[0] = h0, c0
        backend.lstm_recurrence_forward(gates, recurrent_kernel.astype(dtype), hs, cs, lstm.Workspace(np))
        return gates, hs, cs

    def backward(backend, gates, cs, dtype=dtype):
        dh, dc = h0.astype(dtype), c0.astype(dtype)
        dz = np.empty(gates.shape, dtype)
        backend.lstm_recurrence_backward(gates.astype(dtype), cs.astype(dtype), recurrent_kernel.astype(dtype),
                                         d_outputs.astype(dtype), dh, dc, dz, lstm.Workspace(np))
        return dz, dh, dc

    reference_forward = forward(Backend(), np.float64)
    fixed_gates, _, fixed_cs = forward(compiled)
    versions = {
        "forward/per-step BLAS": (lambda: forward(per_step), reference_forward),
        "forward/compiled": (lambda: forward(compiled), reference_forward),
        "backward/per-step BLAS": (lambda: backward(per_step, fixed_gates, fixed_cs), None),
        "backward/compiled": (lambda: backward(compiled, fixed_gates, fixed_cs), None),
    }
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
             "gflops": flops / statistics.median(t) / 1e9, "relative_error": errors.get(name)}
            for name, t in times.items()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="16,32,64")
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--steps", type=int, default=75)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    records = []
    for rows in map(int, args.rows.split(",")):
        records += run(rows, args.units, args.steps, np.dtype(args.dtype).type, args.repeats, rng)
    env = {"cpu": cpu_name(), "blas": blas_kernel(), "dtype": args.dtype, "threads": 1,
           "date": time.strftime("%Y-%m-%d")}
    print(f"# {env['cpu']}; {env['blas']}; {args.dtype}, one thread; hidden {args.units}, {args.steps} steps")
    print("| rows | version | median | GFLOP/s (recurrent GEMMs) | rel. error vs float64 |")
    print("| --- | --- | --- | --- | --- |")
    for r in records:
        error = "-" if r["relative_error"] is None else f"{r['relative_error']:.1e}"
        print(f"| {r['rows']} | {r['version']} | {r['median_s'] * 1e3:.2f} ms | {r['gflops']:.1f} | {error} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{**r, **env} for r in records], indent=1) + "\n")
    return records


if __name__ == "__main__":
    main()
