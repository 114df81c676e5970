"""Embeddings (``--embedding-dim``): a trained (V, E) table before each LSTM stack instead of the one-hot input.

The reference (numpy, float64) against central finite differences (the table and the input kernels included) and
against PyTorch's ``nn.Embedding`` at the same weights (loss, every gradient, greedy decodes); the numba backend
(compiled time loops, compiled attention loops, thread shards) against numpy at odd shapes; the compiled decoders
against the step loop, bit for bit; the folded decoding against teacher forcing; padding that contributes nothing;
the config of a model without embeddings unchanged; the exports. Resume and the GPU backend: at the end.
"""

import json

import numpy as np
import pytest
from helpers import copy_to_backend, numerical_gradient, random_batch, relative_error, small_model

from minilstm import LSTM, Embedding, Parameters
from minilstm.architecture import Architecture
from minilstm.backends import get_backend
from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.layers import IGNORE
from minilstm.seq2seq import Seq2Seq

# (name, Architecture fields besides latent_dim and embedding_dim)
OPTIONS = {
    "plain": {},
    "attention-general": {"attention": "general"},
    "attention-dot-no-feed": {"attention": "dot", "input_feed": False},
    "attention-concat": {"attention": "concat"},
    "stacked-bidirectional": {"encoder_layers": 2, "decoder_layers": 2, "bidirectional_encoder": True},
    "attention-general-stacked-bidirectional": {"attention": "general", "encoder_layers": 2, "decoder_layers": 2,
                                                "bidirectional_encoder": True},
}


def embedded_model(backend, options, embedding_dim=3, units=3, n_in=5, n_out=6, enc_len=4, dec_len=5, seed=0,
                   dtype="float64"):
    return small_model(backend, n_in, n_out, units, enc_len, dec_len, dtype=dtype, seed=seed,
                       embedding_dim=embedding_dim, **options)


# -- the architecture and its config --------------------------------------------------------------------------------


def test_config_names_embeddings_only_when_set(tmp_path):
    """A model without embeddings stores the config it always did (no new key); one with them stores the size, and
    an old config (no key) reads as one-hot. Checkpoints keep the tables."""
    plain = small_model("numpy")
    assert "embedding_dim" not in plain.config() and "embedding_dim" not in plain.arch.beyond_example()
    assert Architecture.from_config(plain.config()).embedding_dim == 0
    assert Architecture(embedding_dim=None).embedding_dim == 0 and Architecture().is_example()
    with pytest.raises(ValueError, match="embedding_dim"):
        Architecture(embedding_dim=-1)
    model = embedded_model("numpy", OPTIONS["attention-general"], embedding_dim=4)
    assert model.config()["embedding_dim"] == 4 and not model.arch.is_example()
    assert model.params["encoder_embedding.embeddings"].shape == (5, 4)
    assert model.params["decoder_embedding.embeddings"].shape == (6, 4)
    assert model.params["encoder.kernel"].shape == (4, 12)
    assert model.params["decoder.kernel"].shape == (4 + 3, 12)  # input feeding: E + H rows
    save_checkpoint(tmp_path / "ck", model)
    loaded = load_checkpoint(tmp_path / "ck").model
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["model"]["embedding_dim"] == 4
    assert loaded.arch == model.arch
    for name, value in model.get_weights().items():
        assert np.array_equal(loaded.get_weights()[name], value), name


def test_initialiser_is_keras_uniform():
    """Keras's Embedding initialiser: uniform(-0.05, 0.05); the other weights keep theirs."""
    model = Seq2Seq("numpy", small_model("numpy").input_vocab, small_model("numpy").target_vocab, 4, 5,
                    latent_dim=8, embedding_dim=40).initialize(0)
    table = model.params["encoder_embedding.embeddings"]
    assert np.abs(table).max() <= 0.05 and np.abs(table).max() > 0.04 and abs(table.mean()) < 0.02


# -- the reference: finite differences ------------------------------------------------------------------------------


