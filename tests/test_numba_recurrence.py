"""The numba backend's compiled time loops (``recurrence``) against the float64 NumPy reference time loops
(``lstm.recurrence_forward/backward``), on fresh random inputs at odd shapes (batch 1, 3 rows, hidden 3, 5, 257,
one time step); their packing; results independent of batch composition and bit-identical from run to run; the
fused greedy decoding against the step-by-step loop."""

import numpy as np
import pytest
from helpers import (
    random_layer,
    reference_backward,
    reference_forward,
    relative_error,
    run_backward,
    run_forward,
    small_model,
)

from minilstm.backends import get_backend

pytest.importorskip("numba", reason="the numba backend needs numba")

from minilstm.backends.numba import recurrence as numba_recurrence
from minilstm.backends.numba import simd  # noqa: E402

# float32: the rational tanh (~3e-7) and float32 rounding, accumulated over the steps; float64: rounding only.
TOL = {np.float32: 2e-5, np.float64: 1e-12}
# (steps, batch, units): one step, batch 1, 3 rows, a partial micro-kernel block (5, 7 rows), a row group and a
# partial one (21 rows), hidden 3, 5, 257 (partial panels), 16 and 64 (whole panels), and the example's 256 with a
# shard's 32 rows.
SHAPES = [(1, 1, 3), (4, 3, 5), (3, 7, 257), (5, 8, 16), (2, 5, 64), (1, 4, 33), (2, 21, 40), (3, 32, 256)]
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def numba_backend():
    return get_backend("numba")


def close(actual, expected, dtype):
    error = relative_error(actual, expected)
    assert error < TOL[dtype], error


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps,batch,units", SHAPES)
def test_forward_equals_reference(numba_backend, rng, dtype, steps, batch, units):
    recurrent_kernel, gates, hs, cs = random_layer(rng, steps, batch, units, dtype)
    gates_ref, hs_ref, cs_ref = reference_forward(recurrent_kernel, gates, hs, cs)
    gates_out, hs_out, cs_out = run_forward(numba_backend, recurrent_kernel, gates, hs, cs)
    for actual, expected in ((gates_out, gates_ref), (hs_out, hs_ref), (cs_out, cs_ref)):
        assert actual.dtype == dtype
        close(actual, expected, dtype)


