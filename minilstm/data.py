"""Sentence pairs, character vocabularies, token ids and batches, encoded exactly as the Keras example does.

Text flows one way: a tab-separated file -> ``(english, french)`` pairs -> :class:`Dataset` (vocabularies
and int32 token-id matrices) -> index batches. The Keras example one-hot encodes characters; we keep integer
ids instead (``onehot(x) @ W`` is ``W[x]``, see DESIGN.md section 1), so ``np.eye(V)[ids]`` *is* the
example's array.

Every problem the user can cause (a missing or malformed file, a character the model has never seen, a
failed download) is raised as :class:`~minilstm.errors.MinilstmError` with a one-line message that names the
place and says what to do; the command-line tools print it and exit 2.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import operator
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import MinilstmError
from .layers import IGNORE

START = "\t"
"""Start-of-sequence character: the Keras example prefixes every French target with a tab."""
END = "\n"
"""End-of-sequence character: the Keras example appends a newline to every French target."""
PAD = " "
"""Padding character: the Keras example pads with one-hot spaces (not a dedicated pad token, not zeros)."""

DEFAULT_URL = "https://www.manythings.org/anki/fra-eng.zip"
"""Where the full English-French file comes from (Tatoeba sentences, packaged by manythings.org)."""

DEFAULT_DATA = files("minilstm") / "default_data" / "fra-eng-10k.txt.gz"
"""The built-in subset: the first 10,000 lines of the 2019-04-07 ``fra.txt`` (what the Keras example uses).

Shipped so that training works out of the box without a download; see ``default_data/ATTRIBUTION.txt``.
"""

DEFAULT_NUM_PAIRS = 10_000
"""Number of sentence pairs in :data:`DEFAULT_DATA`."""

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
"""manythings.org answers HTTP 406 to urllib's own ``Python-urllib/3.x`` User-Agent (and to none at all)."""

_DATA_HINT = (
    "pass --data PATH to a tab-separated English<TAB>French file, or omit --data for the built-in subset"
)


# --------------------------------------------------------------------------------------------------- reading


def _describe(path) -> str:
    return str(path)


@contextlib.contextmanager
def _open_binary(path):
    """Open ``path`` (str, PathLike or importlib Traversable) for binary reading, gunzipping ``*.gz``."""
    p = path if hasattr(path, "is_dir") and hasattr(path, "open") else Path(path)
    name = _describe(path)
    if p.is_dir():
        raise MinilstmError(f"data path is a directory, not a file: {name} ({_DATA_HINT})")
    if not p.is_file():
        raise MinilstmError(f"data file not found: {name} ({_DATA_HINT})")
    try:
        raw = p.open("rb")
    except OSError as exc:
        raise MinilstmError(f"cannot open data file {name}: {exc.strerror or exc}") from None
    with raw:
        if p.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz
        else:
            yield raw


def read_pairs(path, num_samples: int | None = None) -> list[tuple[str, str]]:
    """Read ``english<TAB>french[<TAB>attribution]`` lines from a UTF-8 file (``*.gz`` is gunzipped).

    Like the Keras example, the first ``num_samples`` lines are taken (``None`` = all) and a third column
    (the attribution that newer manythings.org releases add) is ignored. Reading stops after ``num_samples``
    pairs, so only those lines are validated and ``--num-samples 10000`` on the full 167k-line file is fast.

    Unlike the example (which splits on "\\n" and drops the last element, assuming a trailing newline), a
    final line without a newline is kept, a CRLF line ending loses its "\\r", a UTF-8 BOM is ignored, and
    trailing empty lines are fine. Everything else that would silently shift or corrupt the data is an error
    with its file and line number: invalid UTF-8, an empty line followed by more pairs, a line without a tab,
    more than three columns, an empty English or French side.
    """
    if num_samples is not None:
        num_samples = operator.index(num_samples)
        if num_samples < 1:
            raise MinilstmError(f"--num-samples must be at least 1, got {num_samples}")
    name = _describe(path)
    pairs: list[tuple[str, str]] = []
    blank_at = 0  # line number of the first empty line not (yet) known to be trailing
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if line.endswith(b"\r"):
                    line = line[:-1]
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line:
                    blank_at = blank_at or lineno
                    continue
                if blank_at:
                    raise MinilstmError(f"{name}:{blank_at}: empty line between sentence pairs (remove it)")
                pairs.append(_parse_line(line, name, lineno))
                if len(pairs) == num_samples:
                    break
        except (OSError, EOFError, zlib.error) as exc:  # unreadable or corrupt .gz, I/O error
            raise MinilstmError(f"cannot read data file {name}: {exc}") from None
    if not pairs:
        raise MinilstmError(f"{name}: no sentence pairs found, the file is empty ({_DATA_HINT})")
    return pairs


