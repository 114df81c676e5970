"""``python -m minilstm.train``: the Keras example's training, with its defaults, on any backend.

Prints the example's dataset summary, a progress bar inside each epoch (on a terminal), one line per epoch; writes
into ``--out``: ``history.jsonl`` (one JSON object per epoch), ``history.png`` (when matplotlib is installed), the
checkpoints ``latest/`` (after every epoch, every ``--checkpoint-every`` steps, and on Ctrl-C/SIGTERM: the point
``--resume`` continues from), ``best/`` (lowest val_loss) and ``final/``; ends with the greedy decodes of the first
20 training inputs, as the example does.

A run stopped at any moment (kill -9 included) and resumed with ``--resume OUT`` ends with weights bit-identical to
an uninterrupted run with the same seed on the same backend: the checkpoint holds the weights, the optimizer state,
the epoch and step counters, the shuffling generator's state at the start of the epoch, the running sums of the
epoch's metrics and the history.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import distributed
from .architecture import DTYPES, Architecture
from .attention import SCORES
from .backends import available_backends, default_backend_name, get_backend
from .checkpoint import load_checkpoint, resumable_checkpoint, save_checkpoint
from .cli import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    bounded_float,
    non_negative_float,
    positive_float,
    positive_int,
    run_main,
    unit_fraction,
)
from .data import VALIDATION_SPLIT_MODES, Batch, Batches, Dataset, validation_rows
from .distributed import SINGLE_PROCESS
from .errors import MinilstmError
from .files import prepare_output_dir, write_text_atomic
from .nn import dropout_key
from .optim import DEFAULT_LEARNING_RATE, OPTIMIZERS, Optimizer, make_optimizer
from .pairs import read_pairs, resolve_pairs
from .seq2seq import Seq2Seq

EXIT_TERMINATED = 143
RANKS_READ_EVERY = 16  # steps between reads of a GPU's pending metrics when several ranks train together


def _num_samples(text: str):
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def _validation_split(text: str) -> float:
    return bounded_float(text, lambda v: 0.0 < v < 1.0, "a fraction strictly between 0 and 1")


# Settings a resumed run may change; every other flag must agree with the stored run (or be left out).
CHANGEABLE_ON_RESUME = {"epochs", "progress", "num_decodes", "checkpoint_every", "backend", "resume", "patience"}


def build_parser(with_defaults: bool = True) -> argparse.ArgumentParser:
    def default(value):
        return value if with_defaults else None

    p = argparse.ArgumentParser(prog="python -m minilstm.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default=default(default_backend_name()),
                   help=f"array backend: {', '.join(available_backends())}")
    p.add_argument("--data", type=Path, default=None,
                   help="tab-separated English<TAB>French file (default: the built-in first 10,000 pairs)")
    p.add_argument("--num-samples", type=_num_samples, default=default(10000),
                   help="first N pairs of the file, or 'all'")
    p.add_argument("--epochs", type=positive_int, default=default(100))
    p.add_argument("--batch-size", type=positive_int, default=default(64))
    p.add_argument("--latent-dim", type=positive_int, default=default(256))
    p.add_argument("--encoder-layers", type=positive_int, default=default(1), help="stacked encoder LSTM layers")
    p.add_argument("--decoder-layers", type=positive_int, default=default(1), help="stacked decoder LSTM layers")
    p.add_argument("--bidirectional-encoder", action="store_true", default=default(False),
                   help="a bidirectional encoder; the decoder gets its forward and backward states concatenated "
                        "(2 x --latent-dim units)")
    p.add_argument("--dropout", type=unit_fraction, default=default(0.0),
                   help="inverted dropout between stacked LSTM layers (training only)")
    p.add_argument("--attention", choices=("none", *SCORES), default=default("none"),
                   help="Luong attention of the decoder over the encoder's outputs, by its score: dot, general "
                        "(h . W hbar) or concat (Bahdanau's v . tanh(W h + U hbar)); none: the Keras example's model")
    p.add_argument("--no-input-feed", dest="input_feed", action="store_false", default=default(True),
                   help="with --attention: do not feed each step's attentional output into the next step's input")
    p.add_argument("--learning-rate", type=positive_float, default=None,
                   help="left out: Keras's default for the --optimizer, 0.001 (rmsprop, adam) or 0.01 (sgd)")
    p.add_argument("--rho", type=positive_float, default=default(0.9), help="RMSprop decay")
    p.add_argument("--epsilon", type=positive_float, default=default(1e-7), help="RMSprop's and Adam's epsilon")
    p.add_argument("--epsilon-inside-sqrt", action="store_true", default=default(False),
                   help="Keras 3's RMSprop (lr*g/sqrt(v+eps)) instead of tf.keras's lr*g/(sqrt(v)+eps)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=default("rmsprop"),
                   help="rmsprop (the Keras example's), adam, or sgd (with --momentum); formulas in minilstm/optim.py")
    p.add_argument("--clip-norm", type=positive_float, default=None, metavar="X",
                   help="scale the gradient down to global norm X where it is larger (Keras's global_clipnorm)")
    p.add_argument("--momentum", type=non_negative_float, default=default(0.0), help="SGD momentum")
    p.add_argument("--beta-1", type=unit_fraction, default=default(0.9), help="Adam's first-moment decay")
    p.add_argument("--beta-2", type=unit_fraction, default=default(0.999), help="Adam's second-moment decay")
    p.add_argument("--validation-split", type=_validation_split, default=default(0.2),
                   help="the fraction of the pairs held out for validation (see --validation-split-mode)")
    p.add_argument("--validation-split-mode", choices=VALIDATION_SPLIT_MODES, default=default("last"),
                   help="last: the file's last pairs, as Keras does (fra.txt is sorted by length: the longest "
                        "sentences); random: English sentences drawn with --seed, all pairs of each held out")
    p.add_argument("--validation-data", type=Path, default=None, metavar="PATH",
                   help="validate on this file's pairs instead of a --validation-split; training leaves out every "
                        "pair whose English sentence is in it")
    p.add_argument("--seed", type=int, default=default(0), help="seeds the initial weights and the shuffling")
    p.add_argument("--dtype", choices=DTYPES, default=default("float32"))
    p.add_argument("--mask-padding", action="store_true", default=default(False),
                   help="count real characters only (loss, accuracy, gradients) and batch sentences of one English "
                        "length together, each batch run only to its longest sentence: far less work per epoch, "
                        "but not the Keras example's numbers")
    p.add_argument("--out", type=Path, default=default(Path("runs/seq2seq")), help="output directory")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="also write latest/ every N training steps (it is always written after each epoch)")
    p.add_argument("--patience", type=positive_int, default=None, metavar="N",
                   help="stop early once val_loss has not improved for N epochs (the example over-fits after ~25)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run whose --out was DIR, with its stored settings")
    p.add_argument("--num-decodes", type=int, default=default(20),
                   help="greedy decodes of the first N inputs at the end")
    p.add_argument("--progress", choices=("auto", "always", "never"), default=default("auto"),
                   help="progress bar within each epoch (auto: only on a terminal)")
    return p


# The flags that set one optimizer's hyper-parameters, and the optimizers they are for.
OPTIMIZER_FLAGS = {"rho": ("rmsprop",), "epsilon_inside_sqrt": ("rmsprop",), "epsilon": ("rmsprop", "adam"),
                   "beta_1": ("adam",), "beta_2": ("adam",), "momentum": ("sgd",)}


def _check_optimizer_flags(optimizer: str, given: set):
    for name in sorted(given & set(OPTIMIZER_FLAGS)):
        if optimizer not in OPTIMIZER_FLAGS[name]:
            raise MinilstmError(f"--{name.replace('_', '-')} is for --optimizer {' or '.join(OPTIMIZER_FLAGS[name])}, "
                                f"this run's is {optimizer}")


def parse_args(argv, prepare_out=True):
    """Parse, and with ``--resume`` take the stored run's settings, refusing flags that contradict them. With
    ``prepare_out`` (rank 0 of a data-parallel run: the one that writes), the output directory is created and
    checked here, before any data is read or kernel compiled."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {k for k, v in vars(build_parser(with_defaults=False).parse_args(argv)).items() if v is not None}
    if not args.input_feed and args.attention == "none":
        raise MinilstmError("--no-input-feed is for models with --attention (dot, general or concat)")
    if args.dropout > 0 and args.encoder_layers == 1 and args.decoder_layers == 1:
        raise MinilstmError("--dropout acts between stacked LSTM layers: use it with --encoder-layers or "
                            "--decoder-layers of 2 or more")
    if args.validation_data is not None and "validation_split_mode" in given:
        raise MinilstmError("--validation-split-mode chooses pairs of --data to hold out; with --validation-data "
                            "nothing is: leave one of them out")
    if args.resume is None:
        _check_optimizer_flags(args.optimizer, given)
        if args.learning_rate is None:
            args.learning_rate = DEFAULT_LEARNING_RATE[args.optimizer]
        if prepare_out:
            prepare_output_dir(args.out)  # a bad --out fails at once
        return args, None
    if not args.resume.is_dir():
        raise MinilstmError(f"cannot resume: {args.resume} is not a directory (pass the --out of an earlier run)")
    latest = resumable_checkpoint(args.resume)  # latest/, or best/ when a full disk stopped the first latest/
    if latest is None:
        raise MinilstmError(f"nothing to resume in {args.resume}: it has no checkpoint yet (the run stopped before "
                            "its first one); start it again without --resume")
    if prepare_out:
        prepare_output_dir(args.resume, "--resume")
    checkpoint = load_checkpoint(latest, backend="numpy")
    stored = checkpoint.config.get("training", {}).get("args")
    if stored is None or "progress" not in checkpoint.config.get("training", {}):
        raise MinilstmError(f"cannot resume from {latest}: it holds no training state")
    # A run from before a flag existed ran with its default (--optimizer: RMSprop without clipping; one-layer
    # encoder and decoder; no --mask-padding).
    stored = {**{action.dest: action.default for action in parser._actions if action.dest != "help"}, **stored}
    _check_optimizer_flags(args.optimizer if "optimizer" in given else stored["optimizer"], given)
    backend = args.backend if "backend" in given else stored["backend"]
    resumed = argparse.Namespace(**stored)
    resumed.data = None if stored["data"] is None else Path(stored["data"])
    resumed.validation_data = None if stored.get("validation_data") is None else Path(stored["validation_data"])
    resumed.out = args.resume
    for name in sorted(given - CHANGEABLE_ON_RESUME):
        value = getattr(args, name)
        stored_value = stored.get(name)
        if name == "out" and Path(value) == Path(args.resume):
            continue
        if (str(value) if isinstance(value, Path) else value) != stored_value:
            flag = "--" + name.replace("_", "-")
            raise MinilstmError(f"{flag} {value} contradicts the run in {args.resume} ({flag} {stored_value}); "
                                "leave it out to resume, or start a new run with another --out")
    for name in CHANGEABLE_ON_RESUME & given:
        setattr(resumed, name, getattr(args, name))
    resumed.resume = args.resume
    resumed.backend = backend
    for name in ("checkpoint_every", "num_decodes", "progress", "patience"):
        if not hasattr(resumed, name):
            setattr(resumed, name, getattr(args, name))
    return resumed, checkpoint


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


