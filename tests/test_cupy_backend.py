"""The CuPy backend: CUDA sources compile for sm_80 and sm_90 wherever nvcc is (CI has no GPU), the sources ship
in the wheel, the backend fails cleanly without CuPy or a GPU, and - on a machine with a CUDA GPU - every kernel
agrees with the NumPy float64 reference and the whole model agrees with the numpy backend."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_to_backend, numerical_gradient, random_batch, relative_error, small_model

from minilstm import layers, lstm
from minilstm.backend import get_backend
from minilstm.errors import MinilstmError
from minilstm.optim import RMSprop

REPO = Path(__file__).resolve().parents[1]
KERNELS = sorted((REPO / "kernels").glob("*.cu"))


def test_there_are_kernels():
    assert [k.name for k in KERNELS] == ["lstm.cu"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", KERNELS, ids=lambda p: p.name)
def test_kernel_compiles(tmp_path, source, arch):
    result = subprocess.run(["nvcc", "--std=c++17", f"-arch={arch}", "--Werror", "all-warnings", "-c", str(source),
                             "-o", str(tmp_path / "out.o")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.o").stat().st_size > 0
    ptx = subprocess.run(["nvcc", "--std=c++17", f"-arch={arch}", "-ptx", str(source), "-o", str(tmp_path / "out.ptx")],
                         capture_output=True, text=True, timeout=600)
    assert ptx.returncode == 0, ptx.stderr
    entries = (tmp_path / "out.ptx").read_text()
    for kernel in ("lstm_cell_forward", "lstm_cell_backward", "gather_rows_add", "scatter_add_sorted",
                   "softmax_cross_entropy", "rmsprop_update"):
        for suffix in ("f32", "f64"):  # every kernel the backend looks up is there, in both precisions
            assert f".entry {kernel}_{suffix}(" in entries, f"{kernel}_{suffix}"


def test_wheel_ships_the_kernels(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "No matching distribution" in result.stderr:
        pytest.skip("cannot fetch the build backend (setuptools) here")
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("minilstm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for kernel in KERNELS:
        assert f"minilstm/kernels/{kernel.name}" in names
    assert "minilstm/default_data/fra-eng-10k.txt.gz" in names


def test_kernel_sources_found_from_the_checkout():
    from minilstm.cupy_backend import kernel_dir

    assert (kernel_dir() / "lstm.cu").read_text() == (REPO / "kernels" / "lstm.cu").read_text()


def cupy_or_none():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - absent, no driver, no device
        return None


def test_clear_error_without_cupy_or_gpu():
    if cupy_or_none() is not None:
        pytest.skip("a CUDA GPU is present: there is no error to see")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "minilstm.train", "--backend", "cupy", "--epochs", "1"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cupy" in lines[0] and ("pip install" in lines[0] or "GPU" in lines[0])
    with pytest.raises(MinilstmError):
        get_backend("cupy")


# --- on a CUDA GPU only ------------------------------------------------------------------------------------------

cp = cupy_or_none()
gpu = pytest.mark.skipif(cp is None, reason="no CUDA GPU (or CuPy) here: the kernels are only compile-checked")
TOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES = [(64, 256), (1, 3), (5, 7), (3, 1)]
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def cupy_backend():
    return get_backend("cupy")


def close(actual, expected, dtype):
    actual = cp.asnumpy(actual)
    assert np.isfinite(actual).all()
    assert relative_error(actual, expected) < TOL[dtype]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,units", SHAPES)
def test_cell_kernels(cupy_backend, rng, dtype, batch, units):
    z_input = rng.standard_normal((batch, 4 * units)) * 3
    z_rec = rng.standard_normal((batch, 4 * units)) * 3
    c_prev = rng.standard_normal((batch, units))
    expected = [z_input.copy(), np.zeros((batch, units)), np.zeros((batch, units))]
    lstm.cell_forward(np, expected[0], z_rec, c_prev, *expected[1:])
    gates, c, h = cp.asarray(z_input, dtype), cp.full((batch, units), cp.nan, dtype), cp.full((batch, units), cp.nan,
                                                                                              dtype)
    cupy_backend.lstm_cell_forward(gates, cp.asarray(z_rec, dtype), cp.asarray(c_prev, dtype), c, h)
    for actual, ref in zip((gates, c, h), expected, strict=True):
        close(actual, ref, dtype)
    for with_output in (True, False):
        act = expected[0]
        c_now, dh_rec, dh_out, dc = (rng.standard_normal((batch, units)) for _ in range(4))
        dh_out = dh_out if with_output else None
        ref_dz, ref_dc = np.zeros((batch, 4 * units)), np.zeros((batch, units))
        lstm.cell_backward(np, act, c_prev, c_now, dh_rec, dh_out, dc, ref_dz, ref_dc)
        dz = cp.full((batch, 4 * units), cp.nan, dtype)
        dc_dev = cp.asarray(dc, dtype)
        cupy_backend.lstm_cell_backward(*(None if a is None else cp.asarray(a, dtype)
                                          for a in (act, c_prev, c_now, dh_rec, dh_out)), dc_dev, dz, dc_dev)
        close(dz, ref_dz, dtype)
        close(dc_dev, ref_dc, dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab,width", [(3776, 93, 1024), (1, 1, 3), (7, 5, 4)])
def test_gather_scatter_softmax_rmsprop(cupy_backend, rng, dtype, rows, vocab, width):
    table, bias = rng.standard_normal((vocab, width)), rng.standard_normal(width)
    ids = rng.integers(0, vocab, size=rows)
    close(cupy_backend.gather_rows_add(cp.asarray(table, dtype), cp.asarray(ids), cp.asarray(bias, dtype)),
          layers.gather_rows_add(np, table, ids, bias), dtype)
    values, out = rng.standard_normal((rows, width)), rng.standard_normal((vocab, width))
    expected = out.copy()
    layers.scatter_add_rows(np, expected, ids, values)
    out_dev = cp.asarray(out, dtype)
    cupy_backend.scatter_add_rows(out_dev, cp.asarray(ids), cp.asarray(values, dtype))
    close(out_dev, expected, dtype)
    logits = rng.standard_normal((rows, vocab)) * 4
    loss, hits, d = cupy_backend.softmax_cross_entropy(cp.asarray(logits, dtype), cp.asarray(ids), 1 / rows)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, ids, 1 / rows)
    assert abs(float(loss) - ref_loss) <= 10 * TOL[dtype] * abs(ref_loss) + 1e-12
    assert int(hits) == int(ref_hits)
    close(d, ref_d, dtype)
    n = rows * 3
    params, grads, velocity = rng.standard_normal(n), rng.standard_normal(n) * 1e-3, rng.uniform(0, 1e-6, n)
    ref = [params.copy(), velocity.copy()]
    get_backend("numpy").rmsprop_update(ref[0], grads, ref[1], 1e-3, 0.9, 1e-7, False)
    p_dev, v_dev = cp.asarray(params, dtype), cp.asarray(velocity, dtype)
    cupy_backend.rmsprop_update(p_dev, cp.asarray(grads, dtype), v_dev, 1e-3, 0.9, 1e-7, False)
    close(p_dev, ref[0], dtype)
    close(v_dev, ref[1], dtype)


@gpu
@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("batch", [1, 64])
def test_loss_and_grads_equal_numpy_backend(rng, dtype, tolerance, batch):
    ref = small_model("numpy", n_in=11, n_out=13, units=32, enc_len=5, dec_len=9, dtype=dtype)
    model = copy_to_backend(ref, "cupy")
    batch_ids = random_batch(rng, ref, batch)
    loss, _ = ref.loss_and_grads(*batch_ids)
    gpu_loss, _ = model.loss_and_grads(*batch_ids)
    assert abs(gpu_loss - loss) <= tolerance * loss
    for name, grad in ref.grads.items():
        assert relative_error(cp.asnumpy(model.grads[name]), grad) < tolerance, name


@gpu
def test_gradient_check_on_gpu(rng):
    model = small_model("cupy", units=3)
    enc, dec_in, dec_out = random_batch(rng, model, 2)
    positions = 2 * model.max_decoder_len

    def loss():
        return float(model.forward_backward(enc, dec_in, dec_out, compute_grads=False)[0]) / positions

    model.forward_backward(enc, dec_in, dec_out)
    for name, view in model.params.items():
        host = cp.asnumpy(view)
        analytic = cp.asnumpy(model.grads[name]).copy()

        def loss_host(view=view, host=host):
            view[...] = cp.asarray(host)
            return loss()

        assert relative_error(analytic, numerical_gradient(loss_host, host)) < 1e-6, name
        view[...] = cp.asarray(host)


@gpu
def test_training_trajectory_and_decodes_match_numpy(rng):
    ref = small_model("numpy", n_in=9, n_out=11, units=16, enc_len=5, dec_len=8, dtype="float64")
    model = copy_to_backend(ref, "cupy")
    optimizers = [RMSprop(m.backend, m.params.flat.size, m.dtype, learning_rate=0.01) for m in (ref, model)]
    for _ in range(5):
        batch_ids = random_batch(rng, ref, 8)
        losses = []
        for m, opt in zip((ref, model), optimizers, strict=True):
            losses.append(m.loss_and_grads(*batch_ids)[0])
            opt.step(m.params.flat, m.grads.flat)
        assert abs(losses[0] - losses[1]) <= 1e-10 * losses[0]
    texts = ["abc", "de", "a", "hgfedcba"]
    texts = ["".join(ch for ch in t if ch in ref.input_vocab.index) or ref.input_vocab.chars[1] for t in texts]
    assert model.translate(texts) == ref.translate(texts)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_padding_on_gpu(rng, dtype):
    """IGNORE targets in the CUDA softmax kernel (zero rows, not counted), and a masked bucket's loss and gradients
    and a mask_padding model's translations equal the numpy backend's."""
    logits = rng.standard_normal((50, 13)) * 4
    targets = rng.integers(0, 13, size=50)
    targets[::3] = layers.IGNORE
    loss, hits, d = get_backend("cupy").softmax_cross_entropy(cp.asarray(logits, dtype), cp.asarray(targets), 0.5)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, targets, 0.5)
    assert abs(float(loss) - ref_loss) <= 10 * TOL[dtype] * abs(ref_loss)
    assert int(hits) == int(ref_hits) and not cp.asnumpy(d)[::3].any()
    close(d, ref_d, dtype)
    ref = small_model("numpy", n_in=9, n_out=11, units=16, enc_len=5, dec_len=8, dtype=dtype)
    ref.mask_padding = True
    model = copy_to_backend(ref, "cupy")
    enc = rng.integers(0, 9, size=(6, 3))
    dec_in = rng.integers(0, 11, size=(6, 7))
    steps = rng.integers(1, 8, size=6)
    dec_out = np.where(np.arange(7)[None, :] < steps[:, None], rng.integers(0, 11, size=(6, 7)), layers.IGNORE)
    expected = ref.forward_backward(enc, dec_in, dec_out, positions=int(steps.sum()))
    got = model.forward_backward(enc, dec_in, dec_out, positions=int(steps.sum()))
    tolerance = 1e-10 if dtype == "float64" else 1e-4
    assert abs(float(got[0]) - float(expected[0])) <= tolerance * float(expected[0])
    assert relative_error(cp.asnumpy(model.grads.flat), ref.grads.flat) < tolerance
    if dtype == "float64":
        texts = ["abc", "a", "hgfe", "bb"]
        assert model.translate(texts) == ref.translate(texts)