def _parse_line(line: bytes, name: str, lineno: int) -> tuple[str, str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MinilstmError(
            f"{name}:{lineno}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at byte {exc.start + 1}"
            " of the line); the file must be UTF-8 text"
        ) from None
    cols = text.split("\t")
    if len(cols) == 1:
        raise MinilstmError(f"{name}:{lineno}: expected 'english<TAB>french', found no tab")
    if len(cols) > 3:
        raise MinilstmError(
            f"{name}:{lineno}: expected 'english<TAB>french' (optionally <TAB>attribution),"
            f" found {len(cols)} tab-separated columns"
        )
    english, french = cols[0], cols[1]
    if not english.strip():
        raise MinilstmError(f"{name}:{lineno}: the English side (first column) is empty")
    if not french.strip():
        raise MinilstmError(f"{name}:{lineno}: the French side (second column) is empty")
    return english, french


def resolve_pairs(data=None, num_samples: int | None = None) -> list[tuple[str, str]]:
    """The pairs the CLI trains on: ``--data PATH`` if given, else the built-in 10,000-pair subset.

    For a user's file, asking for more samples than it has gives what is there (as the Keras example does;
    the summary line "Number of samples" shows it). For the built-in subset it is an error instead, because
    the user most likely expected the full file and would silently train on a different problem.
    ``num_samples=None`` means all pairs of the chosen file.
    """
    if data is not None:
        return read_pairs(data, num_samples)
    pairs = read_pairs(DEFAULT_DATA, num_samples)
    if num_samples is not None and len(pairs) < num_samples:
        raise MinilstmError(
            f"the built-in data subset has {len(pairs):,} sentence pairs but --num-samples asks for"
            f" {num_samples:,}; pass --data PATH to the full fra.txt (from {DEFAULT_URL})"
            " or lower --num-samples"
        )
    return pairs


def load_default_pairs(num_samples: int | None = None) -> list[tuple[str, str]]:
    """The built-in subset's first ``num_samples`` pairs (error if fewer); see :func:`resolve_pairs`."""
    return resolve_pairs(None, num_samples)


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


# ------------------------------------------------------------------------------------------------ dataset


@dataclass
class Dataset:
    """Sentence pairs as token-id matrices, exactly the Keras example's arrays with one-hot replaced by ids.

    ``np.eye(len(input_vocab))[encoder_input_ids]`` is the example's ``encoder_input_data``, and likewise for
    the decoder input and target. Padding positions hold the id of PAD (the space): the example pads with
    one-hot spaces and its loss and accuracy count them, so ours must too.
    """

    input_texts: list[str]
    target_texts: list[str]  # START + french + END
    input_vocab: Vocab
    target_vocab: Vocab
    max_encoder_len: int
    max_decoder_len: int
    encoder_input_ids: np.ndarray  # int32 (N, max_encoder_len): English chars, then PAD
    decoder_input_ids: np.ndarray  # int32 (N, max_decoder_len): START + French + END, then PAD
    decoder_target_ids: np.ndarray  # int32 (N, max_decoder_len): decoder input shifted left by one, then PAD

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[str, str]],
        input_vocab: Vocab | None = None,
        target_vocab: Vocab | None = None,
        max_encoder_len: int | None = None,
        max_decoder_len: int | None = None,
    ) -> Dataset:
        """Encode ``pairs``; vocabularies and maximum lengths come from the pairs unless given.

        Given ones come from a checkpoint (resuming, evaluating on other data): then a character outside the
        vocabulary or a sentence longer than the model's maximum is an error naming it, since the model has
        no id or no position for it.
        """
        if len(pairs) == 0:
            raise MinilstmError("no sentence pairs to encode")
        input_texts = [en for en, _ in pairs]
        target_texts = [START + fr + END for _, fr in pairs]
        if input_vocab is None:
            input_vocab = Vocab.from_texts(input_texts)
        if target_vocab is None:
            target_vocab = Vocab.from_texts(target_texts)
        if max_encoder_len is None:
            max_encoder_len = max(map(len, input_texts))
        else:
            _check_lengths(input_texts, max_encoder_len, "English")
        if max_decoder_len is None:
            max_decoder_len = max(map(len, target_texts))
        else:
            _check_lengths(target_texts, max_decoder_len, "French", " with the start and end markers")
        encoder_input_ids = _encode_padded(input_texts, input_vocab, max_encoder_len, "input")
        decoder_input_ids = _encode_padded(target_texts, target_vocab, max_decoder_len, "output")
        decoder_target_ids = np.empty_like(decoder_input_ids)
        decoder_target_ids[:, :-1] = decoder_input_ids[:, 1:]
        decoder_target_ids[:, -1] = target_vocab.index[PAD]
        return cls(
            input_texts=input_texts,
            target_texts=target_texts,
            input_vocab=input_vocab,
            target_vocab=target_vocab,
            max_encoder_len=max_encoder_len,
            max_decoder_len=max_decoder_len,
            encoder_input_ids=encoder_input_ids,
            decoder_input_ids=decoder_input_ids,
            decoder_target_ids=decoder_target_ids,
        )

    def __len__(self) -> int:
        return len(self.input_texts)

    def input_lengths(self) -> np.ndarray:
        """Characters in each English sentence, padding not counted."""
        return np.fromiter(map(len, self.input_texts), dtype=np.int64, count=len(self))

    def target_steps(self) -> np.ndarray:
        """Decoder positions with a real target in each row: the French characters and END (len(START+fr+END) - 1);
        the positions after them predict padding."""
        return np.fromiter(map(len, self.target_texts), dtype=np.int64, count=len(self)) - 1

    def masked_target_ids(self) -> np.ndarray:
        """``decoder_target_ids`` with IGNORE at every padding position, for ``--mask-padding``."""
        ids = self.decoder_target_ids.copy()
        ids[np.arange(ids.shape[1])[None, :] >= self.target_steps()[:, None]] = IGNORE
        return ids

    def summary(self) -> str:
        """The five lines the Keras example prints after loading, same words, so logs can be compared."""
        return "\n".join(
            [
                f"Number of samples: {len(self)}",
                f"Number of unique input tokens: {len(self.input_vocab)}",
                f"Number of unique output tokens: {len(self.target_vocab)}",
                f"Max sequence length for inputs: {self.max_encoder_len}",
                f"Max sequence length for outputs: {self.max_decoder_len}",
            ]
        )

    def subset(self, indices) -> Dataset:
        """The rows ``indices`` (e.g. the training or validation part), same vocabularies and lengths."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return Dataset(
            input_texts=[self.input_texts[i] for i in idx],
            target_texts=[self.target_texts[i] for i in idx],
            input_vocab=self.input_vocab,
            target_vocab=self.target_vocab,
            max_encoder_len=self.max_encoder_len,
            max_decoder_len=self.max_decoder_len,
            encoder_input_ids=self.encoder_input_ids[idx],
            decoder_input_ids=self.decoder_input_ids[idx],
            decoder_target_ids=self.decoder_target_ids[idx],
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


# ------------------------------------------------------------------------------------- split and batches


def split_validation(n: int, validation_split: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices as Keras ``fit(validation_split=...)`` makes them.

    ``split_at = int(n * (1.0 - validation_split))``; ``[0, split_at)`` trains and ``[split_at, n)``
    validates, in file order, before any shuffling (so the validation pairs are the file's last ones).
    ``validation_split=0`` means no validation (an empty validation array), as in Keras.
    """
    if not 0.0 <= validation_split < 1.0:
        raise MinilstmError(f"--validation-split must be in [0, 1), got {validation_split}")
    split_at = int(n * (1.0 - validation_split))
    if split_at < 1:
        raise MinilstmError(
            f"validation split {validation_split} of {n} samples leaves no training samples; use more samples"
        )
    if validation_split > 0 and split_at >= n:
        raise MinilstmError(
            f"validation split {validation_split} of {n} samples leaves no validation samples;"
            " use more samples or --validation-split 0"
        )
    return np.arange(split_at), np.arange(split_at, n)


