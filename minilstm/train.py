"""``python -m minilstm.train``: the Keras example's training, with its defaults, on any backend.

Prints the example's dataset summary, a progress bar inside each epoch (on a terminal), one line per epoch; writes
into ``--out``: ``history.jsonl`` (one JSON object per epoch), ``history.png`` (when matplotlib is installed), the
checkpoints ``latest/`` (after every epoch, every ``--checkpoint-every`` steps, on Ctrl-C/SIGTERM and at the end of a
``--max-minutes`` budget: the point ``--resume`` continues from), ``best/`` (lowest val_loss), ``final/`` and, with
``--snapshot-minutes``, ``snapshots/`` (the weights along the way, for scoring quality against training time); ends
with the greedy decodes of the first 20 training inputs, as the example does.

A run stopped at any moment (kill -9 included) and resumed with ``--resume OUT`` ends with weights bit-identical to
an uninterrupted run with the same seed on the same backend: the checkpoint holds the weights, the optimizer state,
the epoch and step counters, the shuffling generator's state at the start of the epoch, the running sums of the
epoch's metrics and the history.
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from . import distributed
from .architecture import DTYPES
from .attention import SCORES
from .backends import available_backends, default_backend_name
from .checkpoint import load_checkpoint, resumable_checkpoint
from .cli import (
    EXIT_USER_ERROR,
    bounded_float,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_main,
    unit_fraction,
)
from .data import VALIDATION_SPLIT_MODES
from .errors import MinilstmError
from .files import prepare_output_dir
from .layers import INIT_SCHEMES
from .optim import DEFAULT_LEARNING_RATE, OPTIMIZERS
from .schedules import SCHEDULES
from .training import Training
from .units import parse_units


def _num_samples(text: str):
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def _validation_split(text: str) -> float:
    return bounded_float(text, lambda v: 0.0 < v < 1.0, "a fraction strictly between 0 and 1")


def _open_fraction(text: str) -> float:
    return bounded_float(text, lambda v: 0.0 < v < 1.0, "a number strictly between 0 and 1")


# Settings a resumed run may change; every other flag must agree with the stored run (or be left out).
CHANGEABLE_ON_RESUME = {"epochs", "progress", "num_decodes", "checkpoint_every", "backend", "resume", "patience",
                        "max_minutes", "snapshot_minutes"}


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
    p.add_argument("--units", default=default("char"), metavar="UNITS",
                   help="what the model reads and writes: char (the Keras example's), word, or sentencepiece:N "
                        "(sentencepiece-bpe:N) pieces learnt from the training pairs, one model per language")
    p.add_argument("--joint-units", action="store_true", default=default(False),
                   help="with --units word or sentencepiece: one vocabulary learnt from both languages together, "
                        "used on both sides")
    p.add_argument("--embedding-dim", type=positive_int, default=default(0), metavar="E",
                   help="a trained (V, E) embedding table before each LSTM stack instead of one-hot characters "
                        "(0: one-hot, the Keras example's)")
    p.add_argument("--embedding-dropout", type=unit_fraction, default=default(0.0), metavar="P",
                   help="with --embedding-dim: inverted dropout on the embedded characters of both sides (training "
                        "only)")
    p.add_argument("--output-dropout", type=unit_fraction, default=default(0.0), metavar="P",
                   help="inverted dropout on the decoder's outputs (with --attention, the attentional outputs) before "
                        "the output layer (training only)")
    p.add_argument("--init", choices=INIT_SCHEMES, default=default("keras"),
                   help="how the weights start: keras (glorot_uniform, orthogonal recurrent kernels, forget bias 1, "
                        "embeddings uniform(+-0.05); the Keras example's) or pytorch (PyTorch's module defaults: "
                        "uniform(+-1/sqrt(fan_in)), embeddings standard normal)")
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
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=default("constant"),
                   help="the learning rate of each step: constant, inverse-sqrt (1/sqrt(step) after warm-up), "
                        "cosine (down to --min-learning-rate over --epochs), plateau (times --plateau-factor when "
                        "val_loss stalls); formulas in minilstm/schedules.py")
    p.add_argument("--warmup-steps", type=non_negative_int, default=default(0), metavar="N",
                   help="raise the learning rate linearly from 0 over the first N steps (any --lr-schedule)")
    p.add_argument("--min-learning-rate", type=non_negative_float, default=default(0.0),
                   help="--lr-schedule cosine: the rate it ends at")
    p.add_argument("--plateau-factor", type=_open_fraction, default=default(0.5),
                   help="--lr-schedule plateau: what the rate is multiplied by when val_loss stalls")
    p.add_argument("--plateau-patience", type=positive_int, default=default(2), metavar="N",
                   help="--lr-schedule plateau: epochs in a row without a lower val_loss before the rate is "
                        "reduced")
    p.add_argument("--label-smoothing", type=unit_fraction, default=default(0.0), metavar="EPS",
                   help="train against (1 - EPS) on the true character + EPS spread over all of them (torch's "
                        "CrossEntropyLoss(label_smoothing)); val_loss stays the plain cross-entropy")
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
                   help="stop early once val_loss has not improved for N epochs (the example over-fits after ~20)")
    p.add_argument("--max-minutes", type=positive_float, default=None, metavar="M",
                   help="stop at the first step boundary after M minutes of training wall time (from the start of the "
                        "first step; a resumed run's budget counts afresh), with latest/ written as on Ctrl-C; exit 0")
    p.add_argument("--snapshot-minutes", type=positive_float, default=None, metavar="K",
                   help="every K minutes of the run's training wall time, save the weights into "
                        "snapshots/minute-MMMM.MMM/ and list them in snapshots/snapshots.json")
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


# The flags of one learning-rate schedule.
SCHEDULE_FLAGS = {"min_learning_rate": "cosine", "plateau_factor": "plateau", "plateau_patience": "plateau"}


def _check_schedule_flags(args, given: set):
    for name in sorted(given & set(SCHEDULE_FLAGS)):
        if args.lr_schedule != SCHEDULE_FLAGS[name]:
            raise MinilstmError(f"--{name.replace('_', '-')} is for --lr-schedule {SCHEDULE_FLAGS[name]}, this "
                                f"run's is {args.lr_schedule}")
    if args.lr_schedule == "cosine" and args.min_learning_rate >= args.learning_rate:
        raise MinilstmError(f"--min-learning-rate {args.min_learning_rate} is where cosine ends: it must be below "
                            f"--learning-rate {args.learning_rate}")


def parse_args(argv, prepare_out=True):
    """Parse, and with ``--resume`` take the stored run's settings, refusing flags that contradict them. With
    ``prepare_out`` (rank 0 of a data-parallel run: the one that writes), the output directory is created and
    checked here, before any data is read or kernel compiled."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {k for k, v in vars(build_parser(with_defaults=False).parse_args(argv)).items() if v is not None}
    if parse_units(args.units)[0] == "char" and args.joint_units:
        raise MinilstmError("--joint-units learns one vocabulary of words or pieces for both languages: use it with "
                            "--units word or sentencepiece:N")
    if not args.input_feed and args.attention == "none":
        raise MinilstmError("--no-input-feed is for models with --attention (dot, general or concat)")
    if args.embedding_dropout > 0 and not args.embedding_dim:
        raise MinilstmError("--embedding-dropout drops embedded characters: use it with --embedding-dim")
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
        _check_schedule_flags(args, given)
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
    _check_schedule_flags(resumed, given)
    resumed.resume = args.resume
    resumed.backend = backend
    for name in ("checkpoint_every", "num_decodes", "progress", "patience"):
        if not hasattr(resumed, name):
            setattr(resumed, name, getattr(args, name))
    return resumed, checkpoint


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
