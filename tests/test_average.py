"""``minilstm average``: the element-wise mean of checkpoints' weights (in float64, rounded once), recorded in its
config, without optimizer state; checkpoints of another model, corrupt or missing ones, and an --out in use are
refused with one line and leave nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import small_model

from minilstm.average import average_checkpoints
from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.cli import main as minilstm_main
from minilstm.errors import MinilstmError
from minilstm.optim import make_optimizer

REPO = Path(__file__).resolve().parents[1]


def checkpoint(path, seed, units=4, dtype="float32", optimizer=True):
    model = small_model("numpy", units=units, dtype=dtype, seed=seed)
    opt = make_optimizer("adam", "numpy", model.params.flat.size, model.dtype) if optimizer else None
    save_checkpoint(path, model, opt, {"training": {"progress": {"epoch": seed, "step": 0}}})
    return model.get_weights()


def run_average(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minilstm.average", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def one_error_line(result, fragment):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_checkpoints_average_to_their_mean(tmp_path, dtype):
    a = checkpoint(tmp_path / "a", 1, dtype=dtype)
    b = checkpoint(tmp_path / "b", 2, dtype=dtype)
    out = average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "avg")
    averaged = load_checkpoint(out)
    for name, weight in averaged.model.get_weights().items():
        expected = ((a[name].astype(np.float64) + b[name].astype(np.float64)) / 2).astype(dtype)
        assert weight.dtype == np.dtype(dtype) and weight.tobytes() == expected.tobytes(), name
    assert averaged.optimizer_state is None and "optimizer" not in averaged.config
    assert not (out / "optimizer.safetensors").exists()
    record = averaged.config["averaged"]
    assert record["count"] == 2
    assert [c["path"] for c in record["checkpoints"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert [c["epoch"] for c in record["checkpoints"]] == [1, 2]
    assert averaged.config["model"] == load_checkpoint(tmp_path / "a").config["model"]


def test_the_command_and_a_run_directory(tmp_path):
    """``minilstm average`` dispatches to the module; a run directory stands for its best/, said on stderr."""
    a = checkpoint(tmp_path / "a", 1)
    b = checkpoint(tmp_path / "run" / "best", 2)
    c = checkpoint(tmp_path / "c", 3, optimizer=False)
    assert minilstm_main(["average", str(tmp_path / "a"), str(tmp_path / "run"), str(tmp_path / "c"), "--out",
                          str(tmp_path / "avg")]) == 0
    got = load_checkpoint(tmp_path / "avg").model.get_weights()
    for name in got:
        mean = (a[name].astype(np.float64) + b[name] + c[name]) / 3
        assert got[name].tobytes() == mean.astype(np.float32).tobytes()
    result = run_average(tmp_path / "a", tmp_path / "run", "--out", tmp_path / "avg2")
    assert result.returncode == 0, result.stderr
    assert f"Using {tmp_path / 'run' / 'best'}" in result.stderr
    translated = subprocess.run([sys.executable, "-m", "minilstm.translate", tmp_path / "avg2", "abc"],
                                capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert translated.returncode == 0, translated.stderr


def test_checkpoints_of_another_model_are_refused_in_one_line(tmp_path):
    checkpoint(tmp_path / "a", 1, units=4)
    checkpoint(tmp_path / "b", 2, units=5)
    result = run_average(tmp_path / "a", tmp_path / "b", "--out", tmp_path / "avg")
    one_error_line(result, "their models differ (latent_dim 5 vs 4)")
    assert not (tmp_path / "avg").exists() and not list(tmp_path.glob(".avg*"))
    checkpoint(tmp_path / "c", 3, dtype="float64")
    one_error_line(run_average(tmp_path / "a", tmp_path / "c", "--out", tmp_path / "avg"), "dtype float64 vs float32")


def test_corrupt_missing_and_in_use_are_refused_in_one_line(tmp_path):
    checkpoint(tmp_path / "a", 1)
    checkpoint(tmp_path / "b", 2)
    (tmp_path / "b" / "model.safetensors").write_bytes(b"not a safetensors file")
    one_error_line(run_average(tmp_path / "a", tmp_path / "b", "--out", tmp_path / "avg"), "corrupt checkpoint file")
    one_error_line(run_average(tmp_path / "a", tmp_path / "nowhere", "--out", tmp_path / "avg"),
                   "checkpoint not found")
    assert not (tmp_path / "avg").exists() and not list(tmp_path.glob(".avg*"))
    one_error_line(run_average(tmp_path / "a", tmp_path / "a", "--out", tmp_path / "b"), "not an empty directory")
    one_error_line(run_average(tmp_path / "a", "--out", tmp_path / "avg"), "two or more checkpoints")
    checkpoint(tmp_path / "d", 4)  # the same weights' shapes, another maximum length: another model still
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    config["model"]["max_decoder_len"] += 1
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    with pytest.raises(MinilstmError, match="their models differ \\(max_decoder_len 6 vs 5\\)"):
        average_checkpoints([tmp_path / "a", tmp_path / "d"], tmp_path / "avg")
