"""Training-step times by position after a pause: how long minilstm (numba) and PyTorch take to get back to their
steady speed once their threads have slept (what bench.py's ``--settle`` and ``--turn-warmup`` are about).

    python -m bench.after_pause --batch 1 --latent 512 --steps 40

Each round sleeps ``--pause`` seconds before each contestant's turn of ``--steps`` timed steps, like bench.py's
interleaving; printed: the median over rounds of the time of the k-th step of a turn, k = 1, 2, ...
"""

import argparse
import time

import numpy as np

from bench.bench import MinilstmContestant, TorchContestant
from minilstm.backends.blas import cpu_count
from minilstm.data import Dataset, resolve_pairs, split_validation


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--latent", type=int, default=256)
    p.add_argument("--steps", type=int, default=6, help="timed steps per turn")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--pause", type=float, default=0.2)
    args = p.parse_args(argv)
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    train_idx, _ = split_validation(len(dataset))
    contestants = [MinilstmContestant("numba", dataset, args.latent, "float32"),
                   TorchContestant("cpu", dataset, args.latent, "float32", cpu_count())]
    rng = np.random.default_rng(0)
    for c in contestants:
        for _ in range(5):
            c.train_step(c.prepare(rng.choice(train_idx, args.batch, replace=False)))
    times = {c.name: [] for c in contestants}
    for _ in range(args.rounds):
        for c in contestants:
            time.sleep(args.pause)
            turn = []
            for _ in range(args.steps):
                batch = c.prepare(rng.choice(train_idx, args.batch, replace=False))
                start = time.perf_counter()
                c.train_step(batch)
                c.synchronize()
                turn.append(time.perf_counter() - start)
            times[c.name].append(turn)
    print(f"# batch {args.batch}, latent {args.latent}, pause {args.pause} s, {args.rounds} rounds; ms by position "
          "in the turn (median over rounds)")
    for name, turns in times.items():
        print(name, " ".join(f"{t:.1f}" for t in np.median(np.array(turns) * 1e3, axis=0)))


if __name__ == "__main__":
    main()
