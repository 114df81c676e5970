"""The CuPy backend: CUDA sources compile for sm_80 and sm_90 wherever nvcc is (CI has no GPU), the sources ship
in the wheel, the backend fails cleanly without CuPy or a GPU, and every kernel agrees with the NumPy float64
reference and the whole model with the numpy backend - on a CUDA GPU where there is one ("cuda"), and everywhere
with g++ on the CPU emulator of tests/cuda_emulator ("emulator": the same backend code and the same kernel sources,
run on numpy arrays; what the emulator cannot see is written in its emulator.h)."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cuda_emulator
import numpy as np
import pytest
from helpers import copy_to_backend, numerical_gradient, random_batch, relative_error, small_model

from minilstm import layers, lstm
from minilstm.backends import get_backend
from minilstm.errors import MinilstmError
from minilstm.optim import OPTIMIZERS, RMSprop, make_optimizer

REPO = Path(__file__).resolve().parents[1]
KERNELS = sorted((REPO / "kernels").glob("*.cu"))


def test_there_are_kernels():
    assert [k.name for k in KERNELS] == ["lstm.cu", "lstm_persistent.cu"]


@pytest.mark.slow
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
    kernels = {"lstm.cu": ("lstm_cell_forward", "lstm_cell_backward", "gather_rows_add", "scatter_add_sorted",
                           "softmax_cross_entropy", "rmsprop_update", "adam_update", "sgd_update",
                           "sum_squares_partial", "masked_softmax", "masked_softmax_backward"),
               "lstm_persistent.cu": ("lstm_forward_persistent", "lstm_backward_persistent")}[source.name]
    for kernel in kernels:
        for suffix in ("f32", "f64"):  # every kernel the backend looks up is there, in both precisions
            assert f".entry {kernel}_{suffix}(" in entries, f"{kernel}_{suffix}"
    for kernel in {"lstm.cu": ("global_norm_scale",)}.get(source.name, ()):  # on doubles only, no suffix
        assert f".entry {kernel}(" in entries, kernel


def nvrtc_library():
    """libnvrtc from the nvidia-cuda-nvrtc wheel (a test dependency) or the system, or None."""
    import ctypes
    import ctypes.util
    import importlib.util

    candidates = []
    spec = importlib.util.find_spec("nvidia")
    for location in (spec.submodule_search_locations if spec else []):
        candidates += sorted(Path(location).glob("*/lib/libnvrtc.so*"))
    candidates += [name for name in [ctypes.util.find_library("nvrtc")] if name]
    for candidate in candidates:
        try:
            return ctypes.CDLL(str(candidate))
        except OSError:
            continue
    return None


@pytest.mark.parametrize("options", [["--gpu-architecture=compute_80"], ["--gpu-architecture=compute_90"],
                                     ["--gpu-architecture=compute_90", "-rdc=true"]], ids=lambda o: " ".join(o))
@pytest.mark.parametrize("source", KERNELS, ids=lambda p: p.name)
def test_kernel_compiles_with_nvrtc(source, options):
    """NVRTC is how CuPy builds our kernels (nvcc is not): the sources must build there too, with nothing on the
    include path - as on a machine with CuPy's wheels and no CUDA toolkit. -rdc=true: as for a cooperative module."""
    import ctypes

    nvrtc = nvrtc_library()
    if nvrtc is None:
        pytest.skip("no NVRTC library here (pip install nvidia-cuda-nvrtc)")
    program = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.read_bytes(), source.name.encode(), 0, None,
                                    None) == 0
    try:
        flags = [b"--std=c++17", *(o.encode() for o in options)]
        status = nvrtc.nvrtcCompileProgram(program, len(flags), (ctypes.c_char_p * len(flags))(*flags))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        assert status == 0, log.value.decode()
        assert b"warning" not in log.value, log.value.decode()
        nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(program, ptx)
        entries = set(re.findall(r"\.entry (\w+)\(", ptx.value.decode()))
        assert entries
        if cuda_emulator.available():  # every extern "C" kernel the source defines (found by g++'s preprocessor)
            assert set(cuda_emulator.kernel_names(source.read_text())) <= entries
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


