"""The command-line tools end to end, in subprocesses: a short training run, translation, and every bad input
giving one clear line on stderr, exit code 2 and no traceback."""

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "data" / "tiny.txt"


def run(module, *args, stdin=None, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", f"minilstm.{module}", *map(str, args)], input=stdin,
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def evaluate_best(out, tmp_path):
    """``evaluate OUT/best --json``: its stdout, its metrics, and the metrics training logged for that checkpoint."""
    report = tmp_path / "eval.json"
    evaluated = run("evaluate", out / "best", "--json", report)
    assert evaluated.returncode == 0, evaluated.stderr
    logged = json.loads((out / "best" / "config.json").read_text())["metrics"]
    return evaluated.stdout, json.loads(report.read_text())["metrics"], logged


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three epochs on 320 built-in pairs with a small model: shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    result = run("train", "--num-samples", 320, "--epochs", 3, "--batch-size", 32, "--latent-dim", 32,
                 "--learning-rate", 0.01, "--num-decodes", 5, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


def test_training_lowers_the_loss_and_writes_its_outputs(trained):
    out, result = trained
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert set(history[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds", "ms_per_step"}
    for name in ("best", "final"):
        assert {p.name for p in (out / name).iterdir()} == {"config.json", "model.safetensors",
                                                            "optimizer.safetensors"}
    assert "Number of unique input tokens:" in result.stdout
    assert result.stdout.count("Epoch ") == 3
    assert result.stdout.count("Decoded sentence:") == 5
    assert "Input sentence: Go." in result.stdout


def test_translate_arguments_and_stdin_agree(trained):
    out, _ = trained
    args_result = run("translate", out / "final", "Go.", "Run!", "Hello!")
    assert args_result.returncode == 0, args_result.stderr
    assert len(args_result.stdout.splitlines()) == 3
    stdin_result = run("translate", out / "final", stdin="Go.\nRun!\nHello!\n")
    assert stdin_result.returncode == 0, stdin_result.stderr
    assert stdin_result.stdout == args_result.stdout


def test_translate_and_evaluate_take_a_run_directory(trained, tmp_path):
    """The --out of a run stands for its best/ checkpoint, said in one line on stderr; stdout is unchanged."""
    out, _ = trained
    of_run = run("translate", out, "Go.", "Run!")
    assert of_run.returncode == 0, of_run.stderr
    assert of_run.stdout == run("translate", out / "best", "Go.", "Run!").stdout
    assert of_run.stderr.strip() == f"Using {out / 'best'}, the checkpoint of {out} with the lowest val_loss"
    evaluated = run("evaluate", out, "--examples", 0)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"Evaluated {out / 'best'} on the checkpoint's 64 validation pairs" in evaluated.stdout
    assert evaluated.stderr.strip().startswith(f"Using {out / 'best'}")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "history.jsonl").write_text("")
    assert_user_error(run("translate", unfinished, "Go."), "without a best/ checkpoint yet")
    assert_user_error(run("translate", tmp_path, "Go."), "neither a checkpoint", "nor a training run")


@pytest.mark.slow
def test_translate_bad_inputs(trained, tmp_path):
    out, _ = trained
    assert_user_error(run("translate", out / "final", "Go.", "Straße €"), "'ß'", "'€'", "Straße")
    assert_user_error(run("translate", out / "final", "Go.", ""), "empty")
    assert_user_error(run("translate", out / "final", stdin="Go.\n\nHi.\n"), "sentence 2")
    skipped = run("translate", out / "final", "--skip-unknown", "Go€.")
    assert skipped.returncode == 0 and skipped.stdout == run("translate", out / "final", "Go.").stdout
    assert_user_error(run("translate", tmp_path / "nowhere", "Go."), "checkpoint not found")
    assert_user_error(run("translate", out / "final", "--backend", "tpu", "Go."), "unknown backend", "numpy")

    def broken_copy(name, mutate):
        target = tmp_path / name
        target.mkdir()
        for f in (out / "final").iterdir():
            (target / f.name).write_bytes(f.read_bytes())
        mutate(target)
        return target

    truncated = broken_copy("truncated", lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:1000]))
    assert_user_error(run("translate", truncated, "Go."), "corrupt checkpoint file", "model.safetensors")
    garbage = broken_copy("garbage", lambda d: (d / "config.json").write_text("{not json"))
    assert_user_error(run("translate", garbage, "Go."), "corrupt checkpoint file", "config.json")
    missing = broken_copy("missing", lambda d: (d / "model.safetensors").unlink())
    assert_user_error(run("translate", missing, "Go."), "missing", "model.safetensors")

    def bump_version(d):
        config = json.loads((d / "config.json").read_text())
        config["format_version"] = 99
        (d / "config.json").write_text(json.dumps(config))

    assert_user_error(run("translate", broken_copy("future", bump_version), "Go."), "version 99")

    def wrong_shape(d):
        config = json.loads((d / "config.json").read_text())
        config["model"]["latent_dim"] = 31
        (d / "config.json").write_text(json.dumps(config))

    assert_user_error(run("translate", broken_copy("shape", wrong_shape), "Go."), "shape", "model.safetensors")


def test_train_bad_inputs(tmp_path):
    def train(*args):
        return run("train", "--epochs", 1, "--latent-dim", 4, "--out", tmp_path / "out", *args)

    assert_user_error(train("--data", tmp_path / "absent.txt"), "not found", "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_user_error(train("--data", empty), "empty.txt")
    no_tab = tmp_path / "no_tab.txt"
    no_tab.write_text("Go.\tVa !\nHi. Salut !\n")
    assert_user_error(train("--data", no_tab), "no_tab.txt:2", "tab")
    bad_utf8 = tmp_path / "bad.txt.gz"
    bad_utf8.write_bytes(gzip.compress(b"Go.\tVa !\nHi.\tSalut \xff!\n"))
    assert_user_error(train("--data", bad_utf8), "bad.txt.gz", "2")
    assert_user_error(train("--backend", "tpu"), "unknown backend")
    assert_user_error(train("--num-samples", 20000), "10,000")
    assert not (tmp_path / "out" / "final").exists()


@pytest.mark.parametrize("flags,message", [
    (["--clip-norm", "0"], "argument --clip-norm: expected a positive number, got '0'"),
    (["--clip-norm", "-1"], "argument --clip-norm: expected a positive number"),
    (["--momentum", "-0.1"], "argument --momentum: expected a number >= 0, got '-0.1'"),
    (["--beta-1", "1"], "argument --beta-1: expected a number in [0, 1), got '1'"),
    (["--beta-2", "-0.5"], "argument --beta-2: expected a number in [0, 1)"),
    (["--beta-2", "nan"], "argument --beta-2: expected a number in [0, 1)"),
    (["--optimizer", "adagrad"], "argument --optimizer: invalid choice: 'adagrad'"),
])
def test_bad_optimizer_flags_are_one_argparse_line(tmp_path, capsys, flags, message):
    from minilstm.train import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args([*flags, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m minilstm.train: error: ") and message in err[-1], err
    assert not (tmp_path / "out").exists()


def test_optimizer_flags_and_learning_rate_defaults(tmp_path):
    """The learning rate left out is Keras's default for the optimizer; a flag of another optimizer is one line."""
    from minilstm.train import parse_args

    rates = {name: parse_args(["--optimizer", name, "--out", str(tmp_path / name)])[0].learning_rate
             for name in ("rmsprop", "adam", "sgd")}
    assert rates == {"rmsprop": 0.001, "adam": 0.001, "sgd": 0.01}
    args, _ = parse_args(["--optimizer", "sgd", "--learning-rate", "0.5", "--momentum", "0.9", "--clip-norm", "2",
                          "--out", str(tmp_path / "x")])
    assert (args.learning_rate, args.momentum, args.clip_norm) == (0.5, 0.9, 2.0)
    assert parse_args(["--out", str(tmp_path / "y")])[0].clip_norm is None  # off by default
    assert_user_error(run("train", "--optimizer", "adam", "--momentum", "0.9", "--out", tmp_path / "z"),
                      "--momentum is for --optimizer sgd", "adam")


def test_training_stops_on_divergence(tmp_path):
    """A learning rate that blows up gives the NaN message naming the step, exit 2."""
    result = run("train", "--num-samples", 128, "--epochs", 2, "--batch-size", 32, "--latent-dim", 8,
                 "--learning-rate", 1e38, "--out", tmp_path / "out")
    assert_user_error(result, "diverged", "step")


def test_train_data_flag_reads_a_three_column_file(tmp_path):
    result = run("train", "--data", TINY, "--epochs", 1, "--latent-dim", 8, "--batch-size", 4,
                 "--num-decodes", 2, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Decoded sentence:") == 2


def test_evaluate(trained, tmp_path):
    out, _ = trained
    report = tmp_path / "eval.json"
    result = run("evaluate", out / "best", "--json", report, "--examples", 3)
    assert result.returncode == 0, result.stderr
    assert "accuracy over real characters" in result.stdout and "64 validation pairs" in result.stdout
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["pairs"] == 64 and metrics["skipped_pairs"] == 0
    for name in ("accuracy", "accuracy_real_characters", "exact_match", "character_error_rate"):
        assert 0.0 <= metrics[name] <= 1.0 or name == "character_error_rate", name
    # Keras-style numbers are the ones training logged for the same checkpoint.
    logged = json.loads((out / "best" / "config.json").read_text())["metrics"]
    assert abs(metrics["loss"] - logged["val_loss"]) < 1e-4 and abs(metrics["accuracy"] - logged["val_accuracy"]) < 1e-6
    translations = json.loads(report.read_text())["translations"]
    assert len(translations) == 64
    # Per length of the English sentence: a table on stdout, the same numbers in the report.
    buckets = metrics["length_buckets"]
    assert list(buckets) == ["1-3", "4-6", "7-10", "11+"]
    words = [len(t["input"].split()) for t in translations]
    assert [b["pairs"] for b in buckets.values()] == [sum(w <= 3 for w in words), sum(4 <= w <= 6 for w in words),
                                                      sum(7 <= w <= 10 for w in words), sum(w >= 11 for w in words)]
    table = result.stdout[result.stdout.index("English words"):].splitlines()[:6]
    assert [line.split()[0] for line in table] == ["English", "1-3", "4-6", "7-10", "11+", "all"]
    for line, scores in zip(table[1:], [*buckets.values(), metrics], strict=True):
        cells = line.split()[1:]
        assert int(cells[0].replace(",", "")) == scores["pairs"]
        for cell, name, digits in zip(cells[1:], ("chrf", "character_error_rate", "exact_match"), (2, 4, 4),
                                      strict=True):
            assert cell == ("n/a" if scores[name] is None else f"{scores[name]:.{digits}f}"), (line, name)
    on_file = run("evaluate", out / "best", "--data", TINY)
    assert on_file.returncode == 0, on_file.stderr
    assert_user_error(run("evaluate", tmp_path / "nowhere"), "checkpoint not found")
    assert_user_error(run("evaluate", out / "best", "--data", tmp_path / "absent.txt"), "not found")


@pytest.mark.slow
def test_evaluate_says_where_the_training_data_is_missing(tmp_path):
    """A checkpoint records its --data as training was given it, here relative: from another directory the file is
    not there, and the message says so (not "omit --data", which the user did)."""
    shutil.copy(TINY, tmp_path / "pairs.txt")
    trained = run("train", "--data", "pairs.txt", "--epochs", 1, "--latent-dim", 8, "--batch-size", 4,
                  "--num-decodes", 0, "--out", "out", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert run("evaluate", "out", "--examples", 0, cwd=tmp_path).returncode == 0
    (tmp_path / "elsewhere").mkdir()
    assert_user_error(run("evaluate", tmp_path / "out" / "best", cwd=tmp_path / "elsewhere"),
                      "trained on training data pairs.txt, which is not found from", "pass --data PATH")
    assert run("evaluate", tmp_path / "out", "--data", tmp_path / "pairs.txt", "--examples", 0,
               cwd=tmp_path / "elsewhere").returncode == 0
    alone = run("evaluate", tmp_path / "out", "--num-samples", 3, cwd=tmp_path)
    assert alone.returncode == 2 and "--num-samples needs --data" in alone.stderr, alone.stderr


def test_edit_distance():
    from minilstm.evaluate import edit_distance

    assert edit_distance("", "") == 0
    assert edit_distance("abc", "") == 3
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("Va !", "Va !") == 0


@pytest.mark.slow
def test_patience_stops_early(tmp_path):
    """With a learning rate far too high val_loss stops improving at once; --patience 1 ends the run early."""
    result = run("train", "--num-samples", 128, "--epochs", 30, "--batch-size", 32, "--latent-dim", 8,
                 "--learning-rate", 0.5, "--patience", 1, "--num-decodes", 0, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    history = [json.loads(line) for line in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert "Early stop" in result.stdout and len(history) < 30
    best = min(range(len(history)), key=lambda k: history[k]["val_loss"])
    assert len(history) - 1 - best == 1  # stopped exactly one epoch after the best


def test_chrf_with_several_references(monkeypatch):
    pytest.importorskip("sacrebleu", reason="chrF needs sacrebleu (pip install '.[eval]')")
    from minilstm.evaluate import chrf

    assert chrf(["Va !", "Cours !"], [["Allez !", "Va !"], ["Cours !"]]) == pytest.approx(100.0)
    assert chrf(["xyz", "abc"], [["Va !"], ["Cours !"]]) < 5

    # A sentence with fewer references than another is scored on its own ones only, and is not handed copies of
    # them to fill the other reference streams (sacrebleu extracts n-grams of every reference it is given: copies
    # took over 17 GB on the whole file's validation set).
    import sacrebleu

    seen = []
    real_corpus_chrf = sacrebleu.corpus_chrf
    monkeypatch.setattr(sacrebleu, "corpus_chrf", lambda hyps, streams: seen.append(streams) or
                        real_corpus_chrf(hyps, streams))
    score = chrf(["Va !", "Cours !"], [["Allez !", "Va !", "Filez !"], ["Courez !"]])
    assert seen == [[["Allez !", "Courez !"], ["Va !", None], ["Filez !", None]]]
    assert score == pytest.approx(chrf(["Va !", "Cours !"], [["Va !"], ["Courez !"]]))
    assert 0 < score < 100


@pytest.mark.slow
def test_translate_beam_and_temperature_flags(trained):
    out, _ = trained
    greedy = run("translate", out / "final", "Go.", "Run!")
    beam = run("translate", out / "final", "--beam-width", 3, "Go.", "Run!")
    cold = run("translate", out / "final", "--temperature", 1e-6, "Go.", "Run!")
    assert greedy.returncode == beam.returncode == cold.returncode == 0, (beam.stderr, cold.stderr)
    assert len(beam.stdout.splitlines()) == 2 and cold.stdout == greedy.stdout
    assert_user_error(run("translate", out / "final", "--beam-width", 2, "--temperature", 1, "Go."), "exclude")
    penalised = run("translate", out / "final", "--beam-width", 3, "--length-penalty", 0.6, "Go.", "Run!")
    assert penalised.returncode == 0 and len(penalised.stdout.splitlines()) == 2, penalised.stderr
    assert_user_error(run("translate", out / "final", "--length-penalty", 0.6, "Go."), "--beam-width 2 or more")
    negative = run("translate", out / "final", "--beam-width", 2, "--length-penalty", -1, "Go.")
    assert negative.returncode == 2 and "--length-penalty: expected a number from 0 to 10, got '-1'" in negative.stderr
    assert "Traceback" not in negative.stderr


@pytest.mark.slow
def test_mask_padding_end_to_end(trained, tmp_path):
    """Train with --mask-padding; evaluate reproduces the logged real-character val numbers, refuses the Keras-style
    ones; translate works; and the flag may not be switched on when resuming a run trained without it."""
    out = tmp_path / "masked"
    result = run("train", "--num-samples", 320, "--epochs", 3, "--batch-size", 32, "--latent-dim", 32,
                 "--learning-rate", 0.01, "--num-decodes", 2, "--mask-padding", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "--mask-padding: loss and accuracy count real characters only" in result.stdout
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["val_loss"] < history[0]["val_loss"]
    assert json.loads((out / "final" / "config.json").read_text())["model"]["mask_padding"] is True
    stdout, metrics, logged = evaluate_best(out, tmp_path)
    assert "n/a (trained with --mask-padding)" in stdout
    assert metrics["loss"] is None and metrics["accuracy"] is None
    assert abs(metrics["loss_real_characters"] - logged["val_loss"]) < 1e-4
    assert abs(metrics["accuracy_real_characters"] - logged["val_accuracy"]) < 1e-6
    translated = run("translate", out / "final", "Go.", "I see.")
    assert translated.returncode == 0 and len(translated.stdout.splitlines()) == 2, translated.stderr
    parity_run, _ = trained
    assert_user_error(run("train", "--resume", parity_run, "--mask-padding"), "--mask-padding", "contradicts")


@pytest.mark.slow
def test_validation_data_holds_out_its_sentences(tmp_path):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("Go.\tVa !\nGo.\tBouge !\nThanks!\tMerci !\n", encoding="utf-8")
    out = tmp_path / "run"
    result = run("train", "--data", TINY, "--validation-data", held_out, "--epochs", 1, "--batch-size", 4,
                 "--latent-dim", 8, "--num-decodes", 0, "--out", out)
    assert result.returncode == 0, result.stderr
    # tiny.txt has "Go." and "Thanks!" once each: both left out of training, all 3 held-out pairs validate.
    assert "Validating on the 3 pairs of" in result.stdout and "left out 2 training pairs" in result.stdout
    assert "Training on 10 pairs, validating on 3" in result.stdout
    stdout, metrics, logged = evaluate_best(out, tmp_path)
    assert "validation data" in stdout
    assert metrics["pairs"] == 3 and abs(metrics["loss"] - logged["val_loss"]) < 1e-4
    assert_user_error(run("train", "--data", TINY, "--validation-data", tmp_path / "absent.txt", "--out", out),
                      "absent.txt")
    everything = tmp_path / "everything.txt"
    everything.write_bytes(TINY.read_bytes())
    assert_user_error(run("train", "--data", TINY, "--validation-data", everything, "--out", tmp_path / "o2"),
                      "nothing is left to train on")


@pytest.mark.slow
def test_evaluate_decoding_options(trained, tmp_path):
    out, _ = trained
    greedy, beam = tmp_path / "greedy.json", tmp_path / "beam.json"
    assert run("evaluate", out / "best", "--json", greedy).returncode == 0
    result = run("evaluate", out / "best", "--json", beam, "--beam-width", 3)
    assert result.returncode == 0, result.stderr
    assert "beam search, width 3" in result.stdout
    g, b = (json.loads(p.read_text()) for p in (greedy, beam))
    assert g["metrics"]["decoding"] == "greedy" and b["metrics"]["decoding"] == "beam search, width 3"
    assert b["metrics"]["loss"] == g["metrics"]["loss"]  # teacher-forced numbers do not depend on decoding
    sampled = run("evaluate", out / "best", "--temperature", 0.7, "--seed", 1)
    assert sampled.returncode == 0 and "sampling, temperature 0.7, seed 1" in sampled.stdout, sampled.stderr
    assert_user_error(run("evaluate", out / "best", "--temperature", 0.7, "--beam-width", 2), "exclude each other")
    penalised = run("evaluate", out / "best", "--beam-width", 3, "--length-penalty", 0.6)
    assert penalised.returncode == 0 and "beam search, width 3, length penalty 0.6" in penalised.stdout
    assert_user_error(run("evaluate", out / "best", "--length-penalty", 0.6), "--beam-width 2 or more")


def first_pairs(n):
    from minilstm.data import load_default_pairs

    return load_default_pairs(n)


@pytest.mark.slow
def test_random_validation_split_end_to_end(trained, tmp_path):
    """--validation-split-mode random: training holds out the split's pairs, the checkpoint stores the mode, evaluate
    scores exactly those pairs, and 1 epoch + --resume == 2 epochs at once, to the byte."""
    from minilstm.checkpoint import load_checkpoint
    from minilstm.data import split_validation_random

    flags = ["--num-samples", 320, "--batch-size", 32, "--latent-dim", 8, "--learning-rate", 0.01, "--num-decodes", 0,
             "--backend", "numpy", "--seed", 2, "--validation-split-mode", "random"]
    out = tmp_path / "random"
    first = run("train", *flags, "--epochs", 1, "--out", out)
    assert first.returncode == 0, first.stderr
    pairs = first_pairs(320)
    train_idx, val_idx = split_validation_random([e for e, _ in pairs], 0.2, seed=2)
    assert f"Training on {len(train_idx)} pairs, validating on {len(val_idx)};" in first.stdout
    assert f"Holding out the {len(val_idx)} pairs of" in first.stdout
    assert load_checkpoint(out / "latest").config["training"]["args"]["validation_split_mode"] == "random"

    stdout, metrics, logged = evaluate_best(out, tmp_path)
    assert f"the checkpoint's {len(val_idx)} validation pairs (held out at random)" in stdout
    held_out = json.loads((tmp_path / "eval.json").read_text())["translations"]
    assert [t["input"] for t in held_out] == [pairs[k][0] for k in val_idx]
    assert abs(metrics["loss"] - logged["val_loss"]) < 1e-4

    assert_user_error(run("train", "--resume", out, "--validation-split-mode", "last"), "--validation-split-mode last",
                      "contradicts")
    resumed = run("train", "--resume", out, "--epochs", 2)
    assert resumed.returncode == 0, resumed.stderr
    assert f"validating on {len(val_idx)};" in resumed.stdout
    whole = run("train", *flags, "--epochs", 2, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert (out / "history.jsonl").read_text().count("\n") == 2
    assert (out / "final" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "final" /
                                                                  "model.safetensors").read_bytes()

    # A run from before the flag (no validation_split_mode in its args) was a Keras split: it resumes and is
    # evaluated as one.
    from minilstm.train import parse_args

    old = tmp_path / "old"
    shutil.copytree(trained[0], old)
    for name in ("best", "latest"):
        config = json.loads((old / name / "config.json").read_text())
        del config["training"]["args"]["validation_split_mode"]
        (old / name / "config.json").write_text(json.dumps(config))
    assert parse_args(["--resume", str(old)], prepare_out=False)[0].validation_split_mode == "last"
    evaluated = run("evaluate", old, "--examples", 0)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "the checkpoint's 64 validation pairs\n" in evaluated.stdout


def test_random_split_leaves_the_weights_and_shuffling_streams_alone(tmp_path):
    """The split draws from a stream of its own: a run with --validation-split-mode random starts from the same
    weights and the same shuffling generator as the default run of the same --seed, and the default run still holds
    out the Keras split (the last pairs), so its bits are those it had before the flag existed."""
    from minilstm.data import split_validation
    from minilstm.distributed import SINGLE_PROCESS
    from minilstm.train import parse_args
    from minilstm.training import Training

    def start(*flags):
        args, _ = parse_args(["--num-samples", "320", "--latent-dim", "4", "--backend", "numpy", "--seed", "5",
                              "--out", str(tmp_path / "-".join(flags or ("default",))), *flags])
        return Training(args, None, SINGLE_PROCESS)

    default, random = start(), start("--validation-split-mode", "random")
    assert default.args.validation_split_mode == "last"
    keras_train, keras_val = split_validation(320, 0.2)
    assert np.array_equal(default.train_idx, keras_train) and np.array_equal(default.val_idx, keras_val)
    assert not np.array_equal(random.val_idx, keras_val)
    weights = default.model.get_weights()
    assert all(np.array_equal(weights[k], v) for k, v in random.model.get_weights().items())
    assert default.shuffle_rng.bit_generator.state == random.shuffle_rng.bit_generator.state


def test_validation_split_mode_bad_inputs(tmp_path, capsys):
    from minilstm.train import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--validation-split-mode", "middle", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --validation-split-mode: invalid choice: 'middle'" in err[-1], err
    assert_user_error(run("train", "--data", TINY, "--validation-data", TINY, "--validation-split-mode", "random",
                          "--out", tmp_path / "out"), "--validation-split-mode", "--validation-data")
    assert_user_error(run("train", "--data", TINY, "--validation-split-mode", "random", "--seed", -1,
                          "--out", tmp_path / "out"), "--seed must be a non-negative integer")
    assert not (tmp_path / "out" / "latest").exists()
