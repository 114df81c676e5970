"""A spin barrier for threads that run nogil Numba code side by side, and the atomics it is made of.

Numba has no atomic operations; these are LLVM instructions through ``numba.extending``, on an element of a 1-D
int64 array that all the threads share:

    atomic_add(array, i, value)     # array[i] += value in one indivisible step (sequentially consistent); the old value
    load_acquire(array, i)          # array[i], ordered before every read that follows it
    store_release(array, i, value)  # array[i] = value, ordered after every write before it
    pause()                         # the spin-wait hint (x86 ``pause``; nothing elsewhere)
    sched_yield()                   # libc's: let another runnable thread have this core

``wait(sync, arrivals)`` is the barrier. ``sync`` is a small int64 array, zeroed before the threads start:
``sync[COUNT]`` counts arrivals over the whole run, so the n-th barrier of ``threads`` threads is passed once
``threads * n`` arrivals are in. The counter only grows: no reset, no sense flag, and a thread that passes one
barrier and arrives at the next cannot confuse one still waiting at the first (that one only needs the count to
have reached its own target). The atomic add is a full fence on x86 and a release everywhere, and the waiting load
an acquire, so every write a thread made before a barrier is visible to every thread after it.

Waiting spins on ``pause`` for ``SPINS`` rounds (~3-10 us: where both threads have a core, the other one arrives
within that), then calls ``sched_yield`` between checks. On a loaded machine the other thread may not be running at
all (descheduled by the OS, or by the hypervisor); a pure spin would then burn the rest of this thread's time slice,
possibly the very core the other thread waits for, at every barrier. Yielding hands the core over instead.
``sync[ABORT]`` set to nonzero (by the caller, when one thread failed to start) makes every waiter return False.
"""

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

COUNT = 0  # index of the arrival counter in ``sync``
ABORT = 8  # index of the abort flag: another 64-byte line, so that setting it does not disturb the counter's
SYNC_SIZE = 16
SPINS = 128  # pause rounds before each wait starts yielding (pause is ~25-35 ns on our AMD EPYC, ~40 ns on Intel)

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def new_sync() -> np.ndarray:
    """The shared state of one barrier run: zeros."""
    return np.zeros(SYNC_SIZE, dtype=np.int64)


def _int64_vector(array):
    return isinstance(array, types.Array) and array.ndim == 1 and array.dtype == types.int64


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, value=array).data
    return builder.gep(data, [index], inbounds=True)


@intrinsic
def atomic_add(typingctx, array, index, value):
    if not (_int64_vector(array) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, array, args[0], args[1])
        addend = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", pointer, addend, "seq_cst")

    return types.int64(array, types.intp, value), codegen


@intrinsic
def load_acquire(typingctx, array, index):
    if not _int64_vector(array):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element_pointer(context, builder, array, args[0], args[1]), "acquire", 8)

    return types.int64(array, types.intp), codegen


@intrinsic
def store_release(typingctx, array, index, value):
    if not (_int64_vector(array) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, array, args[0], args[1])
        builder.store_atomic(context.cast(builder, args[2], signature.args[2], types.int64), pointer, "release", 8)
        return context.get_dummy_value()

    return types.none(array, types.intp, value), codegen


@intrinsic
def pause(typingctx):
    def codegen(context, builder, signature, args):
        if _X86:
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                      "llvm.x86.sse2.pause")
            builder.call(function, [])
        return context.get_dummy_value()

    return types.none(), codegen


# libc's sched_yield, linked by name (so functions that call it can still be cached on disk, unlike a ctypes pointer).
sched_yield = types.ExternalFunction("sched_yield", types.int32())


@njit(inline="always", nogil=True)
def wait(sync, arrivals):
    """Arrive at a barrier and wait until ``arrivals`` arrivals in all (``threads * n`` for the n-th barrier of the
    run) are in. True, or False when ``sync[ABORT]`` was set while waiting."""
    atomic_add(sync, COUNT, 1)
    spins = 0
    while load_acquire(sync, COUNT) < arrivals:
        if load_acquire(sync, ABORT) != 0:
            return False
        if spins < SPINS:
            pause()
            spins += 1
        else:
            sched_yield()
    return True


__all__ = ["ABORT", "COUNT", "SPINS", "atomic_add", "load_acquire", "new_sync", "pause", "sched_yield",
           "store_release", "wait"]
