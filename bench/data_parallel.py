"""Data-parallel training measured: 1 rank x 2 threads against 2 ranks x 1 thread, the allreduce's share of a step,
MPI's allreduce on this machine (loopback), and the on-paper step time on N = 1..64 nodes.

    python -m bench.data_parallel --out bench/results/data-parallel                        # the step, allreduce
    python -m bench.data_parallel --out bench/results/data-parallel --full-data ../shared/data/fra-eng/fra.txt
    python -m bench.data_parallel --quick --out /tmp/dp                                   # tiny; a test runs it

Parts (each a subprocess, the 2-rank ones under the mpiexec next to this Python):
- ``step``: training steps at the Keras example's shape (built-in 10,000 pairs, batch 64, latent 256, float32): the
  time of this rank's forward + backward, of the gradient allreduce (2.9 MB, and the wait for the slower rank), and
  of the whole step, medians over ``--steps`` steps after a warm-up; once as 1 rank x 2 threads, once as 2 x 1;
- ``compute``: one thread's forward + backward on 64, 32, ..., 1 rows: the per-rank compute of a batch of 64 split
  over N = 1..64 ranks (what the scaling model uses instead of an ideal compute / N);
- ``allreduce``: MPI_Allreduce (sum, float32) between 2 ranks on this machine, 8 B to 32 MiB: latency and bandwidth;
- ``full-file`` (with ``--full-data``): one epoch of ``--num-samples all --mask-padding`` on the whole file, both ways
  (``python -m minilstm.train``, its history's seconds and ms/step).
Results: ``results.json`` (everything) and ``results.md`` (tables, with the scaling model) in ``--out``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minilstm import distributed
from minilstm.backends import get_backend
from minilstm.data import Batches, Dataset, resolve_pairs, split_validation
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq
from minilstm.training import rank_part

REPO = Path(__file__).resolve().parents[1]
NODES = (1, 2, 4, 8, 16, 32, 64)
# Published NCCL all-reduce bus bandwidths (not measured by us): stas00/ml-engineering, network/benchmarks/README.md,
# all_reduce_bench.py on 4 nodes: 23.79 GB/s at 2 MiB, 40.30 GB/s at 4 MiB, ~92 GB/s from 1 GiB on. Our 2.9 MB
# gradient sits between the first two; bus bandwidth as nccl-tests defines it (doc/PERFORMANCE.md):
# busbw = algbw * 2(N-1)/N for all-reduce, so a ring's time is 2(N-1)/N * bytes / busbw.
PUBLISHED_NCCL_BUSBW = {"2 MiB": 23.79e9, "4 MiB": 40.30e9}
ASSUMED_NCCL_LATENCY_S = 5e-6  # an assumption (order of magnitude of one inter-node hop), not a measurement


def worker_setup(args):
    backend = get_backend("numba")
    comm = distributed.connect()
    if comm.size > 1:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")  # as minilstm.train does under mpiexec
    dataset = Dataset.from_pairs(resolve_pairs(None, args.num_samples))
    train_idx, _ = split_validation(len(dataset))
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=args.latent_dim, dtype="float32").initialize(0)
    return backend, comm, dataset, train_idx, model


def worker_step(args) -> dict:
    backend, comm, dataset, train_idx, model = worker_setup(args)
    optimizer = RMSprop(backend, model.params.flat.size, model.dtype)
    batches = Batches(dataset, backend, False, comm.rank, comm.size)
    plan = batches.plan(train_idx, args.batch_size, np.random.default_rng(0))
    plan = [idx for idx in plan if len(idx) == args.batch_size]
    times = {"compute": [], "allreduce": [], "step": []}
    for k, batch in enumerate(batches.epoch(plan[: args.steps + 3])):
        start = time.perf_counter()
        rank_part(model, batch)
        computed = time.perf_counter()
        comm.allreduce_sum(model.grads.flat)
        reduced = time.perf_counter()
        optimizer.step(model.params.flat, model.grads.flat)
        done = time.perf_counter()
        if k >= 3:  # warm-up
            times["compute"].append(computed - start)
            times["allreduce"].append(reduced - computed)
            times["step"].append(done - start)
    medians = {f"median_{name}_s": statistics.median(values) for name, values in times.items()}
    return {"ranks": comm.size, "threads": backend.workers, "steps": len(times["step"]),
            "gradient_bytes": int(model.grads.flat.nbytes), **medians}


def worker_compute(args) -> dict:
    backend, _, dataset, train_idx, model = worker_setup(args)
    batches = Batches(dataset, backend, False)
    rows = {}
    for n in (64, 32, 16, 8, 4, 2, 1):
        plan = [train_idx[k * n : (k + 1) * n] for k in range(args.steps + 2)]
        timings = []
        for k, batch in enumerate(batches.epoch(plan)):
            start = time.perf_counter()
            rank_part(model, batch)
            if k >= 2:
                timings.append(time.perf_counter() - start)
        rows[n] = statistics.median(timings)
    return {"threads": backend.workers, "forward_backward_s_by_rows": rows}


def worker_allreduce(args) -> dict:
    comm = distributed.connect()
    sizes = [2**k for k in range(3, 26, 2 if args.quick else 1)]
    result = {}
    for size in sizes:
        array = np.ones(size // 4, dtype=np.float32)
        repeats = max(5, min(200, (1 << 24) // size))
        comm.comm.Barrier()
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            comm.allreduce_sum(array)
            timings.append(time.perf_counter() - start)
        result[size] = statistics.median(timings)
    return {"ranks": comm.size, "seconds_by_bytes": result}


def run_worker(part: str, ranks: int, threads: int, args) -> dict:
    out = Path(args.out) / f".{part}-{ranks}x{threads}.json"
    command = [sys.executable, "-m", "bench.data_parallel", "--worker", part, "--worker-out", str(out),
               "--steps", str(args.steps), "--num-samples", str(args.num_samples), "--latent-dim", str(args.latent_dim),
               "--batch-size", str(args.batch_size), *(["--quick"] if args.quick else [])]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *command]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "MINILSTM_THREADS": str(threads)})
    result = json.loads(out.read_text())
    out.unlink()
    return result


def full_file_epoch(args, ranks: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:  # the run's checkpoints are not results: they go with it
        return _full_file_epoch(args, ranks, threads, Path(scratch) / f"full-{ranks}x{threads}")


def _full_file_epoch(args, ranks: int, threads: int, out: Path) -> dict:
    command = [sys.executable, "-m", "minilstm.train", "--data", str(args.full_data), "--num-samples",
               "all", "--mask-padding", "--epochs", "1", "--num-decodes", "0", "--progress", "never", "--out", str(out)]
    if args.quick:
        command[command.index("all")] = str(args.num_samples)
        command += ["--latent-dim", str(args.latent_dim)]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *command]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "MINILSTM_THREADS": str(threads)},
                   stdout=subprocess.DEVNULL)
    record = json.loads((out / "history.jsonl").read_text().splitlines()[0])
    return {"ranks": ranks, "threads": threads, "epoch_seconds": record["seconds"],
            "ms_per_step": record["ms_per_step"]}


def scaling_model(compute: dict, allreduce: dict, gradient_bytes: int) -> list[dict]:
    """Step time on N nodes = compute of 64/N rows (measured, one thread) + ring allreduce
    2(N-1)/N * bytes / busbw + 2(N-1) * latency, with MPI-on-loopback and published NCCL figures."""
    times = {int(k): v for k, v in allreduce["seconds_by_bytes"].items()}  # JSON made the keys strings
    latency, big = times[min(times)], max(times)
    loopback_busbw = big / times[big]  # 2 ranks: 2(N-1)/N = 1
    by_rows = {int(k): v for k, v in compute["forward_backward_s_by_rows"].items()}
    rows = []
    for n in NODES:
        work = by_rows.get(max(1, 64 // n), by_rows[1])
        ring = 2 * (n - 1) / n * gradient_bytes
        row = {"nodes": n, "rows_per_node": max(1, 64 // n), "compute_s": work,
               "mpi_loopback_s": work + ring / loopback_busbw + 2 * (n - 1) * latency}
        for label, busbw in PUBLISHED_NCCL_BUSBW.items():
            row[f"nccl_{label}_s"] = work + ring / busbw + 2 * (n - 1) * ASSUMED_NCCL_LATENCY_S
        rows.append(row)
    return rows, {"mpi_latency_s": latency, "mpi_loopback_busbw": loopback_busbw}


def markdown(results: dict) -> str:
    lines = ["# Data-parallel training, measured", "", f"Machine: {results['machine']}", "",
             "| run | step (median) | rank's forward + backward | allreduce (incl. wait) | allreduce share |",
             "| --- | --- | --- | --- | --- |"]
    for r in results["step"]:
        lines.append(f"| {r['ranks']} rank(s) x {r['threads']} thread(s) | {1e3 * r['median_step_s']:.1f} ms | "
                     f"{1e3 * r['median_compute_s']:.1f} ms | {1e3 * r['median_allreduce_s']:.2f} ms | "
                     f"{100 * r['median_allreduce_s'] / r['median_step_s']:.1f}% |")
    if results.get("full_file"):
        lines += ["", "| whole file, one epoch, --mask-padding | seconds | ms/step |", "| --- | --- | --- |"]
        for r in results["full_file"]:
            lines.append(f"| {r['ranks']} rank(s) x {r['threads']} thread(s) | {r['epoch_seconds']:.1f} | "
                         f"{r['ms_per_step']:.1f} |")
    fit = results["fit"]
    lines += ["", f"MPI allreduce on loopback (2 ranks): latency {1e6 * fit['mpi_latency_s']:.1f} us (8 B), bus "
              f"bandwidth {fit['mpi_loopback_busbw'] / 1e9:.2f} GB/s (largest message).", "",
              "| nodes | rows per node | compute | step, MPI loopback figures | step, NCCL 23.8 GB/s (published) | "
              "step, NCCL 40.3 GB/s (published) |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results["model"]:
        lines.append(f"| {r['nodes']} | {r['rows_per_node']} | {1e3 * r['compute_s']:.1f} ms | "
                     f"{1e3 * r['mpi_loopback_s']:.1f} ms | {1e3 * r['nccl_2 MiB_s']:.1f} ms | "
                     f"{1e3 * r['nccl_4 MiB_s']:.1f} ms |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/data-parallel"))
    p.add_argument("--full-data", type=Path, default=None, help="the whole fra.txt: one epoch both ways")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--latent-dim", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script end to end")
    p.add_argument("--worker", choices=("step", "compute", "allreduce"), help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = {"step": worker_step, "compute": worker_compute, "allreduce": worker_allreduce}[args.worker](args)
        if distributed.launched_ranks() == 1 or int(os.environ.get("PMI_RANK", "0")) == 0:
            args.worker_out.write_text(json.dumps(result))
        return 0
    if args.quick:
        args.steps, args.num_samples, args.latent_dim = 3, 400, 16
    # The workers run from the repository root (python -m bench.data_parallel): paths given here, absolute.
    args.out = args.out.resolve()
    args.full_data = args.full_data.resolve() if args.full_data else None
    args.out.mkdir(parents=True, exist_ok=True)
    from bench.bench import cpu_name

    results = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "command": " ".join(sys.argv),
               "step": [run_worker("step", 1, 2, args), run_worker("step", 2, 1, args)],
               "compute": run_worker("compute", 1, 1, args), "allreduce": run_worker("allreduce", 2, 1, args)}
    if args.full_data:
        results["full_file"] = [full_file_epoch(args, 1, 2), full_file_epoch(args, 2, 1)]
    results["model"], results["fit"] = scaling_model(results["compute"], results["allreduce"],
                                                     results["step"][0]["gradient_bytes"])
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
