"""SIMD vectors for Numba: one 64-byte register (16 float32 or 8 float64) as a value, for our own micro-kernels.

Why: a register-tiled GEMM keeps its block of C in registers for the whole reduction. Written as scalar Numba
code, the block lives in an array in memory and LLVM loads and stores it on every step of the reduction (it
cannot prove that the block does not alias the inputs): the loop is then bound by loads and stores, not by
multiply-adds. A ``Vector`` is an LLVM vector
value (``<16 x float>``): a local variable of that type is an SSA value, so the block stays in registers, and
each operation below is one instruction (two on CPUs that split 512-bit work, or without AVX-512).

    v = load(array, i)          # array[i : i + LANES] (1-D, contiguous), any alignment
    store(array, i, v)          # array[i : i + LANES] = v
    splat(x)                    # x in every lane; the dtype of x picks the width
    broadcast(array, i)         # array[i] in every lane (i in bounds, not negative: no wraparound code)
    zeros(array)                # a vector of zeros of the array's dtype
    fma(a, b, c)                # a * b + c lane by lane, one rounding (llvm.fma)
    lanes_of(array)             # LANES for the array's dtype, a constant

That is all the micro-kernel needs (``recurrence``); the cell's activations stay scalar Numba code, which LLVM
vectorises by itself.

Results are exactly reproducible: each lane's arithmetic is IEEE, in a fixed order.
"""

import os

import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, overload, register_model


def host_has_avx512() -> bool:
    """Whether the CPU Numba compiles for has AVX-512F (NUMBA_CPU_NAME/NUMBA_CPU_FEATURES where set, else the
    host's): 32 vector registers of 64 bytes, against AVX2's 16 of 32 bytes."""
    if config.CPU_FEATURES:
        return "+avx512f" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME and config.CPU_NAME != "host":
        return False  # a named generic target: assume no AVX-512
    return bool(binding.get_host_cpu_features().get("avx512f", False))


def _register_bytes() -> int:
    natural = 64 if host_has_avx512() else 32
    forced = os.environ.get("MINILSTM_SIMD_BYTES")
    if forced:
        if forced not in ("32", "64"):
            raise ValueError(f"MINILSTM_SIMD_BYTES must be 32 or 64, not {forced!r}")
        if int(forced) != natural and not config.CACHE_DIR:
            # The cached kernels of the CPU's own width would read and write buffers sized for this one.
            raise ValueError(f"MINILSTM_SIMD_BYTES={forced} (not this CPU's {natural}) needs a Numba cache of its "
                             "own: set NUMBA_CACHE_DIR to an empty directory too")
        return int(forced)
    return natural


# One vector's bytes, decided once at import from the CPU: 64 (a zmm register) with AVX-512, else 32 (a ymm
# register; a 64-byte vector there is two registers, and a micro-kernel sized for 32 of them spills). Numba's disk
# cache is keyed by the CPU, not by this: MINILSTM_SIMD_BYTES (tests force the other width with it) must come with
# its own NUMBA_CACHE_DIR, and is refused without one.
REGISTER_BYTES = _register_bytes()


def lanes(dtype) -> int:
    """How many numbers of ``dtype`` one vector holds."""
    return REGISTER_BYTES // np.dtype(dtype).itemsize


class Vector(types.Type):
    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = REGISTER_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vector({dtype}x{self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, value=array).data
    return builder.gep(data, [index], inbounds=True)


@intrinsic
def load(typingctx, array, index):
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype in (types.float32, types.float64)):
        return None
    vector = Vector(array.dtype)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, array, args[0], args[1])
        llvm_type = context.get_value_type(vector)
        return builder.load(builder.bitcast(pointer, llvm_type.as_pointer()), align=array.dtype.bitwidth // 8)

    return vector(array, types.intp), codegen


@intrinsic
def store(typingctx, array, index, value):
    if not (isinstance(array, types.Array) and isinstance(value, Vector) and value.dtype == array.dtype):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, array, args[0], args[1])
        llvm_type = context.get_value_type(value)
        builder.store(args[2], builder.bitcast(pointer, llvm_type.as_pointer()), align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, types.intp, value), codegen


def _splat_ir(context, builder, vector, scalar):
    llvm_type = context.get_value_type(vector)
    one = builder.insert_element(ir.Constant(llvm_type, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(llvm_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), [0] * vector.lanes))


@intrinsic
def splat(typingctx, scalar):
    if scalar not in (types.float32, types.float64):
        return None
    vector = Vector(scalar)

    def codegen(context, builder, signature, args):
        return _splat_ir(context, builder, vector, args[0])

    return vector(scalar), codegen


@intrinsic
def broadcast(typingctx, array, index):
    """array[index] in every lane, read straight from memory: ``splat(a[i])`` also emits Numba's wraparound of a
    negative index (a shift, an and, an add per read), which costs the micro-kernel's loop a third of its
    instructions on AVX2. ``index`` must be in bounds and not negative."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype in (types.float32, types.float64)):
        return None
    vector = Vector(array.dtype)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, array, args[0], args[1])
        return _splat_ir(context, builder, vector, builder.load(pointer, align=array.dtype.bitwidth // 8))

    return vector(array, types.intp), codegen


def zeros(array):
    """A vector of zeros of ``array``'s dtype."""


@overload(zeros, inline="always")
def _zeros(array):
    zero = np.dtype(str(array.dtype)).type(0)
    return lambda array: splat(zero)


@intrinsic
def fma(typingctx, a, b, c):
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        llvm_type = context.get_value_type(a)
        name = f"llvm.fma.v{a.lanes}f{a.dtype.bitwidth}"  # llvmlite names intrinsics of scalar types only
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(llvm_type, [llvm_type] * 3), name)
        return builder.call(function, args)

    return a(a, b, c), codegen


def lanes_of(array):
    """How many elements of ``array``'s dtype one vector holds, as a compile-time constant inside Numba code."""
    return lanes(array.dtype)


@overload(lanes_of, inline="always")
def _lanes_of(array):
    count = REGISTER_BYTES // (array.dtype.bitwidth // 8)
    return lambda array: count


__all__ = ["Vector", "lanes", "lanes_of", "zeros", "load", "store", "splat", "broadcast", "fma"]