@pytest.mark.slow
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
    assert not any("cuda_emulator" in name for name in names)  # test code stays out of the wheel
    assert "minilstm/default_data/fra-eng-10k.txt.gz" in names


def test_kernel_sources_found_from_the_checkout():
    from minilstm.backends.cupy import kernel_dir

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
    for name in ("cupy", "cupy-persistent"):
        with pytest.raises(MinilstmError, match="cupy backend"):
            get_backend(name)


# --- on a CUDA GPU, and on the CPU emulator ----------------------------------------------------------------------


def cupy_or_skip():
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("no CUDA GPU (or CuPy) here: these kernels ran on the CPU emulator only")
    return cp


class Device:
    """Where the GPU tests run: ``xp`` is the array namespace (cupy, or numpy with ``asnumpy``), ``backend(...)``
    a CupyBackend on it."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "cuda":
            self.xp = cupy_or_skip()
        else:
            if not cuda_emulator.available():
                pytest.skip("no g++ here to build the CUDA emulator")
            self.xp = cuda_emulator.NumpyAsCupy()

    def backend(self, recurrence="per-step", **emulated):
        if self.kind == "cuda":
            return get_backend("cupy" if recurrence == "per-step" else f"cupy-{recurrence}")
        return cuda_emulator.emulated_cupy_backend(recurrence, **emulated)


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulator"])
def device(request):
    return Device(request.param)


TOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
RECURRENCES = ["per-step", "persistent"]


def close(device, actual, expected, dtype):
    actual = device.xp.asnumpy(actual)
    assert np.isfinite(actual).all()
    assert relative_error(actual, expected) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,units", [(64, 256), (1, 3), (5, 7), (3, 1)])
def test_cell_kernels(device, rng, dtype, batch, units):
    xp, backend = device.xp, device.backend()
    z_input = rng.standard_normal((batch, 4 * units)) * 3
    z_rec = rng.standard_normal((batch, 4 * units)) * 3
    c_prev = rng.standard_normal((batch, units))
    expected = [z_input.copy(), np.zeros((batch, units)), np.zeros((batch, units))]
    lstm.cell_forward(np, expected[0], z_rec, c_prev, *expected[1:])
    gates, c, h = xp.asarray(z_input, dtype), xp.full((batch, units), np.nan, dtype), xp.full((batch, units), np.nan,
                                                                                              dtype)
    backend.lstm_cell_forward(gates, xp.asarray(z_rec, dtype), xp.asarray(c_prev, dtype), c, h)
    for actual, ref in zip((gates, c, h), expected, strict=True):
        close(device, actual, ref, dtype)
    for with_output in (True, False):
        act = expected[0]
        c_now, dh_rec, dh_out, dc = (rng.standard_normal((batch, units)) for _ in range(4))
        dh_out = dh_out if with_output else None
        ref_dz, ref_dc = np.zeros((batch, 4 * units)), np.zeros((batch, units))
        lstm.cell_backward(np, act, c_prev, c_now, dh_rec, dh_out, dc, ref_dz, ref_dc)
        dz = xp.full((batch, 4 * units), np.nan, dtype)
        dc_dev = xp.asarray(dc, dtype)
        backend.lstm_cell_backward(*(None if a is None else xp.asarray(a, dtype)
                                     for a in (act, c_prev, c_now, dh_rec, dh_out)), dc_dev, dz, dc_dev)
        close(device, dz, ref_dz, dtype)
        close(device, dc_dev, ref_dc, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab,width", [(3776, 93, 1024), (1, 1, 3), (7, 5, 4), (300, 70, 37)])
def test_gather_scatter_softmax_rmsprop(device, rng, dtype, rows, vocab, width):
    if device.kind == "emulator" and rows * width > 100_000:
        pytest.skip("the example's full shape is for the GPU (the emulator runs (300, 70, 37) instead)")
    xp, backend = device.xp, device.backend()
    table, bias = rng.standard_normal((vocab, width)), rng.standard_normal(width)
    ids = rng.integers(0, vocab, size=rows)
    close(device, backend.gather_rows_add(xp.asarray(table, dtype), xp.asarray(ids), xp.asarray(bias, dtype)),
          layers.gather_rows_add(np, table, ids, bias), dtype)
    values, out = rng.standard_normal((rows, width)), rng.standard_normal((vocab, width))
    expected = out.copy()
    layers.scatter_add_rows(np, expected, ids, values)
    out_dev = xp.asarray(out, dtype)
    backend.scatter_add_rows(out_dev, xp.asarray(ids), xp.asarray(values, dtype))
    close(device, out_dev, expected, dtype)
    logits = rng.standard_normal((rows, vocab)) * 4
    logits[0, -1] = logits[0, 0] = logits[0].max() + 1  # a tie for the argmax: the lower index wins, as in numpy
    loss, hits, d = backend.softmax_cross_entropy(xp.asarray(logits, dtype), xp.asarray(ids), 1 / rows)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, ids, 1 / rows)
    assert abs(float(loss) - ref_loss) <= 10 * TOL[dtype] * abs(ref_loss) + 1e-12
    assert int(hits) == int(ref_hits)
    close(device, d, ref_d, dtype)
    n = rows * 3
    params, grads, velocity = rng.standard_normal(n), rng.standard_normal(n) * 1e-3, rng.uniform(0, 1e-6, n)
    for inside in (False, True):
        ref = [params.copy(), velocity.copy()]
        get_backend("numpy").rmsprop_update(ref[0], grads, ref[1], 1e-3, 0.9, 1e-7, inside)
        p_dev, v_dev = xp.asarray(params, dtype), xp.asarray(velocity, dtype)
        backend.rmsprop_update(p_dev, xp.asarray(grads, dtype), v_dev, 1e-3, 0.9, 1e-7, inside)
        close(device, p_dev, ref[0], dtype)
        close(device, v_dev, ref[1], dtype)


# (the update's arguments after params and grads, from the arrays m and v, then its hyper-parameters)
UPDATES = {
    "rmsprop_update": lambda m, v: (v, 1e-3, 0.9, 1e-7, False),
    "adam_update": lambda m, v: (m, v, 1e-3 / (1 - 0.9**4), 0.9, 0.999, 1e-7, (1 - 0.999**4) ** 0.5),
    "sgd_update": lambda m, v: (m, 0.01, 0.9),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 700, 256 * 9 + 5])
def test_optimizer_updates_and_global_norm(device, rng, dtype, n):
    """Every optimizer kernel, unclipped (null grad_scale) and clipped (the factor read from the device array that
    the norm kernels wrote), against the numpy backend in float64; the sum of squares over several blocks, the
    same bits on every run (no atomics)."""
    xp, backend = device.xp, device.backend()
    numpy_backend = get_backend("numpy")
    grads = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n)
    expected_sum = numpy_backend.sum_of_squares(grads)
    grads_dev = xp.asarray(grads, dtype)
    sums = [xp.asnumpy(backend.sum_of_squares(grads_dev)) for _ in range(3)]
    assert sums[0].tobytes() == sums[1].tobytes() == sums[2].tobytes()
    assert abs(float(sums[0]) - expected_sum) <= 10 * TOL[dtype] * expected_sum
    clip_norm = 0.4 * np.sqrt(expected_sum)
    scale_dev = backend.clip_scale(grads_dev, clip_norm)
    assert not isinstance(scale_dev, float) and scale_dev.shape == (2,)  # stays on the device
    scale = numpy_backend.clip_scale(grads, clip_norm)
    assert abs(float(xp.asnumpy(scale_dev)[0]) - scale) <= 10 * TOL[dtype] * scale
    assert float(xp.asnumpy(backend.clip_scale(grads_dev, 3 * clip_norm))[0]) == 1.0  # below: exactly 1
    for update, arguments in UPDATES.items():
        for clipped in (False, True):
            params, m, v = rng.standard_normal(n), rng.standard_normal(n) * 1e-3, rng.uniform(0, 1e-6, n)
            ref = [params.copy(), m.copy(), v.copy()]
            getattr(numpy_backend, update)(ref[0], grads, *arguments(*ref[1:]), scale if clipped else None)
            dev = [xp.asarray(a, dtype) for a in (params, m, v)]
            getattr(backend, update)(dev[0], grads_dev, *arguments(*dev[1:]), scale_dev if clipped else None)
            for actual, expected in zip(dev, ref, strict=True):
                close(device, actual, expected, dtype)
    assert xp.asnumpy(grads_dev).tobytes() == grads.astype(dtype).tobytes(), "an update wrote into the gradient"


def test_a_clipped_step_keeps_the_factor_on_the_device(device, rng, monkeypatch):
    """An optimizer step with clipping is three launches - the two of the norm, then the update - and the update is
    handed the device array the norm kernel wrote its factor into, not a host number (reading one back would wait
    for the GPU every step); the weights are the numpy backend's."""
    backend = device.backend()
    n = 1000
    params, grads = rng.standard_normal(n), rng.standard_normal(n)
    ours = device.xp.asarray(params)
    theirs = params.copy()
    for name in OPTIMIZERS:
        handed = []
        update = getattr(backend, f"{name}_update")
        monkeypatch.setattr(backend, f"{name}_update",
                            lambda *args, update=update, handed=handed: (handed.append(args[-1]), update(*args)))
        device_opt = make_optimizer(name, backend, n, np.float64, clip_norm=1.0)
        host_opt = make_optimizer(name, get_backend("numpy"), n, np.float64, clip_norm=1.0)
        if device.kind == "emulator":
            cuda_emulator.calls.clear()
        device_opt.step(ours, device.xp.asarray(grads))
        host_opt.step(theirs, grads.copy())
        if device.kind == "emulator":
            assert dict(cuda_emulator.calls) == {"sum_squares_partial_f64": 1, "global_norm_scale": 1,
                                                 f"{name}_update_f64": 1}
        assert len(handed) == 1 and isinstance(handed[0], device.xp.ndarray), handed
        close(device, ours, theirs, np.float64)


