"""The CPU emulator that runs our CUDA kernels in CI (tests/cuda_emulator): it computes what a GPU computes, and it
refuses what a GPU would get wrong - so a test on it can fail. Last, the proof on our own kernels: take out any one
barrier of kernels/*.cu (a __syncthreads(), or a call of the persistent kernels' grid barrier) and the emulated
results are wrong."""

import re
from pathlib import Path

import cuda_emulator
import numpy as np
import pytest
from helpers import relative_error
from test_cupy_backend import random_recurrence, run_recurrence

from minilstm import layers
from minilstm.backends import get_backend

pytestmark = pytest.mark.skipif(not cuda_emulator.available(), reason="no g++ here to build the CUDA emulator")
KERNELS = Path(__file__).resolve().parents[1] / "kernels"

TOYS = r"""
// out[b] = sum of block b's row of x; SYNC is __syncthreads() or nothing.
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
    extern __shared__ unsigned char shared_bytes[];
    float* s = reinterpret_cast<float*>(shared_bytes);
    s[threadIdx.x] = (int)threadIdx.x < n ? x[blockIdx.x * n + threadIdx.x] : 0.0f;
    SYNC;
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (unsigned k = 0; k < blockDim.x; ++k) total += s[k];
        out[blockIdx.x] = total;
    }
}
// Block 0 waits for a flag that block 1 sets: fine when all blocks run at once, a hang when they do not.
extern "C" __global__ void wait_for_block_1(unsigned int* flag) {
    if (threadIdx.x != 0) return;
    if (blockIdx.x == 1) atomicExch(flag, 1u);
    volatile unsigned int* f = flag;
    while (*f == 0) __nanosleep(32);
}
extern "C" __global__ void odd_threads_wait(float* out) {
    if (threadIdx.x % 2) __syncthreads();
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void read_fresh_shared(float* out) {
    extern __shared__ unsigned char shared_bytes[];
    out[threadIdx.x] = reinterpret_cast<float*>(shared_bytes)[threadIdx.x];
}
"""


def toys(sync="__syncthreads()", cooperative=False):
    return cuda_emulator.compile_source(TOYS.replace("SYNC", sync), cooperative)


def test_a_kernel_computes_what_it_should():
    x = np.random.default_rng(0).standard_normal((5, 30)).astype(np.float32)
    out = np.zeros(5, np.float32)
    toys().get_function("block_sum")((5,), (32,), (x, out, np.int32(30)), shared_mem=32 * 4)
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-5)


def test_a_missing_syncthreads_gives_a_wrong_result():
    x = np.ones((5, 30), np.float32)
    out = np.zeros(5, np.float32)
    toys(sync="").get_function("block_sum")((5,), (32,), (x, out, np.int32(30)), shared_mem=32 * 4)
    assert not np.allclose(out, 30)  # thread 0 sums shared memory the others have not written yet


def test_waiting_for_another_block_needs_a_cooperative_launch():
    """All blocks at once (a cooperative launch): block 0 sees block 1's flag. One by one (a normal launch, where
    nothing promises that block 1 ever runs while block 0 waits): the wait never ends, and the emulator says so."""
    flag = np.zeros(1, np.uint32)
    toys(cooperative=True).get_function("wait_for_block_1")((2,), (32,), (flag,))
    assert flag[0] == 1
    with pytest.raises(cuda_emulator.EmulatorError, match="waited for ever"):
        toys().get_function("wait_for_block_1")((2,), (32,), (np.zeros(1, np.uint32),))


def test_shared_memory_starts_as_nan():
    out = np.zeros(32, np.float32)
    toys().get_function("read_fresh_shared")((1,), (32,), (out,), shared_mem=32 * 4)
    assert np.isnan(out).all()


@pytest.mark.parametrize("launch,message", [
    (lambda k: k["block_sum"]((1,), (32,), (np.zeros(32, np.float32), np.zeros(1, np.float32), np.int64(32)),
                              shared_mem=128), "argument 2 is 8 bytes, the kernel's parameter is 4"),
    (lambda k: k["block_sum"]((1,), (32,), (np.zeros(32, np.float32), np.int32(32)), shared_mem=128),
     "2 arguments given, the kernel takes 3"),
    (lambda k: k["block_sum"]((1,), (32,), (np.zeros(32, np.float32), np.zeros(1, np.float32), np.int32(32)),
                              shared_mem=64 * 1024), "65536 bytes of dynamic shared memory"),
    (lambda k: k["odd_threads_wait"]((1,), (32,), (np.zeros(32, np.float32),)), "while others of its block wait"),
    (lambda k: k["block_sum"]((1,), (2048,), (np.zeros(32, np.float32), np.zeros(1, np.float32), np.int32(32))),
     "invalid launch shape"),
])
def test_what_a_gpu_would_get_wrong_is_refused(launch, message):
    module = toys()
    kernels = {name: module.get_function(name) for name in module.kernels}
    with pytest.raises(cuda_emulator.EmulatorError, match=re.escape(message)):
        launch(kernels)


