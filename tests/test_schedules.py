"""Learning-rate schedules: each against its formula in plain Python and, where torch has the same schedule, against
torch.optim.lr_scheduler; every optimizer stepping at the scheduled rates; the state through a JSON round trip
continuing a run to the bit; the constant schedule without warm-up leaving today's steps as they were."""

import json
import math

import numpy as np
import pytest
import torch

from minilstm.errors import MinilstmError
from minilstm.optim import OPTIMIZERS, make_optimizer
from minilstm.schedules import SCHEDULES, Schedule


def expected_rate(name, lr, t, warmup=0, total=None, low=0.0, scale=1.0):
    """The module's formulas, written again."""
    peak = lr * scale
    if t <= warmup:
        return peak * t / warmup
    if name == "inverse-sqrt":
        return peak / math.sqrt(t / max(warmup, 1))
    if name == "cosine":
        p = min(1.0, (t - 1 - warmup) / (total - warmup))
        return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * p))
    return peak


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_rates_match_the_formulas(name, warmup):
    total = 40
    schedule = Schedule(name, warmup, total if name == "cosine" else None, min_learning_rate=1e-5)
    for t in range(1, total + 10):
        got = schedule.rate(0.003, t)
        assert got == pytest.approx(expected_rate(name, 0.003, t, warmup, total, 1e-5), rel=1e-13), t
        assert schedule.learning_rate == got and schedule.step == t
    if warmup:
        assert Schedule(name, warmup, total).rate(0.003, warmup) == pytest.approx(0.003, rel=1e-15)


def test_constant_without_warmup_is_the_learning_rate_itself():
    schedule = Schedule()
    assert all(schedule.rate(0.001, t) == 0.001 for t in range(1, 100))


def test_cosine_ends_at_its_floor_and_stays():
    schedule = Schedule("cosine", 3, 20, min_learning_rate=1e-4)
    assert schedule.rate(0.01, 4) == pytest.approx(0.01, rel=1e-15)  # the first step after warm-up: the peak
    assert schedule.rate(0.01, 23) == pytest.approx(1e-4, rel=1e-12)
    assert schedule.rate(0.01, 500) == pytest.approx(1e-4, rel=1e-12)


def torch_rates(scheduler_of, steps, lr=0.01):
    """The rate torch's scheduler gives each of ``steps`` steps (the one in force when ``optimizer.step`` runs)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = scheduler_of(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_and_cosine_agree_with_torch():
    warmup, total, low = 5, 30, 2e-4
    ours = Schedule("cosine", warmup, total, min_learning_rate=low)
    theirs = torch_rates(lambda opt: torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=low)], milestones=[warmup]),
        total)
    np.testing.assert_allclose([ours.rate(0.01, t) for t in range(1, total + 1)], theirs, rtol=1e-10)


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_plateau_agrees_with_torch_one_epoch_sooner(patience):
    """Ours reduces after ``patience`` epochs without a new best, as Keras does; torch's ReduceLROnPlateau after
    more than ``patience``: so ours with patience p is torch's with p - 1 (threshold 0: any decrease is better)."""
    losses = [3.0, 2.5, 2.6, 2.6, 2.4, 2.5, 2.5, 2.5, 2.5, 2.3, 2.31, 2.32, 2.33, 2.34, 2.35, 2.36, 2.2]
    ours = Schedule("plateau", plateau_factor=0.3, plateau_patience=patience)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=patience - 1, threshold=0.0)
    for epoch, loss in enumerate(losses, start=1):
        ours.end_epoch(loss)
        theirs.step(loss)
        assert ours.rate(0.01, 100 * epoch) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), epoch


def test_plateau_rule():
    schedule = Schedule("plateau", plateau_factor=0.5, plateau_patience=2)
    reduced = [schedule.end_epoch(loss) for loss in [1.0, 0.9, 0.95, 0.95, 0.94, 0.93, 0.8]]
    assert reduced == [False, False, False, True, False, True, False]  # the count restarts after a reduction
    assert schedule.scale == 0.25 and schedule.best == 0.8 and schedule.bad_epochs == 0
    assert [schedule.end_epoch(0.85) for _ in range(2)] == [False, True]
    assert schedule.rate(0.01, 3) == 0.00125
    warm = Schedule("plateau", warmup_steps=4)
    warm.scale = 0.5
    assert warm.rate(0.01, 2) == pytest.approx(0.0025, rel=1e-15)


def test_other_schedules_ignore_the_validation_loss():
    schedule = Schedule("constant")
    assert not any(schedule.end_epoch(1.0 + k) for k in range(10))
    assert schedule.rate(0.01, 5) == 0.01


def test_bad_settings_are_refused():
    with pytest.raises(MinilstmError, match="unknown learning-rate schedule"):
        Schedule("linear")
    with pytest.raises(MinilstmError, match="cosine schedule needs"):
        Schedule("cosine", 10, 10)
    with pytest.raises(MinilstmError, match="cosine schedule needs"):
        Schedule("cosine")
    with pytest.raises(ValueError):
        Schedule("plateau", plateau_factor=1.0)
    with pytest.raises(ValueError):
        Schedule(warmup_steps=-1)


