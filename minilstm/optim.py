"""Optimizers over the model's flat parameter buffer: RMSprop (the Keras example's), Adam, SGD with momentum, and
gradient clipping by the global norm. The math, once (g: the gradient, w: the weights, t: the step, from 1; every
state array starts at 0):

RMSprop, as tf.keras computed it when the Keras example's log was made (docs/design.md, "Optimizers"); Keras defaults lr
0.001, rho 0.9, epsilon 1e-7, no momentum, not centred:

    v <- rho * v + (1 - rho) * g^2
    w <- w - lr * g / (sqrt(v) + epsilon)                  (default: epsilon outside the square root)
    w <- w - lr * g / sqrt(v + epsilon)                    (epsilon_inside_sqrt=True: Keras 3's formula)

Epsilon's place matters here: the loss is a mean over 64 x 59 positions, so many gradients are ~1e-4 or smaller,
and sqrt(v + 1e-7) damps their steps up to ~10x. The tf.keras form is what reproduces the example's curve.

Adam (Kingma & Ba, with bias correction), as torch.optim.Adam computes it; Keras defaults lr 0.001, beta_1 0.9,
beta_2 0.999, epsilon 1e-7:

    m <- beta_1 * m + (1 - beta_1) * g
    v <- beta_2 * v + (1 - beta_2) * g^2
    w <- w - lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)

torch's default epsilon is 1e-8 (pass epsilon=1e-8 for its defaults). Keras writes the same step as
w <- w - lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon): its epsilon is the paper's "epsilon
hat", added to the uncorrected sqrt(v), so Keras with epsilon e equals this formula with epsilon
e / sqrt(1 - beta_2^t) (the two differ only where sqrt(v) is near epsilon, i.e. for tiny gradients).

SGD with momentum, torch's form; Keras defaults lr 0.01, momentum 0 (then plainly w <- w - lr * g):

    b <- momentum * b + g
    w <- w - lr * b

Keras keeps u = -lr * b instead (u <- momentum * u - lr * g; w <- w + u): the same steps for a fixed lr.

Gradient clipping by the global norm (Keras's ``global_clipnorm``; ``clip_norm=None``, the default, is off), before
any of the updates above:

    norm = sqrt(sum of g^2 over the whole flat gradient buffer)           (summed in float64, in a fixed order)
    g <- g * clip_norm / max(norm, clip_norm)

So a norm at or below ``clip_norm`` leaves g as it is (the factor is exactly 1), and a larger one scales g down to
norm ``clip_norm``. A NaN or infinite norm makes the factor NaN (as Keras does), so a blown-up gradient reaches the
weights as NaN and training's finite check stops the run instead of taking a zero step. torch's
``clip_grad_norm_`` divides by norm + 1e-6 instead (a factor smaller by a relative ~1e-6 / norm).

Each update is one fused pass over the flat buffers on every backend (``Backend.rmsprop_update``, ``adam_update``,
``sgd_update``); the clipping factor comes from ``Backend.clip_scale`` (a host float on the CPU; on a GPU a device
array that the update kernels read, so clipping never waits for the GPU). The gradient buffer itself is never
written: the factor is applied as each element is read.

A learning-rate schedule (``schedule=``, a ``schedules.Schedule``) gives each step its rate, lr_t, in place of lr in
the formulas above (Adam's step size is lr_t / (1 - beta_1^t)); without one every step uses ``learning_rate``. The
rate is a host float passed to the update as lr always was, so a schedule costs nothing on any backend.
"""

from .backends import get_backend
from .errors import MinilstmError
from .schedules import Schedule

OPTIMIZERS = ("rmsprop", "adam", "sgd")
# Keras's defaults, per optimizer, for a learning rate left out.
DEFAULT_LEARNING_RATE = {"rmsprop": 0.001, "adam": 0.001, "sgd": 0.01}


