"""The same weights and batch through PyTorch (CPU, float64; bench/torch_models.py's TorchSeq2Seq, the model the
benchmarks time too) give the same loss and every gradient (~1e-10).

PyTorch's nn.LSTM keeps weights as (4H, in) with gate order i, f, g, o (= Keras's i, f, c, o), so the mapping is a
transpose; its second bias (bias_hh) is set to zero and frozen. Inputs are real one-hot tensors, so this also checks
that our gather/scatter-add equals the one-hot matmul. Then training trajectories: RMSprop, Adam and SGD with
momentum, with and without gradient clipping, against torch.optim and torch.nn.utils.clip_grad_norm_.
"""

import math

import numpy as np
import pytest
from helpers import random_batch, relative_error, small_model

from minilstm.optim import RMSprop, make_optimizer

torch = pytest.importorskip("torch", reason="PyTorch is the reference; install the CPU build: pip install "
                            "torch==2.13.0")

from bench.torch_models import TorchSeq2Seq  # noqa: E402 - it needs torch: after the skip above


@pytest.mark.parametrize("batch,units,n_in,n_out,enc_len,dec_len", [
    (8, 16, 9, 11, 6, 7),
    (1, 3, 4, 5, 1, 1),
    (5, 7, 6, 8, 3, 9),
])
def test_loss_and_gradients_match_pytorch(cpu_backend, rng, batch, units, n_in, n_out, enc_len, dec_len):
    model = small_model(cpu_backend, n_in, n_out, units, enc_len, dec_len, seed=int(rng.integers(1000)))
    enc, dec_in, dec_out = random_batch(rng, model, batch)
    loss, accuracy = model.loss_and_grads(enc, dec_in, dec_out)

    reference = TorchSeq2Seq.from_minilstm(model)
    ref_loss = reference.loss(enc, dec_in, dec_out)
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    ref_grads = reference.get_grads()
    for name, grad in model.grads.items():
        assert relative_error(grad, ref_grads[name]) < 1e-10, name


def test_rmsprop_trajectory_matches_pytorch(cpu_backend, rng):
    """Ten RMSprop steps on ten batches: the same loss curve as torch.optim.RMSprop (alpha = rho = 0.9, eps
    outside the square root in both)."""
    model = small_model(cpu_backend, 7, 9, 8, 4, 6)
    reference = TorchSeq2Seq.from_minilstm(model)
    ours = RMSprop(cpu_backend, model.params.flat.size, model.dtype, learning_rate=0.01)
    theirs = torch.optim.RMSprop([p for p in reference.parameters() if p.requires_grad], lr=0.01, alpha=0.9,
                                 eps=1e-7)
    for _ in range(10):
        enc, dec_in, dec_out = random_batch(rng, model, 4)
        loss, _ = model.loss_and_grads(enc, dec_in, dec_out)
        ours.step(model.params.flat, model.grads.flat)
        theirs.zero_grad()
        ref_loss = reference.loss(enc, dec_in, dec_out)
        ref_loss.backward()
        theirs.step()
        assert abs(loss - ref_loss.item()) <= 1e-10 * abs(ref_loss.item())
    final = reference.get_grads()  # shapes only; compare weights after the last step
    with torch.no_grad():
        assert np.allclose(model.params["dense.kernel"], reference.dense.weight.numpy().T, rtol=1e-9, atol=1e-12)
        assert np.allclose(model.params["encoder.recurrent_kernel"], reference.encoder.weight_hh_l0.numpy().T,
                           rtol=1e-9, atol=1e-12)
    assert set(final) == set(model.params.views)


@pytest.mark.parametrize("name", ["adam", "sgd"])
@pytest.mark.parametrize("clip", [False, True])
def test_adam_sgd_and_clipping_trajectories_match_pytorch(cpu_backend, rng, name, clip):
    """Five steps on five batches in float64: Adam (epsilon 1e-7, Keras's default, given to torch too; betas 0.9,
    0.999 in both) and SGD with momentum 0.9 follow torch.optim.Adam / torch.optim.SGD: the same losses and, after
    the last step, every weight (1e-10). With clipping (half the first batch's gradient norm, so it clips) torch's
    clip_grad_norm_ clips first. It divides by norm + 1e-6 where Keras and we divide by the norm, so its factor is
    smaller, relatively, by up to 1e-6 / (norm + 1e-6): each step checks that bound and torch's norm against ours
    (1e-12), then turns torch's factor into Keras's (g *= ours / torch's), so the trajectories still agree to 1e-10."""
    model = small_model(cpu_backend, 7, 9, 8, 4, 6)
    reference = TorchSeq2Seq.from_minilstm(model)
    params = [p for p in reference.parameters() if p.requires_grad]
    batches = [random_batch(rng, model, 4) for _ in range(5)]
    clip_norm = None
    if clip:
        model.loss_and_grads(*batches[0])
        clip_norm = 0.5 * math.sqrt(cpu_backend.sum_of_squares(model.grads.flat))
    if name == "adam":
        ours = make_optimizer("adam", cpu_backend, model.params.flat.size, model.dtype, learning_rate=0.01,
                              epsilon=1e-7, clip_norm=clip_norm)
        theirs = torch.optim.Adam(params, lr=0.01, eps=1e-7)
    else:
        ours = make_optimizer("sgd", cpu_backend, model.params.flat.size, model.dtype, learning_rate=0.1,
                              momentum=0.9, clip_norm=clip_norm)
        theirs = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    clipped_steps = 0
    for enc, dec_in, dec_out in batches:
        loss, _ = model.loss_and_grads(enc, dec_in, dec_out)
        norm = math.sqrt(cpu_backend.sum_of_squares(model.grads.flat))
        ours.step(model.params.flat, model.grads.flat)
        theirs.zero_grad()
        ref_loss = reference.loss(enc, dec_in, dec_out)
        ref_loss.backward()
        if clip:
            torch_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm).item()  # the norm before clipping
            assert abs(torch_norm - norm) <= 1e-12 * norm
            torch_factor = min(1.0, clip_norm / (torch_norm + 1e-6))
            keras_factor = clip_norm / max(torch_norm, clip_norm)
            assert 0.0 <= 1.0 - torch_factor / keras_factor <= 1e-6 / (torch_norm + 1e-6) + 1e-15
            clipped_steps += norm > clip_norm
            with torch.no_grad():
                for p in params:
                    p.grad *= keras_factor / torch_factor
        theirs.step()
        assert abs(loss - ref_loss.item()) <= 1e-10 * abs(ref_loss.item())
    assert clipped_steps >= (1 if clip else 0)
    final = reference.get_weights()
    assert set(final) == set(model.params.views)
    for key, value in final.items():
        assert relative_error(model.params[key], value) < 1e-10, key
