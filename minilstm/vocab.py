"""Character vocabularies and token ids, numbered exactly as the Keras example numbers its one-hot positions.

The Keras example one-hot encodes characters; we keep integer ids instead (``onehot(x) @ W`` is ``W[x]``: see
docs/design.md, 'One-hot input as a row gather'), so ``np.eye(V)[ids]`` *is* the example's array. A character
the model has never seen is a :class:`~minilstm.errors.MinilstmError` naming it and the sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import MinilstmError

START = "\t"
"""Start-of-sequence character: the Keras example prefixes every French target with a tab."""
END = "\n"
"""End-of-sequence character: the Keras example appends a newline to every French target."""
PAD = " "
"""Padding character: the Keras example pads with one-hot spaces (not a dedicated pad token, not zeros)."""

# ------------------------------------------------------------------------------------------- vocabularies


def _show_text(text: str, limit: int = 80) -> str:
    """A sentence quoted for a one-line message: control characters escaped, long ones shortened."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return f'"{shown}"'


class Vocab:
    """A character vocabulary: id ``i`` is ``chars[i]``.

    Built with :meth:`from_texts` as the sorted set of characters, which is exactly how the Keras example
    numbers its one-hot positions; so our ids are the example's one-hot indices.
    """

    def __init__(self, chars: Sequence[str]):
        self.chars: list[str] = list(chars)
        self.index: dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise MinilstmError("vocabulary has duplicate characters (corrupt checkpoint?)")
        # For vectorised encoding: a table from code point to id (-1 = not in the vocabulary).
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._table = np.full(int(codes.max(initial=-1)) + 1, -1, dtype=np.int32)
        self._table[codes] = np.arange(len(codes), dtype=np.int32)

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
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self.chars)} chars: {''.join(self.chars)!r})"

    def unknown_chars(self, text: str) -> list[str]:
        """Sorted unique characters of ``text`` that are not in the vocabulary."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text``; unknown characters raise :class:`MinilstmError` naming them."""
        unknown = self.unknown_chars(text)
        if unknown:
            raise MinilstmError(f"unknown character(s) {_show_chars(unknown)} in {_show_text(text)}")
        return [self.index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids`` joined into a string."""
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> list[str]:
        """The characters in id order: all a checkpoint needs to rebuild the vocabulary."""
        return list(self.chars)

    @classmethod
    def from_json(cls, chars: list[str]) -> Vocab:
        """Rebuild from :meth:`to_json`'s list, keeping its order (ids must not move)."""
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise MinilstmError("vocabulary must be a list of single characters (corrupt checkpoint?)")
        return cls(chars)

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


def _check_lengths(texts: Sequence[str], max_len: int, what: str, note: str = "") -> None:
    for text in texts:
        if len(text) > max_len:
            raise MinilstmError(
                f"{what} sentence {_show_text(text)} is too long: {len(text)} characters{note},"
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
    width = max([min_len, *map(len, texts)])
    return _encode_padded(texts, vocab, width, "input")


