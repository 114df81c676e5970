"""Draw minilstm's training curves against the Keras example's published log, and summarise them.

    python -m bench.parity_plot bench/results/parity/seed0/history.jsonl bench/results/parity/seed1/history.jsonl \\
        --reference bench/results/parity/keras_reference_log.csv --out bench/results/parity/parity.png

Prints, per run and for the reference: best val_accuracy (and its epoch), lowest val_loss (and its epoch), and the
last epoch's loss and accuracy, as a markdown table.
"""

import argparse
import csv
import json
from pathlib import Path


def summary(rows: list[dict]) -> dict:
    best_acc = max(rows, key=lambda r: r["val_accuracy"])
    best_loss = min(rows, key=lambda r: r["val_loss"])
    last = rows[-1]
    return {"best_val_accuracy": best_acc["val_accuracy"], "best_val_accuracy_epoch": best_acc["epoch"],
            "lowest_val_loss": best_loss["val_loss"], "lowest_val_loss_epoch": best_loss["epoch"],
            "last_epoch": last["epoch"], "last_loss": last["loss"], "last_accuracy": last["accuracy"],
            "last_val_accuracy": last["val_accuracy"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("histories", nargs="+", type=Path)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    with open(args.reference, newline="") as f:
        reference = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    runs = {h.parent.name: [json.loads(line) for line in h.read_text().splitlines()] for h in args.histories}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = [r["epoch"] for r in reference]
        ax.plot(epochs, [r[metric] for r in reference], "k-", lw=2, alpha=0.5, label=f"Keras example {metric}")
        ax.plot(epochs, [r[f"val_{metric}"] for r in reference], "k--", lw=2, alpha=0.5,
                label=f"Keras example val_{metric}")
        for name, rows in runs.items():
            epochs = [r["epoch"] for r in rows]
            ax.plot(epochs, [r[metric] for r in rows], lw=1, label=f"minilstm {name} {metric}")
            ax.plot(epochs, [r[f"val_{metric}"] for r in rows], lw=1, ls="--", label=f"minilstm {name} val_{metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)

    print("| run | best val_accuracy (epoch) | lowest val_loss (epoch) | epoch | loss | accuracy | val_accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in [("Keras example (published)", reference), *runs.items()]:
        s = summary(rows)
        print(f"| {name} | {s['best_val_accuracy']:.4f} ({s['best_val_accuracy_epoch']}) | "
              f"{s['lowest_val_loss']:.4f} ({s['lowest_val_loss_epoch']}) | {s['last_epoch']} | {s['last_loss']:.4f} | "
              f"{s['last_accuracy']:.4f} | {s['last_val_accuracy']:.4f} |")


if __name__ == "__main__":
    main()
