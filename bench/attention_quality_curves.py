"""Held-out loss against training wall time for runs started together (the attention quality runs).

    python -m bench.attention_quality_curves RUN_DIR... --minutes 20,40,60 --out bench/results/attention/DIR

Each RUN_DIR holds ``at-20min/`` ... (copies of ``latest/`` taken while the runs trained) and ``latest/`` (where the
run stopped). Every checkpoint is scored on the same held-out pairs: every ``--val-stride``-th of the run's
256-row validation batches (real characters only, as ``--mask-padding`` training reports it). Writes curves.json
and curves.png (one line per run).
"""

import argparse
import json
from pathlib import Path

from minilstm.backends import get_backend
from minilstm.checkpoint import load_checkpoint
from minilstm.data import Batches
from minilstm.train import build_parser
from minilstm.training import evaluate, training_data


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--minutes", default="20,40,60", help="the at-Nmin snapshots to score")
    p.add_argument("--final-minutes", type=float, required=True, help="when latest/ was written (the stop)")
    p.add_argument("--val-stride", type=int, default=4)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    backend = get_backend("numba")
    data_cache = {}
    results = {}
    for run in a.runs:
        points = [(float(m), run / f"at-{m}min") for m in a.minutes.split(",")] + [(a.final_minutes, run / "latest")]
        rows = []
        for minutes, path in points:
            checkpoint = load_checkpoint(path, backend=backend)
            record = checkpoint.config["training"]["args"]
            key = (record["data"], record["num_samples"], record["validation_split"],
                   record.get("validation_split_mode"), record["seed"])
            if key not in data_cache:
                args = build_parser().parse_args(["--data", str(record["data"]), "--num-samples",
                                                  str(record["num_samples"] or "all"), "--mask-padding",
                                                  "--validation-split", str(record["validation_split"]),
                                                  "--validation-split-mode", record.get("validation_split_mode",
                                                                                        "last"),
                                                  "--seed", str(record["seed"])])
                data_cache[key] = training_data(args)
            dataset, _, val_idx = data_cache[key]
            batches = Batches(dataset, backend, True)
            plan = batches.plan(val_idx, 256, None)[:: a.val_stride]
            loss, accuracy = evaluate(checkpoint.model, batches, plan)
            progress = checkpoint.config["training"]["progress"]
            rows.append({"minutes": minutes, "epoch": progress["epoch"], "step_in_epoch": progress["step"],
                         "held_out_loss": loss, "held_out_accuracy": accuracy})
            print(f"{run.name} {minutes:5.1f} min: epoch {progress['epoch']} step {progress['step']}, held-out loss "
                  f"{loss:.4f}, accuracy {accuracy:.4f}", flush=True)
        results[run.name] = {"points": rows, "val_pairs": int(sum(map(len, plan)))}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "curves.json").write_text(json.dumps(results, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, result in results.items():
        ax.plot([r["minutes"] for r in result["points"]], [r["held_out_loss"] for r in result["points"]],
                marker="o", label=name)
    ax.set_xlabel("training wall time (minutes, one thread each, runs side by side)")
    ax.set_ylabel("held-out loss (real characters)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "curves.png", dpi=110)
    print(f"wrote {a.out / 'curves.json'} and {a.out / 'curves.png'}")


if __name__ == "__main__":
    main()
