"""The model's side of ``minilstm serve``: what a request's texts become (sentences the model can read, the
markup of an HTML text kept aside), decoding a batch of sentences on the decoder thread, and the texts put back
together from the sentences' answers."""

from dataclasses import dataclass

import numpy as np

from ..sentences import split_texts
from ..seq2seq import Seq2Seq
from .markup import HtmlDocument

WARMUP_TEXT = "Hello, how are you?"


@dataclass
class Answer:
    translation: str
    alternatives: list[str]  # the other beams' translations, best first (beam search only)
    attention: list[list[float]] | None = None  # (output characters and the end, input characters); greedy only


@dataclass
class TextAnswer:
    """One text's answer: its sentences' answers joined back (with the text's own whitespace, into its markup)."""

    translation: str
    alternatives: list[str]
    attention: list[list[float]] | None  # (output characters and the end, input characters); plain text only
    dropped: list[str]  # the characters the model never saw, left out (sorted, once each)


class RequestPlan:
    """A request's texts as sentences to decode (``sentences``: the non-blank ones), and ``assemble``, which joins
    the sentences' ``Answer``s back into one ``TextAnswer`` per text."""

    def __init__(self, translator: "Translator", texts: list[str], html: bool):
        self.documents = [HtmlDocument.parse(text) for text in texts] if html else None
        segments = [doc.texts for doc in self.documents] if html else [[text] for text in texts]
        self.segment_counts = [len(parts) for parts in segments]
        cleaned = [translator.clean(segment) for parts in segments for segment in parts]
        self.dropped = []
        start = 0
        for count in self.segment_counts:
            self.dropped.append(sorted({ch for _, lost in cleaned[start : start + count] for ch in lost}))
            start += count
        self.plan = split_texts([segment for segment, _ in cleaned], translator.model.max_encoder_len,
                                translator.model.input_vocab.length)
        self.decoded = [k for k, sentence in enumerate(self.plan.sentences) if sentence.strip()]
        self.sentences = [translator.known_sentence(self.plan.sentences[k]) for k in self.decoded]
        self.attention = translator.has_attention and not html

    def assemble(self, answers: list[Answer]) -> list[TextAnswer]:
        by_sentence = [Answer("", [], None)] * len(self.plan.sentences)
        for k, answer in zip(self.decoded, answers, strict=True):
            by_sentence[k] = answer
        beams = self.plan.join_n_best([[a.translation, *a.alternatives] for a in by_sentence])
        maps = None
        if self.attention:
            maps = self.plan.join_attention([self._weights(k, a) for k, a in enumerate(by_sentence)],
                                            [a.translation for a in by_sentence])
        results, start = [], 0
        for t, count in enumerate(self.segment_counts):
            texts_beams = beams[start : start + count]
            if self.documents is None:
                translations = texts_beams[0]
                attention = None if maps is None else maps[start].round(4).tolist()  # 4 decimals: enough for a heatmap
            else:
                width = max((len(b) for b in texts_beams), default=1)
                translations = [self.documents[t].render([b[min(k, len(b) - 1)] for b in texts_beams])
                                for k in range(width)]
                attention = None
            results.append(TextAnswer(translations[0], translations[1:], attention, self.dropped[t]))
            start += count
        return results

    def _weights(self, k: int, answer: Answer):
        """A sentence's attention weights; none (no row) for a sentence not decoded (blank)."""
        if answer.attention is not None:
            return np.asarray(answer.attention)
        return np.zeros((0, len(self.plan.sentences[k])))


class Translator:
    """``split`` runs on the event loop (no model call); ``decode`` and ``warmup`` only on the decoder thread."""

    def __init__(self, model: Seq2Seq, beam_width: int = 1, length_penalty: float = 0.0):
        self.model, self.beam_width, self.length_penalty = model, beam_width, length_penalty

    @property
    def has_attention(self) -> bool:
        """Whether answers carry attention maps: a model with attention, decoded greedily."""
        return getattr(self.model, "attention", None) is not None and self.beam_width == 1

    def clean(self, text: str) -> tuple[str, list[str]]:
        """The text without the characters the model never saw, and those characters (sorted, once each). Whitespace
        it never saw stays (a line break parts sentences), to become a space inside a sentence. A model of words or
        pieces drops nothing: an unknown word is ``<unk>``, and SentencePiece spells an unknown character in bytes."""
        if not self.model.input_vocab.is_chars:
            return text, []
        vocab = self.model.input_vocab.index
        dropped = sorted({ch for ch in text if ch not in vocab and not ch.isspace()})
        return ("".join(ch for ch in text if ch in vocab or ch.isspace()) if dropped else text), dropped

    def plan(self, texts: list[str], html: bool = False) -> RequestPlan:
        """What ``texts`` become: their sentences to decode, and how to put the answers back (runs on the event
        loop: no model call). Raises ``markup.MarkupError`` for HTML it refuses."""
        return RequestPlan(self, texts, html)

    def known_sentence(self, sentence: str) -> str:
        """A sentence as the model reads it: whitespace it never saw (a tab, a no-break space) as a space; for words
        and pieces, whitespace that would read as a marker (a tab, a line break) as a space."""
        if not self.model.input_vocab.is_chars:
            return "".join(" " if ch.isspace() and ch.isascii() else ch for ch in sentence)
        vocab = self.model.input_vocab.index
        return "".join(ch if ch in vocab else " " for ch in sentence)

    def decode(self, texts: list[str]) -> list[Answer]:
        """``Seq2Seq.translate``'s answer for each sentence (split already: ``RequestPlan``); with beam search also
        the other beams' translations, best first; with an attention model (greedy) also its attention weights."""
        if self.beam_width > 1:
            return [Answer(beams[0], beams[1:])
                    for beams in self.model.translate(texts, beam_width=self.beam_width, n_best=True,
                                                      length_penalty=self.length_penalty, split_sentences=False)]
        if not self.has_attention:
            return [Answer(translation, []) for translation in self.model.translate(texts, split_sentences=False)]
        maps = []
        translations = self.model.translate(texts, attention_maps=maps, split_sentences=False)
        return [Answer(translation, [], weights.round(4).tolist())
                for translation, weights in zip(translations, maps, strict=True)]

    def warmup(self):
        """Compile and run every kernel the server will use (the numba backend compiles on first use)."""
        known, _ = self.clean(WARMUP_TEXT)
        if not known.strip():
            known = next((ch for ch in self.model.input_vocab.chars if ch.strip()), "")
        if known.strip():
            self.decode([known, known[: max(1, len(known) // 2)]])
