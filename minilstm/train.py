"""``python -m minilstm.train``: the Keras example's training, with its defaults, on any backend.

Prints the example's dataset summary, a progress bar inside each epoch (on a terminal), one line per epoch; writes
``history.jsonl`` (one JSON object per epoch), ``history.png`` (when matplotlib is installed), the checkpoint with
the lowest val_loss (``best/``) and the last one (``final/``); ends with the greedy decodes of the first 20
training inputs, as the example does.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .backend import available_backends, default_backend_name, get_backend
from .checkpoint import save_checkpoint
from .cli import positive_float, positive_int, run_main
from .data import Dataset, iterate_batches, resolve_pairs, split_validation
from .errors import MinilstmError
from .optim import RMSprop
from .seq2seq import DTYPES, Seq2Seq


def _num_samples(text: str):
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def _validation_split(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction strictly between 0 and 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minilstm.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default=default_backend_name(),
                   help=f"array backend: {', '.join(available_backends())}")
    p.add_argument("--data", type=Path, default=None,
                   help="tab-separated English<TAB>French file (default: the built-in first 10,000 pairs)")
    p.add_argument("--num-samples", type=_num_samples, default=10000, help="first N pairs of the file, or 'all'")
    p.add_argument("--epochs", type=positive_int, default=100)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--latent-dim", type=positive_int, default=256)
    p.add_argument("--learning-rate", type=positive_float, default=0.001)
    p.add_argument("--rho", type=positive_float, default=0.9, help="RMSprop decay")
    p.add_argument("--epsilon", type=positive_float, default=1e-7, help="RMSprop epsilon")
    p.add_argument("--epsilon-inside-sqrt", action="store_true",
                   help="Keras 3's RMSprop (lr*g/sqrt(v+eps)) instead of tf.keras's lr*g/(sqrt(v)+eps)")
    p.add_argument("--validation-split", type=_validation_split, default=0.2,
                   help="the last fraction of the pairs, in file order, is held out")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the shuffling")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--out", type=Path, default=Path("runs/seq2seq"), help="output directory")
    p.add_argument("--num-decodes", type=int, default=20, help="greedy decodes of the first N inputs at the end")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar within each epoch (auto: only on a terminal)")
    return p


class ProgressBar:
    """A Keras-like ``37/125 [=====>....] - ETA: 3s - loss: ...`` line, redrawn in place on stderr."""

    def __init__(self, total: int, enabled: bool, width: int = 30):
        self.total, self.enabled, self.width = total, enabled, width
        self.start = time.perf_counter()

    def update(self, done: int, loss: float, accuracy: float):
        if not self.enabled:
            return
        filled = self.width * done // self.total
        bar = "=" * max(filled - 1, 0) + (">" if done < self.total else "=") + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done)
        sys.stderr.write(f"\r{done:>{len(str(self.total))}}/{self.total} [{bar[: self.width]}] - ETA: {eta:4.0f}s"
                         f" - loss: {loss:.4f} - accuracy: {accuracy:.4f}")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def check_finite(model: Seq2Seq, loss: float, epoch: int, step: int):
    """Stop on NaN/Inf in the loss or any gradient, naming the step and the tensor."""
    if not math.isfinite(loss):
        raise MinilstmError(f"training diverged at epoch {epoch}, step {step}: the loss is {loss}; lower "
                            "--learning-rate (the checkpoints already written are intact)")
    xp = model.backend.xp
    if not bool(xp.isfinite(model.grads.flat).all()):
        bad = next(name for name, g in model.grads.items() if not bool(xp.isfinite(g).all()))
        raise MinilstmError(f"training diverged at epoch {epoch}, step {step}: the gradient of {bad} holds NaN or "
                            "Inf; lower --learning-rate (the checkpoints already written are intact)")


def evaluate(model: Seq2Seq, dataset: Dataset, indices, batch_size: int = 256) -> tuple[float, float]:
    """Loss and accuracy over ``indices``, every position counted, as Keras's val_loss / val_accuracy."""
    loss_sum = correct = 0.0
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        batch_loss, batch_correct = model.forward_backward(dataset.encoder_input_ids[idx],
                                                           dataset.decoder_input_ids[idx],
                                                           dataset.decoder_target_ids[idx], compute_grads=False)
        loss_sum += float(batch_loss)
        correct += float(batch_correct)
    positions = len(indices) * dataset.max_decoder_len
    return loss_sum / positions, correct / positions


