"""Texts of several sentences, split into sentences to decode one by one and joined back.

The models are trained on single sentences: fed a paragraph, they translate its first sentence or two and lose the
rest. ``split_texts`` cuts every text into sentences with sentencex (Wikimedia's segmenter, which knows
abbreviations such as "Mr." and "e.g.", decimals, ellipses and "?!"); a sentence ends only where whitespace follows
(sentencex would also cut "Go.Go." in two), and a line break always ends one. A
sentence longer than the model's longest training input is cut further, at a clause boundary (after ``, ; :`` or a
dash, before a conjunction such as " and "), else at a space, else anywhere, so that no piece is longer than the
limit. The plan remembers where each sentence sat, so that ``SentencePlan.join`` puts the translations back with
each text's own whitespace and line breaks between them; joining the sentences themselves gives the text back
byte for byte.

A text with no sentence in it (empty, or whitespace only) is kept whole as its one "sentence", so that decoding it
does what it did before splitting existed (an error, for the decoder).
"""

import re
from dataclasses import dataclass

import numpy as np
import sentencex

LANGUAGE = "en"
"""The source language: the models translate English."""

LINE = re.compile(r"[^\r\n]+")
"""A line's characters: line breaks (``\\n``, ``\\r\\n``, ``\\r``) always end a sentence and stay in the gaps."""

CLAUSE_CUT = re.compile(
    r"(?<=[,;:])(?=\s)"  # after a comma, semicolon or colon
    r"|(?<=\s[-\u2013\u2014])(?=\s)"  # after a free-standing dash
    r"|(?=\s(?:and|but|or|because|so|while|whereas|although|though|when|if|since|until|unless|which|who)\s)",
    re.IGNORECASE,
)
"""Where a long sentence is best cut: the places that start a clause, empty matches at the cut."""

SPACE_CUT = re.compile(r"(?=\s)")

WIDE_SPACES_AS_SPACE = {code: " " for code in range(0x80, 0x3001) if chr(code).isspace()}
"""Whitespace beyond ASCII (no-break and thin spaces...), which sentencex 1.0 is handed as plain spaces: it panics on
"A\u00a0." (a byte offset inside the wide space); one character for one keeps the offsets."""


@dataclass(frozen=True)
class TextLayout:
    """One text: its sentences' ``(start, end)`` offsets in it, in order, and the text itself."""

    text: str
    spans: list[tuple[int, int]]

    def gaps(self) -> list[str]:
        """What sits before, between and after the sentences (``len(spans) + 1`` strings)."""
        edges = [0, *(offset for span in self.spans for offset in span), len(self.text)]
        return [self.text[edges[k] : edges[k + 1]] for k in range(0, len(edges), 2)]


@dataclass(frozen=True)
class SentencePlan:
    """The sentences of many texts (``sentences``, flat, in order) and how to join their translations back."""

    layouts: list[TextLayout]

    @property
    def sentences(self) -> list[str]:
        return [layout.text[start:end] for layout in self.layouts for start, end in layout.spans]

    def _per_text(self, items: list) -> list[list]:
        """``items`` (one per sentence, flat) grouped by text."""
        if len(items) != sum(len(layout.spans) for layout in self.layouts):
            raise ValueError(f"{len(items)} items for {len(self.sentences)} sentences")
        groups, k = [], 0
        for layout in self.layouts:
            groups.append(items[k : k + len(layout.spans)])
            k += len(layout.spans)
        return groups

    def join(self, translations: list[str]) -> list[str]:
        """One string per text: its sentences' translations with the text's own gaps between them."""
        return [_interleave(layout.gaps(), group)
                for layout, group in zip(self.layouts, self._per_text(translations), strict=True)]

    def join_n_best(self, beams: list[list[str]]) -> list[list[str]]:
        """Per text, its alternatives: alternative k joins every sentence's k-th beam (its best where it has fewer),
        so the first is ``join`` of the best beams."""
        joined = []
        for layout, group in zip(self.layouts, self._per_text(beams), strict=True):
            count = max(len(sentence_beams) for sentence_beams in group)
            joined.append([_interleave(layout.gaps(), [b[k] if k < len(b) else b[0] for b in group])
                           for k in range(count)])
        return joined

    def join_attention(self, maps: list, translations: list[str]) -> list:
        """Per text one attention matrix (its translation's characters, then END where its last sentence ended;
        the text's characters): each sentence's block at its offsets, zero rows and columns for the gaps. A
        sentence's map has a row per generated character and one for END if it ended, which its translation
        tells apart (hence ``translations``); the END rows of all but the last sentence are dropped."""
        joined = []
        for layout, group, texts in zip(self.layouts, self._per_text(maps), self._per_text(translations),
                                        strict=True):
            gaps = layout.gaps()
            ends = group[-1].shape[0] - len(texts[-1])  # 1 where the last sentence ended
            rows = sum(map(len, gaps)) + sum(map(len, texts)) + ends
            out = np.zeros((rows, len(layout.text)), dtype=group[-1].dtype)
            row = 0
            for gap, (start, end), weights, translation in zip(gaps[:-1], layout.spans, group, texts, strict=True):
                row += len(gap)
                out[row : row + len(translation), start:end] = weights[: len(translation)]
                row += len(translation)
            if ends:
                start, end = layout.spans[-1]
                out[-1, start:end] = group[-1][-1]
            joined.append(out)
        return joined