class StopSignals:
    """SIGINT/SIGTERM ask training to stop at the next step boundary (checkpoint, then exit 130/143). A second
    SIGINT acts at once (KeyboardInterrupt); checkpoints are renamed into place whole, so that is safe too. Under
    mpiexec every rank gets the signal; only rank 0 (``announce``) says so."""

    def __init__(self, announce: bool = True):
        self.received = None
        self.announce = announce

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.received = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop at once)", file=sys.stderr,
                  flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def peak_memory_mib() -> float | None:
    """This process's peak resident memory so far (host memory; a GPU's is not in it), None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


def training_data(args) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The dataset and its training and validation rows: ``--validation-split`` of the pairs, the last ones as Keras
    does or, with ``--validation-split-mode random``, those of English sentences drawn with ``--seed``; or the pairs
    of ``--validation-data``, with every training pair of the same English sentences left out (the file has several
    translations per sentence). Vocabularies and lengths cover both parts, as in Keras."""
    pairs = resolve_pairs(args.data, args.num_samples)
    if args.validation_data is None:
        dataset = Dataset.from_pairs(pairs)
        train_idx, val_idx = validation_rows(pairs, args.validation_split, args.validation_split_mode, args.seed)
        if args.validation_split_mode == "random":
            sentences = len({pairs[k][0] for k in val_idx})
            print(f"Holding out the {len(val_idx):,} pairs of {sentences:,} English sentences drawn at random "
                  f"(--seed {args.seed}); no English sentence is in both parts", flush=True)
        return dataset, train_idx, val_idx
    val_pairs = read_pairs(args.validation_data)
    held_out = {english for english, _ in val_pairs}
    train_pairs = [pair for pair in pairs if pair[0] not in held_out]
    if not train_pairs:
        raise MinilstmError(f"every training pair has its English sentence in {args.validation_data}: nothing is "
                            "left to train on")
    print(f"Validating on the {len(val_pairs):,} pairs of {args.validation_data}; left out "
          f"{len(pairs) - len(train_pairs):,} training pairs with the same English sentences", flush=True)
    dataset = Dataset.from_pairs(train_pairs + val_pairs)
    return dataset, np.arange(len(train_pairs)), np.arange(len(train_pairs), len(dataset))


