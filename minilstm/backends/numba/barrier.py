"""A barrier for threads that run nogil Numba code side by side, and the atomics it is made of.

Numba has no atomic operations; these are LLVM instructions through ``numba.extending``, on an element of a 1-D
int64 array that all the threads share:

    atomic_add(array, i, value)     # array[i] += value in one indivisible step (sequentially consistent); the old value
    load_acquire(array, i)          # array[i], ordered before every read that follows it
    store_release(array, i, value)  # array[i] = value, ordered after every write before it
    pause()                         # the spin-wait hint (x86 ``pause``; nothing elsewhere)
    sleep_while(array, i, value)    # Linux: sleep until array[i] changes (futex), a wake-up, or 1 ms, whichever first
    wake_all(array, i)              # Linux: wake the threads in ``sleep_while`` on array[i]

``wait(sync, arrivals)`` is the barrier. ``sync`` is a small int64 array, zeroed before the threads start:
``sync[COUNT]`` counts arrivals over the whole run, so the n-th barrier of ``threads`` threads is passed once
``threads * n`` arrivals are in. The counter only grows: no reset, no sense flag, and a thread that passes one
barrier and arrives at the next cannot confuse one still waiting at the first (that one only needs the count to
have reached its own target). The atomic add is sequentially consistent and the waiting load an acquire, so every
write a thread made before a barrier is visible to every thread after it.

Waiting spins on ``pause`` for ``SPINS`` rounds (~20-40 us: where every thread has a core of its own, the others
arrive within that), then sleeps. On a loaded machine a thread we wait for may not be running at all (descheduled by
the OS, or by the hypervisor), and spinning on would burn the core it may be waiting for, at every barrier; yielding
(``sched_yield``) instead collapsed once the runnable threads outnumbered the cores (bench/barrier_wait.py, two or
three burners beside two threads: up to 10-17x the time without a barrier, sleeping 1-2x). So a waiter past its
spins counts itself in ``sync[SLEEPERS]`` and sleeps on the counter (a futex: the kernel sleeps it only while the
counter still holds the value it last saw, so a wake-up cannot be lost), and the last thread to arrive wakes the
sleepers. The sleep also ends after 1 ms, so a
lost wake-up could only slow a barrier down, never hang it. Elsewhere than Linux the waiter yields instead
(``sched_yield``, POSIX), or only spins (Windows).

``sync[ABORT]`` set to nonzero (by the caller, when one thread failed to start) makes every waiter return False.
"""

import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

COUNT = 0  # index of the arrival counter in ``sync``
SLEEPERS = 8  # threads asleep in ``wait`` (another 64-byte line)
ABORT = 16  # the abort flag (a third line: setting it does not disturb the counter's)
SYNC_SIZE = 24
SPINS = 1000  # pause rounds before a wait sleeps (pause is ~25-35 ns on our AMD EPYC, ~40 ns on Intel)
SLEEP_NS = 1_000_000  # the longest sleep before a waiter looks again (at an abort flag, say)

_MACHINE = platform.machine().lower()
_X86 = _MACHINE in ("x86_64", "amd64", "i386", "i686")
# Linux's futex system call number (x86-64, arm64 / riscv64 / loongarch64) and its private wait / wake operations.
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "loongarch64": 98}.get(_MACHINE)
_FUTEX = sys.platform.startswith("linux") and _SYS_FUTEX is not None
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129
_POSIX = sys.platform != "win32"


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


def _syscall(builder, arguments):
    """libc's ``long syscall(long number, ...)``, declared variadic as it is."""
    i64 = ir.IntType(64)
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
    return builder.call(function, arguments)


@intrinsic
def sleep_while(typingctx, array, index, value):
    """Sleep while array[index] (its low 32 bits: the futex word, little-endian) equals ``value``, for at most
    SLEEP_NS; returns at once where the value already differs. Only where ``_FUTEX``; else ``sched_yield`` (POSIX) or
    nothing (Windows)."""
    if not (_int64_vector(array) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        if _FUTEX:
            pointer = _element_pointer(context, builder, array, args[0], args[1])
            expected = builder.trunc(context.cast(builder, args[2], signature.args[2], types.int64), i32)
            timespec = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
            builder.store(ir.Constant(ir.ArrayType(i64, 2), [SLEEP_NS // 1_000_000_000, SLEEP_NS % 1_000_000_000]),
                          timespec)
            null = ir.Constant(ir.IntType(8).as_pointer(), None)
            _syscall(builder, [ir.Constant(i64, _SYS_FUTEX), builder.bitcast(pointer, null.type),
                               ir.Constant(i32, _FUTEX_WAIT_PRIVATE), expected,
                               builder.bitcast(timespec, null.type), null, ir.Constant(i32, 0)])
        elif _POSIX:
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, []), "sched_yield")
            builder.call(function, [])
        return context.get_dummy_value()

    return types.none(array, types.intp, value), codegen


@intrinsic
def wake_all(typingctx, array, index):
    """Wake every thread in ``sleep_while`` on array[index] (nothing where there is no futex)."""
    if not _int64_vector(array):
        return None

    def codegen(context, builder, signature, args):
        if _FUTEX:
            i32, i64 = ir.IntType(32), ir.IntType(64)
            pointer = _element_pointer(context, builder, array, args[0], args[1])
            null = ir.Constant(ir.IntType(8).as_pointer(), None)
            _syscall(builder, [ir.Constant(i64, _SYS_FUTEX), builder.bitcast(pointer, null.type),
                               ir.Constant(i32, _FUTEX_WAKE_PRIVATE), ir.Constant(i32, 2**31 - 1), null, null,
                               ir.Constant(i32, 0)])
        return context.get_dummy_value()

    return types.none(array, types.intp), codegen


@njit(inline="always", nogil=True)
def wait(sync, arrivals):
    """Arrive at a barrier and wait until ``arrivals`` arrivals in all (``threads * n`` for the n-th barrier of the
    run) are in. True, or False when ``sync[ABORT]`` was set while waiting."""
    if atomic_add(sync, COUNT, 1) + 1 >= arrivals:  # the last to arrive: wake whoever sleeps
        if atomic_add(sync, SLEEPERS, 0) > 0:  # an atomic read-modify-write: ordered after the add above
            wake_all(sync, COUNT)
        return True
    spins = 0
    while True:
        count = load_acquire(sync, COUNT)
        if count >= arrivals:
            return True
        if load_acquire(sync, ABORT) != 0:
            return False
        if spins < SPINS:
            pause()
            spins += 1
        else:
            # Counted in before the sleep: the last arriver either sees us in SLEEPERS and wakes us, or made its
            # arrival before we did, and then the counter is no longer ``count`` and the sleep returns at once.
            atomic_add(sync, SLEEPERS, 1)
            sleep_while(sync, COUNT, count)
            atomic_add(sync, SLEEPERS, -1)


__all__ = ["ABORT", "COUNT", "SLEEPERS", "SPINS", "atomic_add", "load_acquire", "new_sync", "pause", "sleep_while",
           "store_release", "wait", "wake_all"]
