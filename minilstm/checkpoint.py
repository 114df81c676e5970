"""Checkpoints: a directory with ``config.json``, ``model.safetensors`` and ``optimizer.safetensors``.

Laid out as Hugging Face checkpoints are (a JSON config beside safetensors weights), so other tools read the
tensors without minilstm; safetensors holds plain arrays and cannot run code, unlike pickle. Checkpoints of format
version 1 (``weights.npz``, ``optimizer.npz``, read with ``allow_pickle=False``) still load.

A checkpoint is written whole into a temporary directory beside its destination, every file fsync'ed, and then
renamed into place, so a crash at any moment leaves either the old checkpoint or the new one, never a half-written
one. A write that fails (a full disk) is one ``MinilstmError`` naming the checkpoint and the file being written;
the previous checkpoint stays as it was.
"""

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from .errors import MinilstmError
from .files import describe_os_error, fsync_dir
from .seq2seq import Seq2Seq

FORMAT = "minilstm-checkpoint"
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
UNITS_FILES = {"input": "input_units.model", "target": "target_units.model"}
"""The SentencePiece models of a model with such units (``minilstm.units``): the checkpoint is self-contained."""
# (weights, optimizer state) file names of each format version this minilstm reads; it writes the last one.
TENSOR_FILES = {1: ("weights.npz", "optimizer.npz"), 2: ("model.safetensors", "optimizer.safetensors")}
WEIGHTS_FILE, OPTIMIZER_FILE = TENSOR_FILES[FORMAT_VERSION]
# Subdirectories of a training run (its --out) that hold checkpoints.
RUN_CHECKPOINTS = ("latest", "best", "final")


@dataclass
class Checkpoint:
    model: Seq2Seq
    config: dict  # everything in config.json
    # The optimizer's state arrays by name (RMSprop: velocity; Adam: m, v; SGD: momentum), each flat in the model's
    # parameter layout; None when the checkpoint has no optimizer. Its name and hyper-parameters are in
    # config["optimizer"].
    optimizer_state: dict[str, np.ndarray] | None


def _write_file(path: Path, write):
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _moved_aside(path: Path) -> Path | None:
    """The previous version of ``path`` that a killed ``save_checkpoint`` had moved aside, if any."""
    # Only a complete one: a version whose deletion was cut short is missing files (and has the newest mtime).
    complete = [p for p in path.parent.glob(f".{path.name}.old-*") if (p / CONFIG_FILE).is_file() and any(
        (p / weights).is_file() for weights, _ in TENSOR_FILES.values())]
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
    process dies, ``path`` holds the old checkpoint or the new one (after ``recover_checkpoint``). An OSError (a
    full disk) leaves the old one in place, no temporary files, and becomes one ``MinilstmError``."""
    path = Path(path)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config()}
    if optimizer is not None:
        config["optimizer"] = {**optimizer.config(), "iterations": optimizer.iterations}
    config.update(extra or {})
    tmp = old = None
    what = "its directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        what = f"the weights ({WEIGHTS_FILE})"
        weights = safetensors.numpy.save(model.get_weights(), metadata={"format": FORMAT})
        _write_file(tmp / WEIGHTS_FILE, lambda f: f.write(weights))
        if optimizer is not None:
            what = f"the optimizer state ({OPTIMIZER_FILE})"
            arrays = {name: model.backend.to_numpy(array) for name, array in optimizer.state().items()}
            state = safetensors.numpy.save(arrays, metadata={"format": FORMAT})
            _write_file(tmp / OPTIMIZER_FILE, lambda f: f.write(state))
        for side, units_model in model.units_models().items():
            what = f"the {side} SentencePiece model ({UNITS_FILES[side]})"
            _write_file(tmp / UNITS_FILES[side], lambda f, data=units_model: f.write(data))
        what = f"the config ({CONFIG_FILE})"
        text = json.dumps(config, indent=1, ensure_ascii=False) + "\n"
        _write_file(tmp / CONFIG_FILE, lambda f: f.write(text.encode("utf-8")))
        fsync_dir(tmp)
        what = "the new version in place of the old one"
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            with contextlib.suppress(OSError):  # else recover_checkpoint does it on the next write
                os.replace(old, path)  # the old version was moved aside and the new one did not follow: back
        if isinstance(e, OSError):
            raise MinilstmError(_write_failure(path, what, e, "training" in config)) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _write_failure(path: Path, what: str, error: OSError, resumable: bool) -> str:
    """The one-line error for a checkpoint that could not be written: where, what, why, and what is left."""
    kept = "its previous version is unchanged" if path.is_dir() else "nothing was written there"
    message = f"cannot write the checkpoint {path} ({what}): {describe_os_error(error)}; {kept}"
    if resumable and (checkpoint := resumable_checkpoint(path.parent)) is not None:
        message += (f"; free some space, then go on from {checkpoint} with: python -m minilstm.train --resume "
                    f"{path.parent}")
    return message


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` or (format version 1) ``.npz`` file; never unpickles."""
    if not path.is_file():
        raise MinilstmError(f"checkpoint file missing: {path}")
    try:
        if path.suffix == ".safetensors":
            return safetensors.numpy.load(path.read_bytes())
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, SafetensorError) as e:
        raise MinilstmError(f"corrupt checkpoint file {path}: {e}") from None


