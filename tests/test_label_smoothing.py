"""Label smoothing in softmax cross-entropy: the NumPy reference against torch's CrossEntropyLoss(label_smoothing)
(loss and d_logits, padding rows ignored) and against float64 finite differences, through Dense and through the
whole seq2seq model; every backend's kernel (Numba, the CUDA kernel on the GPU or the emulator) against the float64
reference at odd shapes; eps = 0 giving the plain cross-entropy's bits."""

import numpy as np
import pytest
import torch
from helpers import copy_to_backend, numerical_gradient, random_batch, relative_error, small_model
from test_cupy_backend import TOL, close, device  # noqa: F401 - the device fixture

from minilstm import layers
from minilstm.backends import get_backend

SHAPES = [(1, 3), (5, 3), (8, 7), (1, 90), (37, 90), (300, 129),  # (rows, V): batch 1, V = 3, wider than a block
          (3, 4003), (40, 8003)]  # the output layers of SentencePiece pieces


def random_case(rng, rows, vocab, ignore=True):
    logits = rng.standard_normal((rows, vocab)) * 3
    targets = rng.integers(0, vocab, size=rows)
    if ignore and rows > 2:
        targets[1::3] = layers.IGNORE
    return logits, targets


@pytest.mark.parametrize("rows,vocab", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_reference_agrees_with_torch(rng, rows, vocab, eps):
    logits, targets = random_case(rng, rows, vocab)
    counted = int((targets >= 0).sum())
    loss, hits, d_logits = layers.softmax_cross_entropy(np, logits, targets, 1 / counted, eps)
    z = torch.tensor(logits, requires_grad=True)
    torch_loss = torch.nn.CrossEntropyLoss(label_smoothing=eps, ignore_index=layers.IGNORE)(z, torch.tensor(targets))
    torch_loss.backward()
    assert float(loss) / counted == pytest.approx(torch_loss.item(), rel=1e-13)
    np.testing.assert_allclose(d_logits, z.grad.numpy(), rtol=1e-12, atol=1e-15)
    counted_rows = targets >= 0
    assert int(hits) == int((logits.argmax(axis=1) == targets)[counted_rows].sum())  # accuracy: argmax == y


@pytest.mark.parametrize("rows,features,vocab", [(8, 5, 7), (1, 3, 3), (3, 1, 4)])
def test_finite_differences_through_dense(cpu_backend, rng, rows, features, vocab):
    x = rng.standard_normal((rows, features))
    kernel = rng.standard_normal((features, vocab))
    bias = rng.standard_normal(vocab)
    targets = rng.integers(0, vocab, size=rows)

    def loss():
        return float(cpu_backend.softmax_cross_entropy(x @ kernel + bias, targets, 1.0 / rows, 0.2)[0]) / rows

    _, _, d_logits = cpu_backend.softmax_cross_entropy(x @ kernel + bias, targets, 1.0 / rows, 0.2)
    analytic = {"x": d_logits @ kernel.T, "kernel": x.T @ d_logits, "bias": d_logits.sum(axis=0)}
    for name, array in (("x", x), ("kernel", kernel), ("bias", bias)):
        assert relative_error(analytic[name], numerical_gradient(loss, array)) < 1e-6, name


@pytest.mark.parametrize("rows,vocab", [(3, 4003), (2, 8003)])
def test_finite_differences_at_a_large_vocabulary(cpu_backend, rng, rows, vocab):
    """The fused loss's gradient at an output layer of thousands of pieces against float64 centred differences, on
    every row's target logit, its largest logit and 100 more drawn at random (each costs two losses)."""
    logits, targets = random_case(rng, rows, vocab, ignore=False)

    def loss():
        return float(cpu_backend.softmax_cross_entropy(logits, targets, 1.0 / rows, 0.1)[0]) / rows

    d_logits = cpu_backend.softmax_cross_entropy(logits, targets, 1.0 / rows, 0.1)[2]
    picks = {(r, int(targets[r])) for r in range(rows)} | {(r, int(logits[r].argmax())) for r in range(rows)}
    picks |= {(int(rng.integers(rows)), int(rng.integers(vocab))) for _ in range(100)}
    numeric, analytic = [], []
    for r, c in sorted(picks):
        saved = logits[r, c]
        logits[r, c] = saved + 1e-6
        plus = loss()
        logits[r, c] = saved - 1e-6
        minus = loss()
        logits[r, c] = saved
        numeric.append((plus - minus) / 2e-6)
        analytic.append(float(d_logits[r, c]))
    assert relative_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("batch,units,enc_len,dec_len", [(3, 4, 4, 5), (1, 3, 1, 1)])
def test_finite_differences_of_the_seq2seq_loss(cpu_backend, rng, batch, units, enc_len, dec_len):
    model = small_model(cpu_backend, units=units, enc_len=enc_len, dec_len=dec_len, seed=int(rng.integers(1000)))
    enc, dec_in, dec_out = random_batch(rng, model, batch)
    positions = batch * dec_len

    def loss():
        return float(model.forward_backward(enc, dec_in, dec_out, compute_grads=False, label_smoothing=0.1)[0]) \
            / positions

    model.forward_backward(enc, dec_in, dec_out, label_smoothing=0.1)
    analytic = {name: g.copy() for name, g in model.grads.items()}
    for name, array in model.params.items():
        assert relative_error(analytic[name], numerical_gradient(loss, array)) < 1e-6, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,vocab", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_numba_kernel_against_the_float64_reference(rng, dtype, rows, vocab, eps):
    backend = get_backend("numba")
    logits, targets = random_case(rng, rows, vocab)
    loss, hits, d = backend.softmax_cross_entropy(logits.astype(dtype), targets, 0.25, eps)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits.astype(dtype).astype(np.float64), targets,
                                                             0.25, eps)
    tol = {np.float32: 2e-6, np.float64: 1e-13}[dtype]
    assert abs(float(loss) - ref_loss) <= tol * abs(ref_loss)
    assert int(hits) == int(ref_hits)
    assert np.isfinite(d).all() and d.dtype == dtype  # written whole (the backend allocates it empty)
    assert relative_error(d, ref_d) < tol
    assert not d[targets < 0].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,vocab", [(1, 3), (5, 3), (12, 70), (37, 129)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cuda_kernel_against_the_float64_reference(device, rng, dtype, rows, vocab, eps):  # noqa: F811
    xp, backend = device.xp, device.backend()
    logits, targets = random_case(rng, rows, vocab)
    logits[0, -1] = logits[0, 0] = logits[0].max() + 1  # a tie for the argmax: the lower index wins
    loss, hits, d = backend.softmax_cross_entropy(xp.asarray(logits, dtype), xp.asarray(targets), 0.5, eps)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, targets, 0.5, eps)
    assert abs(float(loss) - ref_loss) <= 10 * TOL[dtype] * abs(ref_loss) + 1e-12
    assert int(hits) == int(ref_hits)
    assert not xp.asnumpy(d)[targets < 0].any()
    close(device, d, ref_d, dtype)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_whole_model_on_every_backend_against_numpy(rng, eps):
    """Loss and every gradient of a float64 model with smoothing: numba (row shards included) equals numpy."""
    ref = small_model("numpy", n_in=9, n_out=11, units=5, enc_len=4, dec_len=6, seed=3)
    enc, dec_in, dec_out = random_batch(rng, ref, 19)
    expected = ref.forward_backward(enc, dec_in, dec_out, label_smoothing=eps)
    model = copy_to_backend(ref, "numba")
    got = model.forward_backward(enc, dec_in, dec_out, label_smoothing=eps)
    assert float(got[0]) == pytest.approx(float(expected[0]), rel=1e-12) and int(got[1]) == int(expected[1])
    for name, grad in ref.grads.items():
        assert relative_error(model.grads[name], grad) < 1e-12, name


