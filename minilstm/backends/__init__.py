"""The array backends and their registry: ``get_backend(name)`` gives one shared instance per name.

``base.Backend`` is the NumPy reference every other backend is checked against; ``numba`` (the CPU) and ``cupy``
(NVIDIA GPUs, our CUDA kernels) subclass it. Each backend is imported only when asked for, so a machine without
Numba or CuPy runs the others; no backend module imports this registry.
"""

from ..errors import MinilstmError
from .base import Backend, NumpyBackend


def _numba_backend():
    from .numba import NumbaBackend

    return NumbaBackend()


def _cupy_backend(recurrence: str = "per-step"):
    from .cupy import CupyBackend  # imported on demand: CuPy is an optional extra

    return CupyBackend(recurrence)


BACKENDS = {"numpy": NumpyBackend, "numba": _numba_backend, "cupy": _cupy_backend,
            "cupy-persistent": lambda: _cupy_backend("persistent")}


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def default_backend_name() -> str:
    """``cupy`` where CuPy sees a CUDA GPU, else ``numba`` where it imports (the fast CPU path), else ``numpy``."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy"
    except Exception:  # noqa: BLE001, S110 - not installed, no driver, no device: all mean "not this one"
        pass
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"


_INSTANCES: dict[str, Backend] = {}


def get_backend(name) -> Backend:
    """The backend called ``name`` (one shared instance per name); a ``MinilstmError`` listing the choices when
    there is none."""
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise MinilstmError(f"unknown backend {name!r}; choose one of: {', '.join(available_backends())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = BACKENDS[name]()
    return _INSTANCES[name]
