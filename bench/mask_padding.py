"""Keras parity vs ``--mask-padding``: time per epoch side by side, the work each does, and the evaluate metrics
of two trained runs, in one table.

    python -m bench.mask_padding --parity runs/parity-seed0 --masked runs/mask-seed0 \
        --out bench/results/mask-padding

Epochs are timed as ``minilstm.train`` runs them (``data.Batches``, ``train.evaluate``: every training step with
the RMSprop update, then validation), alternating parity / masked so that drifting machine load hits both alike;
the median of ``--repeats`` epochs each. "Row-steps" counts the LSTM cell evaluations of one epoch (rows x time
steps, encoder and decoder): the work the padding adds. The metrics come from ``minilstm.evaluate`` on each run's
``best/`` and ``final/`` checkpoints (both runs validate on the same 2,000 pairs).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.bench import cpu_name
from minilstm.backends import get_backend
from minilstm.checkpoint import load_checkpoint
from minilstm.data import Batches, Dataset, resolve_pairs, split_validation
from minilstm.evaluate import evaluate_pairs
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq
from minilstm.training import evaluate


class Mode:
    def __init__(self, name, dataset, backend, mask_padding, train_idx, val_idx, latent_dim=256):
        self.name = name
        self.backend = backend
        self.batches = Batches(dataset, backend, mask_padding)
        self.model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                             dataset.max_decoder_len, latent_dim=latent_dim, dtype="float32",
                             mask_padding=mask_padding).initialize(0)
        self.optimizer = RMSprop(backend, self.model.params.flat.size, self.model.dtype)
        self.train_idx = train_idx
        self.val_plan = self.batches.plan(val_idx, 256, None)
        self.rng = np.random.default_rng(0)

    def epoch(self) -> tuple[float, int, int]:
        """Seconds for one epoch, its training steps, and its row-steps (encoder + decoder, training only)."""
        plan = self.batches.plan(self.train_idx, 64, self.rng)
        row_steps = 0
        start = time.perf_counter()
        for batch in self.batches.epoch(plan):
            self.model.forward_backward(*batch.arrays, positions=batch.positions)
            self.optimizer.step(self.model.params.flat, self.model.grads.flat)
            row_steps += batch.arrays[0].shape[0] * (batch.arrays[0].shape[1] + batch.arrays[1].shape[1])
        evaluate(self.model, self.batches, self.val_plan)
        self.backend.synchronize()
        return time.perf_counter() - start, len(plan), row_steps


def full_file_steps(path: Path, backend, steps: int) -> dict:
    """Median seconds per training step on the whole file, parity (every batch padded to the file's 286 + 351
    steps) and masked (length buckets), over ``steps`` random batches each, interleaved; and each mode's number of
    steps per epoch. An estimate of a parity epoch there, which is too long to run whole on a small machine."""
    dataset = Dataset.from_pairs(resolve_pairs(path, None))
    train_idx, _ = split_validation(len(dataset))
    rng = np.random.default_rng(1)
    modes = {name: Mode(name, dataset, backend, mask, train_idx, train_idx[:1]) for name, mask in
             (("parity", False), ("mask-padding", True))}
    plans = {name: mode.batches.plan(train_idx, 64, rng) for name, mode in modes.items()}
    picks = {name: [plan[k] for k in rng.choice(len(plan), steps + 1, replace=False)] for name, plan in plans.items()}
    times = {name: [] for name in modes}
    for k in range(steps + 1):  # the first step of each mode warms up and is not counted
        for name, mode in modes.items():
            idx = picks[name][k]
            batch = next(mode.batches.epoch([idx]))
            start = time.perf_counter()
            mode.model.forward_backward(*batch.arrays, positions=batch.positions)
            mode.optimizer.step(mode.model.params.flat, mode.model.grads.flat)
            backend.synchronize()
            if k:
                times[name].append(time.perf_counter() - start)
    return {name: {"median_step_s": statistics.median(t), "steps_per_epoch": len(plans[name]), "n": len(t)}
            for name, t in times.items()}


def run_summary(run: Path) -> dict:
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = min(history, key=lambda h: h["val_loss"])
    minutes = sum(h["seconds"] for h in history) / 60
    return {"epochs": len(history), "best_epoch": best["epoch"], "train_minutes": minutes}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parity", type=Path, required=True, help="a run trained without --mask-padding")
    p.add_argument("--masked", type=Path, required=True, help="a run trained with --mask-padding")
    p.add_argument("--backend", default="numba")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-samples", type=int, default=10000, help="the runs' --num-samples (built-in data)")
    p.add_argument("--latent-dim", type=int, default=256, help="model size for the timed epochs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--full-data", type=Path, help="also time training steps on this whole file (fra.txt)")
    p.add_argument("--full-steps", type=int, default=10, help="random batches per mode for --full-data")
    args = p.parse_args(argv)
    backend = get_backend(args.backend)
    pairs = resolve_pairs(None, args.num_samples)
    dataset = Dataset.from_pairs(pairs)
    train_idx, val_idx = split_validation(len(dataset))
    modes = [Mode("parity", dataset, backend, False, train_idx, val_idx, args.latent_dim),
             Mode("mask-padding", dataset, backend, True, train_idx, val_idx, args.latent_dim)]
    for mode in modes:  # warm-up: compile and allocate outside the timing
        mode.model.forward_backward(*next(mode.batches.epoch([mode.val_plan[0][:64]])).arrays)
    timings = {m.name: [] for m in modes}
    work = {}
    for _ in range(args.repeats):
        for mode in modes:
            seconds, steps, row_steps = mode.epoch()
            timings[mode.name].append(seconds)
            work[mode.name] = (steps, row_steps)
            print(f"# {mode.name}: epoch {seconds:.2f} s, {steps} steps, {row_steps:,} row-steps", flush=True)

    val_pairs = [pairs[k] for k in val_idx]
    metrics = {}
    for mode, run in (("parity", args.parity), ("mask-padding", args.masked)):
        summary = run_summary(run)
        for which in ("best", "final"):
            model = load_checkpoint(run / which, backend=args.backend).model
            assert model.mask_padding == (mode == "mask-padding"), f"{run} is not a {mode} run"
            metrics[(mode, which)] = evaluate_pairs(model, val_pairs, pairs)[0] | summary

    full = full_file_steps(args.full_data, backend, args.full_steps) if args.full_data else None
    median = {name: statistics.median(t) for name, t in timings.items()}
    lines = [
        f"# Keras parity vs --mask-padding ({cpu_name()}, backend {args.backend}, float32, batch 64, latent "
        f"{args.latent_dim})",
        "",
        f"Measured by `python -m bench.mask_padding --parity {args.parity} --masked {args.masked}"
        + (f" --full-data {args.full_data}" if args.full_data else "") + f" --out {args.out}`"
        f" on {time.strftime('%Y-%m-%d')}.",
        "",
        f"| per epoch ({len(train_idx):,} training pairs + validation) | parity | --mask-padding | ratio |",
        "| --- | --- | --- | --- |",
        f"| time, median of {args.repeats} (interleaved) | {median['parity']:.2f} s | {median['mask-padding']:.2f} s |"
        f" {median['parity'] / median['mask-padding']:.2f}x faster |",
        f"| training steps | {work['parity'][0]} | {work['mask-padding'][0]} | |",
        f"| row-steps (LSTM cell evaluations, encoder + decoder) | {work['parity'][1]:,} | "
        f"{work['mask-padding'][1]:,} | {work['parity'][1] / work['mask-padding'][1]:.2f}x fewer |",
        "",
        f"Evaluate metrics (`python -m minilstm.evaluate`) on the same {len(val_idx):,} validation pairs; \"real "
        "characters\" "
        "excludes the padding after END, which only the parity run was trained to predict:",
        "",
        "| run | checkpoint | epoch | loss, real chars | accuracy, real chars | exact match | CER | chrF |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (mode, which), m in metrics.items():
        epoch = m["best_epoch"] if which == "best" else m["epochs"]
        chrf = "n/a" if m["chrf"] is None else f"{m['chrf']:.2f}"
        lines.append(f"| {mode} | {which} | {epoch} | {m['loss_real_characters']:.4f} | "
                     f"{m['accuracy_real_characters']:.4f} | {m['exact_match']:.4f} | "
                     f"{m['character_error_rate']:.4f} | {chrf} |")
    if full:
        p_, m_ = full["parity"], full["mask-padding"]
        lines += ["", f"The whole file ({args.full_data}, training part, batch 64): median of {p_['n']} random "
                  "training steps each, interleaved; an epoch estimated as steps x median:", "",
                  "| whole file | parity | --mask-padding | ratio |", "| --- | --- | --- | --- |",
                  f"| training step, median | {p_['median_step_s'] * 1e3:.0f} ms | {m_['median_step_s'] * 1e3:.0f} ms "
                  f"| {p_['median_step_s'] / m_['median_step_s']:.1f}x |",
                  f"| steps per epoch | {p_['steps_per_epoch']} | {m_['steps_per_epoch']} | |",
                  f"| epoch (estimate, training only) | {p_['median_step_s'] * p_['steps_per_epoch'] / 60:.0f} min "
                  f"| {m_['median_step_s'] * m_['steps_per_epoch'] / 60:.1f} min | |"]
    lines += ["", "Whole runs (from their history.jsonl, wall time while the machine did other work too): "
              + "; ".join(f"{mode} {metrics[(mode, 'final')]['epochs']} epochs in "
                          f"{metrics[(mode, 'final')]['train_minutes']:.1f} min"
                          for mode in ("parity", "mask-padding")), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps(
        {"epoch_seconds": timings, "work": work, "full_file": full,
         "metrics": {f"{mode}/{which}": m for (mode, which), m in metrics.items()}}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
