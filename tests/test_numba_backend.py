"""Every Numba kernel against the plain NumPy reference on fresh random inputs, several shapes (batch 1, hidden 3,
length 1), float32 and float64; then the whole loss_and_grads of the numba backend against the numpy one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import copy_to_backend, random_batch, relative_error, small_model

from minilstm import layers, lstm
from minilstm.backends import get_backend

pytest.importorskip("numba", reason="the numba backend needs numba")

# float32 kernels use a rational tanh accurate to ~3e-7; float64 ones libm's exact functions.
TOL = {np.float32: 2e-6, np.float64: 1e-13}
SHAPES = [(64, 256), (1, 3), (5, 7), (2, 1)]  # (batch, units)
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def numba_backend():
    return get_backend("numba")


def close(actual, expected, dtype):
    assert np.isfinite(actual).all()
    assert relative_error(actual, expected) < TOL[dtype], relative_error(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,units", SHAPES)
def test_lstm_cell_forward(numba_backend, rng, dtype, batch, units):
    z_input = (rng.standard_normal((batch, 4 * units)) * 3).astype(dtype)
    z_recurrent = (rng.standard_normal((batch, 4 * units)) * 3).astype(dtype)
    c_prev = (rng.standard_normal((batch, units)) * 2).astype(dtype)
    expected = [z_input.astype(np.float64), np.zeros((batch, units)), np.zeros((batch, units))]
    lstm.cell_forward(np, expected[0], z_recurrent.astype(np.float64), c_prev.astype(np.float64), *expected[1:])
    gates = z_input.copy()
    c = np.full((batch, units), np.nan, dtype)  # poisoned: every element must be written
    h = np.full((batch, units), np.nan, dtype)
    numba_backend.lstm_cell_forward(gates, z_recurrent, c_prev, c, h)
    assert gates.dtype == c.dtype == h.dtype == dtype
    close(gates, expected[0], dtype)
    # c = f * c_prev + i * g can cancel to near 0, where a relative error means nothing. The gates (in [0, 1] and
    # [-1, 1]) are good to an absolute error, so c is held to TOL * (|c_prev| + 1) element by element, and h, with
    # tanh 1-Lipschitz and |o| <= 1, to TOL * (|c_prev| + 2).
    bound = TOL[dtype] * (np.abs(c_prev.astype(np.float64)) + 1)
    assert np.isfinite(c).all() and np.isfinite(h).all()
    assert (np.abs(c - expected[1]) <= bound).all(), np.max(np.abs(c - expected[1]) / bound)
    assert (np.abs(h - expected[2]) <= bound + TOL[dtype]).all(), np.max(np.abs(h - expected[2]) / bound)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,units", SHAPES)
@pytest.mark.parametrize("with_output", [True, False])
def test_lstm_cell_backward(numba_backend, rng, dtype, batch, units, with_output):
    gates = rng.uniform(0.01, 0.99, (batch, 4 * units))
    gates[:, 2 * units : 3 * units] = rng.uniform(-0.99, 0.99, (batch, units))
    c_prev, c, dh_recurrent, dh_output, dc = (rng.standard_normal((batch, units)) for _ in range(5))
    if not with_output:
        dh_output = None
    expected_dz, expected_dc = np.zeros((batch, 4 * units)), np.zeros((batch, units))
    lstm.cell_backward(np, gates, c_prev, c, dh_recurrent, dh_output, dc, expected_dz, expected_dc)
    cast = [None if a is None else a.astype(dtype) for a in (gates, c_prev, c, dh_recurrent, dh_output, dc)]
    dz = np.full((batch, 4 * units), np.nan, dtype)
    dc_inout = cast[5].copy()
    numba_backend.lstm_cell_backward(*cast[:5], dc_inout, dz, dc_inout)  # dc_prev over dc, as BPTT calls it
    close(dz, expected_dz, dtype)
    close(dc_inout, expected_dc, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab,width", [(59 * 64, 93, 1024), (1, 1, 3), (7, 5, 4)])
def test_gather_and_scatter_add(numba_backend, rng, dtype, rows, vocab, width):
    table = rng.standard_normal((vocab, width)).astype(dtype)
    bias = rng.standard_normal(width).astype(dtype)
    ids = rng.integers(0, vocab, size=(rows,))
    close(numba_backend.gather_rows_add(table, ids, bias),
          layers.gather_rows_add(np, table.astype(np.float64), ids, bias.astype(np.float64)), dtype)
    ids_2d = ids.reshape(rows, 1)
    assert numba_backend.gather_rows_add(table, ids_2d, bias).shape == (rows, 1, width)
    values = rng.standard_normal((rows, width)).astype(dtype)
    out = rng.standard_normal((vocab, width)).astype(dtype)
    expected = out.astype(np.float64)
    layers.scatter_add_rows(np, expected, ids, values.astype(np.float64))
    numba_backend.scatter_add_rows(out, ids, values)
    close(out, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab", [(3776, 93), (1, 2), (9, 1), (4, 7)])
def test_softmax_cross_entropy(numba_backend, rng, dtype, rows, vocab):
    logits = (rng.standard_normal((rows, vocab)) * 5).astype(dtype)
    targets = rng.integers(0, vocab, size=rows)
    loss, hits, d_logits = numba_backend.softmax_cross_entropy(logits, targets, 1.0 / rows)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits.astype(np.float64), targets, 1.0 / rows)
    assert abs(float(loss) - float(ref_loss)) <= TOL[dtype] * 10 * abs(float(ref_loss)) + 1e-12
    assert int(hits) == int(ref_hits)
    assert d_logits.dtype == dtype
    close(d_logits, ref_d, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inside", [False, True])
def test_rmsprop_update(numba_backend, rng, dtype, inside):
    n = 1001
    params, velocity = rng.standard_normal(n).astype(dtype), rng.uniform(0, 1e-3, n).astype(dtype)
    grads = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n)).astype(dtype)
    expected_params, expected_velocity = params.astype(np.float64), velocity.astype(np.float64)
    get_backend("numpy").rmsprop_update(expected_params, grads.astype(np.float64), expected_velocity, 0.001, 0.9,
                                        1e-7, inside)
    numba_backend.rmsprop_update(params, grads, velocity, 0.001, 0.9, 1e-7, inside)
    close(velocity, expected_velocity, dtype)
    close(params, expected_params, dtype)


def optimizer_inputs(rng, n, dtype):
    """Parameters, gradients spanning 1e-6 .. 1, and state arrays (positive where they are second moments)."""
    return {"params": rng.standard_normal(n).astype(dtype),
            "grads": (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n)).astype(dtype),
            "m": (rng.standard_normal(n) * 1e-3).astype(dtype), "v": rng.uniform(0, 1e-3, n).astype(dtype)}


# (name, the update's arguments after params and grads from optimizer_inputs' arrays, then its hyper-parameters)
UPDATES = {
    "rmsprop_update": lambda a: (a["v"], 0.001, 0.9, 1e-7, False),
    "adam_update": lambda a: (a["m"], a["v"], 0.001 / (1 - 0.9**3), 0.9, 0.999, 1e-7, (1 - 0.999**3) ** 0.5),
    "sgd_update": lambda a: (a["m"], 0.01, 0.9),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update", sorted(UPDATES))
@pytest.mark.parametrize("grad_scale", [None, 0.37])
def test_optimizer_updates(numba_backend, rng, dtype, update, grad_scale):
    """Every update, unclipped and with a clipping factor, against the numpy reference in float64: the parameters
    and every state array."""
    n = 1001
    ours = optimizer_inputs(rng, n, dtype)
    ref = {k: v.astype(np.float64) for k, v in ours.items()}
    grads = ours["grads"].copy()
    getattr(get_backend("numpy"), update)(ref["params"], ref["grads"], *UPDATES[update](ref), grad_scale)
    getattr(numba_backend, update)(ours["params"], ours["grads"], *UPDATES[update](ours), grad_scale)
    for name in ("params", "m", "v"):
        close(ours[name], ref[name], dtype)
    assert ours["grads"].tobytes() == grads.tobytes(), "the update wrote into the gradient"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 1001, 200_003])
def test_sum_of_squares_and_clip_scale(numba_backend, rng, dtype, n):
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(dtype)
    expected = get_backend("numpy").sum_of_squares(x)
    assert abs(numba_backend.sum_of_squares(x) - expected) <= 1e-13 * expected
    clip_norm = 0.5 * np.sqrt(expected) if n else 1.0
    assert abs(numba_backend.clip_scale(x, clip_norm) - get_backend("numpy").clip_scale(x, clip_norm)) <= 1e-13


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_loss_and_grads_equal_numpy_backend(rng, dtype, tolerance, batch):
    numpy_model = small_model("numpy", n_in=11, n_out=13, units=32, enc_len=5, dec_len=9, dtype=dtype)
    numba_model = copy_to_backend(numpy_model, "numba")
    batch_ids = random_batch(rng, numpy_model, batch)
    loss, accuracy = numpy_model.loss_and_grads(*batch_ids)
    numba_loss, numba_accuracy = numba_model.loss_and_grads(*batch_ids)
    assert abs(numba_loss - loss) <= tolerance * loss
    assert numba_accuracy == pytest.approx(accuracy, abs=1.5 / (batch * 9))  # a near-tie may flip in float32
    for name, grad in numpy_model.grads.items():
        assert relative_error(numba_model.grads[name], grad) < tolerance, name


def test_threads_split_the_batch_and_agree():
    """Two workers (two shards) and one give the same gradients: the shard sum is right."""
    from minilstm.backends.numba import NumbaBackend

    one, two = NumbaBackend(workers=1), NumbaBackend(workers=2)
    base = small_model("numpy", units=6, dtype="float64")
    rng = np.random.default_rng(5)
    batch_ids = random_batch(rng, base, 9)
    grads = []
    for backend in (one, two):
        model = copy_to_backend(base, backend)
        model.loss_and_grads(*batch_ids)
        grads.append(model.grads.flat.copy())
    assert relative_error(grads[0], grads[1]) < 1e-13


BLAS_THREADS = ("import json; import numpy; from threadpoolctl import threadpool_info; "
                "blas = lambda: [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']; "
                "before = blas(); from minilstm.backends import get_backend; get_backend('numba'); "
                "print(json.dumps([before, blas()]))")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_one_thread_means_one_blas_thread_too(threads):
    """MINILSTM_THREADS=1 holds the process's BLAS to one thread (two such runs side by side must not spin on each
    other's core); with more threads BLAS keeps its own setting."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", BLAS_THREADS], capture_output=True, text=True, timeout=120,
                            env={**env, "MINILSTM_THREADS": threads})
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout)
    assert before, "no BLAS library found by threadpoolctl"
    assert after == ([1] * len(before) if threads == "1" else before)
