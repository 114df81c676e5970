"""Models of words and pieces downstream: where each token lies in the text, their attention maps drawn over
characters (each character carrying its token's weight), long texts split by tokens, and ``minilstm serve``
answering exactly what ``translate`` answers, alternatives and attention maps included, with nothing dropped."""

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")

from serve_helpers import Server  # noqa: E402

from minilstm.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from minilstm.data import load_default_pairs  # noqa: E402
from minilstm.decoding import characters_map  # noqa: E402
from minilstm.sentences import split_texts  # noqa: E402
from minilstm.seq2seq import Seq2Seq  # noqa: E402
from minilstm.units import SentencePieceUnits, WordUnits  # noqa: E402
from minilstm.vocab import END, Vocab  # noqa: E402

TEXTS = ["Go.", "I'm sick.", "Who are you? \u2603", "Tom  was  here.", "It's 5 o'clock. Run!", "Hi", "é€😀 ok"]


@pytest.fixture(scope="module")
def pairs():
    return load_default_pairs(3000)


def _units(kind: str, texts: list[str]):
    return SentencePieceUnits.learn(texts, 400) if kind == "sentencepiece" else WordUnits.learn(texts)


def save_chaotic_model(path, kind: str, pairs, beam: bool = False):
    """A model of ``kind`` units with large random weights (no training), whose greedy decodes differ from input
    to input, so that a server that mixed up answers would be caught; float64, so that batching never flips a
    near tie."""
    input_vocab = Vocab.from_units(_units(kind, [en for en, _ in pairs]))
    target_vocab = Vocab.from_units(_units(kind, [fr for _, fr in pairs]))
    model = Seq2Seq("numpy", input_vocab, target_vocab, 30, 30, latent_dim=16, dtype="float64",
                    attention="general", embedding_dim=8, input_feed=False, mask_padding=True).initialize(5)
    rng = np.random.default_rng(5)
    model.set_weights({k: 2 * (v + rng.standard_normal(v.shape)) for k, v in model.get_weights().items()})
    weights = model.get_weights()
    weights["dense.bias"][target_vocab.index[END]] += 4.0
    model.set_weights(weights)
    return save_checkpoint(path, model)


@pytest.mark.parametrize("kind", ["sentencepiece", "word"])
def test_each_token_is_located_in_the_text(pairs, kind):
    units = _units(kind, [en for en, _ in pairs])
    for text in TEXTS + [en for en, _ in pairs[::300]]:
        spans = units.locate(text)
        assert len(spans) == len(units.split(text))
        assert all(a <= b for a, b in spans) and all(b <= a for (_, b), (a, _) in zip(spans, spans[1:], strict=False))
        assert "".join(text[a:b] for a, b in spans) == text.rstrip()  # every character but trailing space
        joined = units.join(units.split(text))
        spans = units.join_spans(units.split(text))
        assert "".join(joined[a:b] for a, b in spans) == joined


def test_a_token_map_becomes_a_character_map(pairs):
    vocab = Vocab.from_units(_units("word", [en for en, _ in pairs]))
    text = "Tom is here."  # Tom, ▁is, ▁here, .
    ids = vocab.encode("Tom is.")  # Tom, ▁is, .  -> "Tom is." as the translation
    weights = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.0, 0.0, 0.2, 0.8], [0.25] * 4])
    out = characters_map(weights, vocab, text, vocab, ids)
    assert out.shape == (len("Tom is.") + 1, len(text))  # and the END row
    assert np.allclose(out[0], [0.7] * 3 + [0.1] * 3 + [0.1] * 5 + [0.1])
    assert np.allclose(out[4], out[5]) and np.allclose(out[4], [0.1] * 3 + [0.6] * 3 + [0.2] * 5 + [0.1])
    assert np.allclose(out[-1], [0.25] * len(text))
    chars = Vocab.from_texts([text])
    identity = np.random.default_rng(0).random((5, len(text)))
    assert np.array_equal(characters_map(identity, chars, text, chars, chars.encode("Tom ")), identity)


def test_bytes_of_one_character_are_one_column(pairs):
    vocab = Vocab.from_units(_units("sentencepiece", [en for en, _ in pairs]))
    text = "a\u2603b"
    tokens = vocab.split(text)
    assert len(tokens) > len(text)  # the snowman is spelt in bytes
    weights = np.eye(len(tokens))[: len(tokens)]
    out = characters_map(weights, vocab, text, vocab, vocab.encode(text))
    assert out.shape == (3, 3) and np.allclose(out.sum(axis=0), out.sum(axis=0)[0])


def test_long_sentences_are_split_by_tokens_not_characters(pairs):
    vocab = Vocab.from_units(_units("sentencepiece", [en for en, _ in pairs]))
    text = "I think that Tom was here yesterday, but I don't know where he went after that."
    tokens = vocab.length(text)
    assert tokens < len(text) and split_texts([text], tokens, vocab.length).sentences == [text]  # it fits
    pieces = split_texts([text], 10, vocab.length).sentences
    assert len(pieces) > 1 and all(vocab.length(p) <= 10 for p in pieces)
    assert split_texts(["\u2603"], 1, vocab.length).sentences == ["\u2603"]  # one character, more tokens: kept


@pytest.mark.parametrize("kind", ["sentencepiece", "word"])
def test_the_server_answers_what_translate_answers(tmp_path, pairs, kind):
    checkpoint = save_chaotic_model(tmp_path / kind, kind, pairs)
    model = load_checkpoint(checkpoint, backend="numba").model
    texts = TEXTS + [en for en, _ in pairs[::150]]
    maps = []
    expected = model.translate(texts, attention_maps=maps)
    assert len(set(expected)) > len(texts) // 2  # the answers tell the inputs apart
    srv = Server(checkpoint, "--backend", "numba")
    try:
        answer = httpx.post(srv.url + "/translate", timeout=60, json={"q": texts, "source": "en", "target": "fr",
                                                                      "attention": True}).json()
        assert answer["translatedText"] == expected and "droppedCharacters" not in answer
        for weights, reference, text, translation in zip(answer["attention"], maps, texts, expected, strict=True):
            assert np.shape(weights)[1] == len(text) and len(translation) <= len(weights) <= len(translation) + 1
            np.testing.assert_allclose(weights, reference, atol=5.1e-5)
    finally:
        assert srv.stop() == 0
    beams = model.translate(texts, beam_width=3, n_best=True)
    srv = Server(checkpoint, "--backend", "numba", "--beam-width", 3)
    try:
        answer = httpx.post(srv.url + "/translate", timeout=60, json={"q": texts, "source": "en", "target": "fr",
                                                                      "alternatives": 2}).json()
        assert answer == {"translatedText": [b[0] for b in beams], "alternatives": [b[1:3] for b in beams]}
    finally:
        assert srv.stop() == 0
