"""Character vocabularies and token ids, numbered exactly as the Keras example numbers its one-hot positions.

The Keras example one-hot encodes characters; we keep integer ids instead (``onehot(x) @ W`` is ``W[x]``: see
docs/design.md, 'One-hot input as a row gather'), so ``np.eye(V)[ids]`` *is* the example's array. A character
the model has never seen is a :class:`~minilstm.errors.MinilstmError` naming it and the sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import MinilstmError
from .units import CharUnits, units_from_json

START = "\t"
"""Start-of-sequence character: the Keras example prefixes every French target with a tab."""
END = "\n"
"""End-of-sequence character: the Keras example appends a newline to every French target."""
PAD = " "
"""Padding character: the Keras example pads with one-hot spaces (not a dedicated pad token, not zeros)."""
MARKERS = (START, END, PAD)

# ------------------------------------------------------------------------------------------- vocabularies


def _show_text(text: str, limit: int = 80) -> str:
    """A sentence quoted for a one-line message: control characters escaped, long ones shortened."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return f'"{shown}"'


class Vocab:
    """A vocabulary of tokens: id ``i`` is ``tokens[i]``; the tokens are what ``units`` splits sentences into.

    With characters (the default), built with :meth:`from_texts` as the sorted set of characters, which is exactly
    how the Keras example numbers its one-hot positions; so our ids are the example's one-hot indices. With words
    or SentencePiece pieces (``minilstm.units``), built with :meth:`from_units`: the learnt tokens in the units'
    order, then the markers START, END and PAD.
    """

    def __init__(self, tokens: Sequence[str], units=None):
        self.units = CharUnits() if units is None else units
        self.tokens: list[str] = list(tokens)
        self.index: dict[str, int] = {c: i for i, c in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise MinilstmError("vocabulary has duplicate tokens (corrupt checkpoint?)")
        if self.is_chars:
            # For vectorised encoding: a table from code point to id (-1 = not in the vocabulary).
            codes = np.array([ord(c) for c in self.tokens], dtype=np.int64)
            self._table = np.full(int(codes.max(initial=-1)) + 1, -1, dtype=np.int32)
            self._table[codes] = np.arange(len(codes), dtype=np.int32)

    @property
    def is_chars(self) -> bool:
        return self.units.name == "char"

    @property
    def chars(self) -> list[str]:
        """The tokens of a character vocabulary (its characters in id order)."""
        return self.tokens

    @classmethod
    def from_units(cls, units) -> Vocab:
        """The learnt tokens of word or SentencePiece ``units`` in their own order, then START, END and PAD."""
        learnt = units.pieces if hasattr(units, "pieces") else units.words
        return cls([*learnt, START, END, PAD], units)

    @classmethod
    def from_texts(cls, texts: Iterable[str], extra: str = PAD) -> Vocab:
        """Sorted set of all characters in ``texts``, plus those in ``extra``.

        ``extra`` defaults to the space because padding uses it: a corpus without any space would otherwise
        have no id to pad with (the Keras example would crash with a KeyError). For the real data the space
        is already there, so this changes nothing and the vocabulary is identical to the example's.
        """
        return cls(sorted(set("".join(texts)) | set(extra)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens and self.units.name == other.units.name

    def __repr__(self) -> str:
        if self.is_chars:
            return f"Vocab({len(self.tokens)} chars: {''.join(self.tokens)!r})"
        return f"Vocab({len(self.tokens)} {self.units.name} tokens)"

    def unknown_chars(self, text: str) -> list[str]:
        """Sorted unique characters of ``text`` that the vocabulary cannot spell: none for SentencePiece (byte
        fallback) or words (an unknown word is ``<unk>``)."""
        return sorted(set(text) - self.index.keys()) if self.is_chars else []

    def split(self, text: str) -> list[str]:
        """The tokens of ``text``. A START in front and an END at the end (a decoder sequence) are tokens of their own
        for every kind of units; what is between them is split by the units."""
        if self.is_chars:
            return list(text)
        start = [START] if text.startswith(START) else []
        end = [END] if text.endswith(END) and len(text) > len(start) else []
        return start + self.units.split(text[len(start): len(text) - len(end)]) + end

    def length(self, text: str) -> int:
        """How many tokens (encoder or decoder steps) ``text`` takes."""
        return len(text) if self.is_chars else len(self.split(text))

    def encode(self, text: str) -> list[int]:
        """Ids of the tokens of ``text``; unknown characters raise :class:`MinilstmError` naming them."""
        unknown = self.unknown_chars(text)
        if unknown:
            raise MinilstmError(f"unknown character(s) {_show_chars(unknown)} in {_show_text(text)}")
        return [self.index[c] for c in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """The tokens of ``ids`` joined into text (markers dropped, for units other than characters)."""
        tokens = [self.tokens[int(i)] for i in ids]
        if self.is_chars:
            return "".join(tokens)
        return self.units.join(t for t in tokens if t not in MARKERS)

    def locate(self, text: str) -> list[tuple[int, int]]:
        """Where each token of ``split(text)`` lies in ``text``, as character offsets (text without markers)."""
        return self.units.locate(text)

    def decode_located(self, ids: Sequence[int]) -> tuple[str, list[tuple[int, int] | None]]:
        """``decode(ids)`` and where each id's token lies in it (None for a marker, which decodes to nothing)."""
        tokens = [self.tokens[int(i)] for i in ids]
        if self.is_chars:
            return "".join(tokens), [(k, k + 1) for k in range(len(tokens))]
        kept = [k for k, t in enumerate(tokens) if t not in MARKERS]
        spans: list[tuple[int, int] | None] = [None] * len(tokens)
        for k, span in zip(kept, self.units.join_spans([tokens[k] for k in kept]), strict=True):
            spans[k] = span
        return self.decode(ids), spans

    def to_json(self):
        """What a checkpoint's config.json needs to rebuild the vocabulary: the characters in id order (the
        example's, kept as they were), or the units' description and the tokens. A SentencePiece model's bytes
        are stored beside (``units_model``)."""
        if self.is_chars:
            return list(self.tokens)
        return {**self.units.to_json(), "tokens": list(self.tokens)}

    @property
    def units_model(self) -> bytes | None:
        """The SentencePiece model file's bytes, or None for units that need none."""
        return getattr(self.units, "model", None)

    @classmethod
    def from_json(cls, config, units_model: bytes | None = None) -> Vocab:
        """Rebuild from :meth:`to_json`'s value (and the SentencePiece model's bytes), keeping the order (ids must
        not move)."""
        if isinstance(config, list):
            if not all(isinstance(c, str) and len(c) == 1 for c in config):
                raise MinilstmError("vocabulary must be a list of single characters (corrupt checkpoint?)")
            return cls(config)
        tokens = config.get("tokens") if isinstance(config, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise MinilstmError("vocabulary must list its tokens (corrupt checkpoint?)")
        units = units_from_json(config, units_model)
        vocab = cls.from_units(units)
        if vocab.tokens != tokens:
            raise MinilstmError(f"the vocabulary's tokens do not match its {units.name} units (corrupt checkpoint?)")
        return vocab

    def _lookup(self, codes: np.ndarray) -> np.ndarray:
        """Ids for an array of code points (uint32), -1 for those not in the vocabulary."""
        table = self._table
        if len(codes) and int(codes.max()) >= len(table):  # only if some character is unknown
            table = np.concatenate([table, np.full(int(codes.max()) + 1 - len(table), -1, np.int32)])
        return table[codes]


def _show_chars(chars: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in chars)


def _encode_padded(texts: Sequence[str], vocab: Vocab, width: int, what: str) -> np.ndarray:
    """``(len(texts), width)`` int32 ids: each text's characters, then PAD ids (vectorised, no Python loop
    over characters: all texts are joined, turned into code points with one ``encode`` call, looked up in a
    code-point table and scattered into place). Unknown characters raise, naming them and the first sentence
    that contains one; the caller makes sure no text is longer than ``width``."""
    if PAD not in vocab:
        raise MinilstmError(
            f"the {what} vocabulary has no space character, which padding needs (corrupt checkpoint?)"
        )
    n = len(texts)
    out = np.full((n, width), vocab.index[PAD], dtype=np.int32)
    if n == 0:
        return out
    if not vocab.is_chars:  # words or pieces: the units split each text (SentencePiece in C++)
        for i, text in enumerate(texts):
            ids = vocab.encode(text)
            out[i, : len(ids)] = ids
        return out
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    utf32 = "".join(texts).encode("utf-32-le", "surrogatepass")
    codes = np.frombuffer(utf32, dtype=np.uint32)
    ids = vocab._lookup(codes)
    if len(ids) and ids.min() < 0:
        bad = np.flatnonzero(ids < 0)
        unknown = sorted({chr(c) for c in np.unique(codes[bad])})
        bad_rows = np.unique(np.searchsorted(np.cumsum(lengths), bad, side="right"))
        others = len(bad_rows) - 1
        more = f" (and {others:,} more sentence{'s' if others > 1 else ''})" if others else ""
        raise MinilstmError(
            f"unknown character(s) {_show_chars(unknown)} in {_show_text(texts[bad_rows[0]])}{more}"
            f" — not in the model's {what} vocabulary"
        )
    # Character j of text i goes to flat position i*width + j; in ``codes`` it sits at starts[i] + j.
    starts = np.cumsum(lengths) - lengths
    shift = np.arange(n, dtype=np.int64) * width - starts
    flat = np.arange(len(codes), dtype=np.int64) + np.repeat(shift, lengths)
    out.reshape(-1)[flat] = ids
    return out


def _check_lengths(texts: Sequence[str], max_len: int, what: str, note: str = "", vocab: Vocab | None = None) -> None:
    measure = len if vocab is None else vocab.length
    unit = "characters" if vocab is None or vocab.is_chars else "tokens"
    for text in texts:
        if measure(text) > max_len:
            raise MinilstmError(
                f"{what} sentence {_show_text(text)} is too long: {measure(text)} {unit}{note},"
                f" the model takes at most {max_len}"
            )


def encode_inputs(texts: Sequence[str], vocab: Vocab, min_len: int) -> np.ndarray:
    """English sentences to translate as int32 ids ``(n, max(min_len, longest))``, padded with PAD.

    Pass the model's ``max_encoder_len`` as ``min_len``: the encoder also reads the padding, so a sentence
    padded to the training width gets exactly the state it got in training (the example decodes rows of its
    padded training array). Longer sentences are allowed; the encoder simply runs more steps.
    """
    texts = list(texts)
    for text in texts:
        if not text.strip():
            raise MinilstmError("cannot translate an empty sentence")
    width = max([min_len, *map(vocab.length, texts)])
    return _encode_padded(texts, vocab, width, "input")


