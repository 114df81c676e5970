"""Fused Numba kernels for the CPU backend, each checked against the reference in ``lstm``/``layers``.

Why not ``math.tanh``/``math.exp``: this llvmlite has no SVML, so those are scalar libm calls (~20 ns each) and
the five activations per cell element cost more than the GEMM. In float32 we use a rational approximation of
tanh, pure arithmetic that LLVM vectorises (the approach TensorFlow/Eigen take on the CPU), and
sigmoid(x) = (1 + tanh(x/2)) / 2. Its coefficients were fitted here by weighted least squares on [0, 9]; measured
error against float64 tanh is at most 3.4e-7 (a few float32 ulp). Float64 keeps libm's exact functions, so the
float64 gradient checks stay exact. No fastmath anywhere.

All kernels release the GIL (``nogil``) so the backend can run batch shards in parallel threads, and are cached on
disk (``cache=True``) so only the first run pays the compile time. ``error_model="numpy"``: a division by zero
gives inf/NaN (which training's NaN guard reports) instead of raising, and without that check per division LLVM
can vectorise the loops (measured: the float32 tanh loop runs 7x faster).
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

_F = np.float32
# tanh(x) ~= x * P(x^2) / Q(x^2) for |x| <= 9; beyond that tanh is 1 to float32 precision.
_P0, _P1, _P2, _P3, _P4 = _F(9.99999983e-01), _F(1.33924336e-01), _F(3.50913553e-03), _F(2.08319746e-05), \
    _F(1.36634600e-08)
_Q1, _Q2, _Q3, _Q4 = _F(4.67257523e-01), _F(2.59285251e-02), _F(3.30778819e-04), _F(7.90295430e-07)
_CLAMP, _HALF, _ONE = _F(9.0), _F(0.5), _F(1.0)


def tanh_f32(x):
    x = min(max(x, -_CLAMP), _CLAMP)
    s = x * x
    p = (((_P4 * s + _P3) * s + _P2) * s + _P1) * s + _P0
    q = (((_Q4 * s + _Q3) * s + _Q2) * s + _Q1) * s + _ONE
    return x * p / q


_tanh_f32_jit = njit(inline="always", error_model="numpy")(tanh_f32)


def act_tanh(x):
    """tanh: the float32 approximation for float32, libm for float64 (resolved at compile time)."""
    return math.tanh(x)


def act_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def one(x):
    """1 in the type of ``x``: a bare ``1`` is int64 in Numba and would turn float32 arithmetic into float64."""
    return 1.0


@overload(one, inline="always", jit_options={"error_model": "numpy"})
def _one(x):
    if x == types.float32:
        return lambda x: _ONE
    return lambda x: 1.0


@overload(act_tanh, inline="always", jit_options={"error_model": "numpy"})
def _act_tanh(x):
    if x == types.float32:
        return lambda x: _tanh_f32_jit(x)
    return lambda x: math.tanh(x)


@overload(act_sigmoid, inline="always", jit_options={"error_model": "numpy"})
def _act_sigmoid(x):
    if x == types.float32:
        return lambda x: _HALF + _HALF * _tanh_f32_jit(_HALF * x)
    # exp(-x) = inf for x < -709 gives 1 / inf = 0, the right limit.
    return lambda x: 1.0 / (1.0 + math.exp(-x))


# The cell kernels go row by row in short passes, each touching few arrays: LLVM vectorises a loop only when it
# can rule out overlap between the arrays it writes and reads, and gives up past a handful of runtime checks
# (one pass over all seven arrays ran 4-5x slower, measured).


@njit(cache=True, nogil=True, error_model="numpy")
def lstm_cell_forward(gates, z_recurrent, c_prev, c, h):
    """gates <- act(gates + z_recurrent) in place; c = f*c_prev + i*g; h = o*tanh(c)."""
    batch, units = c_prev.shape
    for b in range(batch):
        # Each gate block through a view and a loop from 0: loops over range(start, stop) with start > 0 ran at
        # half the speed here (measured), so no offset ranges.
        z_rec, gate = z_recurrent[b], gates[b]
        g_if, z_if = gate[: 2 * units], z_rec[: 2 * units]
        for k in range(2 * units):  # i, f
            g_if[k] = act_sigmoid(g_if[k] + z_if[k])
        g_c, z_c = gate[2 * units : 3 * units], z_rec[2 * units : 3 * units]
        for k in range(units):  # c~ (g)
            g_c[k] = act_tanh(g_c[k] + z_c[k])
        g_o, z_o = gate[3 * units :], z_rec[3 * units :]
        for k in range(units):  # o
            g_o[k] = act_sigmoid(g_o[k] + z_o[k])
        c_prev_b, c_b, h_b = c_prev[b], c[b], h[b]
        for j in range(units):
            c_new = gate[units + j] * c_prev_b[j] + gate[j] * gate[2 * units + j]
            c_b[j] = c_new
            h_b[j] = gate[3 * units + j] * act_tanh(c_new)


@njit(inline="always", error_model="numpy")
def _cell_backward_row(g_i, g_f, g_c, g_o, c_prev, c, dh_recurrent, dh_output, dc, d_i, d_f, d_c, d_o, dc_prev, dh,
                       tanh_c, dc_total):
    """One row of the cell's backward (math in ``lstm.cell_backward``) over its units, for both the whole-row and
    the unit-range kernels (so a unit gets the same bits from either); ``dh``, ``tanh_c``, ``dc_total`` are scratch.
    One pass per output array, each reading few others (see above)."""
    if dh_output is None:
        for j in range(dh.size):
            dh[j] = dh_recurrent[j]
    else:
        for j in range(dh.size):
            dh[j] = dh_recurrent[j] + dh_output[j]
    for j in range(dh.size):
        tanh_c[j] = act_tanh(c[j])
    for j in range(dh.size):
        t = tanh_c[j]
        dc_total[j] = dc[j] + dh[j] * g_o[j] * (one(t) - t * t)
    for j in range(dh.size):
        i = g_i[j]
        d_i[j] = dc_total[j] * g_c[j] * i * (one(i) - i)
    for j in range(dh.size):
        f = g_f[j]
        d_f[j] = dc_total[j] * c_prev[j] * f * (one(f) - f)
    for j in range(dh.size):
        g = g_c[j]
        d_c[j] = dc_total[j] * g_i[j] * (one(g) - g * g)
    for j in range(dh.size):
        o = g_o[j]
        d_o[j] = dh[j] * tanh_c[j] * o * (one(o) - o)
    for j in range(dh.size):
        dc_prev[j] = dc_total[j] * g_f[j]


@njit(cache=True, nogil=True, error_model="numpy")
def lstm_cell_backward(gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev):
    """dh = dh_recurrent (+ dh_output unless None); dz and dc_prev (may alias dc) as in ``lstm.cell_backward``."""
    batch, units = c.shape
    dh = np.empty(units, dtype=c.dtype)
    tanh_c = np.empty(units, dtype=c.dtype)
    dc_total = np.empty(units, dtype=c.dtype)
    for b in range(batch):
        gate, dz_b = gates[b], dz[b]
        g_i, g_f, g_c, g_o = gate[:units], gate[units : 2 * units], gate[2 * units : 3 * units], gate[3 * units :]
        d_i, d_f, d_c, d_o = dz_b[:units], dz_b[units : 2 * units], dz_b[2 * units : 3 * units], dz_b[3 * units :]
        c_b, c_prev_b, dc_b, dc_prev_b = c[b], c_prev[b], dc[b], dc_prev[b]
        _cell_backward_row(g_i, g_f, g_c, g_o, c_prev_b, c_b, dh_recurrent[b], None if dh_output is None else
                           dh_output[b], dc_b, d_i, d_f, d_c, d_o, dc_prev_b, dh, tanh_c, dc_total)


# The same two cells for the hidden units [first, stop) of every row: what one thread computes when the threads of a
# time loop split the units (``recurrence``, unit split). Each element goes through exactly the operations of
# the kernels above, in the same order, so a unit gets the same bits whichever kernel or thread computes it.


@njit(nogil=True, error_model="numpy")
def lstm_cell_forward_units(gates, z_recurrent, c_prev, c, h, first, stop):
    """``lstm_cell_forward`` on units [first, stop): gate columns first..stop of each of the four gate blocks."""
    units = c_prev.shape[1]
    for b in range(gates.shape[0]):
        gate, z_rec = gates[b], z_recurrent[b]
        g_i, z_i = gate[first:stop], z_rec[first:stop]
        g_f, z_f = gate[units + first : units + stop], z_rec[units + first : units + stop]
        g_c, z_c = gate[2 * units + first : 2 * units + stop], z_rec[2 * units + first : 2 * units + stop]
        g_o, z_o = gate[3 * units + first : 3 * units + stop], z_rec[3 * units + first : 3 * units + stop]
        for k in range(stop - first):
            g_i[k] = act_sigmoid(g_i[k] + z_i[k])
        for k in range(stop - first):
            g_f[k] = act_sigmoid(g_f[k] + z_f[k])
        for k in range(stop - first):
            g_c[k] = act_tanh(g_c[k] + z_c[k])
        for k in range(stop - first):
            g_o[k] = act_sigmoid(g_o[k] + z_o[k])
        c_prev_b, c_b, h_b = c_prev[b, first:stop], c[b, first:stop], h[b, first:stop]
        for j in range(stop - first):
            c_new = g_f[j] * c_prev_b[j] + g_i[j] * g_c[j]
            c_b[j] = c_new
            h_b[j] = g_o[j] * act_tanh(c_new)


@njit(nogil=True, error_model="numpy")
def lstm_cell_backward_units(gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev, first, stop, scratch):
    """``lstm_cell_backward`` on units [first, stop); ``scratch`` (3, >= stop - first) replaces its allocations."""
    units = c.shape[1]
    count = stop - first
    dh, tanh_c, dc_total = scratch[0, :count], scratch[1, :count], scratch[2, :count]
    for b in range(c.shape[0]):
        gate, dz_b = gates[b], dz[b]
        g_i, g_f = gate[first:stop], gate[units + first : units + stop]
        g_c, g_o = gate[2 * units + first : 2 * units + stop], gate[3 * units + first : 3 * units + stop]
        d_i, d_f = dz_b[first:stop], dz_b[units + first : units + stop]
        d_c, d_o = dz_b[2 * units + first : 2 * units + stop], dz_b[3 * units + first : 3 * units + stop]
        c_b, c_prev_b, dc_b, dc_prev_b = c[b, first:stop], c_prev[b, first:stop], dc[b, first:stop], \
            dc_prev[b, first:stop]
        _cell_backward_row(g_i, g_f, g_c, g_o, c_prev_b, c_b, dh_recurrent[b, first:stop], None if dh_output is None
                           else dh_output[b, first:stop], dc_b, d_i, d_f, d_c, d_o, dc_prev_b, dh, tanh_c, dc_total)


@njit(cache=True, nogil=True, error_model="numpy")
def gather_rows_add(table, ids, bias, out):
    """out[n] = table[ids[n]] + bias for flat ids (n,) and out (n, d): the input projection of all steps."""
    for n in range(ids.shape[0]):
        row = ids[n]
        for k in range(table.shape[1]):
            out[n, k] = table[row, k] + bias[k]


@njit(cache=True, nogil=True, error_model="numpy")
def scatter_add_rows(out, ids, values):
    """out[ids[n]] += values[n]."""
    for n in range(ids.shape[0]):
        row = ids[n]
        for k in range(values.shape[1]):
            out[row, k] += values[n, k]


@njit(cache=True, nogil=True, error_model="numpy")
def softmax_cross_entropy(logits, target_ids, grad_scale, d_logits, label_smoothing):
    """Per row: stable log-softmax, loss -log p[target], argmax hit, d_logits = (softmax - onehot) * grad_scale;
    a row whose target is negative (IGNORE) counts nothing and gets a zero gradient. With ``label_smoothing`` eps > 0
    the target is (1 - eps) onehot + eps / V (``layers.softmax_cross_entropy``); eps = 0 runs exactly the plain
    arithmetic. Returns (loss_sum, n_correct); sums in float64 whatever the dtype."""
    loss_sum = 0.0
    n_correct = 0
    rows, vocab = logits.shape
    off = label_smoothing / vocab
    on = 1.0 - label_smoothing + off
    for n in range(rows):
        best = 0
        top = logits[n, 0]
        for k in range(1, vocab):
            if logits[n, k] > top:
                top = logits[n, k]
                best = k
        total = 0.0
        shifted_sum = 0.0  # sum_k (z_k - max) in float64, for label smoothing (the same pass: one read of the row)
        for k in range(vocab):
            e = math.exp(logits[n, k] - top)
            d_logits[n, k] = e
            total += e
            shifted_sum += np.float64(logits[n, k] - top)
        target = target_ids[n]
        if target < 0:  # IGNORE: a padding position under --mask-padding
            for k in range(vocab):
                d_logits[n, k] = 0.0
            continue
        n_correct += best == target
        inv_total = 1.0 / total
        p_target = d_logits[n, target] * inv_total
        if label_smoothing == 0.0:
            loss_sum += math.log(total) - (logits[n, target] - top)
            for k in range(vocab):
                d_logits[n, k] = d_logits[n, k] * inv_total * grad_scale
            d_logits[n, target] = (p_target - 1.0) * grad_scale  # subtract before scaling: exact 0 when p = 1
            continue
        loss_sum += math.log(total) - (1.0 - label_smoothing) * (logits[n, target] - top) - off * shifted_sum
        for k in range(vocab):
            d_logits[n, k] = (d_logits[n, k] * inv_total - off) * grad_scale
        d_logits[n, target] = (p_target - on) * grad_scale
    return loss_sum, n_correct


# The optimizers (math in ``optim``), one pass each over the flat buffers. ``grad_scale``: the clipping factor in the
# gradient's dtype, exactly 1 without clipping (g * 1 is g, bit for bit). The hyper-parameters are Python floats, so
# the arithmetic runs in float64 and each result is rounded once to the arrays' dtype as it is stored.


@njit(cache=True, nogil=True, error_model="numpy")
def sum_of_squares(x):
    """sum(x^2) in float64, one element after another: a fixed order (no fastmath, so LLVM cannot reorder it)."""
    total = 0.0
    for k in range(x.shape[0]):
        value = np.float64(x[k])
        total += value * value
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def rmsprop_update(params, grads, velocity, learning_rate, rho, epsilon, epsilon_inside_sqrt, grad_scale):
    for k in range(params.shape[0]):
        g = grads[k] * grad_scale
        v = rho * velocity[k] + (1 - rho) * g * g
        velocity[k] = v
        if epsilon_inside_sqrt:
            params[k] -= learning_rate * g / math.sqrt(v + epsilon)
        else:
            params[k] -= learning_rate * g / (math.sqrt(v) + epsilon)


_DROP_MIX_1, _DROP_MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_DROP_S0, _DROP_S1, _DROP_S2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03), \
    np.uint64(0xABC98388FB8FAC03)


@njit(cache=True, nogil=True)
def dropout_mask(mask, rate, key, row_offset):
    """``layers.dropout_mask`` in one pass, bit for bit: the same 64-bit counter and mixer per element (all
    arithmetic in uint64, which wraps as numpy's does)."""
    steps, batch, features = mask.shape
    scale = mask.dtype.type(1.0 / (1.0 - rate))
    zero = mask.dtype.type(0.0)
    for t in range(steps):
        for b in range(batch):
            row = np.uint64(t) * _DROP_S0 + np.uint64(row_offset + b) * _DROP_S1 + key
            for f in range(features):
                x = row + np.uint64(f) * _DROP_S2
                x = x ^ (x >> np.uint64(30))
                x = x * _DROP_MIX_1
                x = x ^ (x >> np.uint64(27))
                x = x * _DROP_MIX_2
                x = x ^ (x >> np.uint64(31))
                uniform = np.float64(x >> np.uint64(11)) * 2.0**-53
                mask[t, b, f] = scale if uniform >= rate else zero


@njit(cache=True, nogil=True, error_model="numpy")
def adam_update(params, grads, m, v, step_size, beta_1, beta_2, epsilon, bias_correction2_sqrt, grad_scale):
    for k in range(params.shape[0]):
        g = grads[k] * grad_scale
        m_k = beta_1 * m[k] + (1 - beta_1) * g
        v_k = beta_2 * v[k] + (1 - beta_2) * g * g
        m[k] = m_k
        v[k] = v_k
        params[k] -= step_size * m_k / (math.sqrt(v_k) / bias_correction2_sqrt + epsilon)


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_update(params, grads, momentum_buffer, learning_rate, momentum, grad_scale):
    for k in range(params.shape[0]):
        b = momentum * momentum_buffer[k] + grads[k] * grad_scale
        momentum_buffer[k] = b
        params[k] -= learning_rate * b
