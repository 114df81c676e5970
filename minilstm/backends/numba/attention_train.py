"""The input-feeding attention decoder's whole time loop (every layer of its LSTM stack) as one compiled call
forward and one backward: no Python and no BLAS call per time step (the reference is
``AttentionDecoder._input_feed_forward`` and ``_input_feed_backward``; the math is in ``attention``'s module doc,
not repeated here).

Why: with input feeding, step t + 1's input needs step t's attention output, so the reference loops in Python over
the steps, three BLAS calls and a handful of numpy calls each, every BLAS call repacking its weights. Here the
weights are packed once per call for our register-tiled micro-kernel (``recurrence``) and every step runs
inside one ``nogil`` function.

Rows are independent in the whole loop (a row's fed vector is its own), so the loop runs one group of rows at a
time through all the time steps: the group's memory and keys (16 positions x H at a time) stay in cache from step
to step while the packed weights stream past. Per step and group:

- forward: per layer, ``[input_t, h_{t-1}] @ [input kernel; recurrent_kernel]`` as one packed GEMM of depth 2H (one
  chain of multiply-adds per gate element instead of two products summed; the input is htilde_{t-1} with the
  kernel's last H rows for layer 0, the layer below's h_t for the others) and the fused cell (``kernels``);
  then per row the scores (concat: after ``h @ query_kernel`` for the group with the micro-kernel), masked softmax
  (padding gets exactly 0: it is skipped) and context, then ``[c, h] @ output_kernel`` (the micro-kernel) and tanh;
- backward: per row d pre, ``d pre @ output_kernel^T`` (micro-kernel), the attention's backward into d memory and
  d keys (concat: and ``d q @ query_kernel^T`` for the group); then per layer from the top the cell backward and
  ``dz @ [input kernel; recurrent_kernel]^T`` (micro-kernel), which gives d input (d feed, or d h of the layer
  below) and dh at once. d pre and dz (concat: d scores and d q too) are stored per step, so the weight gradients
  stay one large BLAS GEMM each after the loop.

Scores and the context are short loops over the S source positions with the positions innermost (the group's keys
and memory transposed once, (H, S) and (M, S) per row), so that LLVM vectorises them without reordering any sum.
The calls take a range of rows: the backend runs ranges on several threads where it is not inside a row shard
(decoding, a step of one shard); rows are independent, so the bits do not depend on the ranges.
"""

import math

import numpy as np
from numba import njit

from . import simd
from .kernels import _cell_backward_row, act_tanh, lstm_cell_forward, one
from .recurrence import MICRO_ROWS, ROW_GROUP, _block_gates, _multiply, _product1, _store_gates

GROUP = ROW_GROUP  # rows that go through the time steps together