def test_whole_model_on_the_gpu_against_numpy(device, rng):  # noqa: F811
    """The same with the CUDA kernels (on a GPU, or on the emulator)."""
    ref = small_model("numpy", n_in=9, n_out=11, units=5, enc_len=4, dec_len=6, seed=4)
    enc, dec_in, dec_out = random_batch(rng, ref, 3)
    expected = ref.forward_backward(enc, dec_in, dec_out, label_smoothing=0.1)
    model = copy_to_backend(ref, device.backend())
    got = model.forward_backward(enc, dec_in, dec_out, label_smoothing=0.1)
    assert float(got[0]) == pytest.approx(float(expected[0]), rel=1e-12) and int(got[1]) == int(expected[1])
    for name, grad in ref.grads.items():
        assert relative_error(device.xp.asnumpy(model.grads[name]), grad) < 1e-12, name


def test_smoothing_zero_is_the_plain_cross_entropy_to_the_bit(cpu_backend, rng):
    """eps = 0 runs the code of the plain cross-entropy: the same bits as a call without the argument."""
    for dtype in (np.float32, np.float64):
        logits, targets = random_case(rng, 50, 13)
        plain = cpu_backend.softmax_cross_entropy(logits.astype(dtype), targets, 1 / 50)
        zero = cpu_backend.softmax_cross_entropy(logits.astype(dtype), targets, 1 / 50, 0.0)
        assert float(plain[0]) == float(zero[0]) and int(plain[1]) == int(zero[1])
        assert plain[2].tobytes() == zero[2].tobytes()
    smoothed = cpu_backend.softmax_cross_entropy(logits, targets, 1 / 50, 0.1)
    assert float(smoothed[0]) != float(plain[0])
