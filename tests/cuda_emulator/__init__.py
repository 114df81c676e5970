"""Run minilstm's CUDA kernels on the CPU, so that CI (no GPU) tests what they compute, not only that they compile.

``compile_source(text, cooperative)`` builds a ``.cu`` source with g++ and ``emulator.h`` (how it works, and what
it can and cannot check, is written there) and returns a stand-in for ``cupy.RawModule``: ``get_function(name)``
gives a kernel called as CuPy calls one, ``kernel(grid, block, args, shared_mem=...)``, with numpy arrays where
CuPy takes device arrays and numpy scalars for the scalar parameters. ``emulated_cupy_backend()`` is the real
``CupyBackend`` running on numpy arrays and these kernels: the GPU tests run on it where no GPU is.
"""

import collections
import ctypes
import hashlib
import itertools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEADER = HERE / "emulator.h"
FLAGS = ["-std=c++17", "-O2", "-fPIC", "-shared", "-w"]
DEFAULT_SHARED_LIMIT = 48 * 1024  # what a CUDA kernel may use without opting in to more

_SCALARS = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
            np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.float32): ctypes.c_float,
            np.dtype(np.float64): ctypes.c_double}
_launches: dict[str, itertools.count] = {}  # per kernel: the emulator picks its block interleaving by launch
_libraries: dict[str, ctypes.CDLL] = {}
calls: collections.Counter = collections.Counter()  # kernel launches by name, and "matmul" (a cuBLAS call on a GPU)


def available() -> bool:
    return shutil.which("g++") is not None


class EmulatorError(RuntimeError):
    """A launch the emulator refused or a kernel that broke a CUDA rule (the message says which)."""


def _argument(value):
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    if isinstance(value, np.generic) and value.dtype in _SCALARS:
        return _SCALARS[value.dtype](value.item())
    raise TypeError(f"kernel argument {value!r}: pass a numpy array or a sized numpy scalar, as with CuPy")


def _dim3(value) -> ctypes.Array:
    value = tuple(value) + (1,) * (3 - len(tuple(value)))
    return (ctypes.c_uint * 3)(*value)


class EmulatedKernel:
    def __init__(self, library, name: str, cooperative: bool):
        self.name = name
        self.cooperative = cooperative
        self.max_dynamic_shared_size_bytes = DEFAULT_SHARED_LIMIT  # settable, as on CuPy's RawKernel
        self._launch = getattr(library, f"emu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._error = library.emu_last_error
        self._error.restype = ctypes.c_char_p

    def __call__(self, grid, block, args, *, shared_mem=0):
        calls[self.name] += 1
        values = [_argument(a) for a in args]
        pointers = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
        sizes = (ctypes.c_size_t * max(1, len(values)))(*[ctypes.sizeof(v) for v in values])
        status = self._launch(_dim3(grid), _dim3(block), ctypes.c_size_t(shared_mem),
                              ctypes.c_size_t(self.max_dynamic_shared_size_bytes), ctypes.c_int(self.cooperative),
                              ctypes.c_uint64(next(_launches.setdefault(self.name, itertools.count()))), pointers,
                              sizes, ctypes.c_int(len(values)))
        if status != 0:
            raise EmulatorError(self._error().decode())


class EmulatedModule:
    def __init__(self, library, kernels: list[str], cooperative: bool):
        self._library = library
        self.kernels = kernels
        self.cooperative = cooperative

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.kernels:
            raise AttributeError(f"no kernel {name!r} in this module (it has: {', '.join(self.kernels)})")
        return EmulatedKernel(self._library, name, self.cooperative)


def kernel_names(source: str) -> list[str]:
    """The ``extern "C"`` kernels a source defines, after its macros are expanded."""
    expanded = subprocess.run(["g++", "-std=c++17", "-E", "-P", "-x", "c++", "-include", str(HEADER), "-"],
                              input=source, capture_output=True, text=True, check=True).stdout
    names = re.findall(r'extern\s+"C"\s+void\s+(\w+)\s*\(', expanded)
    return sorted(set(names))


def compile_source(source: str, cooperative: bool = False) -> EmulatedModule:
    """Build ``source`` (the text of a ``.cu`` file) for the emulator; cached by content for the process and on
    disk."""
    key = hashlib.sha256((HEADER.read_text() + source + " ".join(FLAGS)).encode()).hexdigest()[:16]
    names = kernel_names(source)
    if key not in _libraries:
        cache = Path(tempfile.gettempdir()) / "minilstm-cuda-emulator"
        library = cache / f"{key}.so"
        if not library.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as build:  # one per build: parallel runs never share files
                build = Path(build)
                (build / "kernels.cu").write_text(source)
                unit = [f'#include "{HEADER}"', '#include "kernels.cu"'] + [f"EMU_EXPORT({n})" for n in names]
                (build / "unit.cpp").write_text("\n".join(unit) + "\n")
                result = subprocess.run(["g++", *FLAGS, "unit.cpp", "-o", "kernels.so"], cwd=build,
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    raise EmulatorError(f"the kernels do not build for the emulator:\n{result.stderr}")
                (build / "kernels.so").replace(library)  # whole or not at all
        _libraries[key] = ctypes.CDLL(str(library))
    return EmulatedModule(_libraries[key], names, cooperative)


class NumpyAsCupy:
    """The part of the ``cupy`` namespace the backend uses, on numpy."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asarray(array, dtype=None):
        """A copy, always: ``cupy.asarray`` of a host array is a new device array, and code that writes to the
        result must not write to the caller's array here either."""
        return np.array(array, dtype=dtype, copy=True)

    @staticmethod
    def matmul(*args, **kwargs):
        calls["matmul"] += 1
        return np.matmul(*args, **kwargs)

    @staticmethod
    def asnumpy(array):
        return np.array(array, copy=True)


def emulated_cupy_backend(recurrence: str = "per-step", resident_blocks: int = 4, max_chunk: int = 5, edit=None):
    """The real ``CupyBackend`` on numpy arrays and emulated kernels. ``resident_blocks`` stands for the GPU's
    capacity, which sets how the persistent kernels split the hidden units over blocks; a small ``max_chunk``
    makes them stage their inputs in several chunks even at the small sizes the emulator can run fast. ``edit``
    (source text -> source text) changes the kernel sources before they are built: the tests break a kernel on
    purpose to see that they notice."""
    from minilstm.backends.cupy import CupyBackend

    chunk_limit = max_chunk

    class EmulatedCupyBackend(CupyBackend):
        name = f"cupy-emulated-{recurrence}"
        max_chunk = chunk_limit

        def __init__(self):
            def build(source, cooperative=False):
                return compile_source(edit(source) if edit else source, cooperative)

            self._start(NumpyAsCupy(), build, recurrence)

        def synchronize(self):
            pass

        def describe(self):
            return f"{self.name} (CPU emulator)"

        def _resident_blocks(self):
            return resident_blocks

    return EmulatedCupyBackend()
