"""Decoding an attention model (with or without input feeding) in one compiled call each: batched greedy
decoding, beam search (with GNMT's length penalty) and sampling. Every step of every layer, the attention, the
output layer and the choice of the next characters run inside one ``nogil`` function per group of rows.

Each is checked against the step-by-step loops of ``minilstm.decoding`` (the same operations in the same order, so the
same characters and scores; tests/test_attention_numba.py). The weights are packed and the row groups formed as in the
training loops (``attention_train``), whose helpers for the gates, scores and context are reused here.
"""

import math

import numpy as np
from numba import njit

from . import simd
from .attention_train import _concat_scores, _depth, _dot_scores, _gate_panels, _softmax_context, _transpose_rows
from .kernels import act_tanh, lstm_cell_forward
from .recurrence import _argmax, _multiply


@njit(inline="always", error_model="numpy")
def _decode_work(rows, units, memory, concat, vocab, like):
    """The scratch arrays ``_decode_step`` takes, for up to ``rows`` rows."""
    dtype, positions, mem_size, attention_units = like.dtype, memory.shape[1], memory.shape[2], concat[2].shape[0]
    return (np.empty(rows * 2 * units, dtype=dtype), np.empty((rows, 4 * units), dtype=dtype),
            np.empty((rows, 4 * units), dtype=dtype), np.empty((rows, units), dtype=dtype),
            np.empty((rows, mem_size + units), dtype=dtype), np.empty((rows, units), dtype=dtype),
            np.empty((rows, attention_units), dtype=dtype), np.empty((positions, attention_units), dtype=dtype),
            np.empty(positions, dtype=dtype), np.empty((rows, mem_size), dtype=dtype),
            np.empty(4 * simd.lanes_of(like), dtype=dtype))


@njit(inline="always")
def _keys_transposed(concat):
    """Whether the score is dot or general, whose keys the decoders transpose per sentence (concat: no keys_t)."""
    return concat[2].shape[0] == 0


@njit(nogil=True, error_model="numpy")
def _decode_step(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, concat, memory, keys,
                 keys_t, lengths, h, c, feed, rows, slots, sentences, key_rows, prev, h_new, c_new, htilde, weights,
                 logits, work):
    """One decoding step of ``rows`` rows: row r continues the state in slot ``slots[r]`` of ``h``, ``c``
    (L, slots, H) and ``feed`` (slots, H) (read only with input feeding) after token ``prev[r]``, and attends over
    sentence ``sentences[r]``'s memory (dot, general: its keys transposed in ``keys_t[key_rows[r]]``). Writes row
    r's new states into ``h_new``, ``c_new`` (L, rows, H), its htilde, attention weights (rows, S) and logits
    (rows, V). ``attention_feed_forward``'s step (the same operations in the same order, so a row gets the bits the
    step API gives it) followed by the output layer (``recurrence._dense``'s product)."""
    packed_query, query_bias, score_vector = concat
    is_concat = score_vector.shape[0] > 0
    x_flat, z, gates, c_prev, joined, pre, q, hidden, scores, context, spill = work
    layers = len(packed_gates)
    units = h.shape[2]
    four_units = 4 * units
    mem_size = memory.shape[2]
    vocab = dense_bias.shape[0]
    for layer in range(layers):
        depth = _depth(packed_gates[layer], units)
        bias = biases[layer]
        for r in range(rows):
            slot = slots[r]
            x_row = x_flat[r * depth : (r + 1) * depth]
            if layer == 0:
                if depth > units:  # input feeding
                    x_row[:units] = feed[slot]
                token_row = kernel0[prev[r]]  # the token's rows of the kernel: kernels.gather_rows_add
                for k in range(four_units):
                    gates[r, k] = token_row[k] + bias[k]
            else:
                x_row[:units] = h_new[layer - 1, r]
                gates[r] = bias
            x_row[depth - units :] = h[layer, slot]
            c_prev[r] = c[layer, slot]
        _gate_panels(x_flat, rows, depth, units, packed_gates[layer], z.reshape(-1), spill)
        lstm_cell_forward(gates[:rows], z[:rows], c_prev[:rows], c_new[layer, :rows], h_new[layer, :rows])
    top = h_new[layers - 1]
    if is_concat:
        _multiply(top.reshape(-1), 0, rows, units, packed_query, q.reshape(-1), q.shape[1], spill)
    for r in range(rows):
        b = sentences[r]
        if is_concat:
            q_row = q[r]
            for a in range(q_row.shape[0]):
                q_row[a] += query_bias[a]
            _concat_scores(q_row, keys[b], score_vector, hidden, scores)
        else:
            _dot_scores(top[r], keys_t[key_rows[r]], scores, lengths[b])
        _softmax_context(scores, lengths[b], memory[b], weights[r], context[r])
        joined[r, :mem_size] = context[r]
        joined[r, mem_size:] = top[r]
    _multiply(joined.reshape(-1), 0, rows, mem_size + units, packed_output, pre.reshape(-1), units, spill)
    for r in range(rows):
        for k in range(units):
            htilde[r, k] = act_tanh(pre[r, k])
    _multiply(htilde.reshape(-1), 0, rows, units, packed_dense, logits.reshape(-1), vocab, spill)
    for r in range(rows):
        row = logits[r]
        for k in range(vocab):
            row[k] += dense_bias[k]


