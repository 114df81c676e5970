"""The training recipe's flags end to end (--lr-schedule, --warmup-steps, --min-learning-rate, --plateau-*,
--label-smoothing, --init, --embedding-dropout, --output-dropout): how they are checked, what the run records, and a
run stopped at a chosen step (inside the warm-up) and resumed ending with the weights of a run never stopped, to the
bit. Runs are in-process and tiny; the stop is the one Ctrl-C makes (a checkpoint of latest/ after the step), asked
for after exactly k steps."""

import json
import math
import signal

import numpy as np
import pytest

from minilstm import training
from minilstm.checkpoint import load_checkpoint
from minilstm.distributed import SINGLE_PROCESS
from minilstm.errors import MinilstmError
from minilstm.train import parse_args

TINY = ["--num-samples", "200", "--batch-size", "16", "--latent-dim", "8", "--num-decodes", "0", "--progress",
        "never", "--seed", "5", "--epochs", "2"]  # 160 training pairs: 10 steps an epoch


class StopAfter:
    """Stands in for ``training.StopSignals``: reports a SIGINT once training has asked ``steps`` times (it asks
    after every step)."""

    def __init__(self, steps):
        self.steps, self.asked = steps, 0

    def __call__(self, announce=True):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def received(self):
        self.asked += 1
        return signal.SIGINT if self.asked >= self.steps else None


def train(argv, monkeypatch=None, stop_after=None) -> int:
    if stop_after is not None:
        monkeypatch.setattr(training, "StopSignals", StopAfter(stop_after))
    args, resumed = parse_args([str(a) for a in argv])
    code = training.Training(args, resumed, SINGLE_PROCESS).run()
    if monkeypatch is not None:
        monkeypatch.undo()
    return code


def weights(checkpoint_dir):
    return {k: v.tobytes() for k, v in load_checkpoint(checkpoint_dir).model.get_weights().items()}


def history(out):
    """The history without its timings (the only numbers that are never reproducible)."""
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in h.items() if k not in ("seconds", "ms_per_step", "peak_memory_mib")} for h in lines]


RECIPES = {  # flags, the step to stop after, and what the checkpoint there shows
    "sgd-cosine": (["--optimizer", "sgd", "--momentum", "0.9", "--learning-rate", "0.1", "--lr-schedule", "cosine",
                    "--warmup-steps", "15", "--min-learning-rate", "1e-4"], 13,
                   lambda schedule: schedule["state"]["step"] < schedule["warmup_steps"]),  # epoch 2, warming up
    "rmsprop-inverse-sqrt-smoothing": (["--lr-schedule", "inverse-sqrt", "--warmup-steps", "6",
                                        "--label-smoothing", "0.1"], 4,
                                       lambda schedule: schedule["state"]["step"] < schedule["warmup_steps"]),
    "adam-pytorch-init-dropouts": (["--optimizer", "adam", "--init", "pytorch", "--embedding-dim", "6",
                                    "--embedding-dropout", "0.2", "--output-dropout", "0.3", "--attention", "general",
                                    "--no-input-feed", "--mask-padding", "--lr-schedule", "inverse-sqrt",
                                    "--warmup-steps", "8"], 5,
                                   lambda schedule: schedule["state"]["step"] < schedule["warmup_steps"]),
    # 32 training pairs, 4 steps an epoch: val_loss rises after epoch 7, so the rate is cut before the stop
    "adam-plateau": (["--num-samples", "40", "--batch-size", "8", "--latent-dim", "32", "--epochs", "9",
                      "--optimizer", "adam", "--learning-rate", "0.05", "--lr-schedule", "plateau",
                      "--plateau-patience", "1", "--plateau-factor", "0.3", "--warmup-steps", "4"], 30,
                     lambda schedule: schedule["state"]["scale"] == 0.3),
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_stopped_and_resumed_is_bit_identical(tmp_path, monkeypatch, recipe):
    """Inside the warm-up (cosine, inverse-sqrt), and after a plateau cut, mid-epoch."""
    flags, stop, expected = RECIPES[recipe]
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert train([*TINY, *flags, "--out", whole]) == 0
    assert train([*TINY, *flags, "--out", pieces], monkeypatch, stop_after=stop) == 130
    latest = load_checkpoint(pieces / "latest").config
    schedule = latest["optimizer"]["schedule"]
    assert latest["optimizer"]["iterations"] == stop == schedule["state"]["step"] and expected(schedule), schedule
    assert latest["training"]["progress"]["step"] > 0  # inside an epoch
    assert train(["--resume", pieces]) == 0
    assert weights(pieces / "final") == weights(whole / "final")
    assert history(pieces) == history(whole)
    final = load_checkpoint(whole / "final").config
    assert final["optimizer"]["schedule"]["state"] == load_checkpoint(pieces / "final").config["optimizer"][
        "schedule"]["state"]


def test_the_history_records_the_scheduled_rate(tmp_path):
    out = tmp_path / "run"
    assert train([*TINY, *RECIPES["sgd-cosine"][0], "--epochs", "3", "--out", out]) == 0
    rates = [h["learning_rate"] for h in history(out)]
    total, warmup = 30, 15
    assert rates[0] == pytest.approx(0.1 * 10 / warmup, rel=1e-14)  # step 10, inside the warm-up
    p = (20 - 1 - warmup) / (total - warmup)
    assert rates[1] == pytest.approx(1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi * p)) / 2, rel=1e-13)
    assert rates[2] == pytest.approx(1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi * 14 / 15)) / 2, rel=1e-13)
    args = load_checkpoint(out / "final").config["training"]["args"]
    assert (args["lr_schedule"], args["warmup_steps"], args["min_learning_rate"]) == ("cosine", 15, 1e-4)
    assert load_checkpoint(out / "final").config["optimizer"]["schedule"]["total_steps"] == total


