"""The units a model reads and writes: characters (the Keras example's), words, or SentencePiece pieces.

A *units* object turns a sentence into a list of token strings and back. The vocabulary (``vocab``) then numbers the
tokens. Characters need no training and keep the example's numbering; words and SentencePiece models are learnt
from the training side of the data, one model per language, and travel inside the checkpoint, so that a
checkpoint is self-contained.

Three tokens are markers, not text: START and END (the tab and newline the example puts around every French
target) and PAD (the space it pads with). For characters they are ordinary characters; the other units keep
them as tokens of their own, next to the learnt ones, which can never equal them (SentencePiece writes a space as
``▁`` and normalises tabs and newlines away; words never hold whitespace).

- ``char``: a token is one character; ``join`` is concatenation. Lossless.
- ``word``: a token is a run of letters and digits or one other character, with ``▁`` in front where a space
  came before it (as SentencePiece marks spaces), so that ``join`` puts single spaces back exactly. A word not in
  the vocabulary becomes ``<unk>``.
- ``sentencepiece:N``: the SentencePiece library's unigram model (or ``sentencepiece-bpe:N``) with N pieces and
  byte fallback, so that every character has tokens: one the model never saw is spelt as its UTF-8 bytes. The
  text is not normalised, so that ``join(split(text)) == text``.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import MinilstmError

SPACE = "\u2581"
"""How words and pieces mark a space before them (SentencePiece's 'lower one eighth block')."""
UNKNOWN = "<unk>"
WORD_PATTERN = r"(\s*)(\w+|[^\w\s])"
"""A word token: the whitespace before it (kept as a ``▁`` mark), then a run of word characters or one other."""
_WORD = re.compile(WORD_PATTERN)


class CharUnits:
    """One token per character: the Keras example's units."""

    name = "char"

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, tokens: Iterable[str]) -> str:
        return "".join(tokens)

    def locate(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(text))]

    def join_spans(self, tokens: Sequence[str]) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(tokens))]

    def to_json(self) -> dict:
        return {"units": self.name}


class WordUnits:
    """Words and punctuation marks (module doc). ``words`` is the learnt list, in id order."""

    name = "word"

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self._known = frozenset(self.words)

    @classmethod
    def learn(cls, texts: Iterable[str], min_count: int = 1) -> WordUnits:
        """Every token of ``texts`` seen at least ``min_count`` times, most frequent first (ties in text order)."""
        counts = Counter(token for text in texts for token in split_words(text))
        return cls([UNKNOWN] + [w for w, c in counts.most_common() if c >= min_count and w != UNKNOWN])

    def split(self, text: str) -> list[str]:
        return [token if token in self._known else UNKNOWN for token in split_words(text)]

    def join(self, tokens: Iterable[str]) -> str:
        return join_words(tokens)

    def locate(self, text: str) -> list[tuple[int, int]]:
        """Where each token of ``split(text)`` lies in ``text``: its word or mark with the whitespace before it."""
        return [m.span() for m in _WORD.finditer(text)]

    def join_spans(self, tokens: Sequence[str]) -> list[tuple[int, int]]:
        """Where each token lies in ``join(tokens)``: a marked token's space is its own."""
        spans, end = [], 0
        for k, token in enumerate(tokens):
            length = len(token) - (k == 0 and token.startswith(SPACE))  # join drops a leading space
            spans.append((end, end + length))
            end += length
        return spans

    def to_json(self) -> dict:
        return {"units": self.name}  # the words are the vocabulary's tokens


def split_words(text: str) -> list[str]:
    """``"Il est là."`` -> ``["Il", "▁est", "▁là", "."]``: runs of word characters or single other characters, each
    with ``▁`` in front where whitespace came before it (leading whitespace included)."""
    return [(SPACE if gap else "") + token for gap, token in _WORD.findall(text)]


def join_words(tokens: Iterable[str]) -> str:
    """The inverse of :func:`split_words` up to whitespace: each ``▁`` becomes one space, a leading one is dropped."""
    text = "".join(tokens).replace(SPACE, " ")
    return text[1:] if text.startswith(" ") else text


