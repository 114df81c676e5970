"""The model's side of ``minilstm serve``: which characters it knows, and decoding a batch on the decoder thread."""

from dataclasses import dataclass

from ..seq2seq import Seq2Seq

WARMUP_TEXT = "Hello, how are you?"


@dataclass
class Answer:
    translation: str
    alternatives: list[str]  # the other beams' translations, best first (beam search only)
    attention: list[list[float]] | None = None  # (output characters and the end, input characters); greedy only


class Translator:
    """``split`` runs on the event loop (no model call); ``decode`` and ``warmup`` only on the decoder thread."""

    def __init__(self, model: Seq2Seq, beam_width: int = 1, length_penalty: float = 0.0):
        self.model, self.beam_width, self.length_penalty = model, beam_width, length_penalty

    @property
    def has_attention(self) -> bool:
        """Whether answers carry attention maps: a model with attention, decoded greedily."""
        return getattr(self.model, "attention", None) is not None and self.beam_width == 1

    def split(self, text: str) -> tuple[str, list[str]]:
        """The text without the characters the model never saw, and those characters (sorted, once each)."""
        vocab = self.model.input_vocab.index
        dropped = sorted({ch for ch in text if ch not in vocab})
        return ("".join(ch for ch in text if ch in vocab) if dropped else text), dropped

    def decode(self, texts: list[str]) -> list[Answer]:
        """``Seq2Seq.translate``'s answer for each text; with beam search also the other beams' translations, best
        first; with an attention model (greedy) also its attention weights, rounded to 4 decimals."""
        if self.beam_width > 1:
            return [Answer(beams[0], beams[1:])
                    for beams in self.model.translate(texts, beam_width=self.beam_width, n_best=True,
                                                      length_penalty=self.length_penalty)]
        if not self.has_attention:
            return [Answer(translation, []) for translation in self.model.translate(texts)]
        maps = []
        translations = self.model.translate(texts, attention_maps=maps)
        return [Answer(translation, [], weights.round(4).tolist())
                for translation, weights in zip(translations, maps, strict=True)]

    def warmup(self):
        """Compile and run every kernel the server will use (the numba backend compiles on first use)."""
        known, _ = self.split(WARMUP_TEXT)
        if not known.strip():
            known = next((ch for ch in self.model.input_vocab.chars if ch.strip()), "")
        if known.strip():
            self.decode([known, known[: max(1, len(known) // 2)]])