def check_finite(model: Seq2Seq, loss: float | None, epoch: int, step: int):
    """Stop on NaN/Inf in the loss or any gradient (before the update) or any weight (after it), naming the step
    and the tensor, so that no checkpoint ever holds a non-finite number."""
    where = f"training diverged at epoch {epoch}, step {step}"
    advice = "lower --learning-rate (the checkpoints already written are intact)"
    if loss is not None and not math.isfinite(loss):
        raise MinilstmError(f"{where}: the loss is {loss}; {advice}")
    xp = model.backend.xp
    tensors, what = (model.grads, "the gradient of") if loss is not None else (model.params, "the update made")
    if not bool(xp.isfinite(tensors.flat).all()):
        bad = next(name for name, g in tensors.items() if not bool(xp.isfinite(g).all()))
        raise MinilstmError(f"{where}: {what} {bad} {'hold' if loss is None else 'holds'} NaN or Inf; {advice}")


def rank_part(model: Seq2Seq, batch: Batch, compute_grads: bool = True, dropout_seed: int | None = None):
    """This rank's loss sum and hits for ``batch`` and, with ``compute_grads``, its part of the gradient in
    ``model.grads`` (a mean over the global batch's positions, so the ranks' parts add up to the whole). A rank
    with no rows in the batch (a batch shorter than the number of ranks) adds zeros."""
    if batch.arrays is None:
        if compute_grads:
            model.grads.flat[...] = 0
        return 0.0, 0.0
    return model.forward_backward(*batch.arrays, compute_grads=compute_grads, positions=batch.positions,
                                  dropout_seed=dropout_seed, row_offset=batch.row_offset,
                                  source_lengths=batch.source_lengths)


