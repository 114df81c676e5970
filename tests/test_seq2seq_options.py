"""The seq2seq model beyond the example: stacked encoder/decoder, bidirectional encoder, dropout between layers.

Float64 finite differences of the whole loss; numba's thread shards (with dropout: masks follow the rows) equal
numpy; every decoder (greedy, beam, sampling) and checkpoints work for each option; training with the flags resumes
bit-identically; the default model's parameters are exactly the example's."""

import numpy as np
import pytest
from helpers import copy_to_backend, numerical_gradient, random_batch, relative_error
from test_cupy_backend import Device
from test_resume import start, weights

from minilstm.backends import get_backend
from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.data import Vocab
from minilstm.seq2seq import Seq2Seq

# (encoder layers, decoder layers, bidirectional encoder, dropout)
OPTIONS = [(2, 2, False, 0.0), (1, 1, True, 0.0), (2, 2, True, 0.3), (2, 1, True, 0.0), (1, 2, False, 0.4),
           (3, 2, False, 0.0)]


def options_model(backend, options, n_in=5, n_out=6, units=3, enc_len=3, dec_len=4, dtype="float64", seed=0):
    encoder_layers, decoder_layers, bidirectional, dropout = options
    in_chars, out_chars = " abcdefghijklmnopqrstuvwxyz"[:n_in], "\t\n ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_out]
    model = Seq2Seq(backend, Vocab(list(in_chars)), Vocab(list(out_chars)), enc_len, dec_len,
                    latent_dim=units, dtype=dtype,
                    encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                    bidirectional_encoder=bidirectional, dropout=dropout).initialize(seed)
    rng = np.random.default_rng(seed + 1)
    model.set_weights({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in model.get_weights().items()})
    return model


def test_default_model_is_the_example():
    model = options_model("numpy", (1, 1, False, 0.0))
    assert model.arch.is_example()
    assert list(model.params.shapes) == ["encoder.kernel", "encoder.recurrent_kernel", "encoder.bias",
                                         "decoder.kernel", "decoder.recurrent_kernel", "decoder.bias",
                                         "dense.kernel", "dense.bias"]


def test_parameter_names_and_decoder_width():
    model = options_model("numpy", (2, 2, True, 0.0), units=4)
    assert model.decoder_units == 8
    assert model.params.shapes["encoder_l1_reverse.kernel"] == (8, 16)  # reads both directions of layer 0
    assert model.params.shapes["decoder_l1.recurrent_kernel"] == (8, 32)
    assert model.params.shapes["dense.kernel"] == (8, 6)


@pytest.mark.parametrize("batch", [2, 1])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_seq2seq_gradients(rng, options, batch):
    """Mean cross-entropy with a fixed dropout seed: every weight and the encoder's initial states."""
    model = options_model(get_backend("numpy"), options, seed=int(rng.integers(1000)))
    enc, dec_in, dec_out = random_batch(rng, model, batch)
    layers = model.encoder.num_layers * model.encoder.directions
    state = tuple(rng.standard_normal((layers, batch, model.latent_dim)) for _ in range(2))

    def loss():
        loss_sum, _ = model.forward_backward(enc, dec_in, dec_out, initial_state=state, dropout_seed=11)
        return float(loss_sum) / dec_out.size

    loss()
    analytic = {name: g.copy() for name, g in model.grads.items()}
    analytic["initial_h"], analytic["initial_c"] = model.d_initial_state
    tensors = {**dict(model.params.items()), "initial_h": state[0], "initial_c": state[1]}
    for name, array in tensors.items():
        # eps 1e-5, near the optimal step cbrt(2^-52) for centred differences: the deep encoder layers' gradients
        # are ~1e-3 of the loss, and at eps 1e-6 the loss's rounding alone was worth 9e-7 of them.
        expected = numerical_gradient(loss, array, eps=1e-5)
        assert np.abs(expected).max() > 0, name
        assert relative_error(analytic[name], expected) < 1e-6, name


@pytest.mark.parametrize("options", [(2, 2, True, 0.3), (2, 1, False, 0.5)], ids=str)
def test_numba_shards_equal_numpy_with_dropout(options):
    """19 rows on the numba backend run as thread shards; each shard draws its rows' masks, the same as numpy's
    one pass over the batch (float64: to rounding)."""
    rng = np.random.default_rng(5)
    numba = get_backend("numba")
    model = options_model(numba, options, n_in=7, n_out=9, units=16, enc_len=5, dec_len=6)
    reference = copy_to_backend(model, "numpy")
    enc, dec_in, dec_out = random_batch(rng, model, 19)
    loss, _ = model.forward_backward(enc, dec_in, dec_out, dropout_seed=3)
    expected, _ = reference.forward_backward(enc, dec_in, dec_out, dropout_seed=3)
    assert numba.workers < 2 or len(model._shard_grads) >= 2, "the batch did not run as shards"
    assert abs(float(loss) - float(expected)) <= 1e-12 * abs(float(expected))
    assert relative_error(model.grads.flat, reference.grads.flat) < 1e-12
    without, _ = reference.forward_backward(enc, dec_in, dec_out)
    assert float(without) != float(expected), "dropout changed nothing: the test would prove nothing"


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_decoders_for_every_option(cpu_backend, tmp_path, options):
    model = options_model(cpu_backend, options, n_in=8, n_out=9, units=6, enc_len=6, dec_len=7, seed=2)
    texts = ["abc", "bad", "cab ", "g", "fed cba", "abcdefg"]
    greedy = model.translate(texts)
    assert model.translate(texts, beam_width=1) == greedy
    assert [model.translate([t])[0] for t in texts] == greedy  # batched == one by one
    assert len(model.translate(texts, beam_width=3)) == len(texts)
    assert len(model.translate(texts, temperature=0.7, seed=1)) == len(texts)
    # the one-step decoder fed the true previous characters reproduces teacher forcing (no dropout at inference)
    rng = np.random.default_rng(0)
    enc, dec_in, _ = random_batch(rng, model, 3)
    forced = model.teacher_forced_logits(enc, dec_in)
    h, c = model.encode(enc)
    for t in range(model.max_decoder_len):
        logits, (h, c), _ = model.step(cpu_backend.asarray(dec_in[:, t]), (h, c))
        np.testing.assert_allclose(cpu_backend.to_numpy(logits), forced[:, t], rtol=1e-12, atol=1e-12)
    save_checkpoint(tmp_path / "ck", model)
    loaded = load_checkpoint(tmp_path / "ck", backend=cpu_backend.name).model
    assert loaded.config() == model.config()
    assert loaded.translate(texts) == greedy