def write_text_atomic(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    np.seterr(all="ignore")  # overflow is reported once, by check_finite, naming the step and the tensor
    backend = get_backend(args.backend)
    pairs = resolve_pairs(args.data, args.num_samples)
    dataset = Dataset.from_pairs(pairs)
    print(dataset.summary(), flush=True)
    train_idx, val_idx = split_validation(len(dataset), args.validation_split)
    init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, args.latent_dim, args.dtype).initialize(np.random.default_rng(init_seed))
    optimizer = RMSprop(backend, model.params.flat.size, model.dtype, args.learning_rate, args.rho, args.epsilon,
                        args.epsilon_inside_sqrt)
    shuffle_rng = np.random.default_rng(shuffle_seed)
    print(f"Training on {len(train_idx)} pairs, validating on {len(val_idx)}; backend {backend.name}, "
          f"{args.dtype}, batch {args.batch_size}, latent {args.latent_dim}; writing to {args.out}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    history_path = args.out / "history.jsonl"
    history_path.write_text("")
    run_info = {"training": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    history, best_val_loss = [], math.inf
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    for epoch in range(1, args.epochs + 1):
        bar = ProgressBar(steps_per_epoch, show_progress)
        started = time.perf_counter()
        loss_sum = correct = positions = 0.0
        for step, idx in enumerate(iterate_batches(train_idx, args.batch_size, shuffle_rng), start=1):
            batch_loss, batch_correct = model.forward_backward(dataset.encoder_input_ids[idx],
                                                               dataset.decoder_input_ids[idx],
                                                               dataset.decoder_target_ids[idx])
            batch_positions = len(idx) * dataset.max_decoder_len
            check_finite(model, float(batch_loss) / batch_positions, epoch, step)
            optimizer.step(model.params.flat, model.grads.flat)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            positions += batch_positions
            bar.update(step, loss_sum / positions, correct / positions)
        backend.synchronize()
        train_seconds = time.perf_counter() - started
        bar.close()
        val_loss, val_accuracy = evaluate(model, dataset, val_idx)
        record = {"epoch": epoch, "loss": loss_sum / positions, "accuracy": correct / positions,
                  "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "seconds": time.perf_counter() - started, "ms_per_step": 1000 * train_seconds / steps_per_epoch}
        history.append(record)
        with open(history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"Epoch {epoch}/{args.epochs} - {record['seconds']:.1f}s {record['ms_per_step']:.0f}ms/step - "
              f"loss: {record['loss']:.4f} - accuracy: {record['accuracy']:.4f} - val_loss: {val_loss:.4f} - "
              f"val_accuracy: {val_accuracy:.4f}", flush=True)
        extra = {**run_info, "epoch": epoch, "metrics": record}
        if val_loss < best_val_loss:
            best_val_loss = val_loss
            save_checkpoint(args.out / "best", model, optimizer, extra)
        save_checkpoint(args.out / "final", model, optimizer, extra)
    if plot_history(history, args.out / "history.png"):
        print(f"Wrote {args.out / 'history.png'}")
    print(f"Checkpoints: {args.out / 'final'} (last epoch), {args.out / 'best'} (lowest val_loss "
          f"{best_val_loss:.4f})")
    n = min(args.num_decodes, len(train_idx))
    if n > 0:
        inputs = dataset.input_texts[:n]
        for text, decoded in zip(inputs, model.translate(inputs), strict=True):
            print("-")
            print("Input sentence:", text)
            print("Decoded sentence:", decoded)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