@pytest.mark.parametrize("steps,batch,dim,units,vocab", [(5, 4, 3, 4, 3), (1, 1, 3, 3, 2), (3, 1, 1, 3, 4)])
def test_embedding_layer_then_lstm_gradients(cpu_backend, rng, steps, batch, dim, units, vocab):
    """The layer API: Embedding -> LSTM over its rows; d table (a scatter-add, ids repeated) and every LSTM weight
    against finite differences."""
    embedding, lstm = Embedding(vocab, dim, name="emb"), LSTM(units, input_size=dim, name="lstm")
    params = Parameters(cpu_backend, [embedding, lstm], "float64", seed=int(rng.integers(1000)))
    ids = rng.integers(0, vocab, size=(steps, batch))
    project = rng.standard_normal((steps, batch, units))
    state = tuple(rng.standard_normal((2, 1, batch, units)))  # not zeros: length 1 still reaches the recurrent kernel

    def loss():
        outputs, _, _ = lstm.forward(params, embedding.forward(params, ids), state)
        return float((outputs * project).sum())

    x = embedding.forward(params, ids)
    _, _, cache = lstm.forward(params, x, state)
    d_x, _ = lstm.backward(params, cache, project)
    embedding.backward(params, ids, d_x)
    for name, view in params.items():
        expected = numerical_gradient(loss, view)
        assert np.abs(expected).max() > 0, name
        assert relative_error(params.grads[name], expected) < 1e-6, name


SHAPES = [(3, 4, 4, 5), (1, 3, 1, 1), (2, 3, 3, 2)]  # (batch, units, encoder steps, decoder steps)


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("batch,units,enc_len,dec_len", SHAPES)
def test_seq2seq_gradients_with_embeddings(rng, name, batch, units, enc_len, dec_len):
    backend = get_backend("numpy")
    model = embedded_model(backend, OPTIONS[name], units=units, enc_len=enc_len, dec_len=dec_len,
                           seed=int(rng.integers(1000)))
    enc, dec_in, dec_out = random_batch(rng, model, batch)
    lengths = rng.integers(1, enc_len + 1, size=batch)
    positions = batch * dec_len

    def loss():
        return float(model.forward_backward(enc, dec_in, dec_out, compute_grads=False,
                                            source_lengths=lengths)[0]) / positions

    model.forward_backward(enc, dec_in, dec_out, source_lengths=lengths)
    analytic = {key: g.copy() for key, g in model.grads.items()}
    for key, view in model.params.items():
        expected = numerical_gradient(loss, view, eps=1e-5)
        if np.linalg.norm(expected) > 1e-4:  # as tests/test_attention.py: tiny gradients are checked absolutely
            assert relative_error(analytic[key], expected) < 1e-6, key
        else:
            assert np.abs(analytic[key] - expected).max() < 1e-9, key
    for key in ("encoder_embedding.embeddings", "decoder_embedding.embeddings", "encoder.kernel", "decoder.kernel"):
        assert np.linalg.norm(analytic[key]) > 1e-4, key  # the tables and input kernels got the relative check


# -- the reference against PyTorch ----------------------------------------------------------------------------------

TORCH_OPTIONS = ["plain", "attention-general", "attention-dot-no-feed", "attention-concat",
                 "attention-general-stacked-bidirectional"]


@pytest.mark.parametrize("name", TORCH_OPTIONS)
@pytest.mark.parametrize("batch,units,dim", [(6, 8, 5), (1, 3, 3)])
def test_loss_gradients_and_greedy_decodes_match_pytorch(rng, name, batch, units, dim):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference: pip install torch==2.13.0")
    from bench.torch_models import TorchSeq2Seq

    model = embedded_model("numpy", OPTIONS[name], embedding_dim=dim, units=units, n_in=7, n_out=9, enc_len=5,
                           dec_len=6, seed=int(rng.integers(1000)))
    enc, dec_in, dec_out = random_batch(rng, model, batch)
    lengths = rng.integers(1, 6, size=batch) if model.attention else None
    loss, _ = model.loss_and_grads(enc, dec_in, dec_out, source_lengths=lengths)
    reference = TorchSeq2Seq.from_minilstm(model)
    assert isinstance(reference.encoder_embedding, torch.nn.Embedding)
    ref_loss = reference.loss(enc, dec_in, dec_out, lengths)
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    ref_grads = reference.get_grads()
    assert set(ref_grads) == set(model.grads.views)
    for key, grad in model.grads.items():
        assert relative_error(grad, ref_grads[key]) < 1e-10, key
    theirs = reference.greedy_decode(reference.one_hot(enc, model.encoder_embedding.vocab_size),
                                     None if lengths is None else reference.valid(lengths, enc.shape[1]),
                                     model.target_vocab.index["\t"], model.target_vocab.index["\n"],
                                     model.max_decoder_len)
    end = model.target_vocab.index["\n"]
    theirs = [row[: row.index(end)] if end in row else row for row in theirs.tolist()]
    assert model.greedy_decode_ids(enc, lengths) == theirs