def test_more_shared_memory_after_opting_in():
    kernel = toys().get_function("block_sum")
    kernel.max_dynamic_shared_size_bytes = 64 * 1024  # as cupy's RawKernel attribute
    out = np.zeros(1, np.float32)
    kernel((1,), (32,), (np.ones(32, np.float32), out, np.int32(32)), shared_mem=64 * 1024)
    assert out[0] == 32


def test_a_python_int_is_refused():
    with pytest.raises(TypeError, match="numpy"):
        toys().get_function("block_sum")((1,), (32,), (np.zeros(32, np.float32), np.zeros(1, np.float32), 32))


# --- every barrier in our kernels is needed, and the tests see it go ---------------------------------------------

BARRIER = re.compile(r"__syncthreads\(\);|grid_barrier\(barrier\);")


def barriers(name):
    """The lines with a barrier, except those marked "contract:" - kept for a function's general promise where
    every caller here happens to synchronise again before it reads (the comment on the line says so)."""
    lines = (KERNELS / name).read_text().splitlines()
    return [(name, number) for number, line in enumerate(lines, 1) if BARRIER.search(line) and "contract:" not in line]


def without_line(name, number):
    def edit(source):
        if source != (KERNELS / name).read_text():
            return source
        lines = source.splitlines(keepends=True)
        lines[number - 1] = BARRIER.sub(";", lines[number - 1])  # an empty statement: `if (...) ;` still builds
        return "".join(lines)

    return edit


def worst_recurrence_error(backend_for) -> float:
    """The largest relative error of a persistent forward and backward pass against numpy float64, over two
    shapes and the emulator's three block interleavings."""
    worst = 0.0
    for blocks, (steps, batch, units) in [(4, (5, 3, 7)), (2, (3, 2, 9))]:
        backend = backend_for(blocks)
        inputs = random_recurrence(np.random.default_rng(1), steps, batch, units)
        expected = run_recurrence(get_backend("numpy"), inputs)
        for _ in range(3):
            got = run_recurrence(backend, inputs)
            worst = max([worst] + [relative_error(a, e) for a, e in zip(got, expected, strict=True)])
    return worst


def softmax_error(backend) -> float:
    """Softmax cross-entropy against numpy float64, three launches without label smoothing and three with; each
    row's maximum is placed at a different index (low, high, in the last warp's reach) and half the rows are hits,
    so a wrong argmax shows; then two launches at 4,003 classes (a model of pieces)."""
    rng = np.random.default_rng(2)
    worst = 0.0
    for label_smoothing in (0.0, 0.0, 0.0, 0.1, 0.1, 0.1):
        logits = rng.standard_normal((12, 70)) * 3
        top = np.array([0, 1, 31, 32, 63, 64, 65, 69, 5, 40, 66, 68])
        logits[np.arange(12), top] = logits.max(axis=1) + 1
        targets = np.where(np.arange(12) % 2, top, rng.integers(0, 70, size=12))
        loss, hits, d = backend.softmax_cross_entropy(logits, targets, 1 / 12, label_smoothing)
        ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, targets, 1 / 12, label_smoothing)
        worst = max(worst, relative_error(d, ref_d), relative_error([loss], [ref_loss]), float(hits != ref_hits))
    for label_smoothing in (0.0, 0.1):  # a vocabulary of SentencePiece pieces: many blocks' width per row
        logits = rng.standard_normal((3, 4003)) * 3
        top = np.array([0, 2050, 4002])
        logits[np.arange(3), top] = logits.max(axis=1) + 1
        targets = np.array([0, 7, 4002])
        loss, hits, d = backend.softmax_cross_entropy(logits, targets, 1 / 3, label_smoothing)
        ref_loss, ref_hits, ref_d = layers.softmax_cross_entropy(np, logits, targets, 1 / 3, label_smoothing)
        worst = max(worst, relative_error(d, ref_d), relative_error([loss], [ref_loss]), float(hits != ref_hits))
    return worst


