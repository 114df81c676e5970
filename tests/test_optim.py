"""The optimizers (RMSprop, Adam, SGD with momentum) and gradient clipping against their formulas, computed
independently in float64 with plain Python floats; state() and load_state() continue a run exactly."""

import math

import numpy as np
import pytest

from minilstm.backends import get_backend
from minilstm.errors import MinilstmError
from minilstm.optim import DEFAULT_LEARNING_RATE, OPTIMIZERS, RMSprop, make_optimizer


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


# --- Adam, SGD, clipping: the formulas of minilstm/optim.py, written again here in plain float64 Python -----------


def reference_clip(grads, clip_norm):
    """Keras's global_clipnorm: g * clip_norm / max(norm, clip_norm) (an exactly rounded sum of squares here)."""
    if clip_norm is None:
        return list(grads)
    norm = math.sqrt(math.fsum(g * g for g in grads))
    return [g * (clip_norm / max(norm, clip_norm)) for g in grads]


def reference_adam(params, grad_steps, lr, beta_1, beta_2, eps, clip_norm=None):
    params = [float(p) for p in params]
    m, v = [0.0] * len(params), [0.0] * len(params)
    for t, grads in enumerate(grad_steps, start=1):
        for k, g in enumerate(reference_clip(grads, clip_norm)):
            m[k] = beta_1 * m[k] + (1 - beta_1) * g
            v[k] = beta_2 * v[k] + (1 - beta_2) * g * g
            params[k] -= lr / (1 - beta_1**t) * m[k] / (math.sqrt(v[k]) / math.sqrt(1 - beta_2**t) + eps)
    return np.array(params)


def reference_sgd(params, grad_steps, lr, momentum, clip_norm=None):
    """Keras's form: u = momentum * u - lr * g; w += u (optim writes torch's, b = momentum * b + g; w -= lr * b)."""
    params = [float(p) for p in params]
    velocity = [0.0] * len(params)
    for grads in grad_steps:
        for k, g in enumerate(reference_clip(grads, clip_norm)):
            velocity[k] = momentum * velocity[k] - lr * g
            params[k] += velocity[k]
    return np.array(params)


def random_steps(rng, n, steps=7):
    """Gradients spanning 1e-6 .. 1 (where epsilon matters), a different draw per step."""
    return [rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n) for _ in range(steps)]


def run(optimizer, params, grad_steps):
    ours = params.copy()
    for grads in grad_steps:
        before = grads.copy()
        optimizer.step(ours, grads)
        assert np.array_equal(grads, before), "the optimizer wrote into the gradient"
    assert optimizer.iterations == len(grad_steps)
    return ours