def _interleave(gaps: list[str], pieces: list[str]) -> str:
    return gaps[0] + "".join(piece + gap for piece, gap in zip(pieces, gaps[1:], strict=True))


def split_texts(texts: list[str], max_len: int | None = None, measure=len) -> SentencePlan:
    """The sentences of ``texts``, none longer than ``max_len`` (None: no limit), and their places. A sentence's
    length is ``measure(sentence)``: its characters, or the tokens a model of words or pieces reads (one
    character at most is left longer, when a single one takes more)."""
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be at least 1, not {max_len}")
    return SentencePlan([TextLayout(text, _sentence_spans(text, max_len, measure)) for text in texts])


def _sentence_spans(text: str, max_len: int | None, measure) -> list[tuple[int, int]]:
    spans = []
    for line in LINE.finditer(text):
        for start, end in _segment(line.group()):
            spans.extend(_fit(text, line.start() + start, line.start() + end, max_len, measure))
    return spans or [(0, len(text))]  # nothing but whitespace: the text as it is


def _segment(line: str) -> list[tuple[int, int]]:
    """sentencex's sentences of one line as offsets, without the whitespace around them. A sentence ends before
    whitespace only: where sentencex cuts between two characters that touch, the two sides stay one sentence. Its
    segments put together give the line back; should they ever not, the line is kept whole rather than lose text."""
    segments = []
    line = line.translate(WIDE_SPACES_AS_SPACE)  # the offsets are the same; the caller slices the original
    for segment in sentencex.segment(LANGUAGE, line):
        if segments and not segments[-1][-1].isspace():  # a cut inside "file.Name" or "Go.Go.": not a sentence end
            segments[-1] += segment
        else:
            segments.append(segment)
    if "".join(segments) != line:
        segments = [line]
    spans, start = [], 0
    for segment in segments:
        sentence = segment.strip()
        if sentence:
            first = start + segment.index(sentence)
            spans.append((first, first + len(sentence)))
        start += len(segment)
    return spans


def _fit(text: str, start: int, end: int, max_len: int | None, measure=len) -> list[tuple[int, int]]:
    """``text[start:end]`` as pieces of at most ``max_len`` (``measure``): cut at the clause boundary nearest its
    middle, else the space nearest it, else at the middle itself, and each side cut again until it fits. Cutting
    near the middle keeps the pieces long enough to read as clauses."""
    if max_len is None or end - start <= 1 or measure(text[start:end]) <= max_len:
        return [(start, end)]
    sentence = text[start:end]
    for pattern in (CLAUSE_CUT, SPACE_CUT):
        cuts = [m.start() for m in pattern.finditer(sentence)
                if sentence[: m.start()].strip() and sentence[m.start() :].strip()]
        if cuts:
            cut = min(cuts, key=lambda c: abs(2 * c - len(sentence)))
            break
    else:
        cut = len(sentence) // 2
    left = sentence[:cut].rstrip()
    right_start = start + cut + (len(sentence[cut:]) - len(sentence[cut:].lstrip()))
    return (_fit(text, start, start + len(left), max_len, measure)
            + _fit(text, right_start, end, max_len, measure))