VALIDATION_SPLIT_MODES = ("last", "random")
"""``--validation-split-mode``: ``last`` (Keras's: the file's last pairs) or ``random``
(:func:`split_validation_random`)."""

SPLIT_SPAWN_KEY = (int.from_bytes(b"split", "big"),)
"""The random split's own stream of ``--seed``: ``SeedSequence(seed, spawn_key=SPLIT_SPAWN_KEY)``. train.py spawns
the initial weights' and the shuffling's streams as children 0 and 1 of ``SeedSequence(seed)``; this key is far from
any child number, so drawing the split takes nothing from them and a ``last`` run's bits stay what they were."""


def split_validation_random(english: Sequence[str], validation_split: float = 0.2,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices holding out about ``validation_split`` of the pairs, drawn at random by English
    sentence: every pair of a held-out English sentence validates, so no sentence is on both sides.

    Why: ``fra.txt`` is sorted by length, so Keras's split (:func:`split_validation`) validates on the longest
    sentences only, and the file has several translations of most sentences, so a split by pair would score the
    model on sentences it was trained on. The distinct sentences (``english[i]`` is pair i's) are shuffled by a
    generator of their own (:data:`SPLIT_SPAWN_KEY`) and taken in that order up to the prefix whose pair count is
    closest to ``validation_split`` of the pairs (at least one sentence). Both index arrays are in file order; the
    same ``english``, fraction and seed give the same split.
    """
    n = len(english)
    if not 0.0 <= validation_split < 1.0:
        raise MinilstmError(f"--validation-split must be in [0, 1), got {validation_split}")
    seed = operator.index(seed)
    if seed < 0:
        raise MinilstmError(f"--seed must be a non-negative integer for --validation-split-mode random, got {seed}")
    if validation_split == 0:
        return np.arange(n), np.arange(0)
    ids: dict[str, int] = {}
    group = np.fromiter((ids.setdefault(e, len(ids)) for e in english), dtype=np.int64, count=n)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=SPLIT_SPAWN_KEY))
    order = rng.permutation(len(ids))
    counts = np.cumsum(np.bincount(group, minlength=len(ids))[order])
    take = int(np.abs(counts - validation_split * n).argmin()) + 1
    if take >= len(ids):
        raise MinilstmError(
            f"validation split {validation_split} of {n} samples ({len(ids)} English sentences) leaves no training"
            " samples; use more samples"
        )
    held = np.zeros(len(ids), dtype=bool)
    held[order[:take]] = True
    held_rows = held[group]
    return np.flatnonzero(~held_rows), np.flatnonzero(held_rows)


def validation_rows(pairs: Sequence[tuple[str, str]], validation_split: float, mode: str = "last",
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices of ``pairs`` for ``--validation-split-mode`` ``mode``: the one place train.py
    (to train) and evaluate.py (to score a checkpoint's own validation pairs) make the split, so both agree."""
    if mode == "last":
        return split_validation(len(pairs), validation_split)
    if mode == "random":
        return split_validation_random([english for english, _ in pairs], validation_split, seed)
    raise MinilstmError(f"unknown validation split mode {mode!r}: expected {' or '.join(VALIDATION_SPLIT_MODES)}"
                        " (corrupt checkpoint?)")


def _epoch_order(indices, batch_size, rng: np.random.Generator | None) -> tuple[int, np.ndarray]:
    """The checked batch size, and ``indices`` permuted by ``rng`` (one fresh permutation per call) unless None."""
    batch_size = operator.index(batch_size)
    if batch_size < 1:
        raise MinilstmError(f"--batch-size must be at least 1, got {batch_size}")
    order = np.asarray(indices)
    return batch_size, (order if rng is None else rng.permutation(order))


def iterate_batches(indices, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Consecutive ``batch_size`` slices of ``indices`` (the last may be short), shuffled first by ``rng``.

    Call once per epoch with the same generator: each call draws a fresh permutation (Keras reshuffles the
    training samples every epoch), and the same seed gives the same sequence of epochs. ``rng=None`` keeps
    the order (validation, translation).
    """
    batch_size, order = _epoch_order(indices, batch_size, rng)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


SORT_WINDOW = 16  # batches: bucketed_batches sorts by French length within windows of this many batches


def bucketed_batches(indices, lengths, batch_size: int, rng: np.random.Generator | None,
                     target_lengths=None) -> list[np.ndarray]:
    """Batches of ``indices`` whose ``lengths`` (the English lengths of all rows) are all equal, for
    ``--mask-padding``: the encoder then runs each batch to exactly its sentences' length, reads no padding, and
    each final state is the sentence's own.

    Each length's rows are taken in windows of ``SORT_WINDOW * batch_size`` rows; with ``target_lengths`` a window
    is sorted by French length before it is cut into ``batch_size`` slices (the last slice of a length may be
    short), so the decoder, which runs to the longest sentence of its batch, computes little padding (a fifth
    fewer LSTM steps than unsorted on the example's data) while the windows keep the batches random. With ``rng``
    the rows are shuffled within each length and the batches' order is shuffled too (one epoch; the same
    generator state gives the same epoch); ``rng=None`` keeps the file order within each length.
    """
    batch_size, order = _epoch_order(indices, batch_size, rng)
    order = order[np.argsort(lengths[order], kind="stable")]
    window = SORT_WINDOW * batch_size
    batches = []
    for group in np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1):
        for start in range(0, len(group), window):
            rows = group[start : start + window]
            if target_lengths is not None:
                rows = rows[np.argsort(target_lengths[rows], kind="stable")]
            batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def rank_share(batch: np.ndarray, rank: int, ranks: int) -> np.ndarray:
    """Rank ``rank``'s rows of a global batch: the ``rank``-th of ``ranks`` contiguous parts, cut where
    ``Seq2Seq.forward_backward`` cuts a batch into thread shards (``len * k // parts``). So N ranks of one thread
    compute exactly the gradient parts one process with N shards computes, and their sum is the same sum."""
    n = len(batch)
    return batch[n * rank // ranks : n * (rank + 1) // ranks]


@dataclass
class Batch:
    """One step's batch as this rank sees it: the id arrays of its rows on the device (None when the batch has no
    rows for it) and the target positions counted in the whole global batch (the loss is a mean over those)."""

    arrays: tuple | None
    positions: int
    row_offset: int = 0  # the index of this rank's first row in the global batch (dropout masks follow rows)
    source_lengths: object = None  # (rows,) real English characters per row, on the device (None: all real)


class Batches:
    """Which rows train together, how far each batch runs, and which rows of each batch are this rank's: the one
    place a run's batches are made (ids -> batches -> model).

    Keras parity (the default): any rows together, every batch padded to the data's maximum lengths, every position
    counted. ``mask_padding``: rows of one English length together (:func:`bucketed_batches`), the encoder run to
    that length and the decoder to the batch's longest French sentence; the targets after each END are IGNORE and
    only real characters count. Every rank makes the same plan (same generator), takes its :func:`rank_share` of
    each batch and runs it to the *global* batch's lengths, as a thread shard does. The id arrays are uploaded to
    the device once; ``backend`` only needs ``asarray``."""

    def __init__(self, dataset: Dataset, backend, mask_padding: bool, rank: int = 0, ranks: int = 1):
        self.backend = backend
        self.mask_padding = mask_padding
        self.rank, self.ranks = rank, ranks
        targets = dataset.masked_target_ids() if mask_padding else dataset.decoder_target_ids
        self.device_ids = tuple(backend.asarray(a) for a in (dataset.encoder_input_ids, dataset.decoder_input_ids,
                                                             targets))
        self.input_lengths = dataset.input_lengths()
        self.device_input_lengths = backend.asarray(self.input_lengths)
        self.target_steps = dataset.target_steps()
        self.max_decoder_len = dataset.max_decoder_len

    def plan(self, indices, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """One epoch's global batches of ``indices`` (host arrays), shuffled by ``rng`` unless it is None."""
        if self.mask_padding:
            return bucketed_batches(indices, self.input_lengths, batch_size, rng, self.target_steps)
        return list(iterate_batches(indices, batch_size, rng))

    def epoch(self, plan: list[np.ndarray], start: int = 0) -> Iterator[Batch]:
        """This rank's :class:`Batch` of each batch of ``plan`` from index ``start`` on (the earlier ones were done
        before a resume); its rows for all of them are uploaded in one go."""
        plan = plan[start:]
        shares = [rank_share(idx, self.rank, self.ranks) for idx in plan]
        order = self.backend.asarray(np.concatenate(shares)) if shares else None
        offset = 0
        for idx, share in zip(plan, shares, strict=True):
            rows = order[offset : offset + len(share)]
            offset += len(share)
            yield self._batch(idx, rows, len(share), len(idx) * self.rank // self.ranks)

    def _batch(self, idx: np.ndarray, rows, share_rows: int, row_offset: int = 0) -> Batch:
        enc, dec_in, targets = self.device_ids
        if not self.mask_padding:
            arrays = (enc[rows], dec_in[rows], targets[rows])
            return Batch(arrays if share_rows else None, len(idx) * self.max_decoder_len, row_offset,
                         self.device_input_lengths[rows])
        steps = self.target_steps[idx]
        enc_len, dec_len = int(self.input_lengths[idx[0]]), int(steps.max())
        arrays = (enc[rows, :enc_len], dec_in[rows, :dec_len], targets[rows, :dec_len])
        return Batch(arrays if share_rows else None, int(steps.sum()), row_offset)


# ---------------------------------------------------------------------------------------------- download


def download(dest_dir, url: str = DEFAULT_URL, timeout: float = 60) -> Path:
    """Download the manythings.org zip and extract its ``fra.txt`` into ``dest_dir``; return that path.

    The site rejects urllib's default User-Agent with HTTP 406 (a problem users of the Keras example hit), so
    a browser-like one is sent. ``fra.txt`` is written to a temporary file in ``dest_dir`` and renamed over
    the target, so an interrupted download never leaves a truncated ``fra.txt`` that later looks valid.
    """
    hint = f"download {url} by hand, unzip it and pass --data PATH/TO/fra.txt"
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise MinilstmError(f"download of {url} failed: HTTP {exc.code} {exc.reason} ({hint})") from None
    except urllib.error.URLError as exc:
        raise MinilstmError(f"download of {url} failed: {exc.reason} ({hint})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, bad URLs
        raise MinilstmError(f"download of {url} failed: {exc or type(exc).__name__} ({hint})") from None

    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except zipfile.BadZipFile:
        raise MinilstmError(
            f"download of {url} did not give a zip archive ({len(body):,} bytes) ({hint})"
        ) from None
    dest = Path(dest_dir)
    target = dest / "fra.txt"
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        member = next((m for m in members if PurePosixPath(m.filename).name == "fra.txt"), None)
        if member is None:
            names = ", ".join(m.filename for m in members) or "nothing"
            raise MinilstmError(f"the zip archive from {url} has no fra.txt (it holds {names}) ({hint})")
        try:
            dest.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=".fra.txt.", suffix=".part")
        except OSError as exc:
            raise MinilstmError(f"cannot write to {dest}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as out, archive.open(member) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            _remove(tmp)
            raise MinilstmError(f"the zip archive from {url} is damaged: {exc} ({hint})") from None
        except OSError as exc:
            _remove(tmp)
            raise MinilstmError(f"cannot write {target}: {exc.strerror or exc}") from None
        except BaseException:
            _remove(tmp)
            raise
    return target


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
