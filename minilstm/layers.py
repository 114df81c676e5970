"""Dense, softmax cross-entropy, the one-hot gather/scatter, and Keras's initialisers.

Everything here is written against an array namespace ``xp`` (numpy or cupy) and is the plain reference that
faster backend kernels are tested against.
"""

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Initialisers (Keras 3 / tf.keras recipes; docs/design.md, "Keras semantics kept"). They draw on the host with a numpy
# Generator, so the same seed gives the same weights on every backend.


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """U(-limit, limit) with limit = sqrt(6 / (fan_in + fan_out)), fan_in = shape[0], fan_out = shape[1]."""
    fan_in, fan_out = shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def orthogonal(rng: np.random.Generator, shape: tuple[int, int], gain: float = 1.0) -> np.ndarray:
    """Keras's orthogonal: QR of a normal matrix, columns sign-fixed by diag(R), transposed when rows < cols."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q


INIT_SCHEMES = ("keras", "pytorch")
"""The named initialisations every layer offers (``initial_weights(rng, scheme)``):

- ``keras`` (the default, the Keras example's): glorot_uniform kernels, orthogonal recurrent kernels, zero biases
  but the LSTM forget gate's (1), embeddings uniform(-0.05, 0.05);
- ``pytorch`` (PyTorch's module defaults): every LSTM weight and both of its biases uniform(-1/sqrt(H), 1/sqrt(H))
  (our one bias is their sum, b_ih + b_hh, so it starts as PyTorch's effective bias), every linear map's weight and
  bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), embeddings standard normal.

The scale differs a lot at the input: an embedding row of E standard normals through U(+-1/sqrt(H)) gives gate
pre-activations of standard deviation about sqrt(E / (3 H)) (0.58 at E = H = 256), where a one-hot character through
glorot_uniform gives about 0.04 and a Keras embedding of 64 about 0.002."""


def check_init_scheme(scheme: str) -> str:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, not {scheme!r}")
    return scheme


def fan_in_uniform(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's nn.Linear and nn.LSTM defaults."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def lstm_bias(units: int) -> np.ndarray:
    """Zeros except the forget-gate block, which is 1 (Keras ``unit_forget_bias=True``); gate order i, f, c, o."""
    bias = np.zeros(4 * units)
    bias[units : 2 * units] = 1.0
    return bias


# ---------------------------------------------------------------------------------------------------------------
# One-hot as a gather. onehot(ids) @ W == W[ids], and d W = onehot(ids)^T @ dY is a scatter-add of the rows of dY
# into the rows of dW picked by ids.


def gather_rows_add(xp, table, ids, bias, out=None):
    """``onehot(ids) @ table + bias`` without the one-hot: rows of ``table`` plus ``bias``, shape
    ``ids.shape + (table.shape[1],)``, written into ``out`` when given."""
    out = xp.take(table, ids, axis=0, out=out)
    out += bias
    return out


def scatter_add_rows(xp, out, ids, values):
    """``out += onehot(ids)^T @ values``: add row k of ``values`` (n, d) into row ids[k] of ``out`` (V, d)."""
    xp.add.at(out, ids, values)


# ---------------------------------------------------------------------------------------------------------------
# Softmax cross-entropy from the logits, as TensorFlow computes it when a softmax feeds categorical_crossentropy.
#
#   log p = z - max(z) - log(sum(exp(z - max(z))))        (stable log-softmax)
#   loss  = -sum_n log p[n, y_n]                          (the caller divides by the number of positions)
#   dL/dz = softmax(z) - onehot(y)                         (times grad_scale, i.e. 1 / positions for the mean)
#
# With label smoothing eps (torch.nn.CrossEntropyLoss(label_smoothing=eps)) the target is the distribution
# q = (1 - eps) * onehot(y) + eps / V over the V classes instead of onehot(y):
#
#   loss_n = -sum_k q_k log p_k = -(1 - eps) log p[y] - (eps / V) sum_k log p_k
#          = log(sum(exp(z - max))) - (1 - eps) (z_y - max) - (eps / V) sum_k (z_k - max)
#   dL/dz  = softmax(z) - q                                (sum_k q_k = 1, so the log-sum-exp term gives softmax)
#
# eps = 0 runs the code without it, so its bits are the plain cross-entropy's. The hits stay argmax == y.
#
# A target id below 0 (IGNORE) marks a padding position under --mask-padding: its row adds nothing to the loss or
# the hits, and its gradient row is exactly zero.

IGNORE = -1


def softmax_cross_entropy(xp, logits, target_ids, grad_scale, label_smoothing=0.0):
    """Loss sum, number of argmax hits, and the gradient of ``grad_scale * loss_sum`` w.r.t. the logits.

    ``logits`` (n, V), ``target_ids`` (n,) ints, negative for rows to ignore; ``label_smoothing`` eps in [0, 1).
    The two counts are returned as 0-d device arrays so a GPU backend can accumulate them over an epoch without
    synchronising each step.
    """
    rows = xp.arange(logits.shape[0])
    counted = target_ids >= 0
    safe_targets = xp.where(counted, target_ids, 0)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    n_correct = ((logits.argmax(axis=1) == target_ids) & counted).sum()
    d_logits = xp.exp(log_probs)
    if label_smoothing:
        off = label_smoothing / logits.shape[1]  # every class's share
        row_loss = -(1.0 - label_smoothing) * log_probs[rows, safe_targets] - off * log_probs.sum(axis=1)
        loss_sum = xp.where(counted, row_loss, 0.0).sum()
        d_logits -= off
        d_logits[rows, safe_targets] -= 1.0 - label_smoothing
    else:
        loss_sum = -(log_probs[rows, safe_targets] * counted).sum()
        d_logits[rows, safe_targets] -= 1.0
    d_logits *= grad_scale
    d_logits[~counted] = 0.0
    return loss_sum, n_correct, d_logits


# ---------------------------------------------------------------------------------------------------------------
# The attention weights: a softmax over each row's first ``lengths[b]`` positions, exactly 0 on the others.
#
#   a_s = exp(z_s - max) / sum_{s' < len} exp(z_s' - max)  for s < len,   a_s = 0 for s >= len
#   dL/dz_s = a_s * (dL/da_s - sum_s' a_s' dL/da_s')        (0 where a_s = 0)


def masked_softmax(xp, scores, lengths):
    """``scores`` (B, T, S) -> weights (B, T, S): each row of sentence b over its first ``lengths[b]`` positions."""
    valid = xp.arange(scores.shape[2]).reshape(1, 1, -1) < lengths.reshape(-1, 1, 1)
    scores = xp.where(valid, scores, -xp.inf)
    weights = xp.exp(scores - scores.max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    return weights


def masked_softmax_backward(xp, weights, d_weights):
    """dL/d scores from the weights and dL/d weights, both (B, T, S)."""
    return weights * (d_weights - (weights * d_weights).sum(axis=2, keepdims=True))


# ---------------------------------------------------------------------------------------------------------------
# Counter-based dropout masks: splitmix64's finaliser (Steele, Lea & Flood 2014) over a counter built from the
# position, keyed by the seed. Every element's draw depends on its coordinates only, like Philox in cuRAND.

_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_STRIDES = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03), np.uint64(0xABC98388FB8FAC03),
            np.uint64(0x8CB92BA72F3D8DD7))


def _mix(x):
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX_1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX_2
    return x ^ (x >> np.uint64(31))


def dropout_key(*words: int) -> int:
    """One 64-bit key from a few integers (a seed, a step, a layer): the key of ``dropout_mask``."""
    state = np.random.SeedSequence([int(w) & 0xFFFFFFFFFFFFFFFF for w in words]).generate_state(1, np.uint64)[0]
    return int(state)


def dropout_mask(xp, shape, rate: float, key: int, row_offset: int = 0, dtype=np.float32):
    """Inverted-dropout multipliers for a (T, B, F) tensor: 0 with probability ``rate``, else 1 / (1 - rate).
    Element (t, b, f) keeps iff u >= rate, with u = mix(key + t*S0 + (row_offset + b)*S1 + f*S2) / 2^64 (53 bits),
    so rows ``row_offset..`` of a batch get the same multipliers whatever else is in the batch."""
    steps, batch, features = shape
    with np.errstate(over="ignore"):
        t = xp.arange(steps, dtype=np.uint64).reshape(steps, 1, 1) * _STRIDES[0]
        b = xp.arange(row_offset, row_offset + batch, dtype=np.uint64).reshape(1, batch, 1) * _STRIDES[1]
        f = xp.arange(features, dtype=np.uint64).reshape(1, 1, features) * _STRIDES[2]
        bits = _mix((t + b) + (f + np.uint64(key)))
    uniform = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (uniform >= rate).astype(dtype) * (1.0 / (1.0 - rate))
