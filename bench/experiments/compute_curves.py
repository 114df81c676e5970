"""Held-out loss and chrF of the three equal-time-best runs against compute rather than wall time.

    python -m bench.experiments.compute_curves

The runs shared the 2-core machine unevenly (plain and best side by side with a test run, the control mostly
alone, and side by side a MINILSTM_THREADS=1 run still ran its BLAS on both cores before fbcd32f), so wall time is
no common axis. Compute here is steps x the model's own cost of one training step, measured one model at a time on
one core with nothing else running (bench/experiments/equal-time-best/rate.sh -> rate-one-core.txt), in minutes of
that core. Loss: the whole held-out split at each epoch's end (longer/history-*.jsonl, the runs resumed by
equal-time-best/longer.sh; history-control.jsonl; 2,187 steps an epoch). chrF: the evaluate reports of the snapshots
whose step counts snapshot-steps.json records. Reads and writes (compute-curves.png, compute-curves.txt) in
bench/results/attention/equal-time-best/.
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "results" / "attention" / "equal-time-best"  # inputs and outputs
STEPS_PER_EPOCH = 2187  # 133,704 training pairs in length-sorted batches of 64 (every checkpoint's iterations agree)
NAMES = {"plain": "no attention (1 layer)", "control": "bidirectional 2 x 128, no attention",
         "best": "bidirectional 2 x 128 + general attention"}


def main():
    rates = (re.match(r"(?P<name>\w+): .*: (?P<ms>[\d.]+) ms/step", line) for line in open(HERE / "rate-one-core.txt"))
    ms = {m["name"]: float(m["ms"]) for m in rates if m}
    steps = json.loads((HERE / "snapshot-steps.json").read_text())
    minutes = {name: (lambda n, name=name: n * ms[name] / 60000) for name in NAMES}
    lines = ["model | compute (one-core minutes) | steps | held-out chrF | chrF 1-3 / 4-6 / 7-10 / 11+ words"]
    chrf = {}
    for name in NAMES:
        for report, n in sorted(steps[name].items(), key=lambda kv: kv[1]):
            metrics = json.loads((HERE / report).read_text())["metrics"]
            buckets = " / ".join(f"{metrics['length_buckets'][b]['chrf']:.1f}" for b in ("1-3", "4-6", "7-10", "11+"))
            chrf.setdefault(name, []).append((minutes[name](n), metrics["chrf"]))
            lines.append(f"{name} | {minutes[name](n):.1f} | {n} | {metrics['chrf']:.2f} | {buckets}")
    (HERE / "compute-curves.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in NAMES.items():
        path = HERE / "longer" / f"history-{name}.jsonl"
        history = [json.loads(line) for line in open(path if path.exists() else HERE / f"history-{name}.jsonl")]
        left.plot([minutes[name](r["epoch"] * STEPS_PER_EPOCH) for r in history], [r["val_loss"] for r in history],
                  marker=".", label=label)
        right.plot([x for x, _ in chrf[name]], [y for _, y in chrf[name]], marker="o", label=label)
    left.set_ylabel("held-out loss (real characters), each epoch's end")
    right.set_ylabel("held-out chrF (greedy, all 33,426 pairs)")
    for ax in (left, right):
        ax.set_xlabel("compute: steps x own step cost (minutes of one quiet core)")
        ax.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    fig.savefig(HERE / "compute-curves.png", dpi=100)
    print(f"wrote {HERE / 'compute-curves.png'} and {HERE / 'compute-curves.txt'}")


if __name__ == "__main__":
    main()
