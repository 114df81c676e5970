r"""The LSTM layer: forward over a sequence, and backward through time.

Keras layout and gate order (docs/design.md, "The LSTM cell"): ``kernel`` (D, 4H), ``recurrent_kernel`` (H, 4H),
``bias`` (4H), gate blocks i, f, c, o along the last axis. Inputs are token ids (T, B), where the input projection
``onehot(x_t) @ kernel`` is the row gather ``kernel[x_t]`` (D = the vocabulary), or dense vectors (T, B, D), where it is
one GEMM over all time steps at once. Arrays are time-major: ``(T, B, ...)``, so one time step is one contiguous slice.
A ``reverse`` layer (the backward half of a bidirectional one) runs the same loop over the time-reversed inputs; its
outputs are handed back in the inputs' time order.

Forward, for t = 1..T (z holds the four pre-activations side by side):

    z_t   = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias         (x_t @ kernel = kernel[x_t] for token ids)
    i_t   = sigmoid(z_i)     f_t = sigmoid(z_f)     g_t = tanh(z_c)     o_t = sigmoid(z_o)
    c_t   = f_t * c_{t-1} + i_t * g_t
    h_t   = o_t * tanh(c_t)

Backward, given dL/dh_t from above (the layer's outputs) and dh, dc carried back from step t+1:

    dh     = dh_from_above_t + dz_{t+1} @ recurrent_kernel^T         (dz_{T+1} term replaced by dL/dh_T)
    do     = dh * tanh(c_t)
    dc     = dc_from_t+1 + dh * o_t * (1 - tanh(c_t)^2)              (dc from T+1 is dL/dc_T)
    di     = dc * g_t            df = dc * c_{t-1}            dg = dc * i_t
    dz     = [di * i(1-i),  df * f(1-f),  dg * (1-g^2),  do * o(1-o)]
    dc_{t-1} = dc * f_t

and the weight gradients, summed over all steps at once after the loop (one large GEMM each, not T small ones):

    d recurrent_kernel = sum_t h_{t-1}^T @ dz_t          d bias = sum_t sum_b dz_t
    d kernel[v]        = sum over (t, b) with x_t[b] == v of dz_t[b]      (scatter-add: onehot^T @ dz; token ids)
    d kernel           = sum_t x_t^T @ dz_t,     d x_t = dz_t @ kernel^T    (dense inputs)
"""

import math
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------------
# The pointwise cell, reference versions (any xp). Backends may replace them with fused kernels.


def _sigmoid(xp, x):
    # exp(-x) overflows to inf for very negative x; 1 / (1 + inf) = 0 is the right limit, so silence the warning.
    if xp.__name__ == "numpy":
        with xp.errstate(over="ignore"):
            return 1.0 / (1.0 + xp.exp(-x))
    return 1.0 / (1.0 + xp.exp(-x))


def cell_forward(xp, gates, z_recurrent, c_prev, c, h):
    """``gates`` (B, 4H) holds the input part of the pre-activations on entry (x-projection + bias) and the
    activated gates on exit; with ``z_recurrent`` = h_prev @ recurrent_kernel and ``c_prev`` (B, H) it writes the
    new cell state ``c`` and the output ``h``. In place, so a fast kernel makes one pass and allocates nothing."""
    units = c_prev.shape[1]
    z = gates + z_recurrent
    gates[:, : 2 * units] = _sigmoid(xp, z[:, : 2 * units])
    gates[:, 2 * units : 3 * units] = xp.tanh(z[:, 2 * units : 3 * units])
    gates[:, 3 * units :] = _sigmoid(xp, z[:, 3 * units :])
    i, f, g, o = (gates[:, k * units : (k + 1) * units] for k in range(4))
    c[...] = f * c_prev + i * g
    h[...] = o * xp.tanh(c)


def cell_backward(xp, gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev):
    """Write ``dz`` (B, 4H), the gradient w.r.t. the pre-activations, and ``dc_prev`` (may alias ``dc``), given the
    activated ``gates``, the states ``c_prev`` and ``c``, and the incoming gradients: ``dh = dh_recurrent +
    dh_output`` (``dh_output`` None when the layer's outputs are unused) and ``dc`` (math: module doc)."""
    units = c.shape[1]
    dh = dh_recurrent if dh_output is None else dh_recurrent + dh_output
    i, f, g, o = (gates[:, k * units : (k + 1) * units] for k in range(4))
    tanh_c = xp.tanh(c)
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    dz[:, :units] = dc_total * g * i * (1.0 - i)
    dz[:, units : 2 * units] = dc_total * c_prev * f * (1.0 - f)
    dz[:, 2 * units : 3 * units] = dc_total * i * (1.0 - g * g)
    dz[:, 3 * units :] = dh * tanh_c * o * (1.0 - o)
    dc_prev[...] = dc_total * f


def recurrence_forward(backend, gates, recurrent_kernel, hs, cs, workspace):
    """The time loop, one GEMM and one fused cell per step (math: module doc). ``gates`` (T, B, 4H) holds the
    input part of the pre-activations on entry and the activated gates on exit; ``hs[0]``, ``cs[0]`` hold the
    initial states; writes ``hs[1:]``, ``cs[1:]``."""
    steps, batch, four_units = gates.shape
    recurrent = workspace.get("recurrent", (batch, four_units), gates.dtype)
    for t in range(steps):
        backend.xp.matmul(hs[t], recurrent_kernel, out=recurrent)
        backend.lstm_cell_forward(gates[t], recurrent, cs[t], cs[t + 1], hs[t + 1])


