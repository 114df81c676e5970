"""RMSprop, as tf.keras computed it when the Keras example's log was made (DESIGN.md §5).

    v <- rho * v + (1 - rho) * g^2                         (v starts at 0)
    w <- w - lr * g / (sqrt(v) + epsilon)                  (default: epsilon outside the square root)
    w <- w - lr * g / sqrt(v + epsilon)                    (epsilon_inside_sqrt=True: Keras 3's formula)

Epsilon's place matters here: the loss is a mean over 64 x 59 positions, so many gradients are ~1e-4 or smaller,
and sqrt(v + 1e-7) damps their steps up to ~10x. The tf.keras form is what reproduces the example's curve.
"""


class RMSprop:
    """Keras defaults: learning_rate 0.001, rho 0.9, epsilon 1e-7; no momentum, not centred."""

    def __init__(self, backend, num_params, dtype, learning_rate=0.001, rho=0.9, epsilon=1e-7,
                 epsilon_inside_sqrt=False):
        self.backend = backend
        self.learning_rate = learning_rate
        self.rho = rho
        self.epsilon = epsilon
        self.epsilon_inside_sqrt = epsilon_inside_sqrt
        self.velocity = backend.xp.zeros(num_params, dtype=dtype)
        self.iterations = 0

    def step(self, flat_params, flat_grads):
        """Update ``flat_params`` in place from ``flat_grads`` (1-D arrays of the same layout)."""
        self.backend.rmsprop_update(flat_params, flat_grads, self.velocity, self.learning_rate, self.rho,
                                    self.epsilon, self.epsilon_inside_sqrt)
        self.iterations += 1

    def config(self) -> dict:
        return {"name": "rmsprop", "learning_rate": self.learning_rate, "rho": self.rho, "epsilon": self.epsilon,
                "epsilon_inside_sqrt": self.epsilon_inside_sqrt}