class SentencePieceUnits:
    """A trained SentencePiece model, kept as its serialised bytes (what the checkpoint stores)."""

    def __init__(self, model: bytes, name: str):
        import sentencepiece

        self.name = name
        self.model = bytes(model)
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
        except Exception as e:  # the library raises RuntimeError or OSError on a bad proto; say which file
            raise MinilstmError(f"the SentencePiece model is not readable ({first_line(e)}); the checkpoint is "
                                "corrupt: train again or use another checkpoint") from None
        self.pieces = [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]

    @classmethod
    def learn(cls, texts: Iterable[str], pieces: int, model_type: str = "unigram") -> SentencePieceUnits:
        """Train on ``texts`` (one sentence each) for ``pieces`` pieces, with byte fallback and full character coverage.
        No normalisation (SentencePiece's default NFKC would turn French's narrow no-break space before ``!`` into a
        space, and the detokenised text would no longer match its reference); one thread, so that the same texts
        give the same model."""
        import sentencepiece

        texts = [t for t in texts if t.strip()]
        if not texts:
            raise MinilstmError("no sentences to learn SentencePiece units from")
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=model, vocab_size=pieces, model_type=model_type,
                byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity", num_threads=1,
                minloglevel=2, input_sentence_size=0, shuffle_input_sentence=False)
        except RuntimeError as e:
            limit, floor = re.search(r"value <= (\d+)", str(e)), re.search(r"required_chars\. \d+ vs (\d+)", str(e))
            if floor:
                raise MinilstmError(f"--units {units_spec(model_type, pieces)}: these sentences need at least "
                                    f"{int(floor.group(1)):,} pieces (one for each of their characters, 256 for the "
                                    "bytes that spell any other, 3 control pieces); ask for more") from None
            if limit:
                raise MinilstmError(f"--units {units_spec(model_type, pieces)}: these sentences allow at most "
                                    f"{int(limit.group(1)):,} pieces; ask for fewer") from None
            raise MinilstmError(f"--units {units_spec(model_type, pieces)}: SentencePiece could not train "
                                f"({first_line(e)})") from None
        return cls(model.getvalue(), units_spec(model_type, pieces))

    def split(self, text: str) -> list[str]:
        return self.processor.encode(text, out_type=str)

    def join(self, tokens: Iterable[str]) -> str:
        return self.processor.decode_pieces(list(tokens))

    def locate(self, text: str) -> list[tuple[int, int]]:
        """Where each piece of ``split(text)`` lies in ``text`` (a piece's spaces are its own; of the bytes that spell
        one character, the last holds it and the others are empty at its start)."""
        return _char_spans(self.processor.encode(text, return_type="proto"), text)

    def join_spans(self, tokens: Sequence[str]) -> list[tuple[int, int]]:
        """Where each piece lies in ``join(tokens)``."""
        decoded = self.processor.decode([self.processor.piece_to_id(t) for t in tokens], return_type="proto")
        return _char_spans(decoded, decoded.text)

    def to_json(self) -> dict:
        return {"units": self.name}


def _char_spans(proto, text: str) -> list[tuple[int, int]]:
    """SentencePiece's pieces' UTF-8 byte offsets in ``text`` as character offsets."""
    char_at = np.zeros(len(text.encode("utf-8")) + 1, dtype=np.int64)
    ends = np.cumsum([len(ch.encode("utf-8")) for ch in text], dtype=np.int64)
    char_at[ends] = 1
    char_at = np.cumsum(char_at)  # bytes before offset b belong to char_at[b] whole characters
    return [(int(char_at[p.begin]), int(char_at[p.end])) for p in proto.pieces]


def units_spec(model_type: str, pieces: int) -> str:
    return f"sentencepiece:{pieces}" if model_type == "unigram" else f"sentencepiece-{model_type}:{pieces}"


def describe_units(name: str) -> str:
    """Units as a reader would name them: ``characters``, ``words``, ``1,000 SentencePiece pieces`` (BPE noted)."""
    kind, pieces = parse_units(name)
    if pieces is None:
        return "characters" if kind == "char" else "words"
    return f"{pieces:,} SentencePiece pieces" + (" (BPE)" if kind == "sentencepiece-bpe" else "")


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def parse_units(text: str) -> tuple[str, int | None]:
    """``--units``'s value as (kind, pieces): ``char``, ``word``, ``sentencepiece:N`` or ``sentencepiece-bpe:N``;
    anything else is one clear line."""
    kind, _, count = text.partition(":")
    if kind in ("char", "word") and not count:
        return kind, None
    if kind in ("sentencepiece", "sentencepiece-bpe"):
        if count.isdigit() and int(count) > 0:
            return kind, int(count)
        raise MinilstmError(f"--units {text}: the number of pieces must be a positive whole number, e.g. "
                            f"{kind}:4000")
    raise MinilstmError(f"--units {text}: not a kind of units; use char, word, sentencepiece:N or "
                        "sentencepiece-bpe:N")


def learn_units(text: str, sentences: Sequence[str]):
    """The units ``--units text`` names, learnt from ``sentences`` where they need learning."""
    kind, pieces = parse_units(text)
    if kind == "char":
        return CharUnits()
    if kind == "word":
        return WordUnits.learn(sentences)
    return SentencePieceUnits.learn(sentences, pieces, "unigram" if kind == "sentencepiece" else "bpe")


def units_from_json(config: dict, model: bytes | None = None):
    """The units a vocabulary's config describes (``Vocab.to_json``), with the SentencePiece model's bytes where it
    has one; a missing or unknown part is one line naming the checkpoint as corrupt."""
    name = config.get("units")
    if name == "word":
        return WordUnits([t for t in config["tokens"] if t not in ("\t", "\n", " ")])
    if isinstance(name, str) and name.startswith("sentencepiece"):
        if model is None:
            raise MinilstmError(f"the checkpoint has {name} units but no SentencePiece model file (corrupt "
                                "checkpoint?): train again or use another checkpoint")
        return SentencePieceUnits(model, name)
    raise MinilstmError(f"unknown units {name!r} in the vocabulary (corrupt checkpoint, or one from a newer "
                        "minilstm?)")
