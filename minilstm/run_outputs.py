"""What a training run writes and shows: ``history.jsonl``, ``history.png``, the checkpoints of its ``--out``, the
``--snapshot-minutes`` snapshots, the progress bar, and the record of where training stands (``Progress``) that every
checkpoint holds."""

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checkpoint import save_checkpoint
from .errors import MinilstmError
from .files import write_text_atomic
from .optim import Optimizer
from .seq2seq import Seq2Seq


@dataclass
class Progress:
    """Where training stands; stored in every checkpoint so that a resumed run continues exactly."""

    epoch: int = 0  # completed epochs
    step: int = 0  # training steps done in the epoch after them
    epoch_rng_state: dict | None = None  # shuffling generator's state at the start of that epoch
    loss_sum: float = 0.0  # the epoch's running sums, for its reported loss and accuracy
    correct: float = 0.0
    positions: int = 0
    best_val_loss: float = math.inf
    history: list = field(default_factory=list)
    train_seconds: float = 0.0  # training wall time of the run so far, all its processes (--snapshot-minutes' clock)


SNAPSHOTS_FILE = "snapshots.json"
"""The list of a run's snapshots, beside its checkpoints: one record per snapshot (minutes, mark, epoch, step, path)."""


def snapshot_name(minutes: float) -> str:
    """``minute-0005.000``: names that sort as their minutes do, fine enough for marks a fraction of a minute apart."""
    return f"minute-{minutes:08.3f}"


class ProgressBar:
    """A Keras-like ``37/125 [=====>....] - ETA: 3s - loss: ...`` line, redrawn in place on stderr."""

    def __init__(self, total: int, enabled: bool, width: int = 30):
        self.total, self.enabled, self.width = total, enabled, width
        self.start = self.last_draw = time.perf_counter()

    def due(self) -> bool:
        """Time to redraw (at most 5 times a second, and never when disabled)."""
        return self.enabled and time.perf_counter() - self.last_draw > 0.2

    def update(self, done: int, loss: float, accuracy: float):
        if not self.enabled:
            return
        filled = self.width * done // self.total
        bar = "=" * max(filled - 1, 0) + (">" if done < self.total else "=") + "." * (self.width - filled)
        self.last_draw = time.perf_counter()
        elapsed = self.last_draw - self.start
        eta = elapsed / done * (self.total - done)
        sys.stderr.write(f"\r{done:>{len(str(self.total))}}/{self.total} [{bar[: self.width]}] - ETA: {eta:4.0f}s"
                         f" - loss: {loss:.4f} - accuracy: {accuracy:.4f}")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def peak_memory_mib() -> float | None:
    """This process's peak resident memory so far (host memory; a GPU's is not in it), None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def plot_history(history: list[dict], path: Path) -> bool:
    """history.png: loss and accuracy per epoch, train and validation. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h[metric] for h in history], label=metric)
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], label=f"val_{metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MinilstmError(f"cannot write the plot of the history to {path}: {e.strerror or e}; the checkpoints "
                            "and history.jsonl are complete") from None
    finally:
        plt.close(fig)
    return True


def args_record(args) -> dict:
    skip = {"resume", "progress", "num_decodes", "checkpoint_every", "patience"}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}


class RunFiles:
    """What a run writes into ``--out``: history.jsonl, history.png and the checkpoints. Rank 0 writes them; on the
    other ranks (same weights, same history) every method does nothing."""

    def __init__(self, out: Path, comm, args):
        self.out, self.comm, self.args = out, comm, args
        self.enabled = comm.is_root
        if self.enabled:
            out.mkdir(parents=True, exist_ok=True)

    def history(self, progress: Progress):
        if self.enabled:
            write_text_atomic(self.out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in progress.history),
                              "the history")

    def checkpoint(self, name: str, model: Seq2Seq, optimizer: Optimizer, progress: Progress, metrics=None):
        if not self.enabled:
            return
        extra = {"training": {"args": args_record(self.args), "progress": asdict(progress), "ranks": self.comm.size}}
        if metrics is not None:
            extra["metrics"] = metrics
        with self.comm.exclusive():  # a lost peer waits for the write to finish
            save_checkpoint(self.out / name, model, optimizer, extra)

    def snapshots(self) -> list[dict]:
        try:
            return json.loads((self.out / SNAPSHOTS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise MinilstmError(f"cannot read the list of snapshots {self.out / SNAPSHOTS_FILE}: {e}") from None

    def forget_snapshots_after(self, train_seconds: float):
        """Drop the snapshots taken after ``train_seconds`` of training (and their directories): a run resumed from
        latest/ trains that time again and takes them anew, and a new run in the same --out starts from 0."""
        if not self.enabled or not (self.out / SNAPSHOTS_FILE).exists():
            return
        kept = []
        for record in self.snapshots():
            if record["minutes"] * 60 <= train_seconds:
                kept.append(record)
            else:
                shutil.rmtree(self.out / record["path"], ignore_errors=True)
        self._write_snapshots(kept)

    def snapshot(self, model: Seq2Seq, record: dict):
        """Save the weights (no optimizer state: snapshots are for scoring, --resume goes on from latest/) into
        snapshots/ under ``record``'s minutes (its mark, else the actual time), and add ``record`` to the list."""
        if not self.enabled:
            return
        minutes = record["minutes"] if record["mark"] is None else record["mark"]
        record = {**record, "path": f"snapshots/{snapshot_name(minutes)}"}
        extra = {"training": {"args": args_record(self.args)}, "snapshot": record}
        with self.comm.exclusive():
            save_checkpoint(self.out / record["path"], model, None, extra)
        self._write_snapshots([r for r in self.snapshots() if r["path"] != record["path"]] + [record])

    def _write_snapshots(self, records: list[dict]):
        write_text_atomic(self.out / SNAPSHOTS_FILE, json.dumps(records, indent=1) + "\n", "the list of snapshots")

    def plot(self, history: list[dict]):
        if self.enabled and history and plot_history(history, self.out / "history.png"):
            print(f"Wrote {self.out / 'history.png'}")
