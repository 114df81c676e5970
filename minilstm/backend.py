"""Array backends: the array namespace ``xp`` plus the few operations a faster backend replaces.

The model is written once against a backend object. The plain ``Backend`` implements every operation with the
reference ``xp`` code from ``lstm`` and ``layers``; a faster backend (Numba on the CPU, our CUDA kernels through
CuPy on the GPU) subclasses it and overrides some of them, and its tests check each override against the
reference on random inputs.
"""

import numpy as np

from . import layers, lstm
from .errors import MinilstmError


class Backend:
    """NumPy, no compiled kernels: the reference every other backend is checked against."""

    name = "numpy"
    xp = np

    def asarray(self, array, dtype=None):
        """Host (numpy) array -> device array."""
        return self.xp.asarray(array, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """Device array -> host numpy array."""
        return np.asarray(array)

    def synchronize(self):
        """Wait for queued device work (a no-op on the CPU); benchmarks call it before reading a clock."""

    # The replaceable operations. Signatures are fixed; outputs are written into the arrays passed in.

    def lstm_cell_forward(self, z, c_prev, gates, c, h):
        lstm.cell_forward(self.xp, z, c_prev, gates, c, h)

    def lstm_cell_backward(self, gates, c_prev, c, dh, dc, dz, dc_prev):
        lstm.cell_backward(self.xp, gates, c_prev, c, dh, dc, dz, dc_prev)

    def gather_rows(self, table, ids):
        return layers.gather_rows(self.xp, table, ids)

    def scatter_add_rows(self, out, ids, values):
        layers.scatter_add_rows(self.xp, out, ids, values)

    def softmax_cross_entropy(self, logits, target_ids, grad_scale):
        return layers.softmax_cross_entropy(self.xp, logits, target_ids, grad_scale)

    def rmsprop_update(self, params, grads, velocity, learning_rate, rho, epsilon, epsilon_inside_sqrt):
        """One RMSprop step over flat arrays, in place (math in ``optim.RMSprop``)."""
        xp = self.xp
        velocity *= rho
        velocity += (1.0 - rho) * grads * grads
        if epsilon_inside_sqrt:
            denom = xp.sqrt(velocity + epsilon)
        else:
            denom = xp.sqrt(velocity)
            denom += epsilon
        params -= learning_rate * grads / denom


NumpyBackend = Backend

BACKENDS = {"numpy": NumpyBackend}


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a ``MinilstmError`` that lists the choices when there is none."""
    if isinstance(name, Backend):
        return name
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise MinilstmError(
            f"unknown backend {name!r}; choose one of: {', '.join(available_backends())}"
        ) from None
    return factory()
