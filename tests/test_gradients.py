"""Float64 centred finite-difference checks of every gradient: the LSTM layer alone, Dense + softmax
cross-entropy, and the whole seq2seq loss, at ordinary and odd shapes (batch 1, hidden 3, length 1)."""

import numpy as np
import pytest
from helpers import numerical_gradient, random_batch, relative_error, small_model

from minilstm.lstm import lstm_backward, lstm_forward

TOLERANCE = 1e-6

LSTM_SHAPES = [  # (steps, batch, units, vocab)
    (5, 4, 7, 6),
    (1, 1, 3, 2),  # length 1, batch 1
    (3, 1, 3, 4),  # batch 1, hidden 3
    (6, 2, 1, 3),  # one unit
]


@pytest.mark.parametrize("steps,batch,units,vocab", LSTM_SHAPES)
def test_lstm_layer_gradients(cpu_backend, rng, steps, batch, units, vocab):
    """loss = sum(outputs * R) + sum(h_T * Rh) + sum(c_T * Rc): every output and both final states matter."""
    xp = cpu_backend.xp
    tensors = {
        "kernel": rng.standard_normal((vocab, 4 * units)),
        "recurrent_kernel": rng.standard_normal((units, 4 * units)) * 0.7,
        "bias": rng.standard_normal(4 * units),
        "h0": rng.standard_normal((batch, units)),
        "c0": rng.standard_normal((batch, units)),
    }
    ids = rng.integers(0, vocab, size=(steps, batch))
    proj_out = rng.standard_normal((steps, batch, units))
    proj_h = rng.standard_normal((batch, units))
    proj_c = rng.standard_normal((batch, units))

    def forward():
        return lstm_forward(cpu_backend, tensors["kernel"], tensors["recurrent_kernel"], tensors["bias"], ids,
                            tensors["h0"], tensors["c0"])

    def loss():
        cache = forward()
        return float((cache.hs[1:] * proj_out).sum() + (cache.hs[-1] * proj_h).sum() + (cache.cs[-1] * proj_c).sum())

    cache = forward()
    grads = {name: xp.zeros_like(tensors[name]) for name in ("kernel", "recurrent_kernel", "bias")}
    d_h0, d_c0 = lstm_backward(cpu_backend, cache, tensors["recurrent_kernel"], proj_out, proj_h, proj_c, grads)
    grads["h0"], grads["c0"] = d_h0, d_c0
    for name, array in tensors.items():
        expected = numerical_gradient(loss, array)
        assert np.abs(expected).max() > 0, name
        assert relative_error(grads[name], expected) < TOLERANCE, name


@pytest.mark.parametrize("rows,features,vocab", [(8, 5, 7), (1, 3, 2), (3, 1, 4)])
def test_dense_softmax_cross_entropy_gradients(cpu_backend, rng, rows, features, vocab):
    """Mean cross-entropy of softmax(x @ W + b), checked through the backend's fused softmax-CE."""
    x = rng.standard_normal((rows, features))
    kernel = rng.standard_normal((features, vocab))
    bias = rng.standard_normal(vocab)
    targets = rng.integers(0, vocab, size=rows)

    def loss():
        return float(cpu_backend.softmax_cross_entropy(x @ kernel + bias, targets, 1.0 / rows)[0]) / rows

    _, _, d_logits = cpu_backend.softmax_cross_entropy(x @ kernel + bias, targets, 1.0 / rows)
    analytic = {"x": d_logits @ kernel.T, "kernel": x.T @ d_logits, "bias": d_logits.sum(axis=0)}
    for name, array in (("x", x), ("kernel", kernel), ("bias", bias)):
        assert relative_error(analytic[name], numerical_gradient(loss, array)) < TOLERANCE, name


SEQ2SEQ_SHAPES = [  # (batch, units, encoder steps, decoder steps)
    (3, 4, 4, 5),
    (1, 3, 1, 1),
    (1, 3, 3, 2),
    (2, 5, 1, 4),
]


@pytest.mark.parametrize("batch,units,enc_len,dec_len", SEQ2SEQ_SHAPES)
def test_seq2seq_gradients(cpu_backend, rng, batch, units, enc_len, dec_len):
    model = small_model(cpu_backend, units=units, enc_len=enc_len, dec_len=dec_len, seed=int(rng.integers(1000)))
    enc, dec_in, dec_out = random_batch(rng, model, batch)
    h0 = rng.standard_normal((batch, units))
    c0 = rng.standard_normal((batch, units))
    positions = batch * dec_len

    def loss():
        return float(model.forward_backward(enc, dec_in, dec_out, compute_grads=False,
                                            initial_state=(h0, c0))[0]) / positions

    model.forward_backward(enc, dec_in, dec_out, initial_state=(h0, c0))
    analytic = {name: g.copy() for name, g in model.grads.items()}
    analytic["initial_h"], analytic["initial_c"] = model.d_initial_state
    tensors = dict(model.params.items(), initial_h=h0, initial_c=c0)
    for name, array in tensors.items():
        expected = numerical_gradient(loss, array)
        assert relative_error(analytic[name], expected) < TOLERANCE, name


def test_gradient_check_can_fail(cpu_backend, rng):
    """The checker itself must notice a wrong gradient (a sign flip in one gate block)."""
    model = small_model(cpu_backend)
    enc, dec_in, dec_out = random_batch(rng, model, 2)
    positions = 2 * model.max_decoder_len

    def loss():
        return float(model.forward_backward(enc, dec_in, dec_out, compute_grads=False)[0]) / positions

    model.forward_backward(enc, dec_in, dec_out)
    wrong = model.grads["decoder.recurrent_kernel"].copy()
    wrong[:, :3] *= -1
    expected = numerical_gradient(loss, model.params["decoder.recurrent_kernel"])
    assert relative_error(wrong, expected) > 1e-3