def evaluate(model: Seq2Seq, batches: Batches, plan: list[np.ndarray], comm=SINGLE_PROCESS):
    """Loss and accuracy over the batches of ``plan``, counted as in training: Keras's val_loss / val_accuracy, or
    over real characters with --mask-padding. Each rank runs its rows; the per-batch sums are added over the ranks
    in one message and then over the batches in order, as one process adds them. One read-back at the end."""
    parts, positions = [], 0
    for batch in batches.epoch(plan):
        parts.append(rank_part(model, batch, compute_grads=False))
        positions += batch.positions
    loss_sum = correct = 0.0
    for batch_loss, batch_correct in comm.sum_metrics(parts):
        loss_sum = loss_sum + batch_loss
        correct = correct + batch_correct
    return float(loss_sum) / positions, float(correct) / positions


class PendingMetrics:
    """The training steps' losses and hits, kept where the backend computed them until they are read. Reading a
    GPU value waits for the GPU, so there they are read in bulk (progress bar refresh, checkpoint, epoch end); on the
    CPU reading is free and happens every step, which lets the NaN check name the exact step and tensor."""

    def __init__(self):
        self.steps = []

    def add(self, epoch, step, loss, correct, positions):
        self.steps.append((epoch, step, loss, correct, positions))

    def flush(self, progress: "Progress", model: Seq2Seq):
        for epoch, step, loss, correct, positions in self.steps:
            check_finite(model, float(loss) / positions, epoch, step)
            progress.loss_sum += float(loss)
            progress.correct += float(correct)
            progress.positions += positions
        if self.steps:
            check_finite(model, None, *self.steps[-1][:2])
        self.steps.clear()


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

    def plot(self, history: list[dict]):
        if self.enabled and history and plot_history(history, self.out / "history.png"):
            print(f"Wrote {self.out / 'history.png'}")