@pytest.mark.slow
def test_stacked_training_resumes_bit_identical(tmp_path):
    """--encoder-layers 2 --decoder-layers 2 --bidirectional-encoder --dropout 0.3: 1 epoch + --resume to 2 (with
    a checkpoint inside the second epoch) == 2 epochs at once, so the dropout masks are redrawn identically."""
    flags = ["--num-samples", "400", "--batch-size", "32", "--latent-dim", "16", "--num-decodes", "2", "--seed", "5",
             "--progress", "never", "--encoder-layers", "2", "--decoder-layers", "2", "--bidirectional-encoder",
             "--dropout", "0.3"]
    whole = start(*flags, "--epochs", "2", "--out", tmp_path / "whole")
    _, stderr = whole.communicate(timeout=300)
    assert whole.returncode == 0, stderr
    out = tmp_path / "pieces"
    first = start(*flags, "--epochs", "1", "--out", out)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    rest = start("--resume", out, "--epochs", "2")
    stdout, stderr = rest.communicate(timeout=300)
    assert rest.returncode == 0, stderr
    assert "2-layer bidirectional encoder" in stdout
    assert weights(out / "final") == weights(tmp_path / "whole" / "final")
    bad = start("--resume", out, "--encoder-layers", "3")
    _, stderr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "--encoder-layers 3 contradicts" in stderr and "Traceback" not in stderr


def test_dropout_without_stacked_layers_is_a_user_error(tmp_path):
    proc = start("--dropout", "0.2", "--out", tmp_path / "run")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0 and "--encoder-layers" in stderr
    proc = start("--dropout", "1.5", "--encoder-layers", "2", "--out", tmp_path / "run")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "[0, 1)" in stderr


def test_convert_keras_refuses_other_models_and_torch_names_their_layers(tmp_path):
    """Keras export writes the example's model only (one line, nothing left behind); the PyTorch state dict of a
    2+1-layer model with a bidirectional encoder loads, strictly, into nn.LSTM(num_layers=2, bidirectional=True)."""
    from minilstm.convert import main as convert
    from minilstm.errors import MinilstmError

    model = options_model("numpy", (2, 1, True, 0.0))
    save_checkpoint(tmp_path / "ck", model)
    with pytest.raises(MinilstmError, match="not the Keras example's model.*encoder_layers=2"):
        convert([str(tmp_path / "ck"), str(tmp_path / "model.keras")])
    assert not (tmp_path / "model.keras").exists()
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    assert convert([str(tmp_path / "ck"), str(tmp_path / "model.safetensors")]) == 0
    state = load_file(tmp_path / "model.safetensors")
    encoder = torch.nn.LSTM(len(model.input_vocab), model.latent_dim, num_layers=2, bidirectional=True,
                            dtype=torch.float64)
    encoder.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("encoder.")})
    assert torch.equal(encoder.weight_ih_l1_reverse,
                       torch.from_numpy(model.get_weights()["encoder_l1_reverse.kernel"].T.copy()))


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulator"])
def device(request):
    return Device(request.param)


@pytest.mark.parametrize("recurrence", ["per-step", "persistent"])
def test_cuda_kernels_equal_numpy_for_stacked_bidirectional(device, recurrence):
    """The GPU backend (on the CPU emulator without a GPU) on a 2+2-layer model with a bidirectional encoder and
    dropout: numpy's loss and gradients (float64) and its translations."""
    rng = np.random.default_rng(9)
    reference = options_model("numpy", (2, 2, True, 0.3), n_in=7, n_out=9, units=5, enc_len=4, dec_len=6)
    model = copy_to_backend(reference, device.backend(recurrence))
    enc, dec_in, dec_out = random_batch(rng, reference, 5)
    expected, _ = reference.forward_backward(enc, dec_in, dec_out, dropout_seed=2)
    got, _ = model.forward_backward(enc, dec_in, dec_out, dropout_seed=2)
    assert abs(float(got) - float(expected)) <= 1e-10 * float(expected)
    assert relative_error(device.xp.asnumpy(model.grads.flat), reference.grads.flat) < 1e-10
    texts = ["abc", "a", "fed", "bb"]
    assert model.translate(texts) == reference.translate(texts)
