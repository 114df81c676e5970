"""``python -m minilstm.translate CHECKPOINT_OR_RUN_DIR "Go." "Hello!"``: batched greedy translation, one per line.

With no text on the command line, reads one text per line from stdin; a text of several sentences is translated
sentence by sentence and joined back (``--no-split-sentences``: as one input). A line break that a text from the
command line holds, and so its translation keeps, is printed as a space: the output is one line per text.
``--attention-map out.png`` (a model trained with ``--attention``) also draws, for each text, its attention weights:
source characters across, generated characters down, as the PyTorch and TensorFlow tutorials show theirs.
"""

import argparse
import io
import re
import sys
from pathlib import Path

from .backends import available_backends, default_backend_name
from .checkpoint import load_checkpoint, resolve_checkpoint
from .cli import positive_int, run_main
from .decoding import add_decoding_flags, check_decoding_flags
from .errors import MinilstmError
from .files import write_bytes_atomic

LINE_BREAKS = re.compile(r"[\r\n]+")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minilstm.translate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint directory written by minilstm.train, or the run "
                   "directory (its --out): then its best/ checkpoint")
    p.add_argument("sentences", nargs="*", help="English sentences (default: one per line from stdin)")
    p.add_argument("--backend", default=default_backend_name(),
                   help=f"array backend: {', '.join(available_backends())}")
    p.add_argument("--batch-size", type=positive_int, default=512, help="sentences decoded at once")
    add_decoding_flags(p)
    p.add_argument("--skip-unknown", action="store_true",
                   help="drop characters the model never saw instead of stopping with an error")
    p.add_argument("--no-split-sentences", dest="split_sentences", action="store_false",
                   help="decode each text as one input instead of sentence by sentence (the models learnt single "
                        "sentences, so by default a text is split into sentences and their translations joined)")
    p.add_argument("--attention-map", type=Path, default=None, metavar="PNG",
                   help="draw each sentence's attention weights (greedy decoding, models with --attention) into "
                        "this PNG file")
    return p


def attention_map_png(sentences: list[str], translations: list[str], maps: list) -> bytes:
    """One heatmap per sentence, stacked: rows the generated characters (END last where the sentence ended),
    columns the English characters, the weight of each as its shade."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MinilstmError("--attention-map needs matplotlib: pip install matplotlib") from None
    heights = [max(2.0, 0.22 * weights.shape[0] + 1.0) for weights in maps]
    width = max(4.0, 0.3 * max(len(s) for s in sentences) + 2.0)
    fig, axes = plt.subplots(len(maps), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, sentence, translation, weights in zip(axes[:, 0], sentences, translations, maps, strict=True):
        rows = list(translation) + ["<end>"] * (weights.shape[0] - len(translation))
        ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(sentence)), [repr(ch)[1:-1] if ch != " " else "␣" for ch in sentence])
        ax.set_yticks(range(len(rows)), [ch if ch != " " else "␣" for ch in rows], fontsize=7)
        ax.tick_params(axis="x", labeltop=True, labelbottom=False)
        ax.set_title(f"{sentence} -> {translation}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def read_sentences(args) -> list[str]:
    if args.sentences:
        sentences = list(args.sentences)
    else:
        try:
            sentences = [line.rstrip("\r\n") for line in sys.stdin]
        except UnicodeDecodeError as e:
            raise MinilstmError(f"stdin is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    for number, sentence in enumerate(sentences, start=1):
        if not sentence.strip():
            raise MinilstmError(f"sentence {number} is empty; give one English sentence per line")
    return sentences


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    path, note = resolve_checkpoint(args.checkpoint)
    if note:
        print(note, file=sys.stderr)
    model = load_checkpoint(path, backend=args.backend).model
    sentences = read_sentences(args)
    if args.skip_unknown and model.input_vocab.is_chars:  # words and pieces spell every character (units.py)
        sentences = ["".join(ch for ch in s if ch in model.input_vocab.index) for s in sentences]
        for number, sentence in enumerate(sentences, start=1):
            if not sentence:
                raise MinilstmError(f"sentence {number} has no character the model knows")
    check_decoding_flags(args)
    maps = None
    if args.attention_map is not None:
        if model.attention is None:
            raise MinilstmError(f"{path} has no attention (it was trained without --attention): nothing to draw")
        if args.temperature is not None or args.beam_width > 1:
            raise MinilstmError("--attention-map draws greedy decoding's weights: leave out --beam-width and "
                                "--temperature")
        if not args.attention_map.parent.is_dir():
            raise MinilstmError(f"cannot write {args.attention_map}: {args.attention_map.parent} is not a directory")
        maps = []
    translations = model.translate(sentences, batch_size=args.batch_size, beam_width=args.beam_width,
                                   temperature=args.temperature, seed=args.seed, attention_maps=maps,
                                   length_penalty=args.length_penalty, split_sentences=args.split_sentences)
    if maps is not None:
        write_bytes_atomic(args.attention_map, attention_map_png(sentences, translations, maps), "the attention map")
    for translation in translations:
        print(LINE_BREAKS.sub(" ", translation))  # one line per text, whatever line breaks the text held
    if maps is not None:
        print(f"Wrote {args.attention_map}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
