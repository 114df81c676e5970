"""Output and disk errors: a bad --out fails before any work, a really full disk (a small tmpfs mounted here) is one
error line with the previous checkpoint intact and nothing half-written, and --resume then goes on from it to the
same weights as a run that never failed. Also: checkpoints of format version 1 (npz) still load and resume."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_user_error, run

from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.errors import MinilstmError
from minilstm.files import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
OLD_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_npz_v1"
PAGE = 4096
RUN = ["--num-samples", 300, "--epochs", 3, "--batch-size", 32, "--latent-dim", 32, "--num-decodes", 0,
       "--progress", "never", "--seed", 5]


def mount_tmpfs(path: Path, size: int, *options: str):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A mount point for a tmpfs the test mounts (mount_tmpfs) and resizes; unmounted afterwards."""
    mount_point = tmp_path / "disk"
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def disk_size(directory: Path) -> int:
    """Bytes ``directory``'s files take on a tmpfs (whole pages)."""
    return sum(math.ceil(p.stat().st_size / PAGE) * PAGE for p in directory.rglob("*") if p.is_file())


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def weights(checkpoint_dir):
    return {k: v.tobytes() for k, v in load_checkpoint(checkpoint_dir).model.get_weights().items()}


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_resume_goes_on_from_best(tmp_path, small_disk):
    """Room for best/ but not for latest/ after the first epoch: --resume goes on from best/ (which holds the same
    training state) and ends with the weights of a run that never ran out of space."""
    reference = tmp_path / "reference"
    result = run("train", *RUN, "--out", reference)
    assert result.returncode == 0, result.stderr
    checkpoint_bytes = disk_size(reference / "best")
    mount_tmpfs(small_disk, int(1.5 * checkpoint_bytes))
    out = small_disk / "run"
    failed = run("train", *RUN, "--out", out)
    assert_user_error(failed, "No space left on device", str(out / "latest"), "--resume")
    assert "Epoch 1/3" in failed.stdout and "Epoch 2/3" not in failed.stdout
    assert not (out / "latest").exists() and (out / "best").is_dir()
    assert leftovers(out) == []
    assert load_checkpoint(out / "best").config["training"]["progress"]["epoch"] == 1  # complete, loads
    subprocess.run(["mount", "-o", f"remount,size={20 * checkpoint_bytes}", str(small_disk)], check=True)
    resumed = run("train", "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stdout and "after epoch 1, step 0" in resumed.stdout
    assert weights(out / "final") == weights(reference / "final")
    assert leftovers(out) == []


def test_full_disk_keeps_the_previous_checkpoint_and_file(small_disk):
    """In-process: a checkpoint swap and an atomic file write that hit a full disk leave the previous versions
    byte for byte, no temporary files, and say what was being written where."""
    mount_tmpfs(small_disk, 64 * PAGE)
    model = load_checkpoint(OLD_CHECKPOINT).model
    path = save_checkpoint(small_disk / "ck", model)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    history = small_disk / "history.jsonl"
    write_text_atomic(history, "first\n", "the history")
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * PAGE):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(MinilstmError, match=r"cannot write the checkpoint .*ck \(the weights \(model.safetensors\)\)"
                       r": No space left on device; its previous version is unchanged"):
        save_checkpoint(path, model)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    with pytest.raises(MinilstmError, match="cannot write the history to .*history.jsonl: No space left on device"):
        write_text_atomic(history, "first\n" * 10000, "the history")
    assert history.read_text() == "first\n"
    assert leftovers(small_disk) == []
    filler.unlink()
    save_checkpoint(path, model)  # with room again it works, and recovers nothing that is not there


def test_out_is_checked_before_any_data_is_read(tmp_path):
    """A bad --out is named even though --data and --backend are bad too: they are looked at only later."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    late = ("--data", tmp_path / "absent.txt", "--backend", "tpu")
    assert_user_error(run("train", *late, "--out", a_file), "--out", "existing file", str(a_file))
    assert_user_error(run("train", *late, "--out", a_file / "sub"), "cannot create", f"{a_file} is a file")
    assert a_file.read_text() == "not a directory"
    too_long = tmp_path / "new" / ("x" * 300)  # "new" can be made, its child cannot: "new" is removed again
    assert_user_error(run("train", *late, "--out", too_long), "cannot create", "name too long")
    assert not (tmp_path / "new").exists()
    assert_user_error(run("train", "--resume", a_file), "not a directory")


def test_read_only_out_is_one_line(small_disk):
    mount_tmpfs(small_disk, 16 * PAGE, "ro")
    assert_user_error(run("train", "--data", "absent.txt", "--out", small_disk), "cannot write into",
                      "Read-only file system")
    assert_user_error(run("train", "--out", small_disk / "run"), "cannot create", "Read-only file system")


def test_version_1_npz_checkpoint_still_loads(tmp_path):
    """The fixture was written by minilstm before checkpoints moved to safetensors (latent 4, 4 pairs of
    tests/data/tiny.txt, 8 epochs at learning rate 0.1, numpy backend); its arrays load as they are stored and it
    translates as it did then."""
    checkpoint = load_checkpoint(OLD_CHECKPOINT)
    with np.load(OLD_CHECKPOINT / "weights.npz", allow_pickle=False) as stored:
        for name, value in checkpoint.model.get_weights().items():
            assert value.tobytes() == stored[name].tobytes(), name
    with np.load(OLD_CHECKPOINT / "optimizer.npz", allow_pickle=False) as stored:
        assert list(checkpoint.optimizer_state) == ["velocity"]
        assert checkpoint.optimizer_state["velocity"].tobytes() == stored["velocity"].tobytes()
    assert checkpoint.config["format_version"] == 1
    translated = run("translate", OLD_CHECKPOINT, "--backend", "numpy", "Go.", "I see.", "Thanks!")
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout == "a               \nJeeeeeeeeeeeeeee\n                \n"
    # Re-saved, it is a version-2 checkpoint with the same tensors.
    resaved = save_checkpoint(tmp_path / "v2", checkpoint.model)
    assert {p.name for p in resaved.iterdir()} == {"config.json", "model.safetensors"}
    assert weights(resaved) == weights(OLD_CHECKPOINT)


def test_version_1_run_resumes(tmp_path):
    """A run whose latest/ is in the old format goes on from it, and writes new-format checkpoints. It is from
    before --optimizer: it resumes as the RMSprop run it was (an explicit --optimizer rmsprop agrees with it, adam
    contradicts it)."""
    out = tmp_path / "run"
    shutil.copytree(OLD_CHECKPOINT, out / "latest")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def resume(*flags):  # its --data is relative to REPO
        return subprocess.run([sys.executable, "-m", "minilstm.train", "--resume", out, *flags], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    assert_user_error(resume("--optimizer", "adam"), "--optimizer adam contradicts", "--optimizer rmsprop")
    result = resume("--epochs", "9", "--optimizer", "rmsprop")
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout and "after epoch 8, step 0" in result.stdout
    assert "Epoch 9/9" in result.stdout and "Epoch 8/9" not in result.stdout
    final = load_checkpoint(out / "final")
    assert final.config["format_version"] == 2 and final.config["optimizer"]["iterations"] == 9
    assert final.config["optimizer"]["name"] == "rmsprop" and set(final.optimizer_state) == {"velocity"}
    assert final.config["training"]["args"]["optimizer"] == "rmsprop"
    assert len(final.config["training"]["progress"]["history"]) == 9
