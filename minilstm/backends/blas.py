"""The BLAS threads: holding OpenBLAS to one thread while our own threads run, and the checks a split GEMM needs."""

import os

import numpy as np

# BLAS held to one thread for the steps whose time loops split units (NumbaBackend.row_shards sets it at the start of
# such a step; the start of any step that does not split units releases it). Why: OpenBLAS's worker thread
# busy-waits for ~0.1 s (2^28 cycles) after every call it takes part in, on one of the very cores that the split's
# threads then need at every barrier; the model's GEMMs between the time loops (output layer, weight gradients) kept
# it spinning all step long, and steps with the unit split took 1.4-1.8x as long as with it held (batch 8 / latent
# 512, batch 1 / latent 256; bench/results/unit-split/). Held, the worker sleeps, and the step's large GEMMs run as
# one-thread BLAS calls on our own workers, a block of rows each (NumbaBackend.matmul). (Inside row shards BLAS is
# single-threaded anyway.) OpenBLAS does not promise the same rounding on one thread as on two, so such steps' bits
# may differ from before (in the runs compared, batch 8 and 12 at latent 256, they did not); the blocks give the
# one-thread call's bits (tested).
_blas_hold = None


def hold_blas(hold: bool):
    """Hold BLAS to one thread (``hold``) until released, or release it (restore the limits from before)."""
    global _blas_hold
    if hold and _blas_hold is None:
        from threadpoolctl import threadpool_limits

        _blas_hold = threadpool_limits(limits=1, user_api="blas")
    elif not hold and _blas_hold is not None:
        _blas_hold.restore_original_limits()
        _blas_hold = None


def blas_held() -> bool:
    """Whether ``hold_blas(True)`` holds BLAS to one thread now."""
    return _blas_hold is not None


_ROW_BLOCKS_EXACT = None


def row_blocks_exact() -> bool:
    """Whether this BLAS gives a product's rows the same bits when they are computed in blocks of rows as when
    computed whole (one thread), checked once per process on a few products, so that NumbaBackend.matmul splits
    only where that holds. OpenBLAS's SkylakeX sgemm does; its Haswell kernel (AVX2 machines) does not, for any
    split tried (a row's result depends on how many rows the call has), and there matmul stays one call."""
    global _ROW_BLOCKS_EXACT
    if _ROW_BLOCKS_EXACT is None:
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(0)
        exact = True
        with threadpool_limits(1, user_api="blas"):
            for rows, inner, cols in ((64, 256, 1024), (5, 300, 100), (513, 77, 257)):
                a = rng.standard_normal((inner, rows)).astype(np.float32).T
                b = rng.standard_normal((inner, cols)).astype(np.float32)
                half = rows // 2
                blocks = np.concatenate([np.matmul(a[:half], b), np.matmul(a[half:], b)])
                exact = exact and blocks.tobytes() == np.matmul(a, b).tobytes()
        _ROW_BLOCKS_EXACT = exact
    return _ROW_BLOCKS_EXACT


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1

