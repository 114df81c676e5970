"""The unit split of the numba backend's time loops (``NumbaBackend(split="units")``: the workers share one layer's
time loop, each owning a range of hidden units, with a barrier per time step) against the float64 NumPy reference
loops at odd shapes, and bit for bit against the one-thread loops (each element is computed by the same chain of
operations whichever thread owns it); uneven splits (a thread with one panel more, a thread with none); reruns;
the barrier and its atomics on their own; a failing thread that must not leave the others waiting; a loaded
machine (more threads than cores, CPU burners beside them) that must slow the split down, never hang it."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import (
    copy_to_backend,
    random_batch,
    random_layer,
    reference_backward,
    reference_forward,
    relative_error,
    run_backward,
    run_forward,
    small_model,
)

from minilstm.backends import Backend, get_backend

pytest.importorskip("numba", reason="the numba backend needs numba")

from numba import njit  # noqa: E402

from minilstm.backends.blas import hold_blas
from minilstm.backends.numba import (
    NumbaBackend,  # noqa: E402
    barrier,
)
from minilstm.backends.numba import recurrence as numba_recurrence  # noqa: E402

TOL = {np.float32: 2e-5, np.float64: 1e-12}  # as tests/test_numba_recurrence.py
DTYPES = [np.float32, np.float64]
# units 3 (one panel: the second thread owns none), 5, 17 (two forward panels in float32, an uneven backward
# split nowhere: one panel of 64), 257 (17 / 33 forward panels, 9 + 8; backward 5 / 9 panels, 3 + 2, 5 + 4).
UNITS = [3, 5, 17, 257]
BATCHES = [1, 3, 7, 64]
STEPS = [1, 4]
DEADLINE_S = 300  # a hang fails the test instead of stalling the suite


@pytest.fixture(autouse=True)
def give_blas_its_threads_back():
    """A unit-split step holds BLAS to one thread until another step starts (``backend.hold_blas``): not past a test."""
    yield
    hold_blas(False)


class CountingBackend(NumbaBackend):
    """The numba backend, counting the time loops that ran split by units."""

    def __init__(self, workers, split="units"):
        super().__init__(workers, split)
        self.unit_splits = 0

    def _run_split(self, run_part):
        self.unit_splits += 1
        super()._run_split(run_part)


@pytest.fixture(scope="module")
def split_backend():
    return CountingBackend(2)


@pytest.fixture(scope="module")
def one_thread():
    return NumbaBackend(1)


def close(actual, expected, dtype):
    error = relative_error(actual, expected)
    assert error < TOL[dtype], error


def same_bits(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def in_time(function, *args, seconds=DEADLINE_S):
    """``function(*args)`` on a daemon thread; its result, or a failure (not a hang) past ``seconds``."""
    box = {}

    def target():
        try:
            box["result"] = function(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: a barrier deadlocked?")
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("units", UNITS)
def test_forward_equals_reference_and_one_thread(split_backend, one_thread, rng, dtype, steps, batch, units):
    recurrent_kernel, gates, hs, cs = random_layer(rng, steps, batch, units, dtype)
    reference = reference_forward(recurrent_kernel, gates, hs, cs)
    before = split_backend.unit_splits
    split = run_forward(split_backend, recurrent_kernel, gates, hs, cs)
    assert split_backend.unit_splits == before + 1
    for actual, expected in zip(split, reference, strict=True):
        close(actual, expected, dtype)
    same_bits(split, run_forward(one_thread, recurrent_kernel, gates, hs, cs))


@pytest.mark.parametrize("with_outputs", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("units", UNITS)
def test_backward_equals_reference_and_one_thread(split_backend, one_thread, rng, dtype, steps, batch, units,
                                                  with_outputs):
    recurrent_kernel, gates, hs, cs = random_layer(rng, steps, batch, units, dtype)
    gates, hs, cs = run_forward(one_thread, recurrent_kernel, gates, hs, cs)
    d_outputs = rng.standard_normal((steps, batch, units)).astype(dtype) if with_outputs else None
    dh0, dc0 = rng.standard_normal((2, batch, units)).astype(dtype)
    reference = reference_backward(gates, cs, recurrent_kernel, d_outputs, dh0, dc0)
    before = split_backend.unit_splits
    split = run_backward(split_backend, gates, cs, recurrent_kernel, d_outputs, dh0, dc0)
    assert split_backend.unit_splits == before + 1
    for actual, expected in zip(split, reference, strict=True):
        close(actual, expected, dtype)
    same_bits(split, run_backward(one_thread, gates, cs, recurrent_kernel, d_outputs, dh0, dc0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("workers", [2, 3])
def test_reruns_and_thread_counts_give_the_same_bits(one_thread, rng, dtype, workers):
    """Three threads on two cores (one always waits for a core) and two threads, three runs each: all the one-thread
    bits, at an uneven split (257 units: 17 / 33 forward panels, 5 / 9 backward panels)."""
    backend = CountingBackend(workers)
    recurrent_kernel, gates, hs, cs = random_layer(rng, 6, 9, 257, dtype)
    d_outputs = rng.standard_normal((6, 9, 257)).astype(dtype)
    expected = run_forward(one_thread, recurrent_kernel, gates, hs, cs)
    expected_back = run_backward(one_thread, expected[0], expected[2], recurrent_kernel, d_outputs, hs[0], cs[0])
    for _ in range(3):
        same_bits(in_time(run_forward, backend, recurrent_kernel, gates, hs, cs), expected)
        same_bits(in_time(run_backward, backend, expected[0], expected[2], recurrent_kernel, d_outputs, hs[0],
                          cs[0]), expected_back)
    assert backend.unit_splits == 6


def test_split_panels_cover_every_panel_once():
    for panels in range(0, 40):
        for threads in range(1, 5):
            ranges = [numba_recurrence.split_panels(panels, threads, k) for k in range(threads)]
            assert ranges[0][0] == 0 and ranges[-1][1] == panels
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            assert max(stop - first for first, stop in ranges) - min(stop - first for first, stop in ranges) <= 1


def test_a_time_loop_inside_a_shard_does_not_split_over_the_busy_pool(split_backend, one_thread, rng):
    """Inside ``parallel_map`` (the batch split) the pool is busy: a time loop there runs on its own thread."""
    recurrent_kernel, gates, hs, cs = random_layer(rng, 3, 5, 40, np.float32)
    expected = run_forward(one_thread, recurrent_kernel, gates, hs, cs)
    before = split_backend.unit_splits
    results = in_time(split_backend.parallel_map, lambda _: run_forward(split_backend, recurrent_kernel, gates, hs, cs),
                      [0, 1])
    assert split_backend.unit_splits == before
    for result in results:
        same_bits(result, expected)


# ---------------------------------------------------------------------------------------------------------------
# The barrier and its atomics.


@njit(nogil=True)
def _atomics(array):
    old = barrier.atomic_add(array, 1, 5)
    barrier.store_release(array, 2, old + 100)
    return old, barrier.load_acquire(array, 1), barrier.load_acquire(array, 2)


def test_atomics():
    array = np.array([0, 7, 0], dtype=np.int64)
    assert _atomics(array) == (7, 12, 107)
    assert array.tolist() == [0, 12, 107]


@njit(nogil=True)
def _sleep_while(array, value, times):
    for _ in range(times):
        barrier.sleep_while(array, 0, value)
    barrier.wake_all(array, 0)  # nobody sleeps: a no-op


def test_sleep_while_returns_at_once_on_another_value_and_after_its_timeout_on_the_same():
    array = np.array([5], np.int64)
    _sleep_while(array, 4, 1)  # compile
    start = time.perf_counter()
    _sleep_while(array, 4, 1000)
    assert time.perf_counter() - start < 0.5
    start = time.perf_counter()
    _sleep_while(array, 5, 3)  # sleeps (on Linux) until the timeout: ~1 ms each
    assert time.perf_counter() - start < 5


@njit(nogil=True)
def _phases(sync, data, me, threads, rounds, seen):
    """Round r: write r + 1 into my slot, barrier, sum every slot (each must hold r + 1 by then), barrier (nobody
    writes round r + 1 before everybody has read round r)."""
    for r in range(rounds):
        data[me] = r + 1
        if not barrier.wait(sync, threads * (2 * r + 1)):
            return False
        total = 0
        for k in range(threads):
            total += data[k]
        seen[r] = total
        if not barrier.wait(sync, threads * (2 * r + 2)):
            return False
    return True


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_barrier_orders_the_rounds(threads):
    """More threads than cores too: the waits must yield, or this crawls."""
    rounds = 2000
    sync, data = barrier.new_sync(), np.zeros(threads, np.int64)
    seen = np.zeros((threads, rounds), np.int64)
    results = [None] * threads

    def run(k):
        results[k] = _phases(sync, data, k, threads, rounds, seen[k])

    def run_all():
        workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    in_time(run_all)
    assert results == [True] * threads
    assert (seen == threads * np.arange(1, rounds + 1)).all()
    assert sync[barrier.COUNT] == threads * 2 * rounds


@njit(nogil=True)
def _wait_rounds(sync, threads, rounds):
    for r in range(rounds):
        if not barrier.wait(sync, threads * (r + 1)):
            return False
    return True


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_thread_aborts_the_others(failing):
    """One part raises before it reaches its first barrier (the other waits there): the error comes out and the
    waiting part leaves its barrier (returns False) instead of waiting forever."""
    backend = NumbaBackend(2, "units")
    left = []

    def part(k, sync):
        if k == failing:
            time.sleep(0.05)  # let the other one start waiting
            raise ValueError("part failed")
        left.append(_wait_rounds(sync, 2, 10))
        return left[-1]

    with pytest.raises(ValueError, match="part failed"):
        in_time(backend._run_split, part, seconds=60)
    assert left == [False]


def test_the_split_survives_a_loaded_machine(one_thread, rng):
    """Two CPU burners beside the two threads of the split (four runnable threads on our two cores, the state of a
    busy CI box): the OS deschedules a thread that another one waits for at every other barrier. The wait must then
    yield the core, so the run ends (in seconds here) with the same bits."""
    backend = CountingBackend(2)
    recurrent_kernel, gates, hs, cs = random_layer(rng, 200, 7, 257, np.float32)
    d_outputs = rng.standard_normal((200, 7, 257)).astype(np.float32)
    expected = run_forward(one_thread, recurrent_kernel, gates, hs, cs)
    expected_back = run_backward(one_thread, expected[0], expected[2], recurrent_kernel, d_outputs, hs[0], cs[0])
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.2)
        start = time.monotonic()
        for _ in range(3):
            same_bits(in_time(run_forward, backend, recurrent_kernel, gates, hs, cs, seconds=120), expected)
            same_bits(in_time(run_backward, backend, expected[0], expected[2], recurrent_kernel, d_outputs, hs[0],
                              cs[0], seconds=120), expected_back)
        elapsed = time.monotonic() - start
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert backend.unit_splits == 6
    assert elapsed < 60, f"6 time loops of 200 steps took {elapsed:.1f} s beside two burners"


# ---------------------------------------------------------------------------------------------------------------
# The choice between the splits, and a whole model on the unit split.


def blas_threads():
    from threadpoolctl import threadpool_info

    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_a_unit_split_step_holds_blas_to_one_thread_until_a_step_that_does_not():
    auto = NumbaBackend(2, "auto")
    before = blas_threads()
    try:
        assert auto.row_shards(4, 256, 8) == 1 and blas_threads() == {1}
        assert auto.row_shards(4, 256, 8) == 1 and blas_threads() == {1}
        assert auto.row_shards(64, 256, 8) == 2 and blas_threads() == before
        assert auto.row_shards(4, 256, 8) == 1 and blas_threads() == {1}
        assert Backend().row_shards(4, 256, 8) == 1 and blas_threads() == before  # any backend's step releases it
    finally:
        hold_blas(False)


def test_row_shards_and_the_split_setting(monkeypatch):
    assert Backend().row_shards(64, 256, 8) == 1
    rows = NumbaBackend(2, "rows")
    assert [rows.row_shards(b, 512, 8) for b in (1, 15, 16, 64)] == [1, 1, 2, 2]
    assert not rows.unit_split(16, 512)
    units = NumbaBackend(2, "units")
    assert units.unit_split(64, 3) and units.row_shards(64, 3, 8) == 1
    assert not NumbaBackend(1, "units").unit_split(16, 512)  # one worker: nothing to split over
    auto = NumbaBackend(2, "auto")
    assert [auto.unit_split(b, h) for b, h in ((1, 256), (15, 256), (16, 256), (16, 512), (23, 1024), (24, 512),
                                               (64, 256), (4, 128))] == \
        [True, True, False, True, True, False, False, False]
    for batch, latent in ((16, 512), (24, 512), (16, 256), (64, 256), (4, 64), (256, 512), (8, 256)):
        rows_shards = max(1, min(2, batch // 8))
        assert auto.row_shards(batch, latent, 8) == (1 if auto.unit_split(batch, latent) else rows_shards)
    monkeypatch.setenv("MINILSTM_SPLIT", "units")
    assert NumbaBackend(2).split == "units"
    monkeypatch.setenv("MINILSTM_SPLIT", "columns")
    with pytest.raises(Exception, match="MINILSTM_SPLIT"):
        NumbaBackend(2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_on_the_unit_split_equals_numpy(rng, dtype):
    """loss_and_grads of a whole model whose time loops run split by units (the batch one shard) against the numpy
    backend; the recurrent kernels' gradients too (they come from every dz and h the loops wrote)."""
    backend = CountingBackend(2)
    model = small_model(backend, n_in=7, n_out=9, units=37, enc_len=5, dec_len=6, dtype=dtype, seed=3)
    reference = copy_to_backend(model, get_backend("numpy"))
    batch = random_batch(rng, model, 11)
    loss, accuracy = model.loss_and_grads(*batch)
    ref_loss, ref_accuracy = reference.loss_and_grads(*batch)
    assert backend.unit_splits == 4  # encoder and decoder, forward and backward
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert loss == pytest.approx(ref_loss, rel=tol) and accuracy == ref_accuracy
    for name, grad in model.grads.items():
        assert relative_error(grad, reference.grads[name]) < tol * 10, name