def norm_error(backend) -> float:
    """The gradient's sum of squares and clipping factor (the two reductions of the global norm) against numpy
    float64, three launches: six blocks of partial sums, then one block adding them."""
    rng = np.random.default_rng(3)
    numpy_backend = get_backend("numpy")
    worst = 0.0
    for _ in range(3):
        grads = rng.standard_normal(256 * 5 + 3)
        clip_norm = 0.5 * np.sqrt(numpy_backend.sum_of_squares(grads))
        expected = [numpy_backend.clip_scale(grads, clip_norm), numpy_backend.sum_of_squares(grads)]
        worst = max(worst, relative_error(backend.clip_scale(grads, clip_norm), expected))
    return worst


def attention_error(backend) -> float:
    """The attention weights (masked softmax) and their backward against numpy float64, three launches; rows of 70
    positions (two warps' reach and more), lengths from 1 to all, each row's maximum at a different real position.
    The scores sit near -800: a softmax does not change when every score moves alike, so a maximum taken from stale
    shared memory (small positive sums of the block before) would go unseen, were it not that exp(-800 - it)
    underflows to 0 and the row's sum with it."""
    rng = np.random.default_rng(4)
    worst = 0.0
    for _ in range(3):
        scores = rng.standard_normal((4, 3, 70)) * 3 - 800
        lengths = np.array([70, 33, 1, 65])
        top = np.array([[0, 31, 69], [32, 5, 20], [0, 0, 0], [64, 1, 40]])
        scores[np.arange(4)[:, None], np.arange(3)[None, :], top] = scores.max() + 1
        weights = backend.masked_softmax(scores, lengths)
        expected = layers.masked_softmax(np, scores, lengths)
        d_weights = rng.standard_normal(scores.shape)
        d_scores = backend.masked_softmax_backward(expected, d_weights)
        expected_d = layers.masked_softmax_backward(np, expected, d_weights)
        worst = max(worst, relative_error(weights, expected), relative_error(d_scores, expected_d))
    return worst


def run_kernels(name, edit=None) -> float:
    if name == "lstm_persistent.cu":
        return worst_recurrence_error(
            lambda blocks: cuda_emulator.emulated_cupy_backend("persistent", resident_blocks=blocks, edit=edit))
    backend = cuda_emulator.emulated_cupy_backend(edit=edit)
    return max(softmax_error(backend), norm_error(backend), attention_error(backend))


@pytest.mark.parametrize("name", ["lstm.cu", "lstm_persistent.cu"])
def test_the_kernels_as_written_agree(name):
    assert run_kernels(name) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("name,line", barriers("lstm.cu") + barriers("lstm_persistent.cu"))
def test_without_any_one_barrier_the_results_are_wrong(name, line):
    try:
        error = run_kernels(name, without_line(name, line))
    except cuda_emulator.EmulatorError:
        return  # refused outright (a barrier left unmatched): also seen
    assert error > 1e-6, f"{name}:{line} - the barrier there is not needed, or the tests cannot see it missing"


def test_persistent_kernels_that_do_not_build_are_one_clear_error():
    from minilstm.errors import MinilstmError

    def broken(source):
        return source.replace("lstm_forward_persistent<T>(gates,", "lstm_forward_persistent<T>(gates gates,")

    with pytest.raises(MinilstmError, match="persistent CUDA kernels do not build.*--backend cupy"):
        cuda_emulator.emulated_cupy_backend("persistent", edit=broken)


def test_a_grid_too_small_for_the_units_traps():
    """CuPy may shrink a cooperative grid that does not fit the device (with a warning); the persistent kernels
    would then leave units uncomputed, so they trap instead."""
    backend = cuda_emulator.emulated_cupy_backend("persistent")
    kernel = backend._kernel("lstm_forward_persistent", np.float64, backend.persistent_module)
    steps, batch, units = 2, 1, 3
    gates, hs, cs = np.zeros((steps, batch, 4 * units)), np.zeros((steps + 1, batch, units)), np.zeros(
        (steps + 1, batch, units))
    args = (gates, np.zeros((units, 4 * units)), hs, cs, np.zeros(2, np.uint32), np.int32(steps), np.int32(batch),
            np.int32(units), np.int32(1), np.int32(3))
    with pytest.raises(cuda_emulator.EmulatorError, match="__trap"):
        kernel((2,), (32,), args, shared_mem=4096)
    kernel((3,), (32,), args, shared_mem=4096)  # enough blocks: every unit's gates are activated
    np.testing.assert_array_equal(gates[..., : 2 * units], 0.5)  # sigmoid(0) for i and f
