"""Training steps in steady state, each contestant alone in a process of its own: the numba backend's batch split vs
its unit split (vs PyTorch) at chosen shapes.

    python -m bench.split_step --shapes 1x256,8x512,16x512,64x256 --contestants rows,units,auto,torch --repeats 2

Each (shape, contestant, repeat) is a fresh subprocess: a few warm-up steps, then training steps (forward, backward,
RMSprop, as bench.py's) back to back for ``--seconds``, median. Why not bench.py's interleaving: at small batches a
step takes a few ms, and whoever runs next to another contestant runs beside that one's still-spinning BLAS or
OpenMP threads; here nothing else of ours runs in the process, and what a step sees is what training sees, the step
before it its own. Contestants alternate shape by shape and repeat by repeat, so drifting load hits all alike.
``rows`` / ``units`` force the numba backend's split, ``auto`` is its default choice, ``torch`` is the PyTorch peer.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"rows": "numba:rows", "units": "numba:units", "auto": "numba"}


def one(contestant, batch, latent, seconds, dtype="float32", blas_hold=True):
    """Median seconds per training step of ``contestant`` alone (the subprocess's work)."""
    from bench.bench import MinilstmContestant, TorchContestant
    from minilstm.backends import base as backend_base
    from minilstm.backends import numba as backend_numba
    from minilstm.data import Dataset, resolve_pairs, split_validation

    if not blas_hold:  # what the unit split costs with OpenBLAS's worker left spinning (backend.hold_blas)
        backend_base.hold_blas = backend_numba.hold_blas = lambda hold: None

    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    train_idx, _ = split_validation(len(dataset))
    if contestant == "torch":
        runner = TorchContestant("cpu", dataset, latent, dtype, len(os.sched_getaffinity(0)))
    else:
        runner = MinilstmContestant(SPLITS[contestant], dataset, latent, dtype)
    rng = np.random.default_rng(0)
    for _ in range(5):
        runner.train_step(runner.prepare(rng.choice(train_idx, batch, replace=False)))
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 15:
        prepared = runner.prepare(rng.choice(train_idx, batch, replace=False))
        start = time.perf_counter()
        runner.train_step(prepared)
        runner.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="1x256,8x512,16x512,64x256", help="BATCHxLATENT, comma-separated")
    p.add_argument("--contestants", default="rows,units,torch")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0, help="timed steps per process")
    p.add_argument("--no-blas-hold", action="store_true",
                   help="do not hold BLAS to one thread in unit-split steps (to measure what the hold is for)")
    p.add_argument("--json", type=Path)
    p.add_argument("--one", nargs=3, metavar=("CONTESTANT", "BATCH", "LATENT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        median, n = one(args.one[0], int(args.one[1]), int(args.one[2]), args.seconds,
                        blas_hold=not args.no_blas_hold)
        print(json.dumps({"median_s": median, "n": n}))
        return None
    shapes = [tuple(map(int, shape.split("x"))) for shape in args.shapes.split(",")]
    contestants = args.contestants.split(",")
    load_before = os.getloadavg()[0]
    runs = {}
    for batch, latent in shapes:
        for _ in range(args.repeats):
            for contestant in contestants:
                out = subprocess.run([sys.executable, "-m", "bench.split_step", "--one", contestant, str(batch),
                                      str(latent), "--seconds", str(args.seconds)]
                                     + ["--no-blas-hold"] * args.no_blas_hold,
                                     capture_output=True, text=True, check=True, cwd=REPO)
                runs.setdefault((batch, latent, contestant), []).append(json.loads(out.stdout.splitlines()[-1]))
    load_after = os.getloadavg()[0]
    from bench.bench import cpu_name

    print(f"# {cpu_name()}; {len(os.sched_getaffinity(0))} threads; float32; steady-state training steps, each "
          f"contestant alone in its process; median of each run, {args.repeats} run(s) each; load average (1 min) "
          f"{load_before:.2f} before, {load_after:.2f} after" + ("; BLAS hold off" if args.no_blas_hold else "")
          + "".join(f"; {k}={os.environ[k]}" for k in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_CORETYPE")
                    if k in os.environ))
    print("| batch | latent | " + " | ".join(contestants) + " |")
    print("| --- | --- |" + " --- |" * len(contestants))
    records = []
    for batch, latent in shapes:
        cells = []
        peer = runs.get((batch, latent, "torch"))
        for contestant in contestants:
            medians = [r["median_s"] for r in runs[(batch, latent, contestant)]]
            value = statistics.median(medians)
            ratio = f" ({value / statistics.median([r['median_s'] for r in peer]):.2f}x)" if peer and \
                contestant != "torch" else ""
            cells.append(" / ".join(f"{m * 1e3:.1f}" for m in medians) + f" ms{ratio}")
            records.append({"batch": batch, "latent_dim": latent, "contestant": contestant, "medians_s": medians,
                            "steps": [r["n"] for r in runs[(batch, latent, contestant)]], "cpu": cpu_name(),
                            "load_before": load_before, "load_after": load_after, "date": time.strftime("%Y-%m-%d")})
        print(f"| {batch} | {latent} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    return records


if __name__ == "__main__":
    main()