def random_recurrence(rng, steps, batch, units, with_outputs=True) -> dict:
    """Inputs for one layer's time loops: the gates' input part, the recurrent kernel, the initial states, the
    gradients from the outputs (or None) and w.r.t. the final states."""
    return {"gates_in": rng.standard_normal((steps, batch, 4 * units)) * 2,
            "recurrent_kernel": rng.standard_normal((units, 4 * units)) / np.sqrt(units),
            "h0": rng.standard_normal((batch, units)), "c0": rng.standard_normal((batch, units)),
            "d_outputs": rng.standard_normal((steps, batch, units)) if with_outputs else None,
            "d_h": rng.standard_normal((batch, units)), "d_c": rng.standard_normal((batch, units))}


def run_recurrence(backend, inputs, xp=np, dtype=np.float64) -> list:
    """One forward and one backward launch of ``backend``'s time loops on ``inputs`` (``random_recurrence``), in
    ``dtype`` on ``xp``'s arrays (copies: ``inputs`` stay as they are); outputs start as NaN. Returns the
    activated gates, hs, cs, dz, dL/dh_0, dL/dc_0 as host arrays."""
    steps, batch, four_units = inputs["gates_in"].shape
    units = four_units // 4
    gates = xp.array(inputs["gates_in"], dtype)
    hs, cs = xp.full((steps + 1, batch, units), np.nan, dtype), xp.full((steps + 1, batch, units), np.nan, dtype)
    hs[0], cs[0] = xp.array(inputs["h0"], dtype), xp.array(inputs["c0"], dtype)
    recurrent_kernel = xp.array(inputs["recurrent_kernel"], dtype)
    backend.lstm_recurrence_forward(gates, recurrent_kernel, hs, cs, lstm.Workspace(xp))
    dz = xp.full((steps, batch, four_units), np.nan, dtype)
    dh, dc = xp.array(inputs["d_h"], dtype), xp.array(inputs["d_c"], dtype)
    d_outputs = None if inputs["d_outputs"] is None else xp.array(inputs["d_outputs"], dtype)
    backend.lstm_recurrence_backward(gates, cs, recurrent_kernel, d_outputs, dh, dc, dz)
    host = getattr(xp, "asnumpy", np.asarray)
    return [host(a) for a in (gates, hs, cs, dz, dh, dc)]