class Optimizer:
    """What every optimizer shares: the flat state arrays (named, in the model's flat parameter layout), the step
    counter, clipping, ``config()`` for checkpoints, and ``state()``/``load_state()`` for resuming."""

    name = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, backend, num_params, dtype, learning_rate, clip_norm=None, schedule: Schedule | None = None):
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be positive (or None: no clipping), got {clip_norm}")
        self.backend = backend = get_backend(backend)  # a backend or its name
        self.learning_rate = learning_rate
        self.clip_norm = clip_norm
        self.schedule = schedule  # None: every step at learning_rate
        self.iterations = 0  # steps taken
        self.last_learning_rate = None  # the rate of the last step taken
        self._state = {name: backend.xp.zeros(num_params, dtype=dtype) for name in self.state_names}

    def step(self, flat_params, flat_grads):
        """Update ``flat_params`` in place from ``flat_grads`` (1-D arrays of the same layout); ``flat_grads`` is
        only read, clipped or not."""
        grad_scale = None if self.clip_norm is None else self.backend.clip_scale(flat_grads, self.clip_norm)
        self.iterations += 1
        self.last_learning_rate = self.current_learning_rate()
        self._update(flat_params, flat_grads, grad_scale, self.last_learning_rate)

    def current_learning_rate(self) -> float:
        """The rate of step ``iterations`` (the step just taken or being taken): the schedule's, or
        ``learning_rate`` itself."""
        if self.schedule is None:
            return self.learning_rate
        return self.schedule.rate(self.learning_rate, max(1, self.iterations))

    def _update(self, flat_params, flat_grads, grad_scale, learning_rate):
        raise NotImplementedError

    def hyper(self) -> dict:
        """The hyper-parameters, by the names the constructor takes."""
        raise NotImplementedError

    def config(self) -> dict:
        """Name and hyper-parameters (a checkpoint stores this, with ``iterations``)."""
        config = {"name": self.name, "learning_rate": self.learning_rate, **self.hyper(), "clip_norm": self.clip_norm}
        if self.schedule is not None:
            config["schedule"] = {**self.schedule.config(), "state": self.schedule.state()}
        return config

    def state(self) -> dict:
        """The state arrays by name: the live device arrays (a checkpoint copies them to the host)."""
        return dict(self._state)

    def load_state(self, state: dict):
        """Copy ``state`` (name -> flat host or device array, as ``state()`` gives) into this optimizer's arrays."""
        if state is None or set(state) != set(self.state_names):
            held = ", ".join(sorted(state or {})) or "nothing"
            raise MinilstmError(f"the optimizer state holds {held}; {self.name} needs {', '.join(self.state_names)}")
        for name, array in self._state.items():
            if tuple(state[name].shape) != array.shape:
                raise MinilstmError(f"the optimizer state {name!r} has shape {tuple(state[name].shape)}, the model "
                                    f"needs {array.shape}")
            array[...] = self.backend.asarray(state[name], dtype=array.dtype)


class RMSprop(Optimizer):
    """Keras defaults: learning_rate 0.001, rho 0.9, epsilon 1e-7; no momentum, not centred. State: velocity."""

    name = "rmsprop"
    state_names = ("velocity",)

    def __init__(self, backend, num_params, dtype, learning_rate=0.001, rho=0.9, epsilon=1e-7,
                 epsilon_inside_sqrt=False, clip_norm=None, schedule=None):
        super().__init__(backend, num_params, dtype, learning_rate, clip_norm, schedule)
        self.rho = rho
        self.epsilon = epsilon
        self.epsilon_inside_sqrt = epsilon_inside_sqrt

    @property
    def velocity(self):
        return self._state["velocity"]

    def _update(self, flat_params, flat_grads, grad_scale, learning_rate):
        self.backend.rmsprop_update(flat_params, flat_grads, self.velocity, learning_rate, self.rho,
                                    self.epsilon, self.epsilon_inside_sqrt, grad_scale)

    def hyper(self) -> dict:
        return {"rho": self.rho, "epsilon": self.epsilon, "epsilon_inside_sqrt": self.epsilon_inside_sqrt}


class Adam(Optimizer):
    """Keras defaults: learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7 (torch: eps 1e-8). State: m (first
    moment), v (second moment)."""

    name = "adam"
    state_names = ("m", "v")

    def __init__(self, backend, num_params, dtype, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 clip_norm=None, schedule=None):
        super().__init__(backend, num_params, dtype, learning_rate, clip_norm, schedule)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def _update(self, flat_params, flat_grads, grad_scale, learning_rate):
        t = self.iterations
        step_size = learning_rate / (1.0 - self.beta_1**t)
        bias_correction2_sqrt = (1.0 - self.beta_2**t) ** 0.5
        self.backend.adam_update(flat_params, flat_grads, self._state["m"], self._state["v"], step_size, self.beta_1,
                                 self.beta_2, self.epsilon, bias_correction2_sqrt, grad_scale)

    def hyper(self) -> dict:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class SGD(Optimizer):
    """Keras defaults: learning_rate 0.01, momentum 0. State: momentum (the buffer b)."""

    name = "sgd"
    state_names = ("momentum",)

    def __init__(self, backend, num_params, dtype, learning_rate=0.01, momentum=0.0, clip_norm=None, schedule=None):
        super().__init__(backend, num_params, dtype, learning_rate, clip_norm, schedule)
        self.momentum = momentum

    def _update(self, flat_params, flat_grads, grad_scale, learning_rate):
        self.backend.sgd_update(flat_params, flat_grads, self._state["momentum"], learning_rate, self.momentum,
                                grad_scale)

    def hyper(self) -> dict:
        return {"momentum": self.momentum}


_CLASSES = {"rmsprop": RMSprop, "adam": Adam, "sgd": SGD}


def make_optimizer(name, backend, num_params, dtype, **hyper) -> Optimizer:
    """The optimizer called ``name`` (one of ``OPTIMIZERS``) over ``num_params`` parameters; ``hyper``: its
    constructor's keyword arguments (learning_rate, clip_norm, schedule, and its own)."""
    if name not in _CLASSES:
        raise MinilstmError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return _CLASSES[name](backend, num_params, dtype, **hyper)
