"""``python -m minilstm.models.build``: train the shipped model and copy its best checkpoint into the package.

``--from CHECKPOINT`` trains nothing and ships that checkpoint (its weights and training record, not its optimizer
state; a model of words or pieces keeps its units' files): the model shipped now was made so, from the last
checkpoint of a 90-minute run of the recipe on 1,000 SentencePiece pieces (a bidirectional encoder of 2 x 128 over
embeddings of 128, ``general`` attention without input feeding, the whole file; docs/guide/serve.md). Without
``--from`` it trains the earliest, smaller model: the Keras example's model (one LSTM layer each side, 256 units)
on the built-in 10,000 pairs with
``--mask-padding --patience 5 --epochs 12 --seed 0`` into ``--out`` (default ``runs/en-fr-default``; ~15 minutes on
2 shared cores), then writes that run's ``best/`` weights, without the optimizer state, to
``minilstm/models/en-fr-default/`` (~2.9 MB). The config keeps the training record, so ``python -m minilstm.evaluate
minilstm/models/en-fr-default`` scores it on the run's held-out pairs (where its data file is at hand). Stopped
(Ctrl-C), the same command goes on where it stopped (``--resume``; the result is bit-identical). Extra arguments go
to ``minilstm.train`` (e.g. ``--epochs 5`` for a quick try).
"""

import argparse
import sys
from pathlib import Path

from ..checkpoint import load_checkpoint, resolve_checkpoint, resumable_checkpoint, save_checkpoint
from ..cli import run_main
from ..errors import MinilstmError
from . import DEFAULT_MODEL

TRAIN_ARGS = ["--mask-padding", "--patience", "5", "--seed", "0"]
EPOCHS = "12"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilstm.models.build", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/en-fr-default"), help="the training run's directory")
    p.add_argument("--dest", type=Path, default=DEFAULT_MODEL, help="where the shipped checkpoint goes")
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="CHECKPOINT",
                   help="train nothing: ship this checkpoint (a directory, or a run's --out: its best/)")
    args, train_args = p.parse_known_args(argv)
    from .. import train

    if args.source is not None:
        if train_args:
            raise MinilstmError(f"--from ships a checkpoint as it is: unexpected arguments {' '.join(train_args)}")
        best, _ = resolve_checkpoint(args.source)
    else:
        if resumable_checkpoint(args.out) is not None:  # a run stopped earlier: go on with it
            status = train.main(["--resume", str(args.out), "--epochs", EPOCHS, *train_args])
        else:
            status = train.main([*TRAIN_ARGS, "--epochs", EPOCHS, *train_args, "--out", str(args.out)])
        if status:
            return status
        best, _ = resolve_checkpoint(args.out)
    checkpoint = load_checkpoint(best)
    extra = {key: checkpoint.config[key] for key in ("training", "metrics") if key in checkpoint.config}
    save_checkpoint(args.dest, checkpoint.model, optimizer=None, extra=extra)
    print(f"wrote {args.dest} from {best}: {checkpoint.model.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