@pytest.mark.parametrize("clip", [None, "active"])
def test_adam_steps_match_formula(cpu_backend, rng, clip):
    n = 50
    params, grad_steps = rng.standard_normal(n), random_steps(rng, n)
    # "active": below the smallest step's norm, so every step is scaled down.
    clip_norm = None if clip is None else 0.5 * min(np.linalg.norm(g) for g in grad_steps)
    beta_1, beta_2 = rng.uniform(0.5, 0.95), rng.uniform(0.9, 0.9999)
    optimizer = make_optimizer("adam", cpu_backend, n, np.float64, learning_rate=0.01, beta_1=beta_1, beta_2=beta_2,
                               epsilon=1e-7, clip_norm=clip_norm)
    expected = reference_adam(params, grad_steps, 0.01, beta_1, beta_2, 1e-7, clip_norm)
    np.testing.assert_allclose(run(optimizer, params, grad_steps), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("clip", [None, "active"])
def test_sgd_steps_match_formula(cpu_backend, rng, momentum, clip):
    n = 50
    params, grad_steps = rng.standard_normal(n), random_steps(rng, n)
    clip_norm = None if clip is None else 0.5 * min(np.linalg.norm(g) for g in grad_steps)
    optimizer = make_optimizer("sgd", cpu_backend, n, np.float64, learning_rate=0.05, momentum=momentum,
                               clip_norm=clip_norm)
    expected = reference_sgd(params, grad_steps, 0.05, momentum, clip_norm)
    np.testing.assert_allclose(run(optimizer, params, grad_steps), expected, rtol=1e-13, atol=1e-15)


def test_rmsprop_with_clipping_matches_formula(cpu_backend, rng):
    n = 50
    params, grad_steps = rng.standard_normal(n), random_steps(rng, n)
    clip_norm = 0.5 * min(np.linalg.norm(g) for g in grad_steps)
    optimizer = RMSprop(cpu_backend, n, np.float64, learning_rate=0.01, rho=0.8, clip_norm=clip_norm)
    expected = reference_rmsprop(params, [reference_clip(g, clip_norm) for g in grad_steps], 0.01, 0.8, 1e-7, False)
    np.testing.assert_allclose(run(optimizer, params, grad_steps), expected, rtol=1e-13, atol=1e-15)


def test_the_defaults_are_keras(cpu_backend):
    """Keras's defaults (SGD's learning rate differs from the others); the config names every hyper-parameter."""
    configs = {name: make_optimizer(name, cpu_backend, 3, np.float64).config() for name in OPTIMIZERS}
    assert configs == {
        "rmsprop": {"name": "rmsprop", "learning_rate": 0.001, "rho": 0.9, "epsilon": 1e-7,
                    "epsilon_inside_sqrt": False, "clip_norm": None},
        "adam": {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
                 "clip_norm": None},
        "sgd": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.0, "clip_norm": None}}
    assert {name: DEFAULT_LEARNING_RATE[name] for name in OPTIMIZERS} == {
        name: config["learning_rate"] for name, config in configs.items()}
    with pytest.raises(MinilstmError, match="unknown optimizer 'adagrad'.*rmsprop, adam, sgd"):
        make_optimizer("adagrad", cpu_backend, 3, np.float64)
    with pytest.raises(ValueError, match="clip_norm"):
        make_optimizer("sgd", cpu_backend, 3, np.float64, clip_norm=0.0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_norm_below_the_threshold_changes_nothing_bit_for_bit(cpu_backend, rng, name):
    """The factor is then exactly 1: a clipped run equals an unclipped one to the bit, in float32 too."""
    n = 300
    for dtype in (np.float32, np.float64):
        params = rng.standard_normal(n).astype(dtype)
        grad_steps = [g.astype(dtype) for g in random_steps(rng, n, 3)]
        threshold = 2 * max(np.linalg.norm(g) for g in grad_steps)
        plain = run(make_optimizer(name, cpu_backend, n, dtype), params, grad_steps)
        clipped = run(make_optimizer(name, cpu_backend, n, dtype, clip_norm=threshold), params, grad_steps)
        assert plain.tobytes() == clipped.tobytes()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_gradients_with_clipping(cpu_backend, rng, name):
    """Norm 0: the factor is clip_norm / clip_norm = 1, no 0/0; a zero gradient moves nothing."""
    n = 20
    params = rng.standard_normal(n)
    ours = run(make_optimizer(name, cpu_backend, n, np.float64, clip_norm=1.0), params, [np.zeros(n)] * 2)
    assert ours.tobytes() == params.tobytes()
    assert cpu_backend.clip_scale(np.zeros(n), 1.0) == 1.0


def test_clip_scale(cpu_backend, rng):
    """Above the threshold the clipped gradient has norm clip_norm exactly (to rounding); a non-finite norm gives a
    NaN factor (as Keras's), never a silent 0 or 1."""
    g = rng.standard_normal(1000) * 3
    norm = math.sqrt(math.fsum(g * g))
    assert abs(cpu_backend.sum_of_squares(g) - norm**2) <= 1e-13 * norm**2
    for clip_norm in (norm / 7, norm * 0.999, norm, norm * 5):
        scale = cpu_backend.clip_scale(g, clip_norm)
        assert abs(scale - min(1.0, clip_norm / norm)) <= 1e-15
        assert abs(np.linalg.norm(g * scale) - min(norm, clip_norm)) <= 1e-13 * norm
    for bad in (np.inf, np.nan):
        g_bad = g.copy()
        g_bad[17] = bad
        assert math.isnan(cpu_backend.clip_scale(g_bad, 1.0))
    huge = np.full(4, 1e200)  # finite gradients whose squares overflow: not a zero step either
    with np.errstate(over="ignore"):
        assert math.isnan(cpu_backend.clip_scale(huge, 1.0))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_and_load_state(cpu_backend, rng, name):
    """``state()`` names every array; a fresh optimizer loaded with it (and the step count) continues exactly."""
    n = 30
    params, grad_steps = rng.standard_normal(n), random_steps(rng, n, 6)
    hyper = {"clip_norm": 0.3}
    whole = make_optimizer(name, cpu_backend, n, np.float64, **hyper)
    expected = run(whole, params, grad_steps)
    first = make_optimizer(name, cpu_backend, n, np.float64, **hyper)
    halfway = run(first, params, grad_steps[:3])
    assert set(first.state()) == {"rmsprop": {"velocity"}, "adam": {"m", "v"}, "sgd": {"momentum"}}[name]
    second = make_optimizer(name, cpu_backend, n, np.float64, **hyper)
    second.load_state({k: np.array(v) for k, v in first.state().items()})
    second.iterations = first.iterations
    for grads in grad_steps[3:]:
        second.step(halfway, grads)
    assert halfway.tobytes() == expected.tobytes()
    with pytest.raises(MinilstmError, match="needs"):
        second.load_state({"other": np.zeros(n)})
    with pytest.raises(MinilstmError, match="shape"):
        second.load_state({k: np.zeros(n + 1) for k in first.state()})


def test_adam_epsilon_hat_is_keras(rng):
    """Keras's own Adam step (its epsilon added to the uncorrected sqrt(v): "epsilon hat") is ours with epsilon
    eps / sqrt(1 - beta_2^t): the relation the module docstring states."""
    n, eps, beta_1, beta_2 = 40, 1e-7, 0.9, 0.999
    grad_steps = random_steps(rng, n, 1)
    params = rng.standard_normal(n)
    g = grad_steps[0]
    m, v = (1 - beta_1) * g, (1 - beta_2) * g * g
    keras = params - 0.001 * math.sqrt(1 - beta_2) / (1 - beta_1) * m / (np.sqrt(v) + eps)
    ours = reference_adam(params, grad_steps, 0.001, beta_1, beta_2, eps / math.sqrt(1 - beta_2))
    np.testing.assert_allclose(ours, keras, rtol=1e-13)
    assert not np.allclose(reference_adam(params, grad_steps, 0.001, beta_1, beta_2, eps), keras, rtol=1e-6, atol=0)