# (steps, batch, units, blocks the emulator may run at once): batch 1, hidden 3, length 1; units that do not
# divide evenly over the blocks; more blocks than units; one block for all units.
RECURRENCE_SHAPES = [(1, 1, 3, 4), (5, 3, 7, 4), (4, 2, 9, 16), (6, 4, 5, 1), (20, 64, 256, None)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_outputs", [True, False])
@pytest.mark.parametrize("steps,batch,units,blocks", RECURRENCE_SHAPES)
def test_persistent_recurrence(device, rng, dtype, with_outputs, steps, batch, units, blocks):
    """One persistent launch per direction against the numpy float64 time loops: forward (activated gates, every
    h and c) and backward (every dz, dL/dh_0, dL/dc_0), with and without gradients from the outputs."""
    if device.kind == "emulator" and blocks is None:
        pytest.skip("the example's size is for the GPU")
    backend = device.backend("persistent", **({} if device.kind == "cuda" else {"resident_blocks": blocks}))
    assert backend._persistent_plan("forward", batch, units, np.dtype(dtype).itemsize) is not None
    assert backend._persistent_plan("backward", batch, units, np.dtype(dtype).itemsize) is not None
    inputs = random_recurrence(rng, steps, batch, units, with_outputs)
    expected = run_recurrence(get_backend("numpy"), inputs)
    for _ in range(3):  # the emulator interleaves the blocks differently on each of three launches
        for actual, ref in zip(run_recurrence(backend, inputs, device.xp, dtype), expected, strict=True):
            close(device, actual, ref, dtype)


@pytest.mark.slow
def test_persistent_recurrence_split_as_on_an_h100(rng):
    """The emulator at the split an H100 gets at the example's width (132 SMs: 128 blocks of 2 units, h staged in
    4 chunks of 64, dz in 16), batch 8 instead of 64 to keep it to seconds: against numpy float64, three launches."""
    if not cuda_emulator.available():
        pytest.skip("no g++ here to build the CUDA emulator")
    steps, batch, units = 12, 8, 256
    backend = cuda_emulator.emulated_cupy_backend("persistent", resident_blocks=132, max_chunk=64)
    assert backend._persistent_plan("forward", batch, units, 4)[:4] == (128, 64, 2, 64)
    inputs = random_recurrence(rng, steps, batch, units)
    expected = run_recurrence(get_backend("numpy"), inputs)
    for _ in range(3):
        for actual, ref in zip(run_recurrence(backend, inputs, dtype=np.float32), expected, strict=True):
            assert relative_error(actual, ref) < 1e-5


def test_persistent_falls_back_where_shared_memory_is_short(device, rng):
    """A layer whose weight slice does not fit in a block's shared memory runs per step - and gets it right."""
    if device.kind == "cuda":
        pytest.skip("needs a GPU with very few multiprocessors; the emulator stands in for one")
    backend = device.backend("persistent", resident_blocks=1)
    assert backend._persistent_plan("forward", 2, 64, 8) is None  # 64 x 256 float64 weights: 128 KiB
    ref = small_model("numpy", units=64, enc_len=3, dec_len=4)
    model = copy_to_backend(ref, backend)
    batch_ids = random_batch(rng, ref, 2)
    loss, _ = ref.loss_and_grads(*batch_ids)
    assert abs(model.loss_and_grads(*batch_ids)[0] - loss) <= 1e-12 * loss
    assert relative_error(model.grads.flat, ref.grads.flat) < 1e-12


def test_persistent_launches_do_not_grow_with_the_sequence(rng):
    """The point of the persistent kernels: a training step's launches of our kernels and GEMM calls stay the same
    however long the sentences, where the per-step recurrence adds four per time step (forward: GEMM + cell;
    backward: cell + GEMM). Counted on the emulator; CuPy's own array operations are not counted."""
    if not cuda_emulator.available():
        pytest.skip("no g++ here to build the CUDA emulator")
    counts = {}
    for recurrence in RECURRENCES:
        backend = cuda_emulator.emulated_cupy_backend(recurrence)
        for enc_len, dec_len in ((3, 5), (4, 9), (16, 59)):  # the last: the Keras example's lengths
            model = small_model(backend, units=3, enc_len=enc_len, dec_len=dec_len)
            batch_ids = random_batch(rng, model, 2)
            model.loss_and_grads(*batch_ids)  # the first call may set things up
            cuda_emulator.calls.clear()
            model.loss_and_grads(*batch_ids)
            counts[recurrence, enc_len + dec_len] = sum(cuda_emulator.calls.values())
    print("kernel launches + GEMM calls per loss_and_grads (sequence steps: count):", counts)
    assert counts["persistent", 8] == counts["persistent", 13] == counts["persistent", 75]
    assert counts["per-step", 13] - counts["per-step", 8] == 4 * 5
    assert counts["per-step", 75] - counts["per-step", 8] == 4 * 67


@pytest.mark.parametrize("recurrence", RECURRENCES)
@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("batch", [1, 64])
def test_loss_and_grads_equal_numpy_backend(device, rng, recurrence, dtype, tolerance, batch):
    ref = small_model("numpy", n_in=11, n_out=13, units=32 if device.kind == "cuda" else 9, enc_len=5, dec_len=9,
                      dtype=dtype)
    model = copy_to_backend(ref, device.backend(recurrence))
    for _ in range(3):  # three launches of each kernel: the emulator's three block interleavings
        batch_ids = random_batch(rng, ref, batch)
        loss, _ = ref.loss_and_grads(*batch_ids)
        gpu_loss, _ = model.loss_and_grads(*batch_ids)
        assert abs(gpu_loss - loss) <= tolerance * loss
        for name, grad in ref.grads.items():
            assert relative_error(device.xp.asnumpy(model.grads[name]), grad) < tolerance, name


@pytest.mark.slow
@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_gradient_check_on_gpu(device, rng, recurrence):
    xp = device.xp
    model = small_model(device.backend(recurrence), units=3)
    enc, dec_in, dec_out = random_batch(rng, model, 2)
    positions = 2 * model.max_decoder_len

    def loss():
        return float(model.forward_backward(enc, dec_in, dec_out, compute_grads=False)[0]) / positions

    model.forward_backward(enc, dec_in, dec_out)
    for name, view in model.params.items():
        host = xp.asnumpy(view)
        analytic = xp.asnumpy(model.grads[name]).copy()

        def loss_host(view=view, host=host):
            view[...] = xp.asarray(host)
            return loss()

        assert relative_error(analytic, numerical_gradient(loss_host, host)) < 1e-6, name
        view[...] = xp.asarray(host)


@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_training_trajectory_and_decodes_match_numpy(device, rng, recurrence):
    ref = small_model("numpy", n_in=9, n_out=11, units=16 if device.kind == "cuda" else 6, enc_len=5, dec_len=8,
                      dtype="float64")
    model = copy_to_backend(ref, device.backend(recurrence))
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


@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_padding_on_gpu(device, rng, dtype):
    """IGNORE targets in the CUDA softmax kernel (zero rows, not counted), and a masked bucket's loss and gradients
    and a mask_padding model's translations equal the numpy backend's."""
    xp, backend = device.xp, device.backend()
    logits = rng.standard_normal((50, 13)) * 4
    targets = rng.integers(0, 13, size=50)
    targets[::3] = layers.IGNORE
    loss, hits, d = backend.softmax_cross_entropy(xp.asarray(logits, dtype), xp.asarray(targets), 0.5)
    ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, targets, 0.5)
    assert abs(float(loss) - ref_loss) <= 10 * TOL[dtype] * abs(ref_loss)
    assert int(hits) == int(ref_hits) and not xp.asnumpy(d)[::3].any()
    close(device, d, ref_d, dtype)
    ref = small_model("numpy", n_in=9, n_out=11, units=16, enc_len=5, dec_len=8, dtype=dtype)
    ref.mask_padding = True
    model = copy_to_backend(ref, backend)
    enc = rng.integers(0, 9, size=(6, 3))
    dec_in = rng.integers(0, 11, size=(6, 7))
    steps = rng.integers(1, 8, size=6)
    dec_out = np.where(np.arange(7)[None, :] < steps[:, None], rng.integers(0, 11, size=(6, 7)), layers.IGNORE)
    expected = ref.forward_backward(enc, dec_in, dec_out, positions=int(steps.sum()))
    got = model.forward_backward(enc, dec_in, dec_out, positions=int(steps.sum()))
    tolerance = 1e-10 if dtype == "float64" else 1e-4
    assert abs(float(got[0]) - float(expected[0])) <= tolerance * float(expected[0])
    assert relative_error(xp.asnumpy(model.grads.flat), ref.grads.flat) < tolerance
    if dtype == "float64":
        texts = ["abc", "a", "hgfe", "bb"]
        assert model.translate(texts) == ref.translate(texts)