class Training:
    """One run of ``minilstm.train``: the model, the optimizer, the batches and where training stands, on this
    rank. Data flows one way: ``training_data`` (text -> ids) -> ``Batches`` (this rank's rows of each batch) ->
    ``rank_part`` (its gradient part) -> the communicator (the sum over the ranks) -> the optimizer -> ``RunFiles``."""

    def __init__(self, args, resumed, comm):
        self.args, self.comm = args, comm
        self.backend = backend = get_backend(args.backend)
        if comm.size > 1 and not backend.name.startswith("cupy"):
            # Each rank's BLAS single-threaded, as in a thread shard: MINILSTM_THREADS threads per rank, no more, and
            # the same GEMM code a shard runs (2 ranks x 1 thread = 1 process x 2 shards, to the bit).
            self._blas_limit = threadpool_limits(1, user_api="blas")
        self.dataset, self.train_idx, self.val_idx = comm.agree(lambda: training_data(args))
        dataset = self.dataset
        comm.check_same({"settings": {k: v for k, v in args_record(args).items() if k != "out"},
                         "pair count": [len(dataset), len(self.train_idx), len(self.val_idx)],
                         "vocabularies": [dataset.input_vocab.chars, dataset.target_vocab.chars]})
        print(dataset.summary(), flush=True)
        init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)
        self.shuffle_rng = np.random.default_rng(shuffle_seed)
        self.model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                             dataset.max_decoder_len, Architecture.from_args(args))
        own = {"rmsprop": {"rho": args.rho, "epsilon": args.epsilon, "epsilon_inside_sqrt": args.epsilon_inside_sqrt},
               "adam": {"beta_1": args.beta_1, "beta_2": args.beta_2, "epsilon": args.epsilon},
               "sgd": {"momentum": args.momentum}}[args.optimizer]
        self.optimizer = make_optimizer(args.optimizer, backend, self.model.params.flat.size, self.model.dtype,
                                        learning_rate=args.learning_rate, clip_norm=args.clip_norm, **own)
        if resumed is None:
            self.model.initialize(np.random.default_rng(init_seed))
            self.progress = Progress()
        else:
            self._resume(resumed)
        comm.broadcast_array(self.model.params.flat)  # every rank starts from rank 0's weights and state
        for array in self.optimizer.state().values():
            comm.broadcast_array(array)
        print(f"Training on {len(self.train_idx)} pairs, validating on {len(self.val_idx)}; backend "
              f"{backend.describe()}, {args.dtype}, batch {args.batch_size}, latent {args.latent_dim}; writing to "
              f"{args.out}", flush=True)
        if not self.model.arch.is_example():
            enc, dec = self.model.encoder, self.model.decoder
            attention = "no attention" if args.attention == "none" else \
                f"{args.attention} attention {'with' if args.input_feed else 'without'} input feeding"
            print(f"Model: {enc.num_layers}-layer {'bidirectional ' if enc.bidirectional else ''}encoder, "
                  f"{dec.num_layers}-layer decoder of {dec.units} units, dropout {enc.dropout} between layers, "
                  f"{attention}", flush=True)
        if args.mask_padding:
            print("--mask-padding: loss and accuracy count real characters only (not comparable with the Keras-style "
                  "numbers of a run without it)", flush=True)
        self.batches = Batches(dataset, backend, args.mask_padding, comm.rank, comm.size)
        self.val_plan = self.batches.plan(self.val_idx, 256, None)
        self.files = RunFiles(args.out, comm, args)
        self.pending = PendingMetrics()
        self.show_progress = comm.is_root and (args.progress == "always" or (args.progress == "auto"
                                                                            and sys.stderr.isatty()))
        comm.on_lost_peer(f"{args.out / 'latest'} is intact; resume with: mpiexec -n {comm.size} python -m "
                          f"minilstm.train --resume {args.out}")

    def _resume(self, resumed):
        args, training = self.args, resumed.config["training"]
        if resumed.model.config() != self.model.config():
            raise MinilstmError(f"cannot resume {args.resume}: its data ({args.data or 'the built-in subset'}) no "
                                "longer gives the vocabularies and lengths the checkpoint was trained on")
        self.model.set_weights(resumed.model.get_weights())
        self.progress = Progress(**training["progress"])
        self.optimizer.load_state(resumed.optimizer_state)
        self.optimizer.iterations = resumed.config["optimizer"]["iterations"]
        if self.progress.epoch_rng_state is not None:
            self.shuffle_rng.bit_generator.state = self.progress.epoch_rng_state
        print(f"Resuming {args.resume} after epoch {self.progress.epoch}, step {self.progress.step}", flush=True)
        ranks = training.get("ranks", 1)
        if ranks != self.comm.size:
            print(f"The run was trained on {ranks} rank{'s' if ranks > 1 else ''}, it goes on with {self.comm.size}: "
                  "the gradient parts are now summed in another order, so the weights will not be bit-identical to "
                  "an uninterrupted run", flush=True)

    def run(self) -> int:
        """Train the remaining epochs; the exit code (130/143 when a signal stopped it)."""
        args, progress = self.args, self.progress
        self.files.history(progress)
        first_epoch = progress.epoch + 1
        with StopSignals(announce=self.comm.is_root) as signals:
            for epoch in range(first_epoch, args.epochs + 1):
                stopped_by = self.train_epoch(epoch, signals)
                if stopped_by:
                    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_TERMINATED
                if self.patience_exhausted(epoch):
                    break
        self.comm.finish()
        if first_epoch > args.epochs:
            print("Nothing to train: the run already has all its epochs (pass a larger --epochs to go on)")
        self.files.checkpoint("final", self.model, self.optimizer, self.progress)
        self.files.plot(self.progress.history)
        print(f"Checkpoints: {args.out / 'final'} (last epoch), {args.out / 'best'} (lowest val_loss "
              f"{self.progress.best_val_loss:.4f}); resume or extend with --resume {args.out}")
        if self.comm.is_root:
            self.print_decodes()
        return 0

    def train_epoch(self, epoch: int, signals: StopSignals) -> int:
        """One epoch (from where a resumed run stopped), validation and the epoch's checkpoints; the signal that
        stopped it (after a checkpoint), else 0."""
        args, progress, model, comm = self.args, self.progress, self.model, self.comm
        if progress.step == 0:
            progress.epoch_rng_state = self.shuffle_rng.bit_generator.state
        plan = self.batches.plan(self.train_idx, args.batch_size, self.shuffle_rng)
        bar = ProgressBar(len(plan), self.show_progress)
        started = time.perf_counter()
        steps_run = 0
        for step, batch in enumerate(self.batches.epoch(plan, start=progress.step), start=progress.step + 1):
            steps_run += 1
            # Dropout masks from (seed, optimizer step): a resumed run draws the ones it would have drawn.
            batch_loss, batch_correct = rank_part(model, batch, dropout_seed=dropout_key(args.seed,
                                                                                         self.optimizer.iterations))
            comm.allreduce_sum(model.grads.flat)
            batch_loss, batch_correct = comm.sum_metrics([(batch_loss, batch_correct)])[0]
            if self.backend.cheap_sync:  # check before the update: a NaN gradient never reaches the weights
                check_finite(model, float(batch_loss) / batch.positions, epoch, step)
            self.optimizer.step(model.params.flat, model.grads.flat)
            progress.step = step
            self.pending.add(epoch, step, batch_loss, batch_correct, batch.positions)
            if self.backend.cheap_sync or self.metrics_due(step, bar):
                self.pending.flush(progress, model)
                bar.update(step, progress.loss_sum / progress.positions, progress.correct / progress.positions)
            stop = comm.max_int(signals.received or 0)  # every rank stops after the same step
            if stop:
                self.pending.flush(progress, model)
                bar.close()
                self.files.checkpoint("latest", model, self.optimizer, progress)
                comm.finish()
                if comm.is_root:
                    print(f"{signal.Signals(stop).name}: stopped at epoch {epoch}, step {step}; saved "
                          f"{args.out / 'latest'}. Resume with: {self.command()} --resume {args.out}",
                          file=sys.stderr, flush=True)
                return stop
            if args.checkpoint_every and self.optimizer.iterations % args.checkpoint_every == 0 \
                    and step < len(plan):
                self.pending.flush(progress, model)
                self.files.checkpoint("latest", model, self.optimizer, progress)
        self.pending.flush(progress, model)
        self.backend.synchronize()
        train_seconds = time.perf_counter() - started
        bar.close()
        self.end_epoch(epoch, started, train_seconds, steps_run)
        return 0

    def metrics_due(self, step: int, bar: ProgressBar) -> bool:
        """When a GPU run reads its pending metrics (and so checks them for NaN): when the progress bar redraws, or,
        on several ranks, every ``RANKS_READ_EVERY`` steps on all of them alike, so that all stop at the same step."""
        if self.comm.size == 1:
            return bar.due()
        return step % RANKS_READ_EVERY == 0

    def end_epoch(self, epoch: int, started: float, train_seconds: float, steps_run: int):
        """Validate, record the epoch (history.jsonl, its line), write best/ (on a new lowest val_loss) and latest/."""
        args, progress = self.args, self.progress
        val_loss, val_accuracy = evaluate(self.model, self.batches, self.val_plan, self.comm)
        record = {"epoch": epoch, "loss": progress.loss_sum / progress.positions,
                  "accuracy": progress.correct / progress.positions, "val_loss": val_loss,
                  "val_accuracy": val_accuracy, "seconds": time.perf_counter() - started,
                  "ms_per_step": 1000 * train_seconds / max(1, steps_run), "peak_memory_mib": peak_memory_mib()}
        self.progress = progress = Progress(epoch=epoch, epoch_rng_state=self.shuffle_rng.bit_generator.state,
                                            best_val_loss=progress.best_val_loss, history=[*progress.history, record])
        self.files.history(progress)
        print(f"Epoch {epoch}/{args.epochs} - {record['seconds']:.1f}s {record['ms_per_step']:.0f}ms/step - "
              f"loss: {record['loss']:.4f} - accuracy: {record['accuracy']:.4f} - val_loss: {val_loss:.4f} - "
              f"val_accuracy: {val_accuracy:.4f}", flush=True)
        if val_loss < progress.best_val_loss:
            progress.best_val_loss = val_loss
            self.files.checkpoint("best", self.model, self.optimizer, progress, record)
        self.files.checkpoint("latest", self.model, self.optimizer, progress)

    def patience_exhausted(self, epoch: int) -> bool:
        progress, patience = self.progress, self.args.patience
        best_epoch = min(progress.history, key=lambda h: h["val_loss"])["epoch"]
        if patience and epoch - best_epoch >= patience:
            print(f"Early stop: val_loss has not improved for {patience} epochs (best "
                  f"{progress.best_val_loss:.4f} at epoch {best_epoch})", flush=True)
            return True
        return False

    def print_decodes(self):
        """The example's ending: greedy decodes of the first ``--num-decodes`` training inputs."""
        n = min(self.args.num_decodes, len(self.train_idx))
        if n > 0:
            inputs = self.dataset.input_texts[:n]
            for text, decoded in zip(inputs, self.model.translate(inputs), strict=True):
                print("-")
                print("Input sentence:", text)
                print("Decoded sentence:", decoded)

    def command(self) -> str:
        launcher = f"mpiexec -n {self.comm.size} " if self.comm.size > 1 else ""
        return f"{launcher}python -m minilstm.train"


def main(argv=None) -> int:
    comm = distributed.connect()
    quiet = contextlib.nullcontext()
    if not comm.is_root:  # rank 0 alone prints; an error every rank meets is said once, by rank 0
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        quiet = contextlib.redirect_stderr(sys.stdout)  # for argparse, which prints its errors itself
    try:
        with quiet:
            args, resumed = comm.agree(lambda: parse_args(argv, prepare_out=comm.is_root))
        comm = distributed.for_backend(comm, args.backend)
        if comm.describe():
            print(comm.describe(), flush=True)
        np.seterr(all="ignore")  # overflow is reported once, by check_finite, naming the step and the tensor
        code = Training(args, resumed, comm).run()
        comm.close()
        return code
    except MinilstmError as e:
        comm.finish()
        if comm.is_root or isinstance(e, distributed.LostPeer):
            raise
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(run_main(main))
