"""The seq2seq model with a stacked or bidirectional encoder against the example's one-layer model: the same data,
seed and settings, each trained with ``minilstm.train`` and its best checkpoint scored by ``minilstm.evaluate``
(held-out real-character loss and accuracy, exact matches, CER, chrF), plus its time per epoch.

    python -m bench.architectures --out bench/results/architectures/10k --epochs 40 --patience 5
    python -m bench.architectures --out bench/results/architectures/whole-file --data ../shared/data/fra-eng/fra.txt \\
        --num-samples all --mask-padding --epochs 2

Writes, per model, its ``history.jsonl`` and ``evaluate-best.json``, and ``summary.md``, ``summary.json`` and
``curves.png`` (validation loss per epoch) for all of them. The runs themselves go to a temporary directory.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_model

MODELS = {
    "one-layer": [],
    "two-layer": ["--encoder-layers", "2", "--decoder-layers", "2", "--dropout", "0.2"],
    "bidirectional": ["--bidirectional-encoder"],
}


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)




def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--num-samples", default="10000")
    p.add_argument("--mask-padding", action="store_true")
    p.add_argument("--backend", default="numba")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--epochs", str(args.epochs), "--num-samples", args.num_samples, "--backend", args.backend,
              "--num-decodes", "0", "--progress", "never"]
    common += ["--data", str(args.data)] if args.data else []
    common += ["--mask-padding"] if args.mask_padding else []
    common += ["--patience", str(args.patience)] if args.patience else []
    summary = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": os.getloadavg(), "models": {}}
    with tempfile.TemporaryDirectory(prefix="architectures-") as scratch:
        for name in args.models.split(","):
            run_dir = Path(scratch) / name
            train = [sys.executable, "-m", "minilstm.train", *common, *MODELS[name], "--out", str(run_dir)]
            started = time.perf_counter()
            run(train)
            wall = time.perf_counter() - started
            evaluate_json = args.out / f"{name}-evaluate-best.json"
            # No --data: evaluate reads the checkpoint's own data and split and scores its held-out pairs (given
            # --data it would score every pair of that file, the training pairs too).
            evaluate = [sys.executable, "-m", "minilstm.evaluate", str(run_dir / "best"), "--json", str(evaluate_json)]
            run(evaluate)
            shutil.copy(run_dir / "history.jsonl", args.out / f"{name}-history.jsonl")
            history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
            metrics = json.loads(evaluate_json.read_text())
            best = min(history, key=lambda h: h["val_loss"])
            summary["models"][name] = {
                "flags": MODELS[name], "command": " ".join(["python", *train[1:-1], f"runs/{name}"]),
                "epochs_run": len(history),
                "best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "best_val_accuracy":
                best["val_accuracy"], "median_epoch_s": statistics.median(h["seconds"] for h in history),
                "wall_s": wall, "evaluate": metrics.get("metrics", metrics)}
    summary["load_after"] = os.getloadavg()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_summary(args, summary)
    plot(args.out, summary)
    return 0


def write_summary(args, summary):
    rows = ["| model | epochs (best) | val_loss | val_acc | eval: real-char loss | real-char acc | exact | CER | chrF "
            "| s/epoch (median) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in summary["models"].items():
        e = m["evaluate"]

        def get(key, fmt="{:.4f}", e=e):
            return fmt.format(e[key]) if e.get(key) is not None else "-"

        cells = [f"{m['epochs_run']} ({m['best_epoch']})", f"{m['best_val_loss']:.4f}", f"{m['best_val_accuracy']:.4f}",
                 get("loss_real_characters"), get("accuracy_real_characters"), get("exact_match"),
                 get("character_error_rate"), get("chrf", "{:.2f}"), f"{m['median_epoch_s']:.1f}"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    text = [f"# Architectures: {args.num_samples} pairs{' (--mask-padding)' if args.mask_padding else ''}", "",
            f"CPU: {summary['cpu']}, {summary['cores']} cores; load average before {summary['load_before']}, after "
            f"{summary['load_after']}.", "", *rows, ""]
    text += [f"- {name}: `{m['command']}`" for name, m in summary["models"].items()]
    (args.out / "summary.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def plot(out: Path, summary):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in summary["models"]:
        history = [json.loads(line) for line in (out / f"{name}-history.jsonl").read_text().splitlines()]
        ax.plot([h["epoch"] for h in history], [h["val_loss"] for h in history], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