@pytest.mark.parametrize("with_outputs", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps,batch,units", SHAPES)
def test_backward_equals_reference(numba_backend, rng, dtype, steps, batch, units, with_outputs):
    recurrent_kernel, gates, hs, cs = random_layer(rng, steps, batch, units, dtype)
    gates, hs, cs = run_forward(numba_backend, recurrent_kernel, gates, hs, cs)
    d_outputs = rng.standard_normal((steps, batch, units)).astype(dtype) if with_outputs else None
    dh0, dc0 = rng.standard_normal((2, batch, units)).astype(dtype)

    dz_ref, dh_ref, dc_ref = reference_backward(gates, cs, recurrent_kernel, d_outputs, dh0, dc0)
    dz, dh, dc = run_backward(numba_backend, gates, cs, recurrent_kernel, d_outputs, dh0, dc0)
    for actual, expected in ((dz, dz_ref), (dh, dh_ref), (dc, dc_ref)):
        close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("units", [3, 16, 17, 64, 65])
def test_packed_layouts(rng, dtype, units):
    recurrent_kernel = rng.standard_normal((units, 4 * units)).astype(dtype)
    lanes = simd.REGISTER_BYTES // np.dtype(dtype).itemsize
    packed = np.full(numba_recurrence.packed_forward_size(units, dtype), np.nan, dtype)
    numba_recurrence.pack_forward(recurrent_kernel, packed)
    panels = -(-units // lanes)
    padded = np.zeros((units, 4, panels * lanes), dtype)
    padded[:, :, :units] = recurrent_kernel.reshape(units, 4, units)
    expected = padded.reshape(units, 4, panels, lanes).transpose(2, 0, 1, 3)  # (panel, k, gate, lane)
    assert np.array_equal(packed, expected.reshape(-1))

    width = 4 * lanes
    packed = np.full(numba_recurrence.packed_backward_size(units, dtype), np.nan, dtype)
    numba_recurrence.pack_backward(recurrent_kernel, packed)
    panels = -(-units // width)
    padded = np.zeros((panels * width, 4 * units), dtype)
    padded[:units] = recurrent_kernel
    expected = padded.reshape(panels, width, 4 * units).transpose(0, 2, 1)  # (panel, j, lane)
    assert np.array_equal(packed, expected.reshape(-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_do_not_depend_on_their_batch_and_runs_repeat_bit_for_bit(numba_backend, rng, dtype):
    """Each row is one chain of multiply-adds whatever block or group it falls in (4-row blocks, the rows left over,
    a second row group): a row run alone gives the same bits as in a batch of 23, and a second run the same bits as
    the first."""
    recurrent_kernel, gates, hs, cs = random_layer(rng, 4, 23, 37, dtype)
    batch_out = run_forward(numba_backend, recurrent_kernel, gates, hs, cs)
    again = run_forward(numba_backend, recurrent_kernel, gates, hs, cs)
    for a, b in zip(batch_out, again, strict=True):
        assert np.array_equal(a, b)
    for row in (0, 5, 6, 17, 22):
        alone = run_forward(numba_backend, recurrent_kernel, gates[:, row : row + 1].copy(),
                            hs[:, row : row + 1].copy(), cs[:, row : row + 1].copy())
        for a, b in zip(alone, batch_out, strict=True):
            assert np.array_equal(a[:, 0], b[:, row])


def test_nan_in_the_state_reaches_the_outputs(numba_backend, rng):
    """The NaN guard in training reads the loss: a NaN must not be lost inside the time loop."""
    recurrent_kernel, gates, hs, cs = random_layer(rng, 3, 5, 20, np.float32)
    hs[0, 2, 7] = np.nan
    _, hs_out, _ = run_forward(numba_backend, recurrent_kernel, gates, hs, cs)
    assert np.isnan(hs_out[-1, 2]).all() and np.isfinite(np.delete(hs_out[-1], 2, axis=0)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,units,vocab", [(1, 3, 5), (6, 17, 70), (9, 64, 129)])
def test_dense_equals_reference(numba_backend, rng, dtype, batch, units, vocab):
    inputs = rng.standard_normal((batch, units)).astype(dtype)
    kernel = rng.standard_normal((units, vocab)).astype(dtype)
    bias = rng.standard_normal(vocab).astype(dtype)
    expected = inputs.astype(np.float64) @ kernel.astype(np.float64) + bias
    close(numba_backend.dense(inputs, kernel, bias), expected, dtype)


class StepByStep(type(get_backend("numba"))):
    """The numba backend with greedy decoding left to the step loop (``decoding.greedy``)."""

    greedy_decode = None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_greedy_decoding_equals_step_by_step(numba_backend, rng, dtype):
    model = small_model(numba_backend, n_in=7, n_out=9, units=19, enc_len=5, dec_len=12, dtype=dtype, seed=4)
    weights = model.get_weights()
    weights["dense.bias"][model.target_vocab.index["\n"]] += 1.2  # END at several steps, and never for some rows
    model.set_weights(weights)
    stepwise = small_model(StepByStep(), n_in=7, n_out=9, units=19, enc_len=5, dec_len=12, dtype=dtype)
    stepwise.set_weights(weights)
    ids = rng.integers(0, 7, size=(23, 5))
    fused = model.greedy_decode_ids(ids)
    assert fused == stepwise.greedy_decode_ids(ids)
    lengths = {len(row) for row in fused}
    assert len(lengths) > 1, "every row stopped at the same step: dropping finished rows is not exercised"
    assert fused == [model.greedy_decode_ids(ids[k : k + 1])[0] for k in range(len(ids))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_simd_primitives(rng, dtype):
    """simd's vectors against numpy at unaligned offsets: load/store move LANES numbers, splat and zeros fill every
    lane, fma is a * b + c."""
    from numba import njit

    from minilstm.backends.numba import simd

    @njit
    def run(a, b, c, x, out):
        lanes = simd.lanes_of(a)
        simd.store(out, 1, simd.fma(simd.load(a, 3), simd.load(b, 0), simd.load(c, 1)))
        simd.store(out, 1 + lanes, simd.splat(x))
        simd.store(out, 1 + 2 * lanes, simd.zeros(a))
        simd.store(out, 1 + 3 * lanes, simd.broadcast(b, 4))

    lanes = simd.lanes(dtype)
    a, b, c = (rng.standard_normal(lanes + 5).astype(dtype) for _ in range(3))
    out = np.full(4 * lanes + 2, 7, dtype)
    run(a, b, c, dtype(2.5), out)
    expected = a[3 : 3 + lanes].astype(np.float64) * b[:lanes] + c[1 : 1 + lanes]
    assert np.allclose(out[1 : 1 + lanes], expected, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)
    assert (out[1 + lanes : 1 + 2 * lanes] == 2.5).all() and (out[1 + 2 * lanes : 1 + 3 * lanes] == 0).all()
    assert (out[1 + 3 * lanes : 1 + 4 * lanes] == b[4]).all()
    assert out[0] == 7 and out[-1] == 7  # nothing written outside


# The vector width and the micro-kernel's rows are decided at import from the CPU (simd.REGISTER_BYTES 64 and 4
# rows with AVX-512, else 32 and 2 rows). Each output is the same chain of fused multiply-adds over k either way, so
# the other shape, forced in a subprocess (MINILSTM_SIMD_BYTES, with a cache directory of its own: Numba's disk
# cache does not know the width), must give the same bits as this process at odd shapes: batch 1, 3, 7 (partial
# blocks of both shapes), hidden 3, 5, 37, 257 (partial panels of both widths), float32 and float64.
WIDTH_SHAPES = [(2, 1, 3), (3, 7, 5), (2, 3, 37), (2, 7, 257), (2, 21, 16)]


def width_results(path):
    """Forward and backward loops, the dense layer and fused greedy decodes on fixed random inputs, into ``path``
    (an .npz), with this process's simd width."""
    backend = get_backend("numba")
    rng = np.random.default_rng(11)
    out = {"register_bytes": np.array(simd.REGISTER_BYTES), "micro_rows": np.array(numba_recurrence.MICRO_ROWS)}
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        for steps, batch, units in WIDTH_SHAPES:
            key = f"{name}-{steps}-{batch}-{units}"
            recurrent_kernel, gates, hs, cs = random_layer(rng, steps, batch, units, dtype)
            gates, hs, cs = run_forward(backend, recurrent_kernel, gates, hs, cs)
            d_outputs = rng.standard_normal((steps, batch, units)).astype(dtype)
            dh0, dc0 = rng.standard_normal((2, batch, units)).astype(dtype)
            dz, dh, dc = run_backward(backend, gates, cs, recurrent_kernel, d_outputs, dh0, dc0)
            kernel = rng.standard_normal((units, 93)).astype(dtype)
            logits = backend.dense(hs[-1], kernel, rng.standard_normal(93).astype(dtype))
            out.update({f"{key}-{what}": a for what, a in (("gates", gates), ("hs", hs), ("cs", cs), ("dz", dz),
                                                             ("dh", dh), ("dc", dc), ("logits", logits))})
        model = small_model(backend, n_in=7, n_out=9, units=19, enc_len=5, dec_len=12, dtype=name, seed=4)
        weights = model.get_weights()
        weights["dense.bias"][model.target_vocab.index["\n"]] += 1.2
        model.set_weights(weights)
        decoded = model.greedy_decode_ids(rng.integers(0, 7, size=(23, 5)))
        out[f"{name}-decoded"] = np.array([row + [-1] * (13 - len(row)) for row in decoded])
    np.savez(path, **out)


@pytest.mark.slow
def test_the_other_simd_width_gives_the_same_bits(tmp_path):
    import os
    import subprocess
    import sys

    other = 32 if simd.REGISTER_BYTES == 64 else 64
    env = dict(os.environ, MINILSTM_SIMD_BYTES=str(other), NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([tests, os.path.dirname(tests), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", "import sys, test_numba_recurrence as t; t.width_results(sys.argv[1])",
                    str(tmp_path / "other.npz")], env=env, check=True, timeout=900)
    width_results(tmp_path / "here.npz")
    here, there = np.load(tmp_path / "here.npz"), np.load(tmp_path / "other.npz")
    assert int(there["register_bytes"]) == other and int(here["register_bytes"]) == simd.REGISTER_BYTES
    assert int(there["micro_rows"]) != int(here["micro_rows"])
    assert sorted(here.files) == sorted(there.files)
    for name in here.files:
        if name not in ("register_bytes", "micro_rows"):
            assert np.array_equal(here[name], there[name], equal_nan=True), name