def test_matmul_splits_over_the_workers_only_in_a_unit_split_step_and_gives_one_threads_bits(rng):
    """NumbaBackend.matmul: in a unit-split step (BLAS held to one thread) a large product runs as blocks of rows
    on the pool, bit for bit what one-thread BLAS gives for the whole; elsewhere (BLAS free, a small product, the
    pool busy) it is one BLAS call."""
    from minilstm.backends.blas import row_blocks_exact  # False: this BLAS's rows differ in blocks, so no split

    backend = NumbaBackend(2, "auto")
    pool_maps = []  # one entry per product handed to the pool
    real_submit = backend._pool.submit
    backend._pool.submit = lambda fn, *args: pool_maps.append(1) or real_submit(fn, *args)
    shapes = [(512, 1200, 2048), (5, 3000, 1000), (513, 77, 2049), (3, 9000, 1000), (1, 9000, 1000), (64, 64, 64)]
    try:
        backend.row_shards(4, 256, 8)  # a unit-split step: holds BLAS
        for rows, inner, cols in shapes:
            a = rng.standard_normal((inner, rows)).astype(np.float32).T  # a transposed view, as h^T in dW = h^T dz
            b = rng.standard_normal((inner, cols)).astype(np.float32)
            expected = np.matmul(a, b)  # one BLAS thread: held
            splits = rows >= 2 * backend.workers and rows * inner * cols >= (1 << 23) and row_blocks_exact()
            for out in (None, np.empty((rows, cols), np.float32)):
                before = len(pool_maps)
                got = backend.matmul(a, b, out=out)
                assert got.tobytes() == expected.tobytes() and (out is None or got is out)
                assert len(pool_maps) - before == splits, (rows, inner, cols)
        with backend._pool_lock:  # the pool busy (a caller inside a shard): one call
            before = len(pool_maps)
            backend.matmul(a, b)
            assert len(pool_maps) == before
        backend.row_shards(64, 256, 8)  # a batch-split step: BLAS has its threads, matmul is BLAS's
        before = len(pool_maps)
        a = rng.standard_normal((512, 1200)).astype(np.float32)
        b = rng.standard_normal((1200, 2048)).astype(np.float32)
        np.testing.assert_allclose(backend.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
        assert len(pool_maps) == before
    finally:
        hold_blas(False)
