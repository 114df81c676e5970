"""A ``mask_padding`` model batches English sentences of any lengths: the encoder's time loop is cut at each
distinct length (``encoding.run_encoder``; a bidirectional encoder's reverse direction reads each row reversed
within its own length), and every row gets exactly what it gets alone."""

from pathlib import Path

import numpy as np
import pytest

from minilstm import decoding
from minilstm.backends import get_backend
from minilstm.data import END, Dataset, encode_inputs, read_pairs
from minilstm.encoding import run_encoder
from minilstm.errors import MinilstmError
from minilstm.seq2seq import Seq2Seq

TINY = Path(__file__).parent / "data" / "tiny.txt"
ARCHITECTURES = {
    "example": {},
    "stacked": {"encoder_layers": 2, "decoder_layers": 2, "dropout": 0.3},
    "deeper encoder": {"encoder_layers": 3, "decoder_layers": 2},
    "general attention": {"attention": "general"},
    "dot attention, no input feed": {"attention": "dot", "input_feed": False},
    "bidirectional": {"bidirectional_encoder": True},
    "bidirectional, stacked": {"bidirectional_encoder": True, "encoder_layers": 2, "decoder_layers": 2},
    "bidirectional, general attention": {"bidirectional_encoder": True, "attention": "general", "input_feed": False},
}


def model_of(backend, dtype, architecture, units=7, seed=5):
    """Large random weights over tiny.txt's vocabularies, so that decodes vary with the input."""
    dataset = Dataset.from_pairs(read_pairs(TINY))
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=units, dtype=dtype, mask_padding=True,
                    **ARCHITECTURES[architecture]).initialize(seed)
    rng = np.random.default_rng(seed)
    weights = {k: v + rng.standard_normal(v.shape) for k, v in model.get_weights().items()}
    weights["dense.bias"][model.target_vocab.index[END]] += 2.0
    model.set_weights(weights)
    return model


def assert_same(model, a, b, compiled_decoder=False):
    """numba's one-layer time loop (and its compiled greedy decoders): bit for bit (each output one FMA chain,
    whatever the batch); numpy's, stacked layers' input GEMMs (the layer below's outputs, all steps at once) and the
    attention of the step loop: BLAS, which blocks by batch size."""
    if model.backend.name == "numba" and model.encoder.num_layers == 1 and (
            not compiled_decoder or model.attention_decoder.compiled_greedy(model.backend)):
        assert np.array_equal(a, b)
    else:
        single = model.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5 if single else 1e-12, atol=1e-6 if single else 1e-13)


def sentences(model, rng, n=23):
    chars = [c for c in model.input_vocab.chars if c.strip()]
    lengths = np.concatenate([[1, 1, 2, 17], rng.integers(1, 18, size=n - 4)])
    return ["".join(rng.choice(chars, size=length)) for length in lengths]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_each_row_gets_the_state_it_gets_alone(cpu_backend, rng, architecture, dtype):
    model = model_of(cpu_backend, dtype, architecture)
    texts = sentences(model, rng)
    lengths = [len(t) for t in texts]
    ids = encode_inputs(texts, model.input_vocab, 0)

    def same(a, b):
        assert_same(model, cpu_backend.to_numpy(a), cpu_backend.to_numpy(b))
    assert model.takes_mixed_lengths()
    outputs, (h, c) = run_encoder(model, ids, lengths)
    for k, text in enumerate(texts):
        out_k, (h_k, c_k) = run_encoder(model, encode_inputs([text], model.input_vocab, 0), [len(text)])
        same(h[:, k], h_k[:, 0])
        same(c[:, k], c_k[:, 0])
        same(outputs[: len(text), k], out_k[:, 0])
        assert not cpu_backend.to_numpy(outputs[len(text) :, k]).any()  # zeros past the row's end


# The attention models' float32 decoders compile for long (a cold cache): those cases are in the full suite only.
@pytest.mark.parametrize("architecture", [pytest.param(name, marks=pytest.mark.slow) if "attention" in name else name
                                          for name in ARCHITECTURES])
