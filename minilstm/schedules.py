"""Learning-rate schedules, for every optimizer: the rate each step uses, as a function of the step number t (from
1), the optimizer's base rate lr, and for ``plateau`` of what the validation losses did. The math, once
(docs/design.md, "Learning-rate schedules"):

    warm-up (any schedule, W = warmup_steps > 0):   rate_t = lr * t / W                       for t <= W
    constant:                                       rate_t = lr
    inverse-sqrt:                                   rate_t = lr * sqrt(max(W, 1) / t)
    cosine (T = total_steps, p = (t - 1 - W) / (T - W), at most 1):
                                                    rate_t = min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2
    plateau:                                        rate_t = lr * factor^k,  k: the reductions so far

So warm-up climbs linearly to lr at step W, and each schedule starts from lr right after it: inverse-sqrt is lr at
t = W and decays as 1 / sqrt(t) (the Transformer's, fairseq's ``inverse_sqrt``); cosine is lr at its first step
after warm-up and reaches ``min_learning_rate`` after T steps, where it stays (torch's ``CosineAnnealingLR`` over
T - W steps); plateau multiplies the rate by ``factor`` once ``patience`` epochs in a row have not lowered the best
validation loss (Keras's ``ReduceLROnPlateau`` with ``min_delta`` 0: torch's reduces one epoch later), and warm-up
applies on top of it.

Why the step number and not a running product: the rate of step t is recomputed from t alone (and plateau's factor),
so a resumed run gets the rates an uninterrupted one gets, to the bit, given the state of ``state()``. The constant
schedule without warm-up returns lr itself, so the default run's arithmetic does not change.
"""

import math

from .errors import MinilstmError

SCHEDULES = ("constant", "inverse-sqrt", "cosine", "plateau")


class Schedule:
    """The rate of each optimizer step (module doc). ``total_steps`` is cosine's T (required there, ignored
    elsewhere); ``min_learning_rate`` is cosine's floor; ``plateau_factor`` and ``plateau_patience`` are plateau's.
    An optimizer built with ``schedule=`` asks ``rate(lr, t)`` before each step; ``end_epoch(val_loss)`` feeds
    plateau (the other schedules ignore it)."""

    def __init__(self, name="constant", warmup_steps=0, total_steps=None, min_learning_rate=0.0, plateau_factor=0.5,
                 plateau_patience=2):
        if name not in SCHEDULES:
            raise MinilstmError(f"unknown learning-rate schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps}")
        if name == "cosine" and (total_steps is None or total_steps <= warmup_steps):
            raise MinilstmError(f"the cosine schedule needs more steps in all ({total_steps}) than warm-up steps "
                                f"({warmup_steps})")
        if not 0.0 < plateau_factor < 1.0 or plateau_patience < 1:
            raise ValueError(f"plateau_factor must be in (0, 1) and plateau_patience >= 1, got {plateau_factor}, "
                             f"{plateau_patience}")
        if min_learning_rate < 0:
            raise ValueError(f"min_learning_rate must be >= 0, got {min_learning_rate}")
        self.name = name
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.min_learning_rate = float(min_learning_rate)
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)
        # The state: plateau's best validation loss, epochs since it improved and its factor so far; the last
        # step's number and rate (for the history and the checkpoint's reader).
        self.best = math.inf
        self.bad_epochs = 0
        self.scale = 1.0
        self.step = 0
        self.learning_rate = None

    def rate(self, learning_rate: float, t: int) -> float:
        """The rate of step ``t`` (from 1) for the base rate ``learning_rate``; remembered as ``self.learning_rate``."""
        w = self.warmup_steps
        peak = learning_rate if self.scale == 1.0 else learning_rate * self.scale  # plateau's factor (else 1)
        if t <= w:
            rate = peak * (t / w)
        elif self.name == "inverse-sqrt":
            rate = peak * math.sqrt(max(w, 1) / t)
        elif self.name == "cosine":
            progress = min(1.0, (t - 1 - w) / (self.total_steps - w))
            low = self.min_learning_rate
            rate = low + (peak - low) * (1.0 + math.cos(math.pi * progress)) / 2.0
        else:  # constant, plateau
            rate = peak
        self.step, self.learning_rate = t, rate
        return rate

    def end_epoch(self, val_loss: float) -> bool:
        """Plateau's rule after an epoch's validation loss: a new best resets the count, else after ``patience``
        epochs in a row without one the rate is multiplied by ``factor`` and the count starts again. True when it
        just reduced the rate. Other schedules only keep the best."""
        if val_loss < self.best:
            self.best, self.bad_epochs = val_loss, 0
            return False
        if self.name != "plateau":
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.plateau_patience:
            return False
        self.scale *= self.plateau_factor
        self.bad_epochs = 0
        return True

    def config(self) -> dict:
        """The schedule's settings (a checkpoint stores them, with ``state()``)."""
        return {"name": self.name, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "min_learning_rate": self.min_learning_rate, "plateau_factor": self.plateau_factor,
                "plateau_patience": self.plateau_patience}

    def state(self) -> dict:
        return {"step": self.step, "learning_rate": self.learning_rate, "best": self.best,
                "bad_epochs": self.bad_epochs, "scale": self.scale}

    def load_state(self, state: dict):
        self.step = int(state["step"])
        self.learning_rate = state["learning_rate"]
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.scale = float(state["scale"])

    @classmethod
    def from_config(cls, config: dict, state: dict | None = None) -> "Schedule":
        schedule = cls(**config)
        if state is not None:
            schedule.load_state(state)
        return schedule