@pytest.mark.parametrize("recurrence,mask_padding", [("per-step", False), ("persistent", False),
                                                     ("persistent", True)])
@pytest.mark.slow
def test_train_command_on_the_emulator_matches_numpy(tmp_path, monkeypatch, capsys, recurrence, mask_padding):
    """`python -m minilstm.train` end to end with the GPU backend (emulated): its own code path - metrics kept on
    the device and read in bulk, the NaN check deferred to those reads - gives numpy's history and decodes."""
    if not cuda_emulator.available():
        pytest.skip("no g++ here to build the CUDA emulator")
    from minilstm import backends as backend_module
    from minilstm import train

    name = f"cupy-emulated-{recurrence}"
    monkeypatch.setitem(backend_module.BACKENDS, name, lambda: cuda_emulator.emulated_cupy_backend(recurrence))
    monkeypatch.setattr(backend_module, "_INSTANCES", {})
    args = ["--num-samples", "96", "--epochs", "2", "--batch-size", "16", "--latent-dim", "8", "--dtype", "float64",
            "--num-decodes", "4", "--progress", "never"] + (["--mask-padding"] if mask_padding else [])
    outputs = {}
    for backend_name in ("numpy", name):
        assert train.main([*args, "--backend", backend_name, "--out", str(tmp_path / backend_name)]) == 0
        stdout = capsys.readouterr().out
        history = [json.loads(line) for line in (tmp_path / backend_name / "history.jsonl").read_text().splitlines()]
        outputs[backend_name] = history, stdout[stdout.index("Input sentence:"):]
    (reference, ref_decodes), (got, decodes) = outputs["numpy"], outputs[name]
    assert len(got) == len(reference) == 2
    for mine, theirs in zip(got, reference, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-10, abs=1e-12), key
    assert decodes == ref_decodes
    with pytest.raises(MinilstmError, match="diverged"):  # the deferred NaN check still stops the run
        train.main([*args, "--backend", name, "--dtype", "float32", "--learning-rate", "1e38", "--out",
                    str(tmp_path / "nan")])