def test_translations_in_one_batch_equal_one_at_a_time(cpu_backend, rng, architecture):
    model = model_of(cpu_backend, "float32", architecture)
    texts = sentences(model, rng)
    alone = [model.translate([t])[0] for t in texts]
    assert len(set(alone)) >= 4  # the decodes vary with the input
    assert model.translate(texts) == alone
    assert model.translate(texts, batch_size=4) == alone
    assert model.translate(texts, beam_width=3) == [model.translate([t], beam_width=3)[0] for t in texts]
    assert model.translate(texts, temperature=0.7, seed=1, batch_size=len(texts)) is not None
    if model.attention is not None:
        maps, maps_alone = [], []
        model.translate(texts, attention_maps=maps)
        for t in texts:
            model.translate([t], attention_maps=maps_alone)
        for m, m_alone in zip(maps, maps_alone, strict=True):
            assert_same(model, m, m_alone, compiled_decoder=True)


@pytest.mark.parametrize("architecture", ["example", "bidirectional, general attention"])
def test_an_empty_text_gets_one_clear_error(architecture):
    """A mask-padding encoder reads a sentence's own characters: an empty one has none (the CLI and the server
    refuse it before; the library says which text)."""
    model = model_of(get_backend("numpy"), "float32", architecture)
    text = "".join(c for c in model.input_vocab.chars if c.strip())[:5]
    with pytest.raises(MinilstmError, match=r"^text 1 is empty \(2 empty in all\)"):
        model.translate([text, "", text[:1], ""])
    assert len(model.translate([text, text[:1]])) == 2  # the model itself is fine


def test_a_mixed_batch_runs_one_encoder_call_per_distinct_length(cpu_backend, monkeypatch):
    """The cut loop, not one call per row: rows still going form a prefix (longest first)."""
    model = model_of(cpu_backend, "float32", "example")
    calls = []
    forward = model.encoder.forward

    def counting(params, ids, *args, **kwargs):
        calls.append(ids.shape)
        return forward(params, ids, *args, **kwargs)

    monkeypatch.setattr(model.encoder, "forward", counting)
    char = next(c for c in model.input_vocab.chars if c.strip())
    texts = [char * n for n in (2, 5, 1, 5, 3)]
    model.start_decoding(encode_inputs(texts, model.input_vocab, 0), [len(t) for t in texts])
    assert calls == [(1, 5), (1, 4), (1, 3), (2, 2)]  # steps x rows: lengths 1, 2, 3, 5


@pytest.mark.slow  # a float32 attention model: its compiled decoders take ~20 s to build on a cold cache
def test_the_backend_caps_a_mixed_batch_and_each_row_still_gets_what_it_gets_alone(cpu_backend, rng, monkeypatch):
    """``Backend.mixed_batch_rows`` (numba: 128) holds translate's batches of mixed lengths to that many rows."""
    model = model_of(cpu_backend, "float32", "bidirectional, general attention")
    texts = sentences(model, rng, n=max(23, 6 * cpu_backend.workers))  # > 5 rows per worker: the cap, not them
    alone = [model.translate([t])[0] for t in texts]
    monkeypatch.setattr(cpu_backend, "mixed_batch_rows", 5)
    rows = []
    greedy = decoding.greedy

    def counting(steps, ids, *args, **kwargs):
        rows.append(len(ids))
        return greedy(steps, ids, *args, **kwargs)

    monkeypatch.setattr(decoding, "greedy", counting)
    assert model.translate(texts) == alone
    assert max(rows) == 5 and sum(rows) == len(texts)


@pytest.mark.parametrize("score", ["general", "concat"])
def test_a_sentences_attention_keys_do_not_depend_on_its_batch(rng, score):
    """numba: the keys come from our micro-kernel (``Attention.prepare``), one chain of multiply-adds per key, where
    BLAS rounds by how many rows it gets (at this width it does: checked against ``matmul`` when this was written)."""
    from minilstm.attention import Attention
    from minilstm.backends.numba import NumbaBackend
    from minilstm.nn import Parameters

    attention = Attention(256, memory_size=256, score=score)
    params = Parameters(NumbaBackend(workers=2), [attention], np.float32, seed=0)
    memory = rng.standard_normal((60, 7, 256)).astype(np.float32)
    keys = attention.prepare(params, memory).keys
    for b in (0, 1, 17, 59):
        assert np.array_equal(attention.prepare(params, memory[b : b + 1]).keys[0], keys[b])
