"""Training that survives being killed: SIGKILL at random moments (and inside checkpoint writes) then --resume
ends bit-identical to an uninterrupted run; SIGINT checkpoints and exits 130; NaN keeps the last checkpoint."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minilstm.checkpoint import load_checkpoint
from minilstm.errors import MinilstmError

REPO = Path(__file__).resolve().parents[1]
RUN = ["--num-samples", "2000", "--epochs", "3", "--batch-size", "32", "--latent-dim", "128", "--num-decodes", "2",
       "--learning-rate", "0.003", "--seed", "7", "--progress", "never"]


def start(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "minilstm.train", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(checkpoint_dir):
    return {k: v.tobytes() for k, v in load_checkpoint(checkpoint_dir).model.get_weights().items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    proc = start(*RUN, "--out", out)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return out


def has_checkpoint(out: Path) -> bool:
    return (out / "latest").exists() or any(out.glob(".latest.old-*"))


@pytest.mark.slow
def test_killed_at_random_moments_resumes_bit_identical(reference, tmp_path):
    ref_out = reference
    out = tmp_path / "run"
    rng = random.Random(1234)
    history_lines = (ref_out / "history.jsonl").read_text().splitlines()
    train_seconds = sum(json.loads(line)["seconds"] for line in history_lines)  # the reference run's epochs
    kills = during_write = resumes = 0
    for attempt in range(24):  # kill attempts; each resumes from what the previous one left
        if kills >= 6 and resumes >= 3:
            break
        resuming = has_checkpoint(out)
        resumes += resuming
        (out / "history.jsonl").unlink(missing_ok=True)  # rewritten when training starts: our start signal
        proc = start(*(["--resume", out] if resuming else [*RUN, "--out", out]), "--checkpoint-every", 2)
        if attempt % 2 == 0:
            # Kill inside a checkpoint write: the moment its temporary directory appears.
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if any(out.glob(".latest.tmp-*")) or any(out.glob(".best.tmp-*")):
                    proc.kill()
                    break
                time.sleep(0.0005)
        else:
            deadline = time.monotonic() + 60
            while not (out / "history.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            # Anywhere in training (a step, validation, a write), but within a quarter of the whole training time,
            # so that the run cannot finish before it was killed enough times, however fast the machine is.
            time.sleep(rng.uniform(0.0, 0.25 * train_seconds))
            proc.kill()
        _, stderr = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, stderr
        kills += 1
        during_write += attempt % 2 == 0
    if proc.returncode != 0:
        proc = start(*(["--resume", out] if has_checkpoint(out) else [*RUN, "--out", out]))
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert kills >= 6 and during_write >= 3 and resumes >= 3, (kills, during_write, resumes)
    assert weights(out / "final") == weights(ref_out / "final")
    assert (out / "history.jsonl").read_text().count("\n") == 3
    ref_history = [line.split('"seconds"')[0] for line in (ref_out / "history.jsonl").read_text().splitlines()]
    history = [line.split('"seconds"')[0] for line in (out / "history.jsonl").read_text().splitlines()]
    assert history == ref_history, "the resumed run's losses differ"
    assert not list(out.glob(".*.tmp-*")) and not list(out.glob(".*.old-*")), "leftovers"


def test_sigint_checkpoints_exits_130_and_resumes_identically(reference, tmp_path):
    ref_out = reference
    out = tmp_path / "run"
    proc = start(*RUN, "--out", out)
    deadline = time.monotonic() + 120
    while not (out / "latest").exists() and time.monotonic() < deadline:  # first epoch done
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and f"--resume {out}" in stderr
    resumed = start("--resume", out)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert weights(out / "final") == weights(ref_out / "final")


def test_sigterm_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = start(*RUN, "--out", out, "--epochs", "50")
    deadline = time.monotonic() + 120
    while not (out / "latest").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert load_checkpoint(out / "latest").config["training"]["progress"]["epoch"] >= 1


@pytest.mark.slow
def test_resume_refuses_contradicting_flags_and_extends_epochs(reference, tmp_path):
    ref_out = reference
    out = tmp_path / "copy"
    proc = start(*RUN, "--out", out, "--epochs", "1")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    bad = start("--resume", out, "--batch-size", "16")
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "--batch-size 16 contradicts" in stderr and "Traceback" not in stderr
    missing = start("--resume", tmp_path / "nowhere")
    _, stderr = missing.communicate(timeout=120)
    assert missing.returncode == 2 and "Traceback" not in stderr
    more = start("--resume", out, "--epochs", "3")  # same total as the reference: same weights
    _, stderr = more.communicate(timeout=300)
    assert more.returncode == 0, stderr
    assert weights(out / "final") == weights(ref_out / "final")


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = start("--num-samples", "128", "--epochs", "2", "--batch-size", "32", "--latent-dim", "8",
                 "--learning-rate", "1e38", "--checkpoint-every", "1", "--out", out)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "diverged" in stderr and "Traceback" not in stderr
    checkpoint = load_checkpoint(out / "latest")
    assert all(np.isfinite(w).all() for w in checkpoint.model.get_weights().values())


def resume_in_pieces(tmp_path, run, before_last=None) -> Path:
    """``run`` for 2 epochs at once into tmp_path/whole, and in pieces into tmp_path/pieces: 1 epoch, then --resume
    SIGKILLed inside the second epoch (after a --checkpoint-every checkpoint), then ``before_last(out)`` if given,
    then --resume to the end. Returns the pieces' run directory."""
    whole = start(*run, "--epochs", "2", "--out", tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    out = tmp_path / "pieces"
    first = start(*run, "--epochs", "1", "--out", out)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    second = start("--resume", out, "--epochs", "2", "--checkpoint-every", "5")
    deadline = time.monotonic() + 120

    def latest_step():
        try:  # the running process may be swapping latest/ for a new one right now: then ask again
            return load_checkpoint(out / "latest").config["training"]["progress"]["step"]
        except MinilstmError:
            return 0

    while latest_step() == 0 and time.monotonic() < deadline and second.poll() is None:
        time.sleep(0.005)
    second.kill()
    second.wait()
    state = load_checkpoint(out / "latest").config["training"]["progress"]
    assert state["epoch"] == 1 and state["step"] > 0, state  # killed inside the second epoch
    if before_last is not None:
        before_last(out)
    last = start("--resume", out)
    assert last.wait(timeout=300) == 0, last.stderr.read()
    return out


@pytest.mark.slow
def test_mask_padding_run_resumes_bit_identical(tmp_path):
    """The length-bucketed epochs are drawn from the stored generator state too: 1 epoch + --resume to 2 epochs
    (with a checkpoint inside the second epoch, from which a SIGKILLed run resumes) == 2 epochs at once."""
    masked = ["--num-samples", "600", "--batch-size", "32", "--latent-dim", "32", "--num-decodes", "0",
              "--seed", "3", "--progress", "never", "--mask-padding"]
    out = resume_in_pieces(tmp_path, masked)
    assert weights(out / "final") == weights(tmp_path / "whole" / "final")


@pytest.mark.parametrize("optimizer", [["--optimizer", "adam", "--beta-1", "0.8", "--clip-norm", "0.1"],
                                       ["--optimizer", "sgd", "--momentum", "0.9", "--clip-norm", "0.1"]],
                         ids=["adam", "sgd"])
@pytest.mark.slow
def test_adam_and_sgd_runs_resume_bit_identical(tmp_path, optimizer):
    """Every optimizer's whole state goes through a checkpoint (Adam's m and v and its step count, which its bias
    correction needs; SGD's momentum), and so does clipping: 1 epoch, then --resume killed inside the second epoch
    (after a --checkpoint-every checkpoint), then --resume to the end == 2 epochs at once, to the byte. The
    checkpoint names the optimizer; a contradicting --optimizer is refused."""
    run = ["--num-samples", "2000", "--batch-size", "32", "--latent-dim", "16", "--num-decodes", "0", "--seed", "4",
           "--progress", "never", *optimizer]
    def refuse_another_optimizer(out):
        wrong = start("--resume", out, "--optimizer", "rmsprop")
        _, stderr = wrong.communicate(timeout=120)
        assert wrong.returncode == 2 and "--optimizer rmsprop contradicts" in stderr, stderr

    out = resume_in_pieces(tmp_path, run, before_last=refuse_another_optimizer)
    assert weights(out / "final") == weights(tmp_path / "whole" / "final")
    final = load_checkpoint(out / "final")
    assert final.config["optimizer"]["name"] == optimizer[1] and final.config["optimizer"]["clip_norm"] == 0.1
    assert final.config["optimizer"]["iterations"] == 2 * 50  # 1600 training pairs, batch 32
    assert set(final.optimizer_state) == {"adam": {"m", "v"}, "sgd": {"momentum"}}[optimizer[1]]
