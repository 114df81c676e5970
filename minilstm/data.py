"""Sentence pairs, character vocabularies, token ids and batches, encoded exactly as the Keras example does.

Text flows one way: a tab-separated file -> ``(english, french)`` pairs -> :class:`Dataset` (vocabularies
and int32 token-id matrices) -> index batches. The Keras example one-hot encodes characters; we keep integer
ids instead (``onehot(x) @ W`` is ``W[x]``: ``vocab``), so ``np.eye(V)[ids]`` *is* the example's array.
Reading the files is ``pairs``'s job, numbering the characters ``vocab``'s; both are re-exported here, the
data pipeline's one entry point.

Every problem the user can cause (a missing or malformed file, a character the model has never seen, a
failed download) is raised as :class:`~minilstm.errors.MinilstmError` with a one-line message that names the
place and says what to do; the command-line tools print it and exit 2.
"""


from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MinilstmError
from .layers import IGNORE
from .pairs import (  # noqa: F401 - re-exported: the data pipeline's entry point
    DEFAULT_DATA,
    DEFAULT_NUM_PAIRS,
    DEFAULT_URL,
    download,
    load_default_pairs,
    read_pairs,
    resolve_pairs,
)
from .vocab import END, PAD, START, Vocab, _check_lengths, _encode_padded, encode_inputs  # noqa: F401 - re-exports

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
            max_encoder_len = max(map(input_vocab.length, input_texts))
        else:
            _check_lengths(input_texts, max_encoder_len, "English", vocab=input_vocab)
        if max_decoder_len is None:
            max_decoder_len = max(map(target_vocab.length, target_texts))
        else:
            _check_lengths(target_texts, max_decoder_len, "French", " with the start and end markers", target_vocab)
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
        """Tokens (characters, for the example's units) in each English sentence, padding not counted."""
        return np.fromiter(map(self.input_vocab.length, self.input_texts), dtype=np.int64, count=len(self))

    def target_steps(self) -> np.ndarray:
        """Decoder positions with a real target in each row: the French characters and END (len(START+fr+END) - 1);
        the positions after them predict padding."""
        return np.fromiter(map(self.target_vocab.length, self.target_texts), dtype=np.int64, count=len(self)) - 1

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