# --- the optimizers at the scheduled rates ---------------------------------------------------------------------


def reference_steps(name, params, grad_steps, rates, hyper):
    """Every optimizer's formula (minilstm/optim.py) with step t at rates[t - 1], in plain float64 Python."""
    params = [float(p) for p in params]
    state = [[0.0] * len(params) for _ in range(2)]
    for t, (grads, lr) in enumerate(zip(grad_steps, rates, strict=True), start=1):
        for k, g in enumerate(grads):
            if name == "rmsprop":
                v = state[0][k] = hyper["rho"] * state[0][k] + (1 - hyper["rho"]) * g * g
                params[k] -= lr * g / (math.sqrt(v) + hyper["epsilon"])
            elif name == "adam":
                m = state[0][k] = hyper["beta_1"] * state[0][k] + (1 - hyper["beta_1"]) * g
                v = state[1][k] = hyper["beta_2"] * state[1][k] + (1 - hyper["beta_2"]) * g * g
                params[k] -= lr / (1 - hyper["beta_1"] ** t) * m / (
                    math.sqrt(v) / math.sqrt(1 - hyper["beta_2"] ** t) + hyper["epsilon"])
            else:
                b = state[0][k] = hyper["momentum"] * state[0][k] + g
                params[k] -= lr * b
    return np.array(params)


HYPER = {"rmsprop": {"rho": 0.9, "epsilon": 1e-7}, "adam": {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7},
         "sgd": {"momentum": 0.9}}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_every_optimizer_steps_at_the_scheduled_rates(cpu_backend, rng, optimizer, name):
    n, steps, warmup = 20, 9, 4
    params = rng.standard_normal(n)
    grad_steps = [rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 0, n) for _ in range(steps)]
    schedule = Schedule(name, warmup, steps if name == "cosine" else None, min_learning_rate=1e-4)
    rates = [expected_rate(name, 0.01, t, warmup, steps, 1e-4) for t in range(1, steps + 1)]
    opt = make_optimizer(optimizer, cpu_backend, n, np.float64, learning_rate=0.01, schedule=schedule,
                         **HYPER[optimizer])
    ours = params.copy()
    for grads in grad_steps:
        opt.step(ours, grads)
    np.testing.assert_allclose(ours, reference_steps(optimizer, params, grad_steps, rates, HYPER[optimizer]),
                               rtol=1e-12, atol=1e-15)
    assert opt.last_learning_rate == schedule.learning_rate == pytest.approx(rates[-1], rel=1e-13)
    assert opt.config()["schedule"]["name"] == name


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_constant_schedule_changes_no_bit(cpu_backend, rng, optimizer):
    n = 30
    params = rng.standard_normal(n).astype(np.float32)
    grad_steps = [rng.standard_normal(n).astype(np.float32) for _ in range(5)]
    results = []
    for schedule in (None, Schedule()):
        opt = make_optimizer(optimizer, cpu_backend, n, np.float32, learning_rate=0.003, schedule=schedule)
        ours = params.copy()
        for grads in grad_steps:
            opt.step(ours, grads)
        results.append(ours.tobytes())
    assert results[0] == results[1]


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_through_json_continues_to_the_bit(rng, name):
    """Stop after k steps (inside the warm-up, and after a plateau reduction), write the optimizer's config and
    state as a checkpoint does, build everything again from them, go on: the same bits as without stopping."""
    n, steps, warmup, k = 16, 12, 8, 5
    params = rng.standard_normal(n)
    grad_steps = [rng.standard_normal(n) for _ in range(steps)]

    def fresh():
        schedule = Schedule(name, warmup, steps if name == "cosine" else None, plateau_patience=1)
        return make_optimizer("adam", "numpy", n, np.float64, learning_rate=0.01, schedule=schedule)

    losses = {1: 1.0, 3: 1.1, 5: 1.2, 7: 0.9, 9: 1.0, 11: 1.0}  # an "epoch" ends after every other step

    def run(opt, weights, first, stop):
        for index in range(first, stop):
            opt.step(weights, grad_steps[index])
            if index in losses:
                opt.schedule.end_epoch(losses[index])

    whole, weights = fresh(), params.copy()
    run(whole, weights, 0, steps)
    first, resumed = fresh(), params.copy()
    run(first, resumed, 0, k)
    assert first.iterations < warmup and (name != "plateau" or first.schedule.scale < 1)  # inside the warm-up,
    # and for plateau after a reduction
    saved = json.loads(json.dumps({**first.config(), "iterations": first.iterations}))
    state = {key: value.copy() for key, value in first.state().items()}
    config = dict(saved["schedule"])
    second = make_optimizer("adam", "numpy", n, np.float64, learning_rate=saved["learning_rate"],
                            schedule=Schedule.from_config(config, config.pop("state")))
    second.load_state(state)
    second.iterations = saved["iterations"]
    run(second, resumed, k, steps)
    assert resumed.tobytes() == weights.tobytes()
    assert second.schedule.state() == whole.schedule.state()