def resolve_checkpoint(path) -> tuple[Path, str | None]:
    """A checkpoint directory, or a run directory (the ``--out`` of a training run, the natural thing to pass):
    then its ``best/``, with a line saying so. The path to load and that line (None for a checkpoint)."""
    path = Path(path)
    if not path.is_dir() or (path / CONFIG_FILE).exists():
        return path, None
    if any((path / name).exists() for name in RUN_CHECKPOINTS) or (path / "history.jsonl").exists():
        best = path / "best"
        if not best.exists() and _moved_aside(best) is None:
            raise MinilstmError(f"{path} is a training run without a best/ checkpoint yet (it stopped before its "
                                "first epoch ended); pass one of its checkpoint directories, or train it further")
        return best, f"Using {best}, the checkpoint of {path} with the lowest val_loss"
    raise MinilstmError(f"{path} is neither a checkpoint (it has no {CONFIG_FILE}) nor a training run (no best/); "
                        "pass a checkpoint directory written by minilstm.train or the --out of a run")


def resumable_checkpoint(run_dir) -> Path | None:
    """The checkpoint of a training run that ``--resume`` goes on from: ``latest/``; or, where there is none,
    ``best/``, which holds the same training state. The first epoch writes ``best/`` just before ``latest/``, so a
    disk that fills in between leaves only ``best/`` (``--resume`` used to answer that the run had no checkpoint)."""
    run_dir = Path(run_dir)
    for name in ("latest", "best"):
        candidate = run_dir / name
        if candidate.exists() or _moved_aside(candidate) is not None:  # moved aside: a swap cut short by a kill
            return candidate
    return None


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
    version = config.get("format_version")
    if version not in TENSOR_FILES:
        raise MinilstmError(f"{config_path}: checkpoint format version {version!r}, this minilstm reads versions "
                            f"{', '.join(map(str, TENSOR_FILES))}")
    weights_file, optimizer_file = TENSOR_FILES[version]
    units_models = {}
    for side, name in UNITS_FILES.items():
        with contextlib.suppress(FileNotFoundError):  # a character or word model has none; Vocab says if one is missing
            units_models[side] = (path / name).read_bytes()
    try:
        model = Seq2Seq.from_config(backend, config["model"], units_models)
    except (KeyError, TypeError, ValueError) as e:
        raise MinilstmError(f"{config_path}: invalid model config ({type(e).__name__}: {e})") from None
    except MinilstmError as e:  # the vocabulary or its SentencePiece model
        raise MinilstmError(f"{path}: {e}") from None
    weights_path = path / weights_file
    weights = _read_tensors(weights_path)
    for name, shape in model.params.shapes.items():
        if name not in weights:
            raise MinilstmError(f"{weights_path}: missing tensor {name!r}")
        if weights[name].shape != shape:
            raise MinilstmError(f"{weights_path}: tensor {name!r} has shape {weights[name].shape}, the config in "
                                f"{config_path} needs {shape}")
    model.set_weights(weights)
    optimizer_state = None
    if "optimizer" in config:
        opt_path = path / optimizer_file
        optimizer_state = _read_tensors(opt_path)  # version 1 and RMSprop: {"velocity"}
        if not optimizer_state or any(a.shape != model.params.flat.shape for a in optimizer_state.values()):
            raise MinilstmError(f"{opt_path}: optimizer state does not match the model's "
                                f"{model.params.flat.size} parameters")
    return Checkpoint(model, config, optimizer_state)
