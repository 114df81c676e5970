"""``minilstm average CKPT_DIR... --out DIR``: one checkpoint with the mean of the weights of several checkpoints.

The element-wise mean of the weights of checkpoints of the same model (architecture, dtype, vocabularies, lengths).

Why: the weights of a run's last few checkpoints, averaged, often translate better than any one of them (Vaswani
et al. 2017; fairseq's ``average_checkpoints``), at no cost of training. The mean is taken in float64, in the order
the checkpoints are given, and rounded once to the model's dtype. The result holds no optimizer state and no
training state (it is for ``translate``, ``evaluate``, ``serve``, ``convert``, not for ``--resume``); its
``config.json`` records what was averaged. It is written as every checkpoint is (``save_checkpoint``: a temporary
directory renamed into place), and only after every input has been read and checked, so an error leaves nothing.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .cli import run_main
from .errors import MinilstmError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minilstm.average", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT_DIR",
                   help="two or more checkpoint directories (a run directory stands for its best/)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="where the averaged checkpoint goes (a new or empty directory)")
    return p


def _difference(first: dict, other: dict) -> str:
    """The first setting in which two model configs differ, as ``name A vs B`` (vocabularies by their size)."""
    for key in sorted(set(first) | set(other)):
        a, b = first.get(key), other.get(key)
        if a != b:
            if key.endswith("_vocab") and isinstance(a, list) and isinstance(b, list):
                return f"{key} of {len(a)} characters vs {len(b)}" if len(a) != len(b) else f"{key} differs"
            return f"{key} {a} vs {b}"
    return "nothing"


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    """Average the checkpoints at ``paths`` into the checkpoint directory ``out``; every problem is one
    ``MinilstmError``."""
    if len(paths) < 2:
        raise MinilstmError("give two or more checkpoints to average")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MinilstmError(f"--out {out} already exists and is not an empty directory; pass a new one")
    resolved = []
    for path in paths:
        checkpoint_dir, note = resolve_checkpoint(path)
        if note:
            print(note, file=sys.stderr)
        resolved.append(checkpoint_dir)
    first = load_checkpoint(resolved[0], backend="numpy")
    model_config = first.model.config()
    sums = {name: w.astype(np.float64) for name, w in first.model.get_weights().items()}
    sources = [_source(resolved[0], first.config)]
    for path in resolved[1:]:
        checkpoint = load_checkpoint(path, backend="numpy")
        if checkpoint.model.config() != model_config:
            raise MinilstmError(f"cannot average {path} with {resolved[0]}: their models differ "
                                f"({_difference(checkpoint.model.config(), model_config)})")
        for name, w in checkpoint.model.get_weights().items():
            sums[name] += w
        sources.append(_source(path, checkpoint.config))
    model = first.model
    model.set_weights({name: total / len(resolved) for name, total in sums.items()})
    save_checkpoint(out, model, None, {"averaged": {"count": len(resolved), "checkpoints": sources}})
    return out


def _source(path: Path, config: dict) -> dict:
    """What the averaged checkpoint records of one input: its path, and its epoch and step where it has them."""
    progress = config.get("training", {}).get("progress", {})
    record = {"path": str(path)}
    if "epoch" in progress:
        record["epoch"], record["step"] = progress["epoch"], progress.get("step", 0)
    if "optimizer" in config:
        record["iterations"] = config["optimizer"].get("iterations")
    return record


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = average_checkpoints(args.checkpoints, args.out)
    print(f"Averaged {len(args.checkpoints)} checkpoints into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
