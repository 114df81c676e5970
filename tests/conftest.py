import zlib

import numpy as np
import pytest

from minilstm.backends import BACKENDS

# Backends that run on any machine; the GPU backend has its own tests that skip without a device.
CPU_BACKENDS = [name for name in ("numpy", "numba") if name in BACKENDS]


def pytest_collection_modifyitems(items):
    """mpi and browser tests are slow tests too: ``-m "not slow"`` (the quick tier) leaves them out."""
    for item in items:
        if item.get_closest_marker("mpi") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    from minilstm.backends import get_backend

    return get_backend(request.param)


@pytest.fixture
def rng(request):
    # A fresh, different draw for every test, reproducible from the test's name (crc32, not hash(): Python salts
    # string hashes per process, so a failing draw could not be replayed).
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
