"""How a barrier per step behaves when the machine is busy: two threads that each compute a fixed amount per step,
(a) with no barrier (as the batch split runs), (b) meeting at ``barrier.wait`` (spin, then sleep on a futex: what
the unit split uses), (c) meeting at a spin-then-``sched_yield`` barrier (the first version, kept here to compare).

    python -m bench.barrier_wait --burners 0,1,2        # CPU burner processes beside the two threads

Prints microseconds per step (median of interleaved repeats) and the load average. The burners stand for other
jobs: with as many runnable threads as cores or more, a thread that waits at a barrier often waits for one the OS
has descheduled.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from numba import njit, types

from minilstm.backends.numba import barrier
from minilstm.backends.numba.barrier import COUNT, atomic_add, load_acquire, pause

_sched_yield = types.ExternalFunction("sched_yield", types.int32())


@njit(inline="always", nogil=True)
def _wait_yield(sync, arrivals):
    atomic_add(sync, COUNT, 1)
    spins = 0
    while load_acquire(sync, COUNT) < arrivals:
        if spins < barrier.SPINS:
            pause()
            spins += 1
        else:
            _sched_yield()


@njit(inline="always", nogil=True)
def _work(x, rounds):
    total = 0.0
    for _ in range(rounds):
        for j in range(x.shape[0]):
            total += x[j] * 1.0000001
    return total


@njit(nogil=True)
def no_barrier(sync, threads, steps, x, rounds):
    total = 0.0
    for _ in range(steps):
        total += _work(x, rounds)
    return total


@njit(nogil=True)
def futex_barrier(sync, threads, steps, x, rounds):
    total = 0.0
    for t in range(steps):
        total += _work(x, rounds)
        barrier.wait(sync, threads * (t + 1))
    return total


@njit(nogil=True)
def yield_barrier(sync, threads, steps, x, rounds):
    total = 0.0
    for t in range(steps):
        total += _work(x, rounds)
        _wait_yield(sync, threads * (t + 1))
    return total


VERSIONS = {"no barrier": no_barrier, "spin, then futex (barrier.wait)": futex_barrier,
            "spin, then sched_yield": yield_barrier}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--burners", default="0,1,2")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=20, help="work per step (rounds over 1000 numbers)")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    x = np.random.default_rng(0).random(1000)
    for version in VERSIONS.values():
        version(barrier.new_sync(), 1, 2, x, 1)  # compile
    start = time.perf_counter()
    no_barrier(barrier.new_sync(), 1, args.steps, x, args.rounds)
    alone = (time.perf_counter() - start) / args.steps * 1e6
    print(f"# one thread alone: {alone:.1f} us of work per step; two threads, {args.steps} steps, medians of "
          f"{args.repeats}")
    print("| burners | load (1 min) | " + " | ".join(VERSIONS) + " |")
    print("| --- | --- |" + " --- |" * len(VERSIONS))
    for burners in map(int, args.burners.split(",")):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
        try:
            time.sleep(0.3)
            times = {name: [] for name in VERSIONS}
            for _ in range(args.repeats):
                for name, version in VERSIONS.items():
                    sync = barrier.new_sync()
                    start = time.perf_counter()
                    other = threading.Thread(target=version, args=(sync, 2, args.steps, x, args.rounds))
                    other.start()
                    version(sync, 2, args.steps, x, args.rounds)
                    other.join()
                    times[name].append(time.perf_counter() - start)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        cells = " | ".join(f"{statistics.median(t) / args.steps * 1e6:.1f} us" for t in times.values())
        print(f"| {burners} | {os.getloadavg()[0]:.2f} | {cells} |")


if __name__ == "__main__":
    main()
