"""Checkpoints: a directory with ``config.json``, ``weights.npz`` and ``optimizer.npz``.

Never pickle: the arrays are read with ``allow_pickle=False``. A checkpoint is written whole into a temporary
directory beside its destination, every file fsync'ed, and then renamed into place, so a crash at any moment leaves
either the old checkpoint or the new one, never a half-written one.
"""

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Vocab
from .errors import MinilstmError
from .seq2seq import Seq2Seq

FORMAT = "minilstm-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_FILE = "config.json", "weights.npz", "optimizer.npz"


@dataclass
class Checkpoint:
    model: Seq2Seq
    config: dict  # everything in config.json
    optimizer_velocity: np.ndarray | None  # flat RMSprop state, in the model's flat parameter layout


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, write):
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _moved_aside(path: Path) -> Path | None:
    """The previous version of ``path`` that a killed ``save_checkpoint`` had moved aside, if any."""
    # Only a complete one: a version whose deletion was cut short is missing files (and has the newest mtime).
    complete = [p for p in path.parent.glob(f".{path.name}.old-*") if all(
        (p / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE))]
    return max(complete, key=lambda p: p.stat().st_mtime) if complete else None


def recover_checkpoint(path) -> Path:
    """Finish what a killed ``save_checkpoint`` left (called by the writer before it writes): if ``path`` is gone
    but its previous version was moved aside (the moment between the two renames), move it back; remove
    abandoned temporary directories."""
    path = Path(path)
    if not path.exists() and (previous := _moved_aside(path)) is not None:
        os.replace(previous, path)
    for stale in [*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def save_checkpoint(path, model: Seq2Seq, optimizer=None, extra: dict | None = None):
    """Write ``model`` (and the optimizer state, if given) to the directory ``path``, atomically: whenever the
    process dies, ``path`` holds the old checkpoint or the new one (after ``recover_checkpoint``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(path)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config()}
    if optimizer is not None:
        config["optimizer"] = {**optimizer.config(), "iterations": optimizer.iterations}
    config.update(extra or {})
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_file(tmp / WEIGHTS_FILE, lambda f: np.savez(f, **model.get_weights()))
        if optimizer is not None:
            velocity = model.backend.to_numpy(optimizer.velocity)
            _write_file(tmp / OPTIMIZER_FILE, lambda f: np.savez(f, velocity=velocity))
        text = json.dumps(config, indent=1, ensure_ascii=False) + "\n"
        _write_file(tmp / CONFIG_FILE, lambda f: f.write(text.encode("utf-8")))
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise MinilstmError(f"checkpoint file missing: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise MinilstmError(f"corrupt checkpoint file {path}: {e}") from None


def load_checkpoint(path, backend="numpy") -> Checkpoint:
    """Read a checkpoint directory; every problem is one ``MinilstmError`` naming the file."""
    path = Path(path)
    if not path.exists() and path.parent.is_dir() and (previous := _moved_aside(path)) is not None:
        path = previous  # read-only fallback: a writer may be running; it recovers for itself
    if not path.is_dir():
        raise MinilstmError(f"checkpoint not found: {path} (pass a checkpoint directory written by minilstm.train, "
                            "e.g. runs/seq2seq/best)")
    config_path = path / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MinilstmError(f"checkpoint file missing: {config_path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinilstmError(f"corrupt checkpoint file {config_path}: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MinilstmError(f"{config_path} is not a minilstm checkpoint config")
    if config.get("format_version") != FORMAT_VERSION:
        raise MinilstmError(f"{config_path}: checkpoint format version {config.get('format_version')!r}, this "
                            f"minilstm reads version {FORMAT_VERSION}")
    try:
        m = config["model"]
        model = Seq2Seq(backend, Vocab.from_json(m["input_vocab"]), Vocab.from_json(m["target_vocab"]),
                        int(m["max_encoder_len"]), int(m["max_decoder_len"]), int(m["latent_dim"]), m["dtype"],
                        bool(m.get("mask_padding", False)))  # absent in checkpoints from before --mask-padding
    except (KeyError, TypeError, ValueError) as e:
        raise MinilstmError(f"{config_path}: invalid model config ({type(e).__name__}: {e})") from None
    weights_path = path / WEIGHTS_FILE
    weights = _read_npz(weights_path)
    for name, shape in model.params.shapes.items():
        if name not in weights:
            raise MinilstmError(f"{weights_path}: missing tensor {name!r}")
        if weights[name].shape != shape:
            raise MinilstmError(f"{weights_path}: tensor {name!r} has shape {weights[name].shape}, the config in "
                                f"{config_path} needs {shape}")
    model.set_weights(weights)
    velocity = None
    if "optimizer" in config:
        opt_path = path / OPTIMIZER_FILE
        velocity = _read_npz(opt_path).get("velocity")
        if velocity is None or velocity.shape != model.params.flat.shape:
            raise MinilstmError(f"{opt_path}: optimizer state does not match the model's "
                                f"{model.params.flat.size} parameters")
    return Checkpoint(model, config, velocity)
