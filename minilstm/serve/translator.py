"""The model's side of ``minilstm serve``: which characters it knows, and decoding a batch on the decoder thread."""

from ..seq2seq import Seq2Seq

WARMUP_TEXT = "Hello, how are you?"


class Translator:
    """``split`` runs on the event loop (no model call); ``decode`` and ``warmup`` only on the decoder thread."""

    def __init__(self, model: Seq2Seq, beam_width: int = 1):
        self.model, self.beam_width = model, beam_width

    def split(self, text: str) -> tuple[str, list[str]]:
        """The text without the characters the model never saw, and those characters (sorted, once each)."""
        vocab = self.model.input_vocab.index
        dropped = sorted({ch for ch in text if ch not in vocab})
        return ("".join(ch for ch in text if ch in vocab) if dropped else text), dropped

    def decode(self, texts: list[str]) -> list[tuple[str, list[str]]]:
        """(translation, alternatives) of each text: ``Seq2Seq.translate``'s answer, and with beam search the
        other beams' translations, best first."""
        if self.beam_width == 1:
            return [(translation, []) for translation in self.model.translate(texts)]
        return [(best[0], best[1:]) for best in self.model.translate(texts, beam_width=self.beam_width, n_best=True)]

    def warmup(self):
        """Compile and run every kernel the server will use (the numba backend compiles on first use)."""
        known, _ = self.split(WARMUP_TEXT)
        if not known.strip():
            known = next((ch for ch in self.model.input_vocab.chars if ch.strip()), "")
        if known.strip():
            self.decode([known, known[: max(1, len(known) // 2)]])