# -- decoding: the folded model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIONS)
def test_folded_steps_reproduce_teacher_forcing(rng, name):
    """Decoding folds each table into its kernel ((table @ kernel)[y] = table[y] @ kernel): the step loop fed the
    true previous characters gives the teacher-forced logits (float64, to rounding)."""
    model = embedded_model("numpy", OPTIONS[name], units=4, n_in=7, n_out=9, enc_len=5, dec_len=6)
    enc, dec_in, _ = random_batch(rng, model, 3)
    lengths = np.array([5, 2, 4])
    expected = model.teacher_forced_logits(enc, dec_in, lengths)
    steps = model.decoder_steps()
    assert steps.model is not model and "encoder_embedding.embeddings" in steps.params.views
    state = steps.start(enc, lengths)
    for t in range(dec_in.shape[1]):
        logits, state, _ = steps.step(dec_in[:, t], state)
        assert relative_error(logits, expected[:, t]) < 1e-12, t


@pytest.mark.parametrize("name", ["plain", "attention-general", "attention-dot-no-feed", "attention-concat",
                                  "attention-general-stacked-bidirectional"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_decoders_equal_the_step_loop(monkeypatch, rng, name, dtype):
    """numba: greedy (the plain one-layer decoder's and the attention decoders'), beam search and sampling as one
    compiled call give the step loop's characters, scores and draws, bit for bit."""
    backend = get_backend("numba")
    model = embedded_model(backend, OPTIONS[name], embedding_dim=5, units=6, n_in=8, n_out=9, enc_len=6, dec_len=7,
                           dtype=dtype, seed=3)
    enc = rng.integers(0, 8, size=(5, 6))
    lengths = np.array([6, 1, 3, 6, 2])
    compiled = (model.greedy_decode_ids(enc, lengths), model.beam_decode_ids(enc, 3, lengths, n_best=True),
                model.sample_decode_ids(enc, 0.8, np.random.default_rng(4), lengths))
    names = ["greedy_decode", "attention_greedy_decode", "attention_beam_decode", "attention_sample_decode"]
    assert any(getattr(backend, key) is not None for key in names)
    for key in names:
        monkeypatch.setattr(backend, key, None)
    loop = (model.greedy_decode_ids(enc, lengths), model.beam_decode_ids(enc, 3, lengths, n_best=True),
            model.sample_decode_ids(enc, 0.8, np.random.default_rng(4), lengths))
    assert compiled == loop


# -- the numba backend against the numpy reference ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIONS) + ["stacked-dropout"])
@pytest.mark.parametrize("batch,units,dim,enc_len,dec_len", [(1, 3, 3, 1, 1), (5, 5, 3, 4, 6), (17, 4, 2, 3, 2)])
def test_numba_equals_numpy(rng, name, batch, units, dim, enc_len, dec_len):
    options = OPTIONS.get(name, {"encoder_layers": 2, "decoder_layers": 2, "dropout": 0.3, "attention": "dot"})
    reference = embedded_model("numpy", options, embedding_dim=dim, units=units, enc_len=enc_len, dec_len=dec_len,
                               seed=int(rng.integers(1000)))
    model = copy_to_backend(reference, "numba")
    enc, dec_in, dec_out = random_batch(rng, reference, batch)
    lengths = rng.integers(1, enc_len + 1, size=batch)
    seed = 11 if "dropout" in options else None
    expected, _ = reference.forward_backward(enc, dec_in, dec_out, dropout_seed=seed, source_lengths=lengths)
    got, _ = model.forward_backward(enc, dec_in, dec_out, dropout_seed=seed, source_lengths=lengths)
    assert abs(float(got) - float(expected)) <= 1e-12 * float(expected)
    for key, grad in reference.grads.items():
        assert relative_error(model.grads[key], grad) < 1e-12, key
    assert model.greedy_decode_ids(enc, lengths) == reference.greedy_decode_ids(enc, lengths)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_folded_tables_equal_the_gather_then_gemm(monkeypatch, rng, backend, name):
    """Training reads each table folded into layer 0's kernel ((table @ kernel)[ids], d table = S kernel^T): the
    same loss and gradients as gathering the rows and multiplying (float64, to rounding), on both sides and
    backends; the input-feeding decoder is never folded."""
    reference = embedded_model("numpy", OPTIONS[name], embedding_dim=3, units=4, enc_len=5, dec_len=6,
                               seed=int(rng.integers(1000)))
    model = copy_to_backend(reference, backend)
    batch = random_batch(rng, reference, 7)
    enc_ids, dec_ids = (model.time_major(ids) for ids in batch[:2])
    folded = model._folded_tables(False, enc_ids, dec_ids)
    assert folded["encoder"] is not None and (folded["decoder"] is None) == model.input_feed
    folded_loss = float(model.forward_backward(*batch, dropout_seed=3)[0])
    folded_grads = {key: np.array(grad) for key, grad in model.grads.items()}
    monkeypatch.setattr(model, "_folded_tables", lambda *_: {"encoder": None, "decoder": None})
    plain_loss = float(model.forward_backward(*batch, dropout_seed=3)[0])
    assert folded_loss == pytest.approx(plain_loss, rel=1e-13)
    for key, grad in model.grads.items():
        assert relative_error(folded_grads[key], grad) < 1e-12, key


def test_a_vocabulary_larger_than_the_batch_is_not_folded(rng):
    """Folding costs V x E x 4H, the GEMM over the positions T x B x E x 4H: with more tokens than positions (words,
    pieces) each side gathers its rows instead, whatever the other side does."""
    model = embedded_model("numpy", OPTIONS["attention-dot-no-feed"], embedding_dim=3, units=4, n_in=7, n_out=40,
                           enc_len=5, dec_len=6)
    enc_ids, dec_ids = (model.time_major(ids) for ids in random_batch(rng, model, 3)[:2])  # 15 and 18 positions
    folded = model._folded_tables(False, enc_ids, dec_ids)
    assert folded["encoder"] is not None and folded["decoder"] is None
    folded = model._folded_tables(False, enc_ids[:2], dec_ids)  # 6 positions, 7 tokens
    assert folded["encoder"] is None and folded["decoder"] is None


# -- padding --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "attention-general", "attention-dot-no-feed"])
def test_padded_positions_contribute_nothing(rng, name):
    """With --mask-padding, the decoder's inputs after each sentence's end (their targets IGNORE) can be any
    character: loss and every gradient, the tables' included, stay the same to the bit."""
    model = embedded_model("numpy", {**OPTIONS[name], "mask_padding": True}, units=4, n_in=7, n_out=9, enc_len=5,
                           dec_len=6)
    enc, dec_in, dec_out = random_batch(rng, model, 4)
    real = np.array([6, 2, 4, 1])  # real targets per row
    padded = np.arange(6)[None, :] >= real[:, None]
    dec_out[padded] = IGNORE
    loss, _ = model.forward_backward(enc, dec_in, dec_out, positions=int(real.sum()))
    grads = model.grads.flat.copy()
    assert np.abs(model.grads["decoder_embedding.embeddings"]).max() > 0
    other = dec_in.copy()
    other[padded] = (other[padded] + 1 + rng.integers(0, 7, size=int(padded.sum()))) % 9
    assert (other != dec_in)[padded].all()
    loss2, _ = model.forward_backward(enc, other, dec_out, positions=int(real.sum()))
    assert float(loss2) == float(loss) and np.array_equal(model.grads.flat, grads)


def test_mixed_lengths_translate_as_alone():
    """A --mask-padding model with a bidirectional encoder decodes sentences of mixed lengths in one batch, each
    as it is decoded alone (the folded encoder cut at each length)."""
    model = embedded_model("numba", {"mask_padding": True, "bidirectional_encoder": True, "attention": "general"},
                           embedding_dim=4, units=5, n_in=8, n_out=9, enc_len=7, dec_len=6, dtype="float32")
    texts = ["abc", "g", "fed cba", "bad", "a b"]
    assert model.translate(texts, split_sentences=False) == [model.translate([t], split_sentences=False)[0]
                                                             for t in texts]


# -- exports --------------------------------------------------------------------------------------------------------


def test_keras_export_refuses_and_torch_state_dict_has_the_tables(tmp_path):
    from minilstm.convert import main as convert
    from minilstm.errors import MinilstmError

    model = embedded_model("numpy", {}, embedding_dim=4)
    save_checkpoint(tmp_path / "ck", model)
    with pytest.raises(MinilstmError, match="not the Keras example's model.*embedding_dim=4") as error:
        convert([str(tmp_path / "ck"), str(tmp_path / "model.keras")])
    assert "\n" not in str(error.value) and not (tmp_path / "model.keras").exists()
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    assert convert([str(tmp_path / "ck"), str(tmp_path / "model.safetensors")]) == 0
    state = load_file(tmp_path / "model.safetensors")
    embedding = torch.nn.Embedding(5, 4, dtype=torch.float64)
    embedding.load_state_dict({"weight": state["encoder_embedding.weight"]})
    assert state["encoder.weight_ih_l0"].shape == (12, 4)
    assert torch.equal(embedding.weight, torch.from_numpy(model.get_weights()["encoder_embedding.embeddings"]))


# -- training: the flag, resume -------------------------------------------------------------------------------------


def test_training_with_embeddings_resumes_bit_identical(tmp_path):
    """--embedding-dim 8 with attention: 1 epoch + --resume to 2 == 2 epochs at once, to the byte; the flag may not
    change on resume."""
    from test_resume import start, weights

    flags = ["--num-samples", "300", "--batch-size", "32", "--latent-dim", "16", "--num-decodes", "2", "--seed", "3",
             "--progress", "never", "--embedding-dim", "8", "--attention", "general", "--checkpoint-every", "5"]
    whole = start(*flags, "--epochs", "2", "--out", tmp_path / "whole")
    stdout, stderr = whole.communicate(timeout=300)
    assert whole.returncode == 0, stderr
    assert "embeddings of 8" in stdout
    out = tmp_path / "pieces"
    first = start(*flags, "--epochs", "1", "--out", out)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    rest = start("--resume", out, "--epochs", "2")
    _, stderr = rest.communicate(timeout=300)
    assert rest.returncode == 0, stderr
    assert weights(out / "final") == weights(tmp_path / "whole" / "final")
    assert "encoder_embedding.embeddings" in weights(out / "final")
    bad = start("--resume", out, "--embedding-dim", "4")
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "--embedding-dim 4 contradicts" in stderr and "Traceback" not in stderr


# -- the GPU backend (on the CPU emulator without a GPU) ------------------------------------------------------------


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulator"])
def device(request):
    from test_cupy_backend import Device

    return Device(request.param)


@pytest.mark.parametrize("recurrence", ["per-step", "persistent"])
@pytest.mark.parametrize("name", ["plain", "attention-general-stacked-bidirectional"])
def test_cuda_backend_equals_numpy(device, recurrence, name):
    """The CuPy backend's gather (xp.take) and sorted scatter-add into the tables: numpy's loss, gradients (float64)
    and translations."""
    rng = np.random.default_rng(5)
    reference = embedded_model("numpy", OPTIONS[name], embedding_dim=3, units=5, n_in=7, n_out=9, enc_len=4,
                               dec_len=6)
    model = copy_to_backend(reference, device.backend(recurrence))
    for _ in range(2):
        enc, dec_in, dec_out = random_batch(rng, reference, 5)
        expected, _ = reference.forward_backward(enc, dec_in, dec_out)
        got, _ = model.forward_backward(enc, dec_in, dec_out)
        assert abs(float(got) - float(expected)) <= 1e-10 * float(expected)
        assert relative_error(device.xp.asnumpy(model.grads.flat), reference.grads.flat) < 1e-10
    texts = ["abc", "a", "fed", "bb"]
    assert model.translate(texts) == reference.translate(texts)