def test_defaults_record_a_constant_rate_and_no_smoothing(tmp_path):
    out = tmp_path / "run"
    assert train([*TINY, "--epochs", "1", "--out", out]) == 0
    assert history(out)[0]["learning_rate"] == 0.001
    config = load_checkpoint(out / "final").config
    assert config["training"]["args"]["label_smoothing"] == 0.0
    assert config["optimizer"]["schedule"]["name"] == "constant"


def test_label_smoothing_trains_and_validates_with_the_plain_loss(tmp_path):
    """The training loss is the smoothed one (what is minimised); val_loss stays the plain cross-entropy, so that
    best/, --patience and plateau compare like with like: evaluating best/ gives the logged val_loss."""
    plain, smooth = tmp_path / "plain", tmp_path / "smooth"
    assert train([*TINY, "--epochs", "1", "--out", plain]) == 0
    assert train([*TINY, "--epochs", "1", "--label-smoothing", "0.2", "--out", smooth]) == 0
    h_plain, h_smooth = history(plain)[0], history(smooth)[0]
    assert h_smooth["loss"] > h_plain["loss"]  # the smoothed target's cross-entropy is larger
    assert h_smooth["val_loss"] != h_plain["val_loss"]
    from minilstm.training import evaluate

    # The smoothed run's val_loss is the plain loss of its weights: recompute it without smoothing.
    args, _ = parse_args([*TINY, "--out", str(tmp_path / "again")])
    run = training.Training(args, None, SINGLE_PROCESS)
    run.model.set_weights(load_checkpoint(smooth / "final").model.get_weights())
    val_loss, _ = evaluate(run.model, run.batches, run.val_plan)
    assert val_loss == h_smooth["val_loss"]


@pytest.mark.parametrize("argv,message", [
    (["--embedding-dropout", "0.1"], "--embedding-dropout drops embedded characters: use it with --embedding-dim"),
    (["--min-learning-rate", "1e-5"], "--min-learning-rate is for --lr-schedule cosine, this run's is constant"),
    (["--lr-schedule", "cosine", "--plateau-factor", "0.2"], "--plateau-factor is for --lr-schedule plateau"),
    (["--lr-schedule", "inverse-sqrt", "--plateau-patience", "3"], "--plateau-patience is for --lr-schedule plateau"),
    (["--lr-schedule", "cosine", "--min-learning-rate", "0.001"], "must be below --learning-rate 0.001"),
])
def test_flags_of_another_schedule_are_refused(tmp_path, argv, message):
    with pytest.raises(MinilstmError, match=message.replace("(", r"\(")):
        parse_args([*argv, "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("argv", [["--warmup-steps", "-1"], ["--label-smoothing", "1"], ["--plateau-factor", "1"],
                                  ["--output-dropout", "1"], ["--init", "xavier"],
                                  ["--lr-schedule", "linear"], ["--plateau-patience", "0"]])
def test_malformed_values_are_argparse_errors(tmp_path, argv):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*argv, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2


def test_resume_takes_the_stored_recipe_and_refuses_another(tmp_path):
    out = tmp_path / "run"
    assert train([*TINY, "--epochs", "1", "--lr-schedule", "cosine", "--label-smoothing", "0.1", "--out", out]) == 0
    args, _ = parse_args(["--resume", str(out)])
    assert (args.lr_schedule, args.label_smoothing) == ("cosine", 0.1)
    with pytest.raises(MinilstmError, match="--lr-schedule plateau contradicts"):
        parse_args(["--resume", str(out), "--lr-schedule", "plateau"])
    with pytest.raises(MinilstmError, match="--label-smoothing 0.0 contradicts"):
        parse_args(["--resume", str(out), "--label-smoothing", "0"])
    # A larger --epochs goes on from the stored cosine (over the first run's steps): the extra epochs at its floor.
    assert train(["--resume", out, "--epochs", "2"]) == 0
    assert history(out)[1]["learning_rate"] == 0.0
    assert np.isfinite(history(out)[1]["val_loss"])
