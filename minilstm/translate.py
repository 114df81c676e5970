"""``python -m minilstm.translate CHECKPOINT_OR_RUN_DIR "Go." "Hello!"``: batched greedy translation, one per line.

With no sentence on the command line, reads one sentence per line from stdin.
"""

import argparse
import sys
from pathlib import Path

from .backend import available_backends, default_backend_name
from .checkpoint import load_checkpoint, resolve_checkpoint
from .cli import positive_float, positive_int, run_main
from .errors import MinilstmError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minilstm.translate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint directory written by minilstm.train, or the run "
                   "directory (its --out): then its best/ checkpoint")
    p.add_argument("sentences", nargs="*", help="English sentences (default: one per line from stdin)")
    p.add_argument("--backend", default=default_backend_name(),
                   help=f"array backend: {', '.join(available_backends())}")
    p.add_argument("--batch-size", type=positive_int, default=512, help="sentences decoded at once")
    p.add_argument("--beam-width", type=positive_int, default=1,
                   help="beam search with this many beams (1: greedy, the Keras example's algorithm)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="sample each character from softmax(logits / T) instead of taking the argmax")
    p.add_argument("--seed", type=int, default=0, help="seeds --temperature sampling")
    p.add_argument("--skip-unknown", action="store_true",
                   help="drop characters the model never saw instead of stopping with an error")
    return p


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
    if args.skip_unknown:
        sentences = ["".join(ch for ch in s if ch in model.input_vocab.index) for s in sentences]
        for number, sentence in enumerate(sentences, start=1):
            if not sentence:
                raise MinilstmError(f"sentence {number} has no character the model knows")
    if args.temperature is not None and args.beam_width > 1:
        raise MinilstmError("--temperature and --beam-width exclude each other: sample, or search, not both")
    for translation in model.translate(sentences, batch_size=args.batch_size, beam_width=args.beam_width,
                                       temperature=args.temperature, seed=args.seed):
        print(translation)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
