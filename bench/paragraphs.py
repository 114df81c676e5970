"""Paragraphs of held-out sentences, translated with sentence splitting, sentence by sentence, and whole.

The models learnt single sentences. This builds paragraphs of 2-4 held-out pairs of the checkpoint (its own
validation split: the pairs it never trained on, each English side one sentence by ``minilstm.sentences``), joined
with a space or, for some, a line break, the French references joined the same way, and scores three ways to
translate them with corpus chrF (greedy decoding):

- ``split``: ``translate(paragraphs)``, which splits them into sentences (the default);
- ``alone``: every pair's English translated on its own, the translations joined as the paragraph is: what
  splitting should match, short of the segmenter's mistakes;
- ``whole``: ``translate(paragraphs, split_sentences=False)``, each paragraph one input, as before splitting (line
  breaks as spaces: the models know no line break).

``python -m bench.paragraphs --data data/fra.txt`` (the checkpoint's data file, ``minilstm download``) writes
``result.json`` and ``result.md`` under ``--out``, with the machine, the command and the date.
"""

import argparse
import datetime
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from bench.machine import cpu_model
from minilstm.checkpoint import load_checkpoint
from minilstm.data import validation_rows
from minilstm.evaluate import chrf
from minilstm.models import DEFAULT_MODEL
from minilstm.pairs import read_pairs
from minilstm.sentences import split_texts


def held_out_sentences(checkpoint, data: Path, model) -> list[tuple[str, str]]:
    """The checkpoint's validation pairs whose English is one sentence of characters the model knows."""
    training = checkpoint.config["training"]["args"]
    pairs = read_pairs(data)
    _, val_idx = validation_rows(pairs, training["validation_split"], training["validation_split_mode"],
                                 training.get("seed", 0))
    known = set(model.input_vocab.index)
    held = [pairs[k] for k in val_idx]
    return [(english, french) for english, french in held
            if set(english) <= known and split_texts([english], model.max_encoder_len).sentences == [english]]


def make_paragraphs(pairs, count: int, seed: int, line_break_share: float = 0.2):
    """``count`` paragraphs of 2-4 different pairs: (English sentences, French sentences, the joiner)."""
    rng = np.random.default_rng(seed)
    paragraphs = []
    for _ in range(count):
        chosen = rng.choice(len(pairs), size=int(rng.integers(2, 5)), replace=False)
        joiner = "\n" if rng.random() < line_break_share else " "
        paragraphs.append(([pairs[k][0] for k in chosen], [pairs[k][1] for k in chosen], joiner))
    return paragraphs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path(DEFAULT_MODEL), help="default: the shipped model")
    p.add_argument("--data", type=Path, default=Path("data/fra.txt"), help="the file the checkpoint trained on")
    p.add_argument("--paragraphs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numba")
    p.add_argument("--out", type=Path, default=Path("bench/results/paragraphs"))
    args = p.parse_args(argv)

    checkpoint = load_checkpoint(args.checkpoint, backend=args.backend)
    model = checkpoint.model
    paragraphs = make_paragraphs(held_out_sentences(checkpoint, args.data, model), args.paragraphs, args.seed)
    texts = [joiner.join(english) for english, _, joiner in paragraphs]
    references = [[joiner.join(french)] for _, french, joiner in paragraphs]
    sentences = [sentence for english, _, _ in paragraphs for sentence in english]

    split = model.translate(texts)
    alone_flat = iter(model.translate(sentences, split_sentences=False))
    alone = [joiner.join(next(alone_flat) for _ in english) for english, _, joiner in paragraphs]
    # The models never saw a line break: a whole paragraph reaches them with spaces in its place.
    whole = model.translate([text.replace("\n", " ") for text in texts], split_sentences=False)
    plan = split_texts(texts, model.max_encoder_len)
    missed = sum(len(layout.spans) != len(english) for layout, (english, _, _) in zip(plan.layouts, paragraphs,
                                                                                       strict=True))

    scores = {name: round(chrf(hyps, references), 2) for name, hyps in
              (("split", split), ("alone", alone), ("whole", whole))}
    result = {
        "what": "corpus chrF of paragraphs of 2-4 held-out sentences, greedy decoding",
        "chrf": scores,
        "split_minus_alone": round(scores["split"] - scores["alone"], 2),
        "split_minus_whole": round(scores["split"] - scores["whole"], 2),
        "paragraphs": len(paragraphs), "sentences": len(sentences),
        "paragraphs_split_otherwise": missed,  # the segmenter's sentences differ from the pairs'
        "checkpoint": os.path.relpath(args.checkpoint), "data": str(args.data), "seed": args.seed,
        "backend": args.backend,
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "command": "python -m bench.paragraphs " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "examples": [{"english": text, "reference": refs[0], "split": s, "alone": a, "whole": w}
                     for text, refs, s, a, w in list(zip(texts, references, split, alone, whole, strict=True))[:5]],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    table = "\n".join([
        f"# Paragraphs: corpus chrF, {len(paragraphs)} paragraphs of 2-4 held-out sentences ({len(sentences)} in all)",
        "",
        f"{result['date']}, {result['machine']}, backend {args.backend}, greedy decoding, `{result['command']}`",
        "",
        "| paragraphs translated | chrF |",
        "| --- | --- |",
        f"| split into sentences (the default) | {scores['split']:.2f} |",
        f"| each sentence alone, joined | {scores['alone']:.2f} |",
        f"| whole (`--no-split-sentences`) | {scores['whole']:.2f} |",
        "",
        f"Split minus alone: {result['split_minus_alone']:+.2f}; "
        f"split minus whole: {result['split_minus_whole']:+.2f}. "
        f"Paragraphs the segmenter split otherwise than into their pairs: {missed}.",
        "",
    ])
    (args.out / "result.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