@njit(cache=True, nogil=True, error_model="numpy")
def attention_greedy_decode(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, memory, keys,
                            lengths, h0, c0, concat, start_id, end_id, tokens, maps, group, row_start, row_stop):
    """The example's greedy loop for rows [row_start, row_stop) of an attention model: feed START, take the argmax
    of the logits (the first of equal maxima), feed it back; a row stops at its END. Each step is
    ``_decode_step``.

    ``kernel0``: layer 0's kernel (its first V rows are gathered for the previous token); ``biases``,
    ``packed_gates``: per layer, as ``attention_feed_forward`` takes them; ``packed_dense``:
    ``pack_backward(dense_kernel.T)``; ``memory``, ``keys``, ``lengths`` as there; ``h0``, ``c0`` (L, B, H): the
    initial states; ``concat``: (``pack_backward(query_kernel.T)``, query_bias, score_vector), arrays with no
    elements for the other scores. ``tokens`` (B, steps), filled with END first, gets each row's characters;
    ``maps`` (B, steps, S) (or no elements) each step's attention weights. A group's finished rows are dropped
    (the rest move up), so late steps only compute the sentences still going."""
    layers = len(packed_gates)
    units = h0.shape[2]
    positions = memory.shape[1]
    keep_maps = maps.shape[0] > 0
    dtype = h0.dtype
    h, c = np.empty((layers, group, units), dtype=dtype), np.empty((layers, group, units), dtype=dtype)
    h_new, c_new = np.empty_like(h), np.empty_like(c)
    feed = np.empty((group, units), dtype=dtype)
    keys_t = np.empty((group, units, positions), dtype=dtype)
    weights = np.empty((group, positions), dtype=dtype)
    logits = np.empty((group, dense_bias.shape[0]), dtype=dtype)
    sentence = np.empty(group, dtype=np.int64)
    prev = np.empty(group, dtype=np.int64)
    rows_in_place = np.arange(group)
    work = _decode_work(group, units, memory, concat, dense_bias.shape[0], h0)
    for first in range(row_start, row_stop, group):
        going = min(group, row_stop - first)
        for r in range(going):
            b = first + r
            sentence[r], prev[r] = b, start_id
            for layer in range(layers):
                h[layer, r], c[layer, r] = h0[layer, b], c0[layer, b]
            feed[r] = 0.0
        if _keys_transposed(concat):
            _transpose_rows(keys, first, going, keys_t)
        for step in range(tokens.shape[1]):
            # feed in place: _decode_step reads a row's fed htilde before it writes any htilde
            _decode_step(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, concat, memory, keys,
                         keys_t, lengths, h, c, feed, going, rows_in_place, sentence, rows_in_place, prev, h_new,
                         c_new, feed, weights, logits, work)
            kept = 0
            for r in range(going):
                best = _argmax(logits[r])
                b = sentence[r]
                tokens[b, step] = best
                if keep_maps:
                    maps[b, step] = weights[r]
                if best != end_id:  # still going: into place ``kept`` (kept <= r: that slot's row is done with)
                    sentence[kept], prev[kept] = b, best
                    for layer in range(layers):
                        h[layer, kept], c[layer, kept] = h_new[layer, r], c_new[layer, r]
                    if kept != r:
                        feed[kept] = feed[r]
                        if _keys_transposed(concat):
                            keys_t[kept] = keys_t[r]
                    kept += 1
            going = kept
            if going == 0:
                break


