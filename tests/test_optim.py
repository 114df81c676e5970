"""RMSprop against the formula, computed independently in float64 with plain Python floats."""

import math

import numpy as np
import pytest

from minilstm.backend import get_backend
from minilstm.optim import RMSprop


def reference_rmsprop(params, grad_steps, lr, rho, eps, inside):
    params = [float(p) for p in params]
    velocity = [0.0] * len(params)
    for grads in grad_steps:
        for k, g in enumerate(grads):
            velocity[k] = rho * velocity[k] + (1 - rho) * g * g
            denom = math.sqrt(velocity[k] + eps) if inside else math.sqrt(velocity[k]) + eps
            params[k] -= lr * g / denom
    return np.array(params)


@pytest.mark.parametrize("inside", [False, True])
def test_rmsprop_steps_match_formula(cpu_backend, rng, inside):
    n = 50
    params = rng.standard_normal(n)
    # Gradients spanning 1e-6 .. 1: where epsilon's place matters.
    grad_steps = [rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n) for _ in range(7)]
    optimizer = RMSprop(cpu_backend, n, np.float64, learning_rate=0.01, rho=0.8, epsilon=1e-7,
                        epsilon_inside_sqrt=inside)
    ours = params.copy()
    for grads in grad_steps:
        optimizer.step(ours, grads.copy())
    expected = reference_rmsprop(params, grad_steps, 0.01, 0.8, 1e-7, inside)
    np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=1e-15)
    assert optimizer.iterations == 7


def test_epsilon_placement_differs_for_small_gradients():
    """The two formulas must not coincide: with g ~ 1e-4 the Keras 3 step is visibly smaller."""
    backend = get_backend("numpy")
    steps = {}
    for inside in (False, True):
        p = np.zeros(1)
        RMSprop(backend, 1, np.float64, epsilon_inside_sqrt=inside).step(p, np.array([1e-4]))
        steps[inside] = -p[0]
    assert steps[False] > 1.5 * steps[True]
