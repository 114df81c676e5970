"""The public layer API (minilstm.nn): stacked, bidirectional, token-id or vector inputs, dropout between layers.

Float64 finite differences of every gradient at odd shapes; PyTorch's nn.LSTM(num_layers=2, bidirectional=True)
with the same weights gives the same outputs, final states and gradients; numba and the CUDA kernels (on the CPU
emulator) give what numpy gives; the dropout masks are a function of (seed, position) only."""

import numpy as np
import pytest
from helpers import numerical_gradient, relative_error
from test_cupy_backend import Device

from minilstm import LSTM, Dense, Parameters
from minilstm.backends import get_backend
from minilstm.nn import dropout_key, dropout_mask

TOLERANCE = 1e-6  # finite differences, float64

# (steps, batch, units, input width (vocabulary or features), layers, bidirectional, dropout)
STACKS = [
    (4, 3, 5, 6, 2, True, 0.0),
    (1, 1, 3, 2, 2, True, 0.0),  # length 1, batch 1, hidden 3
    (3, 2, 3, 4, 3, False, 0.0),
    (3, 2, 4, 5, 2, True, 0.4),  # dropout between the layers, fixed seed
    (2, 1, 3, 3, 1, True, 0.0),
]


def make_stack(backend, kind, steps, batch, units, width, layers, bidirectional, dropout, rng, dtype="float64"):
    lstm = LSTM(units, num_layers=layers, bidirectional=bidirectional, dropout=dropout,
                **({"vocab_size": width} if kind == "ids" else {"input_size": width}))
    params = Parameters(backend, [lstm], dtype)
    # Random weights of every kind (Keras's init has zero biases and would leave some gradients trivially small).
    params.set_weights({name: 0.5 * rng.standard_normal(shape) for name, shape in params.shapes.items()})
    inputs = (rng.integers(0, width, size=(steps, batch)) if kind == "ids"
              else rng.standard_normal((steps, batch, width)))
    state = tuple(rng.standard_normal((layers * lstm.directions, batch, units)) for _ in range(2))
    return lstm, params, inputs, state


@pytest.mark.parametrize("kind", ["ids", "vectors"])
@pytest.mark.parametrize("steps,batch,units,width,layers,bidirectional,dropout", STACKS)
def test_stack_gradients(rng, kind, steps, batch, units, width, layers, bidirectional, dropout):
    """loss = sum(outputs * R) + sum(h_n * Rh) + sum(c_n * Rc), through every layer, direction and mask."""
    backend = get_backend("numpy")
    lstm, params, inputs, (h0, c0) = make_stack(backend, kind, steps, batch, units, width, layers, bidirectional,
                                                 dropout, rng)
    r_out = rng.standard_normal((steps, batch, lstm.output_size))
    r_h, r_c = rng.standard_normal(h0.shape), rng.standard_normal(c0.shape)

    def forward():
        return lstm.forward(params, inputs, (h0, c0), training=True, seed=7)

    def loss():
        outputs, (h_n, c_n), _ = forward()
        return float((outputs * r_out).sum() + (h_n * r_h).sum() + (c_n * r_c).sum())

    _, _, cache = forward()
    d_inputs, (d_h0, d_c0) = lstm.backward(params, cache, r_out, (r_h, r_c))
    analytic = {**{name: params.grads[name] for name in params.shapes}, "h0": d_h0, "c0": d_c0}
    tensors = {**{name: params[name] for name in params.shapes}, "h0": h0, "c0": c0}
    if kind == "vectors":
        analytic["inputs"], tensors["inputs"] = d_inputs, inputs
    else:
        assert d_inputs is None
    for name, array in tensors.items():
        expected = numerical_gradient(loss, array, eps=1e-5)  # near the optimal step for centred differences
        assert np.abs(expected).max() > 0, name
        assert relative_error(analytic[name], expected) < TOLERANCE, name


def test_dense_layer_gradients(rng):
    backend = get_backend("numpy")
    dense = Dense(5, 3)
    params = Parameters(backend, [dense], "float64", seed=1)
    params["dense.bias"][...] = rng.standard_normal(3)
    x, r = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 3))
    d_x = dense.backward(params, x, r)
    analytic = {"dense.kernel": params.grads["dense.kernel"], "dense.bias": params.grads["dense.bias"], "x": d_x}
    for name, array in (("dense.kernel", params["dense.kernel"]), ("dense.bias", params["dense.bias"]), ("x", x)):
        expected = numerical_gradient(lambda: float((dense.forward(params, x) * r).sum()), array)
        assert relative_error(analytic[name], expected) < TOLERANCE, name