def packed_gates_size(depth: int, units: int, dtype) -> int:
    lanes = simd.lanes(dtype)
    return -(-units // lanes) * depth * 4 * lanes


@njit(cache=True, nogil=True, error_model="numpy")
def pack_gates(kernel, packed):
    """``recurrence.pack_forward``'s layout for a (depth, 4H) kernel of any depth:
    packed[panel, k, gate, lane] = kernel[k, gate * H + panel * LANES + lane] (0 past H)."""
    depth, four_units = kernel.shape
    units = four_units // 4
    lanes = simd.lanes_of(packed)
    panels = -(-units // lanes)
    packed[:] = 0.0
    for k in range(depth):
        row = kernel[k]
        for panel in range(panels):
            count = min(lanes, units - panel * lanes)
            base = (panel * depth + k) * 4 * lanes
            for gate in range(4):
                source = gate * units + panel * lanes
                packed[base + gate * lanes : base + gate * lanes + count] = row[source : source + count]


@njit(inline="always", error_model="numpy")
def _gate_panels(x_flat, rows, depth, units, packed, z_flat, spill):
    """z (rows, 4H) = x (rows, depth) @ the kernel packed by ``pack_gates``: ``recurrence._recurrent_panels``
    with a depth of its own."""
    four_units = 4 * units
    lanes = simd.lanes_of(packed)
    for panel in range(-(-units // lanes)):
        base = panel * depth * 4 * lanes
        unit = panel * lanes
        row = 0
        while row < rows:
            z_row = row * four_units
            if row + MICRO_ROWS <= rows:
                _block_gates(x_flat, row * depth, depth, packed, base, z_flat, z_row, unit, units, spill)
                row += MICRO_ROWS
            else:
                _store_gates(_product1(x_flat, row * depth, depth, packed, base), z_flat, z_row, unit, units, spill)
                row += 1


@njit(inline="always", error_model="numpy")
def _depth(packed, units):
    """The depth of a kernel packed by ``pack_gates``: 2H ([input; recurrent]), or H for layer 0 of a decoder
    without input feeding (its recurrent kernel alone: the token's part is gathered)."""
    lanes = simd.lanes_of(packed)
    return packed.shape[0] // (-(-units // lanes) * 4 * lanes)


@njit(inline="always", error_model="numpy")
def _dot_scores(h, keys_t, scores, length):
    """One row's scores h . keys_s (dot, general), keys_t (H, S), for its real positions, the first ``length`` (the
    softmax never reads the others: in a batch of longer sentences, a row's dot products cover its own length)."""
    zero = one(h[0]) - one(h[0])
    real = min(length, scores.shape[0])
    for s in range(real):
        scores[s] = zero
    for k in range(h.shape[0]):
        hk, row = h[k], keys_t[k]
        for s in range(real):
            scores[s] += hk * row[s]


@njit(inline="always", error_model="numpy")
def _concat_scores(q, keys, vector, hidden, scores):
    """One row's scores v . u_s, u_s = tanh(q + keys_s) into ``hidden`` (S, A) (concat; q holds the query's
    projection and bias), every position as the reference's cache holds them."""
    zero = one(q[0]) - one(q[0])
    for s in range(scores.shape[0]):
        u, key = hidden[s], keys[s]
        for a in range(q.shape[0]):
            u[a] = act_tanh(q[a] + key[a])
        total = zero
        for a in range(q.shape[0]):
            total += vector[a] * u[a]
        scores[s] = total


@njit(inline="always", error_model="numpy")
def _softmax_context(scores, length, memory, weights, context):
    """One row's softmax of ``scores`` over its first ``length`` positions into ``weights`` (S,) and context into
    ``context`` (M,). Padding positions are skipped: weight exactly 0, and whatever they hold never enters a sum."""
    positions = scores.shape[0]
    zero = one(scores[0]) - one(scores[0])
    top = scores[0]
    found = False
    for s in range(positions):
        if s < length and (not found or scores[s] > top):
            top, found = scores[s], True
    total = zero
    for s in range(positions):
        if s < length:
            e = math.exp(scores[s] - top)
            weights[s] = e
            total += e
        else:
            weights[s] = zero
    for s in range(positions):
        weights[s] = weights[s] / total
    for m in range(context.shape[0]):
        context[m] = zero
    for s in range(positions):
        if s < length:
            a, row = weights[s], memory[s]
            for m in range(context.shape[0]):
                context[m] += a * row[m]


@njit(inline="always", error_model="numpy")
def _transpose_rows(source, first, rows, out):
    """out[r] = source[first + r].T for the group's rows: (S, K) -> (K, S)."""
    for r in range(rows):
        for s in range(source.shape[1]):
            for k in range(source.shape[2]):
                out[r, k, s] = source[first + r, s, k]


@njit(cache=True, nogil=True, error_model="numpy")
def attention_feed_forward(gates, packed_gates, packed_output, memory, keys, lengths, hs, cs, feeds, layer_inputs,
                           masks, queries, weights, context, outputs, concat, group, row_start, row_stop):
    """The forward loop for rows [row_start, row_stop). Per layer l, tuples of one array per layer (the
    reference's lists): ``gates`` (T, B, 4H) hold the input part of the pre-activations on entry (layer 0: gather +
    bias; above: the bias) and the activated gates on exit; ``packed_gates``: ``pack_gates([input kernel;
    recurrent_kernel])``, the input kernel of layer 0 being its kernel's last H rows (the fed htilde; none without
    input feeding, where decoding steps run here too), above it the layer's kernel; ``hs``, ``cs`` (T + 1, B, H)
    hold step 0 on entry; ``layer_inputs`` (T, B, H) get the input of each layer above 0 (dropout applied),
    ``masks`` (T, B, H) its dropout multipliers (entry 0 of both unused; masks with no steps: no dropout).
    ``packed_output``: ``pack_backward(output_kernel.T)``; ``memory`` (B, S, M), ``keys`` (B, S, H), ``lengths``
    (B,) (row b attends over its first lengths[b] positions); ``feeds`` (T + 1, B, H) holds step 0 on entry.
    Writes the rest of the states and the attention cache ``queries``, ``outputs`` (B, T, H), ``weights``
    (B, T, S), ``context`` (B, T, M), all in the reference's layouts. ``concat``: (``pack_backward(query_kernel.T)``,
    query_bias, score_vector, the cache's hidden (B, T, S, A)) for the concat score, arrays with no elements for the
    others. ``group``: rows per group. All arrays C-contiguous."""
    packed_query, query_bias, score_vector, hidden = concat
    is_concat = score_vector.shape[0] > 0
    layers = len(gates)
    steps, _, four_units = gates[0].shape
    units = four_units // 4
    mem_size = memory.shape[2]
    dropping = masks[layers - 1].shape[0] > 0
    dtype = feeds.dtype
    keys_t = np.empty((group, units, keys.shape[1]), dtype=dtype)
    x_flat = np.empty(group * 2 * units, dtype=dtype)
    z = np.empty((group, four_units), dtype=dtype)
    joined = np.empty((group, mem_size + units), dtype=dtype)
    pre = np.empty((group, units), dtype=dtype)
    q = np.empty((group, score_vector.shape[0]), dtype=dtype)
    scores = np.empty(memory.shape[1], dtype=dtype)
    spill = np.empty(4 * simd.lanes_of(feeds), dtype=dtype)
    z_flat, joined_flat, pre_flat = z.reshape(-1), joined.reshape(-1), pre.reshape(-1)
    top = hs[layers - 1]
    for first in range(row_start, row_stop, group):
        end = min(first + group, row_stop)
        rows = end - first
        if not is_concat:
            _transpose_rows(keys, first, rows, keys_t)
        for t in range(steps):
            for layer in range(layers):
                h_layer, c_layer = hs[layer], cs[layer]
                depth = _depth(packed_gates[layer], units)
                for r in range(rows):
                    b = first + r
                    x_row = x_flat[r * depth : (r + 1) * depth]
                    if layer == 0:
                        if depth > units:  # input feeding
                            x_row[:units] = feeds[t, b]
                    else:
                        below = hs[layer - 1][t + 1, b]
                        if dropping:
                            mask = masks[layer][t, b]
                            for k in range(units):
                                x_row[k] = below[k] * mask[k]
                        else:
                            x_row[:units] = below
                        layer_inputs[layer][t, b] = x_row[:units]
                    x_row[depth - units :] = h_layer[t, b]
                _gate_panels(x_flat, rows, depth, units, packed_gates[layer], z_flat, spill)
                lstm_cell_forward(gates[layer][t, first:end], z[:rows], c_layer[t, first:end],
                                  c_layer[t + 1, first:end], h_layer[t + 1, first:end])
            if is_concat:  # the queries' projection, h @ query_kernel, for the group
                _multiply(top[t + 1].reshape(-1), first * units, rows, units, packed_query, q.reshape(-1),
                          q.shape[1], spill)
            for r in range(rows):
                b = first + r
                h = top[t + 1, b]
                if is_concat:
                    q_row = q[r]
                    for a in range(q_row.shape[0]):
                        q_row[a] += query_bias[a]
                    _concat_scores(q_row, keys[b], score_vector, hidden[b, t], scores)
                else:
                    _dot_scores(h, keys_t[r], scores, lengths[b])
                _softmax_context(scores, lengths[b], memory[b], weights[b, t], context[b, t])
                queries[b, t] = h
                joined[r, :mem_size] = context[b, t]
                joined[r, mem_size:] = h
            _multiply(joined_flat, 0, rows, mem_size + units, packed_output, pre_flat, units, spill)
            for r in range(rows):
                b = first + r
                for k in range(units):
                    value = act_tanh(pre[r, k])
                    outputs[b, t, k] = value
                    feeds[t + 1, b, k] = value


@njit(inline="always", error_model="numpy")
def _context_backward(d_context, a, length, memory_t, d_memory, d_a):
    """One row's d a_s = d context . hbar_s into ``d_a`` (S,), adds a_s d context into ``d_memory`` (S, M); returns
    sum_s a_s d a_s (the softmax's backward needs it)."""
    zero = one(d_context[0]) - one(d_context[0])
    for s in range(a.shape[0]):
        d_a[s] = zero
    for m in range(d_context.shape[0]):
        dcm, row = d_context[m], memory_t[m]
        for s in range(a.shape[0]):
            d_a[s] += dcm * row[s]
    total = zero
    for s in range(a.shape[0]):
        if s < length:
            total += a[s] * d_a[s]
            a_s, d_row = a[s], d_memory[s]
            for m in range(d_context.shape[0]):
                d_row[m] += a_s * d_context[m]
    return total


@njit(inline="always", error_model="numpy")
def _dot_backward(d_a, total, h, a, length, keys, d_query, d_keys):
    """dot, general: adds sum_s d score_s keys_s into ``d_query`` (H,), d score_s h into ``d_keys`` (S, H)."""
    for s in range(a.shape[0]):
        if s < length:
            d_score = a[s] * (d_a[s] - total)
            key, d_key = keys[s], d_keys[s]
            for k in range(h.shape[0]):
                d_query[k] += d_score * key[k]
            for k in range(h.shape[0]):
                d_key[k] += d_score * h[k]


@njit(inline="always", error_model="numpy")
def _concat_backward(d_a, total, a, length, vector, hidden, d_scores, d_q, d_keys):
    """concat: d score into ``d_scores`` (S,) (0 on padding), d q = sum_s d u_s into ``d_q`` (A,), adds d u_s into
    ``d_keys`` (S, A)."""
    zero = one(total) - one(total)
    for s in range(a.shape[0]):
        d_scores[s] = a[s] * (d_a[s] - total) if s < length else zero
    for k in range(d_q.shape[0]):
        d_q[k] = zero
    for s in range(a.shape[0]):
        if s < length:
            d_score, u, d_key = d_scores[s], hidden[s], d_keys[s]
            for k in range(d_q.shape[0]):
                d_u = d_score * vector[k] * (one(total) - u[k] * u[k])
                d_q[k] += d_u
                d_key[k] += d_u


@njit(cache=True, nogil=True, error_model="numpy")
def attention_feed_backward(gates, cs, packed_step, packed_output_t, memory, keys, lengths, queries, weights, outputs,
                            masks, d_outputs, dh, dc, dz, d_pre, d_memory, d_keys, concat, group, row_start,
                            row_stop):
    """The backward loop for rows [row_start, row_stop). Tuples of one array per layer: the forward's ``gates``,
    ``cs`` and ``masks``; ``packed_step``: ``pack_backward([input kernel; recurrent_kernel])``; ``dh``, ``dc``
    (B, H) hold d of the final state on entry and of the initial state on exit; ``dz`` (T, B, 4H) are written.
    ``packed_output_t``: ``pack_backward(output_kernel)``; ``memory`` (B, S, M), ``keys`` (B, S, H), ``lengths``
    (B,), the forward's attention cache; ``d_outputs`` (T, B, H) = d htilde. Writes ``d_pre`` (B, T, H) (d of
    tanh's argument, for the output kernel's gradient) and adds into ``d_memory`` (B, S, M) and ``d_keys``
    (B, S, H) (pass ``d_memory`` for dot). ``concat``: (``pack_backward(query_kernel)``, score_vector, the cache's
    hidden, and the outputs d scores (B, T, S) and d q (B, T, A), which the concat weights' gradients are made of
    after the loop) for the concat score, arrays with no elements for the others."""
    packed_query_t, score_vector, hidden, d_scores, d_q = concat
    is_concat = score_vector.shape[0] > 0
    layers = len(gates)
    steps, batch, four_units = gates[0].shape
    units = four_units // 4
    mem_size = memory.shape[2]
    dropping = masks[layers - 1].shape[0] > 0
    dtype = d_pre.dtype
    memory_t = np.empty((group, mem_size, memory.shape[1]), dtype=dtype)
    d_feed = np.zeros((group, units), dtype=dtype)
    d_above = np.empty((group, units), dtype=dtype)
    d_pre_block = np.empty((group, units), dtype=dtype)
    d_joined = np.empty((group, mem_size + units), dtype=dtype)
    d_step = np.empty((group, 2 * units), dtype=dtype)
    d_q_block = np.empty((group, score_vector.shape[0]), dtype=dtype)
    d_a = np.empty(memory.shape[1], dtype=dtype)
    cell = np.empty((3, units), dtype=dtype)
    spill = np.empty(4 * simd.lanes_of(d_pre), dtype=dtype)
    d_pre_flat, d_joined_flat, d_step_flat = d_pre_block.reshape(-1), d_joined.reshape(-1), d_step.reshape(-1)
    for first in range(row_start, row_stop, group):
        end = min(first + group, row_stop)
        rows = end - first
        _transpose_rows(memory, first, rows, memory_t)
        d_feed[:] = 0.0
        for t in range(steps - 1, -1, -1):
            for r in range(rows):
                b = first + r
                for k in range(units):
                    o = outputs[b, t, k]
                    value = (d_outputs[t, b, k] + d_feed[r, k]) * (one(o) - o * o)
                    d_pre[b, t, k] = value
                    d_pre_block[r, k] = value
            _multiply(d_pre_flat, 0, rows, units, packed_output_t, d_joined_flat, mem_size + units, spill)
            for r in range(rows):
                b = first + r
                d_query = d_joined[r, mem_size:]
                total = _context_backward(d_joined[r, :mem_size], weights[b, t], lengths[b], memory_t[r], d_memory[b],
                                          d_a)
                if is_concat:
                    _concat_backward(d_a, total, weights[b, t], lengths[b], score_vector, hidden[b, t], d_scores[b, t],
                                     d_q_block[r], d_keys[b])
                    d_q[b, t] = d_q_block[r]
                else:
                    _dot_backward(d_a, total, queries[b, t], weights[b, t], lengths[b], keys[b], d_query, d_keys[b])
                d_above[r] = d_query
            if is_concat:  # d h += d q @ query_kernel^T for the group (d pre's block is free again)
                _multiply(d_q_block.reshape(-1), 0, rows, d_q_block.shape[1], packed_query_t, d_pre_flat, units,
                          spill)
                for r in range(rows):
                    for k in range(units):
                        d_above[r, k] += d_pre_block[r, k]
            for layer in range(layers - 1, -1, -1):
                c_layer, dh_layer, dc_layer = cs[layer], dh[layer], dc[layer]
                for r in range(rows):
                    b = first + r
                    gate, dz_b = gates[layer][t, b], dz[layer][t, b]
                    _cell_backward_row(gate[:units], gate[units : 2 * units], gate[2 * units : 3 * units],
                                       gate[3 * units :], c_layer[t, b], c_layer[t + 1, b], dh_layer[b], d_above[r],
                                       dc_layer[b], dz_b[:units], dz_b[units : 2 * units],
                                       dz_b[2 * units : 3 * units], dz_b[3 * units :], dc_layer[b], cell[0], cell[1],
                                       cell[2])
                _multiply(dz[layer].reshape(-1), (t * batch + first) * four_units, rows, four_units,
                          packed_step[layer], d_step_flat, 2 * units, spill)
                for r in range(rows):
                    b = first + r
                    dh_layer[b] = d_step[r, units:]
                    if layer == 0:
                        d_feed[r] = d_step[r, :units]
                    elif dropping:
                        mask = masks[layer][t, b]
                        for k in range(units):
                            d_above[r, k] = d_step[r, k] * mask[k]
                    else:
                        d_above[r] = d_step[r, :units]