def recurrence_backward(backend, gates, cs, recurrent_kernel, d_outputs, dh, dc, dz):
    """Backpropagation through time, one fused cell and one GEMM per step (math: module doc). ``dh``, ``dc``
    (B, H) hold dL/dh_T, dL/dc_T on entry and dL/dh_0, dL/dc_0 on exit; writes ``dz`` (T, B, 4H)."""
    recurrent_kernel_t = recurrent_kernel.T
    for t in reversed(range(gates.shape[0])):
        d_output = None if d_outputs is None else d_outputs[t]
        backend.lstm_cell_backward(gates[t], cs[t], cs[t + 1], dh, d_output, dc, dz[t], dc)
        backend.xp.matmul(dz[t], recurrent_kernel_t, out=dh)


# ---------------------------------------------------------------------------------------------------------------
# The layer over a whole sequence.


class Workspace:
    """Arrays kept from one batch to the next, so that a training step allocates no large array. One per layer and
    per parallel shard. Each name owns one flat buffer that grows to the largest size asked for, and an array is a
    view of its first elements: batches of many shapes (``--mask-padding``'s length buckets) share one buffer
    instead of keeping one array per shape."""

    def __init__(self, xp):
        self.xp = xp
        self.buffers = {}

    def get(self, name, shape, dtype):
        size = math.prod(shape)
        key = (name, str(dtype))
        buffer = self.buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[key] = self.xp.empty(size, dtype=dtype)
        return buffer[:size].reshape(shape)


@dataclass
class LSTMCache:
    """What backward needs from forward, in the order the loop ran (time-reversed for a ``reverse`` layer).
    ``hs[0]``, ``cs[0]`` are the initial states; ``hs[1:]`` the outputs."""

    inputs: object  # (T, B) token ids or (T, B, D) vectors, in loop order
    gates: object  # (T, B, 4H) activated gates
    hs: object  # (T + 1, B, H)
    cs: object  # (T + 1, B, H)
    reverse: bool = False

    @property
    def outputs(self):
        """The outputs (T, B, H) in the inputs' time order (a view)."""
        return self.hs[:0:-1] if self.reverse else self.hs[1:]


def is_token_ids(inputs) -> bool:
    return inputs.dtype.kind in "iu"


def lstm_forward(backend, kernel, recurrent_kernel, bias, inputs, h0, c0, workspace=None, reverse=False) -> LSTMCache:
    """Run the layer over ``inputs``, token ids (T, B) or vectors (T, B, D), from states ``h0``, ``c0`` (B, H); with
    ``reverse`` from the last step to the first. With a ``workspace`` the arrays of the returned cache are the
    workspace's, valid until its next use."""
    xp = backend.xp
    workspace = workspace or Workspace(xp)
    steps, batch = inputs.shape[:2]
    units = recurrent_kernel.shape[0]
    dtype = recurrent_kernel.dtype
    if reverse:
        inputs = xp.ascontiguousarray(inputs[::-1])
    gates = workspace.get("gates", (steps, batch, 4 * units), dtype)
    if is_token_ids(inputs):
        backend.gather_rows_add(kernel, inputs, bias, out=gates)  # the input projections of all steps at once
    else:
        backend.matmul(inputs.reshape(steps * batch, -1), kernel, out=gates.reshape(steps * batch, 4 * units))
        gates += bias
    hs = workspace.get("hs", (steps + 1, batch, units), dtype)
    cs = workspace.get("cs", (steps + 1, batch, units), dtype)
    hs[0] = h0
    cs[0] = c0
    backend.lstm_recurrence_forward(gates, recurrent_kernel, hs, cs, workspace)
    return LSTMCache(inputs, gates, hs, cs, reverse)


def lstm_backward(backend, cache: LSTMCache, recurrent_kernel, d_outputs, d_h_last, d_c_last, grads,
                  workspace=None, kernel=None):
    """Backpropagate through time. ``d_outputs`` (T, B, H), in the inputs' time order, or None (outputs unused, as
    in the encoder); ``d_h_last``, ``d_c_last`` (B, H) the gradients w.r.t. the final states. Writes the weight
    gradients into ``grads["kernel"]``, ``grads["recurrent_kernel"]``, ``grads["bias"]`` (overwriting them) and
    returns ``(d_h0, d_c0)``; given the ``kernel`` of a layer over vectors, ``(d_h0, d_c0, d_inputs)``, with
    ``d_inputs`` (T, B, D) in the inputs' time order."""
    xp = backend.xp
    steps, batch, four_units = cache.gates.shape
    units = four_units // 4
    workspace = workspace or Workspace(xp)
    dz = workspace.get("dz", cache.gates.shape, cache.gates.dtype)
    dh = d_h_last.copy()
    dc = d_c_last.copy()
    if d_outputs is not None:
        d_outputs = xp.ascontiguousarray(d_outputs[::-1] if cache.reverse else d_outputs)
    backend.lstm_recurrence_backward(cache.gates, cache.cs, recurrent_kernel, d_outputs, dh, dc, dz, workspace)
    dz_flat = dz.reshape(steps * batch, four_units)
    backend.matmul(cache.hs[:-1].reshape(steps * batch, units).T, dz_flat, out=grads["recurrent_kernel"])
    grads["bias"][...] = dz_flat.sum(axis=0)
    if is_token_ids(cache.inputs):
        grads["kernel"][...] = 0
        backend.scatter_add_rows(grads["kernel"], cache.inputs.reshape(-1), dz_flat)
        return dh, dc
    inputs_flat = cache.inputs.reshape(steps * batch, -1)
    backend.matmul(inputs_flat.T, dz_flat, out=grads["kernel"])
    if kernel is None:
        return dh, dc
    d_inputs = backend.matmul(dz_flat, kernel.T).reshape(cache.inputs.shape)
    return dh, dc, (d_inputs[::-1] if cache.reverse else d_inputs)
