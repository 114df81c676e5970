"""How many steps a sentence is in each kind of units, and how many decoder positions an epoch runs.

    python -m bench.unit_lengths --data ../shared/data/fra-eng/fra.txt --units char,sentencepiece:4000,word

- lengths: for each side, the units are learnt on all distinct sentences of that side of the file (a length
  statistic only: training learns them on its training pairs), then every ``--every``-th distinct sentence (in file
  order) is split into them; the table gives the vocabulary, the mean tokens a sentence and the longest;
- positions: one epoch of the training pairs (``minilstm.training``'s random held-out split, seed 0) in the
  ``--mask-padding`` plan at batch ``--batch-size``, with units learnt on those pairs by training's own
  ``unit_vocabularies``: the decoder positions run (each batch to its longest French sentence) and the share of
  them that is padding.

Prints a Markdown table; nothing else.
"""

import argparse
import contextlib
import io

import numpy as np

from minilstm.data import Batches, Dataset, resolve_pairs, validation_rows
from minilstm.training import unit_vocabularies
from minilstm.units import learn_units


class HostArrays:
    """The one call ``Batches`` makes of a backend: the ids stay NumPy arrays."""

    asarray = staticmethod(np.asarray)


def side_lengths(sentences: list[str], units: str, every: int) -> tuple[int | None, float, int]:
    """(vocabulary or None for characters, mean tokens, longest) over every ``every``-th distinct sentence."""
    distinct = list(dict.fromkeys(sentences))  # in file order
    if units == "char":
        split, vocabulary = list, None
    else:
        learnt = learn_units(units, distinct)
        split, vocabulary = learnt.split, len(learnt.words if units == "word" else learnt.pieces)
    lengths = np.array([len(split(text)) for text in distinct[::every]])
    return vocabulary, float(lengths.mean()), int(lengths.max())


def epoch_positions(pairs, units: str, batch_size: int) -> tuple[int, float]:
    """(decoder positions of one epoch of the training pairs in the --mask-padding plan, padding's share)."""
    train_rows, _ = validation_rows(pairs, 0.2, "random", 0)
    train_pairs = [pairs[k] for k in train_rows]
    with contextlib.redirect_stdout(io.StringIO()):  # its progress line would break the table
        vocabs = unit_vocabularies(units, train_pairs)
    dataset = Dataset.from_pairs(train_pairs, *vocabs)
    batches = Batches(dataset, HostArrays, mask_padding=True)
    plan = batches.plan(np.arange(len(train_pairs)), batch_size, np.random.default_rng(0))
    run = sum(len(idx) * int(batches.target_steps[idx].max()) for idx in plan)
    real = int(batches.target_steps.sum())
    return run, 1 - real / run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="a pairs file (default: the built-in pairs)")
    parser.add_argument("--num-samples", default="all")
    parser.add_argument("--units", default="char,sentencepiece:4000,word", help="comma-separated --units values")
    parser.add_argument("--every", type=int, default=10, help="measure every N-th distinct sentence")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    pairs = resolve_pairs(args.data, None if args.num_samples == "all" else int(args.num_samples))
    print("| units | side | vocabulary | mean tokens | longest |")
    print("| --- | --- | --- | --- | --- |")
    for units in args.units.split(","):
        for side, name in ((0, "English"), (1, "French")):
            vocabulary, mean, longest = side_lengths([pair[side] for pair in pairs], units, args.every)
            shown = "–" if vocabulary is None else f"{vocabulary:,}"
            print(f"| `{units}` | {name} | {shown} | {mean:.1f} | {longest} |")
    print()
    print(f"| units | decoder positions an epoch (batch {args.batch_size}, --mask-padding) | padding |")
    print("| --- | --- | --- |")
    for units in args.units.split(","):
        run, padding = epoch_positions(pairs, units, args.batch_size)
        print(f"| `{units}` | {run:,} | {padding:.1%} |")


if __name__ == "__main__":
    main()