@njit(inline="always", error_model="numpy")
def _softmax_terms(row, scale, terms):
    """terms[v] = exp(z_v - max z), z = row / scale in float64, as the step loops of ``Seq2Seq`` compute them;
    returns (max z, the terms' sum in numpy's order: ``_pairwise_sum``)."""
    vocab = row.shape[0]
    top = np.float64(row[0]) / scale
    for v in range(1, vocab):
        top = max(top, np.float64(row[v]) / scale)
    for v in range(vocab):
        terms[v] = math.exp(np.float64(row[v]) / scale - top)
    return top, _pairwise_sum(terms, 0, vocab)


@njit(inline="always", error_model="numpy")
def _log_softmax_into(row, score, out):
    """out[v] = score + log softmax(row)[v] in float64, as ``Seq2Seq.beam_decode_ids`` computes it:
    score + ((x - max) - log(sum exp(x - max)))."""
    top, total = _softmax_terms(row, 1.0, out)
    log_total = math.log(total)
    for v in range(row.shape[0]):
        out[v] = score + ((np.float64(row[v]) - top) - log_total)


@njit(cache=True, nogil=True, error_model="numpy")
def attention_beam_decode(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, memory, keys,
                          lengths, h0, c0, concat, start_id, end_id, tokens, scores, length_penalty, group, row_start,
                          row_stop):
    """``Seq2Seq.beam_decode_ids``'s beam search for sentences [row_start, row_stop) of an attention model, in one
    call: ``tokens`` (B, K, steps), filled with END first, get each sentence's K beams, ``scores`` (B, K) their
    ranks (float64: summed log-probabilities over GNMT's lp of their length, ``length_penalty`` its alpha);
    arguments otherwise as ``attention_greedy_decode``.

    The same search as the reference: every step, each sentence's candidates are its live beams' continuations
    (score + log softmax of the logits, ranked by that over lp(step + 1)), a finished beam's only one itself with
    END at its score and rank, a beam of score -inf's none; the K best ranks are kept, ties to the lower index
    (beam-major, then token), beams finished once they emit END. Only live beams run the model: ``_decode_step``
    on the rows of unfinished beams of finite score, and each kept beam's state is copied from its parent's new one.
    Sentences go through in blocks of group // K (at least 1), their beams' states side by side."""
    layers = len(packed_gates)
    units = h0.shape[2]
    positions = memory.shape[1]
    vocab = dense_bias.shape[0]
    width = tokens.shape[1]
    dtype = h0.dtype
    per_block = max(1, group // width)
    slots = per_block * width
    h, c = np.empty((layers, slots, units), dtype=dtype), np.empty((layers, slots, units), dtype=dtype)
    h_new, c_new = np.empty_like(h), np.empty_like(c)
    feed, htilde = np.empty((slots, units), dtype=dtype), np.empty((slots, units), dtype=dtype)
    keys_t = np.empty((per_block, units, positions), dtype=dtype)
    weights = np.empty((slots, positions), dtype=dtype)
    logits = np.empty((slots, vocab), dtype=dtype)
    row_slot, row_sentence = np.empty(slots, dtype=np.int64), np.empty(slots, dtype=np.int64)
    row_key, row_prev = np.empty(slots, dtype=np.int64), np.empty(slots, dtype=np.int64)
    slot_row = np.empty(slots, dtype=np.int64)  # a slot's row in this step's batch, -1 if it did not run
    prev = np.empty(slots, dtype=np.int64)
    score = np.empty(slots, dtype=np.float64)
    rank = np.empty(slots, dtype=np.float64)
    finished = np.empty(slots, dtype=np.bool_)
    candidates = np.empty(width * vocab, dtype=np.float64)
    ranked = np.empty(width * vocab, dtype=np.float64)  # the candidates' ranks: score / lp(length)
    taken = np.empty(width * vocab, dtype=np.bool_)
    chosen = np.empty(width, dtype=np.int64)
    parent_finished, parent_row = np.empty(width, dtype=np.bool_), np.empty(width, dtype=np.int64)
    history = np.empty((width, tokens.shape[2]), dtype=np.int64)
    work = _decode_work(slots, units, memory, concat, vocab, h0)
    for first in range(row_start, row_stop, per_block):
        count = min(per_block, row_stop - first)
        for i in range(count):
            for j in range(width):
                slot = i * width + j
                for layer in range(layers):
                    h[layer, slot], c[layer, slot] = h0[layer, first + i], c0[layer, first + i]
                feed[slot] = 0.0
                prev[slot] = start_id
                score[slot] = 0.0 if j == 0 else -np.inf  # one live beam per sentence at the start
                rank[slot] = score[slot]
                finished[slot] = False
        if _keys_transposed(concat):
            _transpose_rows(keys, first, count, keys_t)
        for step in range(tokens.shape[2]):
            rows = 0
            for slot in range(count * width):
                slot_row[slot] = -1
                if not finished[slot] and score[slot] > -np.inf:
                    i = slot // width
                    row_slot[rows], row_sentence[rows], row_key[rows] = slot, first + i, i
                    row_prev[rows] = prev[slot]
                    slot_row[slot] = rows
                    rows += 1
            if rows == 0:  # every beam of every sentence finished (or dead)
                break
            _decode_step(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, concat, memory, keys,
                         keys_t, lengths, h, c, feed, rows, row_slot, row_sentence, row_key, row_prev, h_new, c_new,
                         htilde, weights, logits, work)
            lp = ((5.0 + step + 1) / 6.0) ** length_penalty  # a live beam's continuations have step + 1 characters
            for i in range(count):
                b = first + i
                for j in range(width):
                    slot, part = i * width + j, candidates[j * vocab : (j + 1) * vocab]
                    if slot_row[slot] >= 0:
                        _log_softmax_into(logits[slot_row[slot]], score[slot], part)
                    else:
                        part[:] = -np.inf
                        if finished[slot]:  # a finished beam only continues as itself
                            part[end_id] = score[slot]
                    for m in range(j * vocab, (j + 1) * vocab):
                        ranked[m] = candidates[m] / lp
                    if finished[slot]:  # at its own length's rank
                        ranked[j * vocab + end_id] = rank[slot]
                taken[:] = False
                for j in range(width):  # the K best, ties to the lower index (a stable sort's first K)
                    best = -1
                    for m in range(width * vocab):
                        if not taken[m] and (best < 0 or ranked[m] > ranked[best]):
                            best = m
                    taken[best] = True
                    chosen[j] = best
                for j in range(width):
                    history[j] = tokens[b, chosen[j] // vocab]
                parent_finished[:] = finished[i * width : (i + 1) * width]
                parent_row[:] = slot_row[i * width : (i + 1) * width]
                for j in range(width):
                    slot, parent, token = i * width + j, chosen[j] // vocab, chosen[j] % vocab
                    tokens[b, j] = history[j]
                    if not parent_finished[parent]:
                        tokens[b, j, step] = token
                    finished[slot] = parent_finished[parent] or token == end_id
                    score[slot] = candidates[chosen[j]]
                    rank[slot] = ranked[chosen[j]]
                    prev[slot] = token
                    row = parent_row[parent]
                    if row >= 0:  # the parent ran this step: its new state (else the beam never runs again)
                        for layer in range(layers):
                            h[layer, slot], c[layer, slot] = h_new[layer, row], c_new[layer, row]
                        feed[slot] = htilde[row]
        for i in range(count):
            scores[first + i] = rank[i * width : (i + 1) * width]


@njit(inline="always", error_model="numpy")
def _block_sum(values, first, count):
    """numpy's pairwise sum of up to 128 numbers: in order below 8, else 8 partial sums combined as a tree."""
    if count < 8:
        total = 0.0
        for i in range(first, first + count):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[first], values[first + 1], values[first + 2], values[first + 3]
    r4, r5, r6, r7 = values[first + 4], values[first + 5], values[first + 6], values[first + 7]
    i = first + 8
    stop = first + count - count % 8
    while i < stop:
        r0, r1, r2, r3 = r0 + values[i], r1 + values[i + 1], r2 + values[i + 2], r3 + values[i + 3]
        r4, r5, r6, r7 = r4 + values[i + 4], r5 + values[i + 5], r6 + values[i + 6], r7 + values[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < first + count:
        total += values[i]
        i += 1
    return total


@njit(error_model="numpy")
def _pairwise_sum(values, first, count):
    """numpy's float64 sum of values[first : first + count] in numpy's own order (``ndarray.sum`` along a
    contiguous axis: 0 plus a pairwise sum, ``_block_sum`` up to 128 numbers, above that the sum of the two halves,
    the first cut to a multiple of 8), so that ``attention_sample_decode`` draws the characters the step loop draws,
    bit for bit. numpy recurses; this walks the same tree with a stack (a recursive function inside cached
    compiled code crashed the next process that loaded it)."""
    if count <= 128:
        return _block_sum(values, first, count)
    firsts, counts = np.empty(64, dtype=np.int64), np.empty(64, dtype=np.int64)
    lefts, waiting = np.empty(64, dtype=np.float64), np.empty(64, dtype=np.int64)  # waiting: 0 none, 1 left, 2 right
    firsts[0], counts[0], waiting[0] = first, count, 0
    depth, result, returned = 1, 0.0, False
    while depth > 0:
        k = depth - 1
        half = counts[k] // 2
        half -= half % 8
        if returned:  # a child of node k has just been summed into ``result``
            if waiting[k] == 1:
                lefts[k], waiting[k] = result, 2
                firsts[depth], counts[depth], waiting[depth] = firsts[k] + half, counts[k] - half, 0
                depth += 1
                returned = False
            else:
                result = lefts[k] + result
                depth -= 1
        elif counts[k] <= 128:
            result = _block_sum(values, firsts[k], counts[k])
            depth -= 1
            returned = True
        else:
            waiting[k] = 1
            firsts[depth], counts[depth], waiting[depth] = firsts[k], half, 0
            depth += 1
    return result


@njit(inline="always", error_model="numpy")
def _sample(row, temperature, u, p):
    """The character ``Seq2Seq.sample_decode_ids`` draws from logits ``row`` with the uniform number ``u``:
    p = softmax(row / temperature) in float64, the count of cumulative sums below u (at most V - 1)."""
    vocab = row.shape[0]
    _, total = _softmax_terms(row, temperature, p)
    below, cumulative = 0, 0.0
    for v in range(vocab):
        cumulative += p[v] / total
        if cumulative < u:
            below += 1
    return min(below, vocab - 1)


@njit(cache=True, nogil=True, error_model="numpy")
def attention_sample_decode(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, memory, keys,
                            lengths, h0, c0, concat, start_id, end_id, temperature, uniforms, tokens, group):
    """``Seq2Seq.sample_decode_ids``'s sampling of a whole batch of an attention model in one call: every step the
    rows still going run ``_decode_step`` (``group`` at a time) and draw their next character with their number of
    that step, ``uniforms[step, row]`` (``_sample``); the loop ends when every row has. ``tokens`` (B, steps),
    filled with END first, gets each row's characters; arguments otherwise as ``attention_greedy_decode``. Returns
    the number of steps run (the step loop draws a number per row and step, ended rows too: its caller consumes
    that many rows of ``uniforms`` from its generator)."""
    layers = len(packed_gates)
    units, batch = h0.shape[2], h0.shape[1]
    positions = memory.shape[1]
    vocab = dense_bias.shape[0]
    dtype = h0.dtype
    h, c = h0.copy(), c0.copy()
    feed = np.zeros((batch, units), dtype=dtype)
    keys_t = np.empty((batch if _keys_transposed(concat) else 0, units, positions), dtype=dtype)
    if _keys_transposed(concat):
        _transpose_rows(keys, 0, batch, keys_t)
    h_new, c_new = np.empty((layers, group, units), dtype=dtype), np.empty((layers, group, units), dtype=dtype)
    htilde = np.empty((group, units), dtype=dtype)
    weights = np.empty((group, positions), dtype=dtype)
    logits = np.empty((group, vocab), dtype=dtype)
    rows_of, prev_of = np.empty(group, dtype=np.int64), np.empty(group, dtype=np.int64)
    prev = np.full(batch, start_id, dtype=np.int64)
    done = np.zeros(batch, dtype=np.bool_)
    p = np.empty(vocab, dtype=np.float64)
    work = _decode_work(group, units, memory, concat, vocab, h0)
    for step in range(tokens.shape[1]):
        b = 0
        while b < batch:
            rows = 0  # the next rows still going, up to a group
            while b < batch and rows < group:
                if not done[b]:
                    rows_of[rows], prev_of[rows] = b, prev[b]
                    rows += 1
                b += 1
            if rows == 0:
                break
            _decode_step(kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, concat, memory, keys,
                         keys_t, lengths, h, c, feed, rows, rows_of, rows_of, rows_of, prev_of, h_new, c_new, htilde,
                         weights, logits, work)
            for r in range(rows):
                row = rows_of[r]
                sampled = _sample(logits[r], temperature, uniforms[step, row], p)
                tokens[row, step] = sampled
                prev[row] = sampled
                for layer in range(layers):
                    h[layer, row], c[layer, row] = h_new[layer, r], c_new[layer, r]
                feed[row] = htilde[r]
        finished = True
        for row in range(batch):
            if tokens[row, step] == end_id:
                done[row] = True
            finished = finished and done[row]
        if finished:
            return step + 1
    return tokens.shape[1]
