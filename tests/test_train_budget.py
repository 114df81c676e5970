"""Training by wall time: --max-minutes stops mid-epoch with latest/ written and exit 0, and --resume then ends
bit-identical to an uninterrupted run; --snapshot-minutes leaves loadable snapshots, listed in order."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilstm import training
from minilstm.checkpoint import load_checkpoint
from minilstm.training import TrainingClock

REPO = Path(__file__).resolve().parents[1]
# An epoch of 200 steps of the example's model: seconds, far longer than the 1.2 s budget below on any machine.
RUN = ["--num-samples", "8000", "--epochs", "1", "--batch-size", "32", "--num-decodes", "0", "--seed", "7",
       "--progress", "never"]


def train(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minilstm.train", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def weights(checkpoint_dir):
    return {k: v.tobytes() for k, v in load_checkpoint(checkpoint_dir).model.get_weights().items()}


def test_clock_budget_and_snapshot_marks(monkeypatch):
    """The budget counts this process's time; the snapshot marks the run's, from where a resumed run stopped."""
    now = [100.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: now[0])
    clock = TrainingClock(max_minutes=1.0, snapshot_minutes=0.25, earlier_seconds=20.0)  # resumed after 20 s
    clock.start()
    now[0] += 5  # 25 s of the run: the 15 s mark was the stopped process's
    assert clock.snapshot_due() is None and not clock.out_of_time()
    now[0] += 5  # 30 s: the 0.5-minute mark
    assert clock.snapshot_due() == 0.5 and clock.snapshot_due() is None
    now[0] += 40  # 70 s: the 0.75 and 1-minute marks passed in one step: one snapshot, at the later
    assert clock.snapshot_due() == 1.0 and not clock.out_of_time()
    now[0] += 10  # this process's 60 s
    assert clock.out_of_time() and clock.run_seconds() == 80.0


def test_a_mark_on_an_epochs_last_step_records_the_epoch_as_done(tmp_path, monkeypatch):
    """A snapshot mark that falls on an epoch's last step stands for the end-of-training snapshot, which is then
    skipped as the same step: it records the epoch as done (step 0 of the next), as that one would."""
    from minilstm.train import main

    steps = 20  # 640 training pairs in batches of 32
    calls = []

    def due(clock):
        calls.append(1)
        return 0.5 if len(calls) == steps else None

    monkeypatch.setattr(TrainingClock, "snapshot_due", due)
    out = tmp_path / "run"
    old_errors = np.geterr()  # train.main sets NumPy's error handling for its process
    try:
        status = main(["--num-samples", "800", "--epochs", "1", "--batch-size", "32", "--latent-dim", "8",
                 "--backend", "numpy", "--snapshot-minutes", "1", "--num-decodes", "0", "--progress", "never",
                       "--out", str(out)])
    finally:
        np.seterr(**old_errors)
    assert status == 0
    assert len(calls) == steps  # asked once a step
    snapshots = json.loads((out / "snapshots.json").read_text())
    assert [(s["mark"], s["epoch"], s["step_in_epoch"], s["step"]) for s in snapshots] == [(0.5, 1, 0, steps)]
    assert weights(out / snapshots[0]["path"]) == weights(out / "final")


def test_train_refuses_a_budget_of_zero():
    result = train("--max-minutes", "0", "--out", "unused")
    assert result.returncode == 2 and "--max-minutes" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_time_budget_stops_mid_epoch_and_resumes_bit_identical(tmp_path):
    whole = tmp_path / "whole"
    result = train(*RUN, "--snapshot-minutes", "0.005", "--out", whole)  # a snapshot every 0.3 s
    assert result.returncode == 0, result.stderr
    snapshots = json.loads((whole / "snapshots.json").read_text())
    assert len(snapshots) >= 3, snapshots
    minutes = [s["minutes"] for s in snapshots]
    assert minutes == sorted(minutes) and len(set(s["path"] for s in snapshots)) == len(snapshots)
    assert all(s["mark"] is not None and s["mark"] <= s["minutes"] for s in snapshots[:-1])
    # the last is where training ended: unmarked, or the mark that its last step happened to cross
    assert snapshots[-1]["mark"] is None or snapshots[-1]["mark"] <= snapshots[-1]["minutes"]
    assert snapshots[-1]["step"] == 200 and snapshots[-1]["epoch"] == 1
    for record in snapshots:
        snapshot = load_checkpoint(whole / record["path"])
        assert snapshot.optimizer_state is None and snapshot.config["snapshot"]["step"] == record["step"]
    assert weights(whole / snapshots[-1]["path"]) == weights(whole / "final")

    out = tmp_path / "pieces"
    result = train(*RUN, "--max-minutes", "0.02", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Time budget: stopped at epoch 1, step" in result.stdout and "Traceback" not in result.stderr
    progress = load_checkpoint(out / "latest").config["training"]["progress"]
    assert progress["epoch"] == 0 and 0 < progress["step"] < 200, progress  # mid-epoch
    assert progress["train_seconds"] > 1.0  # the budget, give or take the last step's end
    assert not (out / "final").exists()
    assert load_checkpoint(out / "latest").config["training"]["args"]["max_minutes"] == 0.02
    result = train("--resume", out, "--max-minutes", "60")  # a budget of its own, counted afresh
    assert result.returncode == 0, result.stderr
    assert weights(out / "final") == weights(whole / "final")