# --- PyTorch's nn.LSTM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("steps,batch,units,features", [(5, 4, 6, 3), (1, 1, 3, 2), (7, 3, 4, 5)])
def test_matches_pytorch_two_layer_bidirectional(rng, batch_first, steps, batch, units, features):
    """nn.LSTM(num_layers=2, bidirectional=True) with the same weights (bias_hh zeroed): the same outputs, final
    states and every gradient (weights, inputs, initial states) to 1e-10 in float64."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference: pip install torch==2.13.0")
    backend = get_backend("numpy")
    lstm, params, x, (h0, c0) = make_stack(backend, "vectors", steps, batch, units, features, 2, True, 0.0, rng)
    reference = torch.nn.LSTM(features, units, num_layers=2, bidirectional=True, batch_first=batch_first,
                              dtype=torch.float64)
    with torch.no_grad():
        for layer, direction, cell in lstm.cells():
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            getattr(reference, f"weight_ih{suffix}").copy_(torch.from_numpy(params[f"{cell}.kernel"].T))
            getattr(reference, f"weight_hh{suffix}").copy_(torch.from_numpy(params[f"{cell}.recurrent_kernel"].T))
            getattr(reference, f"bias_ih{suffix}").copy_(torch.from_numpy(params[f"{cell}.bias"]))
            getattr(reference, f"bias_hh{suffix}").zero_()
    x_t = torch.from_numpy(x.transpose(1, 0, 2).copy() if batch_first else x.copy()).requires_grad_()
    h0_t, c0_t = (torch.from_numpy(s.copy()).requires_grad_() for s in (h0, c0))
    out_t, (h_n_t, c_n_t) = reference(x_t, (h0_t, c0_t))
    r_out = rng.standard_normal((steps, batch, 2 * units))
    r_h, r_c = rng.standard_normal(h0.shape), rng.standard_normal(c0.shape)
    r_out_t = torch.from_numpy(r_out.transpose(1, 0, 2).copy() if batch_first else r_out)
    ((out_t * r_out_t).sum() + (h_n_t * torch.from_numpy(r_h)).sum() + (c_n_t * torch.from_numpy(r_c)).sum()).backward()

    outputs, (h_n, c_n), cache = lstm.forward(params, x, (h0, c0))
    expected_out = out_t.detach().numpy()
    assert relative_error(outputs, expected_out.transpose(1, 0, 2) if batch_first else expected_out) < 1e-10
    assert relative_error(h_n, h_n_t.detach().numpy()) < 1e-10
    assert relative_error(c_n, c_n_t.detach().numpy()) < 1e-10
    d_x, (d_h0, d_c0) = lstm.backward(params, cache, r_out, (r_h, r_c))
    expected_dx = x_t.grad.numpy()
    assert relative_error(d_x, expected_dx.transpose(1, 0, 2) if batch_first else expected_dx) < 1e-10
    assert relative_error(d_h0, h0_t.grad.numpy()) < 1e-10
    assert relative_error(d_c0, c0_t.grad.numpy()) < 1e-10
    for layer, direction, cell in lstm.cells():
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        for ours, theirs in (("kernel", "weight_ih"), ("recurrent_kernel", "weight_hh")):
            expected = getattr(reference, theirs + suffix).grad.numpy().T
            assert relative_error(params.grads[f"{cell}.{ours}"], expected) < 1e-10, (cell, ours)
        assert relative_error(params.grads[f"{cell}.bias"], getattr(reference, "bias_ih" + suffix).grad.numpy()) < 1e-10


# --- dropout masks -----------------------------------------------------------------------------------------------


def test_dropout_masks_depend_on_position_only(rng):
    rate, key = 0.3, dropout_key(int(rng.integers(1 << 30)), 1)
    mask = dropout_mask(np, (20, 9, 64), rate, key, dtype=np.float64)
    assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - rate)}
    kept = (mask > 0).mean()  # 11,520 Bernoulli(0.7) draws: 5 standard deviations is 0.021
    assert abs(kept - (1 - rate)) < 0.021
    # rows 3..6 of the batch drawn alone (a thread shard or an MPI rank) get the same multipliers
    assert np.array_equal(dropout_mask(np, (20, 4, 64), rate, key, row_offset=3, dtype=np.float64), mask[:, 3:7])
    assert not np.array_equal(dropout_mask(np, (20, 9, 64), rate, dropout_key(1, 2), dtype=np.float64), mask)
    assert (dropout_mask(np, (3, 2, 5), 0.0, key) == 1).all()
    assert np.array_equal(mask, dropout_mask(np, (20, 9, 64), rate, key, dtype=np.float64))


def test_dropout_only_in_training_and_needs_a_seed(rng):
    backend = get_backend("numpy")
    lstm, params, x, _ = make_stack(backend, "vectors", 3, 2, 4, 3, 2, False, 0.5, rng)
    plain = lstm.forward(params, x)[0]
    assert np.array_equal(lstm.forward(params, x, training=False, seed=1)[0], plain)
    assert not np.allclose(lstm.forward(params, x, training=True, seed=1)[0], plain)
    with pytest.raises(ValueError, match="seed"):
        lstm.forward(params, x, training=True)


def test_constructor_and_input_errors():
    with pytest.raises(ValueError, match="exactly one"):
        LSTM(4)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(4, input_size=3, dropout=1.0)
    lstm = LSTM(4, vocab_size=5)
    params = Parameters("numpy", [lstm], seed=0)
    with pytest.raises(ValueError, match="token ids"):
        lstm.forward(params, np.zeros((2, 3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="two layers name"):
        Parameters("numpy", [LSTM(4, vocab_size=5), LSTM(3, input_size=4)])


# --- every backend gives numpy's numbers -------------------------------------------------------------------------


def _run_stack(backend, kind, shape, weights, inputs, state, dtype, r_out):
    steps, batch, units, width, layers, bidirectional, dropout = shape
    lstm = LSTM(units, num_layers=layers, bidirectional=bidirectional, dropout=dropout,
                **({"vocab_size": width} if kind == "ids" else {"input_size": width}))
    params = Parameters(backend, [lstm], dtype)
    params.set_weights(weights)
    xp = backend.xp
    x = xp.asarray(inputs if kind == "ids" else inputs.astype(dtype))
    h0, c0 = (xp.asarray(s.astype(dtype)) for s in state)
    outputs, (h_n, c_n), cache = lstm.forward(params, x, (h0, c0), training=True, seed=3)
    d_x, (d_h0, d_c0) = lstm.backward(params, cache, xp.asarray(r_out.astype(dtype)), (h_n * 0.5, c_n * 0.25))
    results = {"outputs": outputs, "h_n": h_n, "c_n": c_n, "d_h0": d_h0, "d_c0": d_c0, "grads": params.grads.flat}
    if d_x is not None:
        results["d_x"] = d_x
    return {k: backend.to_numpy(v).astype(np.float64) for k, v in results.items()}


BACKEND_SHAPES = [(5, 7, 9, 6, 2, True, 0.3), (1, 1, 3, 2, 2, True, 0.0), (4, 3, 17, 5, 3, False, 0.2)]


def _compare_with_numpy(backend, rng, kind, shape, dtype):
    steps, batch, units, width, layers, bidirectional, dropout = shape
    lstm, params, inputs, state = make_stack(get_backend("numpy"), kind, *shape, rng)
    weights = params.get_weights()
    r_out = rng.standard_normal((steps, batch, lstm.output_size))
    expected = _run_stack(get_backend("numpy"), kind, shape, weights, inputs, state, "float64", r_out)
    actual = _run_stack(backend, kind, shape, weights, inputs, state, dtype, r_out)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert relative_error(actual[name], expected[name]) < (1e-12 if dtype == "float64" else 2e-5), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["ids", "vectors"])
@pytest.mark.parametrize("shape", BACKEND_SHAPES)
def test_numba_equals_numpy(rng, dtype, kind, shape):
    _compare_with_numpy(get_backend("numba"), rng, kind, shape, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["ids", "vectors"])
@pytest.mark.parametrize("shape", BACKEND_SHAPES[:2])
def test_cuda_kernels_equal_numpy(device, rng, dtype, kind, shape):
    _compare_with_numpy(device.backend(), rng, kind, shape, dtype)


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulator"])
def device(request):
    return Device(request.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,offset", [((59, 32, 256), 0), ((3, 7, 5), 13), ((1, 1, 1), 0)])
def test_numba_dropout_masks_are_numpys_bit_for_bit(rng, dtype, shape, offset):
    key, rate = dropout_key(int(rng.integers(1 << 62)), 3), float(rng.uniform(0.05, 0.9))
    expected = dropout_mask(np, shape, rate, key, offset, dtype)
    actual = get_backend("numba").dropout_mask(shape, rate, key, offset, dtype)
    assert actual.dtype == expected.dtype and np.array_equal(actual, expected)
