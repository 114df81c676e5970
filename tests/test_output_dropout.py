"""Dropout on the embedded inputs (``embedding_dropout``) and on the decoder's (attentional) outputs before the
output layer (``output_dropout``): float64 finite differences of the whole seq2seq loss at fixed masks, with and
without attention and input feeding, at odd shapes (batch 1, hidden 3, length 1); numba against numpy; nothing
dropped outside training (teacher-forced logits and decoding read the same weights alike); the config keys only
where set."""

import numpy as np
import pytest
from helpers import copy_to_backend, numerical_gradient, random_batch, relative_error, small_model

from minilstm.architecture import Architecture

OPTIONS = {
    "plain": {},
    "general-no-feed": {"attention": "general", "input_feed": False},
    "dot-input-feed": {"attention": "dot"},
    "bidirectional-stacked": {"bidirectional_encoder": True, "encoder_layers": 2, "decoder_layers": 2,
                              "dropout": 0.3},
}
DROPOUTS = {"embedding_dim": 3, "embedding_dropout": 0.3, "output_dropout": 0.4}
SEED = 1234  # the training step's dropout seed; the same seed gives the same masks


def loss_at_fixed_masks(model, batch, positions):
    def loss():
        return float(model.forward_backward(*batch, dropout_seed=SEED)[0]) / positions
    return loss


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("rows,units,enc_len,dec_len", [(3, 4, 4, 5), (1, 3, 1, 1)])
def test_finite_differences_with_dropouts(rng, name, rows, units, enc_len, dec_len):
    model = small_model("numpy", units=units, enc_len=enc_len, dec_len=dec_len, seed=int(rng.integers(1000)),
                        **OPTIONS[name], **DROPOUTS)
    batch = random_batch(rng, model, rows)
    model.forward_backward(*batch, dropout_seed=SEED)
    analytic = {key: g.copy() for key, g in model.grads.items()}
    loss = loss_at_fixed_masks(model, batch, rows * dec_len)
    for key, array in model.params.items():
        assert relative_error(analytic[key], numerical_gradient(loss, array)) < 1e-6, key


def test_dropout_changes_training_only(rng):
    model = small_model("numpy", units=4, enc_len=4, dec_len=5, seed=3, attention="general", **DROPOUTS)
    plain = small_model("numpy", units=4, enc_len=4, dec_len=5, seed=3, attention="general", embedding_dim=3)
    batch = random_batch(rng, model, 6)
    dropped = float(model.forward_backward(*batch, dropout_seed=SEED)[0])
    assert dropped != float(plain.forward_backward(*batch, dropout_seed=SEED)[0])
    assert dropped == float(model.forward_backward(*batch, dropout_seed=SEED)[0])  # the masks repeat
    assert dropped != float(model.forward_backward(*batch, dropout_seed=SEED + 1)[0])
    # outside training (no dropout seed) the two models are the same function
    assert float(model.forward_backward(*batch)[0]) == float(plain.forward_backward(*batch)[0])
    np.testing.assert_array_equal(model.teacher_forced_logits(*batch[:2]), plain.teacher_forced_logits(*batch[:2]))


@pytest.mark.parametrize("name", list(OPTIONS))
def test_numba_against_numpy(rng, name):
    reference = small_model("numpy", n_in=7, n_out=9, units=5, enc_len=6, dec_len=7, seed=11, **OPTIONS[name],
                            **DROPOUTS)
    compiled = copy_to_backend(reference, "numba")
    batch = random_batch(rng, reference, 5)
    loss = float(reference.forward_backward(*batch, dropout_seed=SEED)[0])
    assert float(compiled.forward_backward(*batch, dropout_seed=SEED)[0]) == pytest.approx(loss, rel=1e-12)
    for key, grad in reference.grads.items():
        np.testing.assert_allclose(compiled.grads[key], grad, rtol=1e-9, atol=1e-12, err_msg=key)


def test_config_names_the_dropouts_only_where_set():
    assert "output_dropout" not in Architecture().to_config()
    arch = Architecture(embedding_dim=8, embedding_dropout=0.1, output_dropout=0.2)
    config = arch.to_config()
    assert (config["embedding_dropout"], config["output_dropout"]) == (0.1, 0.2)
    assert Architecture.from_config(config) == arch
    with pytest.raises(ValueError, match="embedding_dropout needs embeddings"):
        Architecture(embedding_dropout=0.1)
    with pytest.raises(ValueError, match="output_dropout must be in"):
        Architecture(output_dropout=1.0)


# -- the GPU backend (on the CPU emulator without a GPU) ------------------------------------------------------------


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulator"])
def device(request):
    from test_cupy_backend import Device

    return Device(request.param)


@pytest.mark.parametrize("name", ["general-no-feed", "bidirectional-stacked"])
def test_cuda_backend_equals_numpy(device, name):
    """The CuPy backend's masks (its dropout_mask) and the multiplications: numpy's loss and gradients (float64)."""
    rng = np.random.default_rng(6)
    reference = small_model("numpy", n_in=7, n_out=9, units=5, enc_len=4, dec_len=6, seed=2, **OPTIONS[name],
                            **DROPOUTS)
    model = copy_to_backend(reference, device.backend("per-step"))
    batch = random_batch(rng, reference, 5)
    expected = float(reference.forward_backward(*batch, dropout_seed=SEED)[0])
    got = float(model.forward_backward(*batch, dropout_seed=SEED)[0])
    assert abs(got - expected) <= 1e-10 * expected
    assert relative_error(device.xp.asnumpy(model.grads.flat), reference.grads.flat) < 1e-10
