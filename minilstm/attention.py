r"""Luong global attention (Luong, Pham & Manning 2015; OpenNMT-py's ``GlobalAttention``) and a decoder that uses
it, with input feeding. The plain reference, written against the backend's ``xp`` like ``lstm.py``.

Shapes inside this module are batch-major: the decoder states ``h`` (B, T, H) ask, the memory ``hbar`` (B, S, M)
(the encoder's outputs) answers; ``lengths`` (B,) says how many of the S positions of each sentence are real.

Forward, for decoder step t of sentence b (only the real source positions s < lengths[b] take part):

    keys_s   = hbar_s                                            (dot; M = H)
             = hbar_s @ score_kernel                             (general: Luong's h_t . W_a hbar_s, W_a = kernel^T)
             = hbar_s @ key_kernel                               (concat)
    score_s  = h_t . keys_s                                      (dot, general)
             = v . u_s,  u_s = tanh(h_t @ query_kernel + query_bias + keys_s)      (concat, Bahdanau's "mlp")
    a_t      = softmax_s(score),  score = -inf on padding, so its weight is exactly 0
    c_t      = sum_s a_ts hbar_s
    htilde_t = tanh([c_t, h_t] @ output_kernel)                  (no bias: Luong's W_c)

Backward, given d htilde_t (and summing every weight gradient over b and t):

    d pre    = d htilde * (1 - htilde^2)
    d output_kernel = [c, h]^T d pre;         [d c, d h] = d pre @ output_kernel^T
    d a_s    = d c . hbar_s;                  d hbar_s += a_s d c
    d score  = a * (d a - sum_s a_s d a_s)   (the softmax's Jacobian; 0 on padding since a = 0 there)
    dot, general:  d h += sum_s d score_s keys_s;      d keys_s += d score_s h
    concat:        d u_s = d score_s v * (1 - u_s^2);  d v = sum d score_s u_s;  d q = sum_s d u_s;
                   d keys_s += d u_s;  d h += d q @ query_kernel^T;  d query_kernel = h^T d q;  d query_bias = sum d q
    after every step:  d hbar += d keys (dot);  d score_kernel (or d key_kernel) = hbar^T d keys,
                       d hbar += d keys @ score_kernel^T (or key_kernel^T)

The decoder (``AttentionDecoder``): an ``LSTM`` stack whose top layer's states are the queries, then ``htilde``
goes to the output layer. With input feeding (Luong §3.3) the bottom layer's input at step t is
``[y_{t-1}, htilde_{t-1}]`` (htilde_0 = 0): its kernel has V + H rows, the token ids gather from the first V and the
fed vector multiplies the last H. Over vectors of D features (embedded characters, ``input_size``) the first D rows
multiply them instead, as one GEMM over all steps before the loop, and backward returns their gradient. Then step
t + 1 needs step t's attention, so the whole stack runs one step at a time; without input feeding the stack runs as
usual (``LSTM.forward``) and attention over all steps at once.

Backward of the input-feeding loop, for t = T-1 .. 0 (dh_l, dc_l carried back per layer, d feed from step t + 1):

    d htilde_t = d outputs_t + d feed
    d h^top_t  = attention backward of step t (above)
    layer l from the top: the LSTM cell's backward (``lstm``) with d h_t = d from above + dh_l  -> dz_l(t)
        dh_l = dz_l(t) @ recurrent_kernel_l^T;  d from above for layer l - 1 = (dz_l(t) @ kernel_l^T) * dropout mask
        bottom layer: d feed = dz_0(t) @ kernel_0[V:]^T  (the gradient w.r.t. htilde_{t-1})

and the LSTM weight gradients after the loop, as ``lstm`` computes them (one GEMM each over all steps; the feed rows
of kernel_0 are ``feeds^T @ dz_0``, its token rows a scatter-add; over vectors X its first D rows are X^T @ dz_0
and d X = dz_0 @ kernel_0[:D]^T).
"""

from dataclasses import dataclass

import numpy as np

from . import layers
from .lstm import is_token_ids
from .nn import LSTM, dropout_key

SCORES = ("dot", "general", "concat")


@dataclass
class AttentionMemory:
    """What every step attends over: the memory (B, S, M), its keys (B, S, K), and how many positions are real."""

    memory: object
    keys: object
    lengths: object  # (B,) int64: positions 0 .. lengths[b] - 1 of sentence b are real

    def select(self, rows):
        """The sentences ``rows`` (an index array), e.g. the ones still decoding, or each repeated per beam."""
        return AttentionMemory(self.memory[rows], self.keys[rows], self.lengths[rows])


@dataclass
class AttentionCache:
    """What ``Attention.backward`` needs from ``forward``, for T steps: all (B, T, ...)."""

    queries: object  # (B, T, H)
    weights: object  # (B, T, S): a
    context: object  # (B, T, M): c
    outputs: object  # (B, T, H): htilde
    hidden: object = None  # (B, T, S, A): u, concat only


class AttentionGrads:
    """Sums over the steps of one backward pass: d memory, d keys and the per-step weight gradients."""

    def __init__(self, xp, attention, memory: AttentionMemory, dtype):
        self.d_memory = xp.zeros(memory.memory.shape, dtype=dtype)
        self.d_keys = None if attention.score == "dot" else xp.zeros(memory.keys.shape, dtype=dtype)
        self.weights = {name: xp.zeros(shape, dtype=dtype) for name, shape in attention.local_shapes().items()}


class Attention:
    """Luong global attention of decoder states (``units``) over a memory of ``memory_size`` features, with score
    ``dot``, ``general`` or ``concat`` (math: module doc). Weights, in Keras's (in, out) layout:
    ``output_kernel`` (M + H, H) always; ``score_kernel`` (M, H) for general; ``query_kernel`` (H, A),
    ``query_bias`` (A,), ``key_kernel`` (M, A), ``score_vector`` (A,) for concat, with A = ``units``."""

    def __init__(self, units: int, memory_size: int | None = None, score: str = "general", name: str = "attention"):
        if score not in SCORES:
            raise ValueError(f"attention score must be one of {SCORES}, not {score!r}")
        self.units = int(units)
        self.memory_size = self.units if memory_size is None else int(memory_size)
        if score == "dot" and self.memory_size != self.units:
            raise ValueError(f"dot attention needs memory_size == units ({self.memory_size} != {self.units})")
        self.score, self.name = score, name

    def local_shapes(self) -> dict:
        h, m = self.units, self.memory_size
        shapes = {"output_kernel": (m + h, h)}
        if self.score == "general":
            shapes["score_kernel"] = (m, h)
        elif self.score == "concat":
            shapes.update(query_kernel=(h, h), query_bias=(h,), key_kernel=(m, h), score_vector=(h,))
        return shapes

    def shapes(self) -> dict:
        return {f"{self.name}.{k}": shape for k, shape in self.local_shapes().items()}

    # The input size of each weight as PyTorch's nn.Linear sees it (score = h . (W m): W is linear_in (H -> M)).
    FAN_IN = {"output_kernel": 0, "score_kernel": 1, "query_kernel": 0, "query_bias": 0, "key_kernel": 0,
              "score_vector": 0}

    def initial_weights(self, rng, scheme: str = "keras") -> dict:
        """glorot_uniform for the matrices (Keras's Dense default; the score vector as a (A, 1) matrix), zero bias;
        ``pytorch``: each as its nn.Linear starts, uniform(+-1/sqrt(fan_in)) (``layers.INIT_SCHEMES``)."""
        out = {}
        if scheme == "pytorch":
            shapes = self.local_shapes()
            for key, shape in shapes.items():
                fan_in = shapes["query_kernel"][0] if key == "query_bias" else shape[self.FAN_IN[key]]
                out[f"{self.name}.{key}"] = layers.fan_in_uniform(rng, shape, fan_in)
            return out
        for key, shape in self.local_shapes().items():
            if key == "query_bias":
                out[f"{self.name}.{key}"] = np.zeros(shape)
            elif key == "score_vector":
                out[f"{self.name}.{key}"] = layers.glorot_uniform(rng, (shape[0], 1))[:, 0]
            else:
                out[f"{self.name}.{key}"] = layers.glorot_uniform(rng, shape)
        return out

    def _w(self, params, key):
        return params[f"{self.name}.{key}"]

    # -- forward -------------------------------------------------------------------------------------------------

    def prepare(self, params, memory, lengths=None, exact_rows=True) -> AttentionMemory:
        """The memory (B, S, M), batch-major, with its keys (computed once per batch) and real positions: the first
        ``lengths[b]`` of sentence b (all S when None). ``exact_rows`` (decoding, evaluation): the keys from the
        backend's ``dense`` rather than its BLAS ``matmul`` (on numba our micro-kernel, each key one chain of
        multiply-adds, where BLAS rounds by how many rows it gets), so that a sentence's keys are the same in a batch
        of any size, and decoding step by step sees the keys teacher forcing sees. A training step keeps BLAS (its
        ``matmul`` may split a large product over the workers), and with it the bits earlier runs trained with."""
        xp = params.backend.xp
        batch, steps = memory.shape[:2]
        if self.score == "dot":
            keys = memory
        else:
            kernel = self._w(params, "score_kernel" if self.score == "general" else "key_kernel")
            flat = xp.ascontiguousarray(memory.reshape(batch * steps, -1))
            if exact_rows:
                keys = params.backend.dense(flat, kernel, xp.zeros(kernel.shape[1], dtype=kernel.dtype))
            else:
                keys = params.backend.matmul(flat, kernel)
            keys = keys.reshape(batch, steps, -1)
        if lengths is None:
            lengths = xp.full(batch, steps, dtype=np.int64)
        return AttentionMemory(memory, keys, xp.ascontiguousarray(xp.asarray(lengths), dtype=np.int64))

    def forward(self, params, memory: AttentionMemory, queries):
        """``htilde`` (B, T, H) for decoder states ``queries`` (B, T, H), and the cache for ``backward``."""
        xp = params.backend.xp
        hidden = None
        if self.score == "concat":
            q = _project(params.backend, queries, self._w(params, "query_kernel")) + self._w(params, "query_bias")
            hidden = xp.tanh(q[:, :, None, :] + memory.keys[:, None, :, :])  # (B, T, S, A)
            scores = xp.matmul(hidden, self._w(params, "score_vector"))
        else:
            scores = xp.matmul(queries, memory.keys.transpose(0, 2, 1))  # (B, T, S)
        weights = params.backend.masked_softmax(xp.ascontiguousarray(scores), memory.lengths)
        context = xp.matmul(weights, memory.memory)  # (B, T, M)
        joined = xp.concatenate([context, queries], axis=2)
        outputs = xp.tanh(_project(params.backend, joined, self._w(params, "output_kernel")))
        return outputs, AttentionCache(queries, weights, context, outputs, hidden)

    # -- backward ------------------------------------------------------------------------------------------------

    def backward(self, params, memory: AttentionMemory, cache: AttentionCache, d_outputs, acc: AttentionGrads):
        """d queries (B, T, H) for ``d_outputs`` = d htilde (B, T, H); adds into ``acc`` the gradients w.r.t. the
        memory, the keys and the weights used per step (``finish`` turns d keys into the key weights' gradient)."""
        xp = params.backend.xp
        units, mem_size = self.units, self.memory_size
        d_pre = d_outputs * (1.0 - cache.outputs * cache.outputs)
        joined = xp.concatenate([cache.context, cache.queries], axis=2)
        acc.weights["output_kernel"] += _sum_outer(joined, d_pre)
        d_joined = _project(params.backend, d_pre, self._w(params, "output_kernel").T)
        d_context, d_queries = d_joined[:, :, :mem_size], d_joined[:, :, mem_size:].copy()
        d_weights = xp.matmul(d_context, memory.memory.transpose(0, 2, 1))  # (B, T, S)
        acc.d_memory += xp.matmul(cache.weights.transpose(0, 2, 1), d_context)
        d_scores = params.backend.masked_softmax_backward(cache.weights, xp.ascontiguousarray(d_weights))
        if self.score == "concat":
            vector = self._w(params, "score_vector")
            acc.weights["score_vector"] += (d_scores[..., None] * cache.hidden).sum(axis=(0, 1, 2))
            d_hidden = d_scores[..., None] * vector * (1.0 - cache.hidden * cache.hidden)  # (B, T, S, A)
            d_q = d_hidden.sum(axis=2)
            acc.d_keys += d_hidden.sum(axis=1)
            acc.weights["query_kernel"] += _sum_outer(cache.queries, d_q)
            acc.weights["query_bias"] += d_q.reshape(-1, units).sum(axis=0)
            d_queries += _project(params.backend, d_q, self._w(params, "query_kernel").T)
            return d_queries
        d_queries += xp.matmul(d_scores, memory.keys)
        d_keys = xp.matmul(d_scores.transpose(0, 2, 1), cache.queries)  # (B, S, H)
        if self.score == "dot":
            acc.d_memory += d_keys
        else:
            acc.d_keys += d_keys
        return d_queries

    def finish(self, params, memory: AttentionMemory, acc: AttentionGrads, grads) -> object:
        """Write the weight gradients into ``grads`` (overwriting) and return d memory (B, S, M)."""
        for key, value in acc.weights.items():
            grads[f"{self.name}.{key}"][...] = value
        if acc.d_keys is not None:
            key = "score_kernel" if self.score == "general" else "key_kernel"
            grads[f"{self.name}.{key}"][...] = _sum_outer(memory.memory, acc.d_keys)
            batch, steps = acc.d_keys.shape[:2]
            acc.d_memory += params.backend.matmul(acc.d_keys.reshape(batch * steps, -1),
                                                  self._w(params, key).T).reshape(acc.d_memory.shape)
        return acc.d_memory


def _project(backend, x, weight):
    """``x @ weight`` over the last axis of ``x`` (..., m) as one 2-D GEMM. (NumPy's matmul of a 3-D array by a
    2-D one does not call BLAS: 666 vs 32 ms for (64, 40, 512) @ (512, 256).)"""
    flat = backend.matmul(_contiguous(x).reshape(-1, x.shape[-1]), weight)
    return flat.reshape(x.shape[:-1] + (weight.shape[1],))


def _contiguous(x):
    return x if x.flags.c_contiguous else x.copy()


def _sum_outer(x, dy):
    """sum over every leading index of x^T dy: (..., m) and (..., n) -> (m, n)."""
    return x.reshape(-1, x.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])


# -------------------------------------------------------------------------------------------------------------------
# The decoder


@dataclass
class AttentionDecoderCache:
    memory: AttentionMemory
    attention: AttentionCache
    lstm: object = None  # nn.LSTMStackCache (no input feeding)
    ids: object = None  # (T, B) token ids (input feeding, below)
    gates: list = None  # per layer (T, B, 4H)
    hs: list = None  # per layer (T + 1, B, H)
    cs: list = None
    layer_inputs: list = None  # per layer >= 1: (T, B, H), dropout applied
    masks: list = None  # per layer >= 1: (T, B, H) multipliers or None
    feeds: object = None  # (T + 1, B, H): htilde_{t-1}, zeros at t = 0


@dataclass
class DecoderState:
    """One decoding step's state: (h, c) of every layer (L, B, H), the fed htilde (B, H), the memory."""

    h: object
    c: object
    feed: object
    memory: AttentionMemory

    def select(self, rows):
        return DecoderState(self.h[:, rows], self.c[:, rows], self.feed[rows], self.memory.select(rows))


class AttentionDecoder:
    """An LSTM stack over token ids (``vocab_size``) or vectors (``input_size``: embedded characters) with attention
    over a memory and, by default, input feeding (module doc). Its weights are the stack's (``decoder.kernel``, ...:
    Keras's layout; with input feeding the bottom kernel has ``vocab_size + units`` or ``input_size + units`` rows)
    and the attention's (``attention.output_kernel``, ...). Time-major like ``LSTM``: ids (T, B) or vectors
    (T, B, D), memory (S, B, M), outputs htilde (T, B, H)."""

    def __init__(self, units: int, *, vocab_size: int | None = None, input_size: int | None = None,
                 memory_size: int | None = None, score: str = "general", input_feed: bool = True, num_layers: int = 1,
                 dropout: float = 0.0, name: str = "decoder", attention_name: str = "attention"):
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (token-id inputs) and input_size (vector inputs)")
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.input_size = None if input_size is None else int(input_size)
        self.input_feed = bool(input_feed)
        self.token_rows = self.vocab_size or self.input_size  # kernel_0's rows before the fed ones
        rows = self.token_rows + (units if input_feed else 0)
        self.lstm = LSTM(units, **({"vocab_size": rows} if self.vocab_size else {"input_size": rows}),
                         num_layers=num_layers, dropout=dropout, name=name)
        self.attention = Attention(units, memory_size, score, name=attention_name)

    @property
    def units(self) -> int:
        return self.lstm.units

    @property
    def num_layers(self) -> int:
        return self.lstm.num_layers

    def shapes(self) -> dict:
        return {**self.lstm.shapes(), **self.attention.shapes()}

    def initial_weights(self, rng, scheme: str = "keras") -> dict:
        return {**self.lstm.initial_weights(rng, scheme), **self.attention.initial_weights(rng, scheme)}

    def forward(self, params, ids, initial_state, memory, lengths=None, *, training: bool = False,
                seed: int | None = None, row_offset: int = 0, workspaces: dict | None = None,
                exact_keys: bool = False, input_table=None):
        """htilde (T, B, H) for ``ids`` (T, B) (or vectors (T, B, D)) from ``initial_state`` (h0, c0), each
        (L, B, H), attending over ``memory`` (S, B, M) whose first ``lengths[b]`` positions are real. Returns
        ``(outputs, (h_n, c_n), cache)``; ``training`` and ``seed`` as in ``LSTM.forward`` (dropout between stacked
        layers); ``exact_keys`` as ``Attention.prepare``'s ``exact_rows``: True gives the keys decoding (``start``)
        uses, as teacher-forced evaluation wants; False (training) BLAS's. ``input_table``: an embedding folded into
        layer 0, as ``LSTM.forward``'s (without input feeding only)."""
        xp = params.backend.xp
        if input_table is not None and self.input_feed:
            raise ValueError("an input_table is folded into the decoder without input feeding only")
        if is_token_ids(ids) != (self.vocab_size is not None or input_table is not None):
            raise ValueError(f"{self.lstm.name} takes {'token ids' if self.vocab_size else 'float vectors'} "
                             f"(got an array of {ids.dtype})")
        attn_memory = self.attention.prepare(params, xp.ascontiguousarray(memory.transpose(1, 0, 2)), lengths,
                                             exact_rows=exact_keys)
        if not self.input_feed:
            states, final, lstm_cache = self.lstm.forward(params, ids, initial_state, training=training, seed=seed,
                                                          row_offset=row_offset, workspaces=workspaces,
                                                          input_table=input_table)
            outputs, attn_cache = self.attention.forward(params, attn_memory, states.transpose(1, 0, 2))
            return (xp.ascontiguousarray(outputs.transpose(1, 0, 2)), final,
                    AttentionDecoderCache(attn_memory, attn_cache, lstm=lstm_cache))
        return self._input_feed_forward(params, ids, initial_state, attn_memory, training, seed, row_offset)

    def _compiled(self, backend) -> bool:
        """Whether ``backend`` runs the input-feeding loop as one call each way (numba: every score); else the
        reference loops below run."""
        return backend.attention_feed_forward is not None and self.attention.score in backend.attention_feed_scores

    def _masks(self, params, shape, training, seed, row_offset):
        lstm = self.lstm
        if not (training and lstm.dropout > 0 and lstm.num_layers > 1):
            return [None] * lstm.num_layers
        if seed is None:
            raise ValueError("training with dropout needs a seed (e.g. the step number), so that the masks repeat")
        return [None] + [params.backend.dropout_mask(shape, lstm.dropout, dropout_key(seed, layer), row_offset,
                                                     params.dtype) for layer in range(1, lstm.num_layers)]

    def _input_feed_forward(self, params, ids, initial_state, memory, training, seed, row_offset, feed0=None):
        """The loop over the steps, attention inside it: input feeding's forward, and every model's decoding step
        where the backend compiles the decoders (without feeding, layer 0's input kernel then has no rows: the fed
        part of its input is empty)."""
        backend, xp, dtype = params.backend, params.backend.xp, params.dtype
        steps, batch = ids.shape[:2]
        units, layers_ = self.units, self.num_layers
        h0, c0 = self.lstm.zero_state(params, batch) if initial_state is None else initial_state
        weights = [(params[f"{cell}.kernel"], params[f"{cell}.recurrent_kernel"], params[f"{cell}.bias"])
                   for _, _, cell in self.lstm.cells()]
        masks = self._masks(params, (steps, batch, units), training, seed, row_offset)
        gates = [xp.empty((steps, batch, 4 * units), dtype=dtype) for _ in range(layers_)]
        hs = [xp.empty((steps + 1, batch, units), dtype=dtype) for _ in range(layers_)]
        cs = [xp.empty((steps + 1, batch, units), dtype=dtype) for _ in range(layers_)]
        layer_inputs = [None] + [xp.empty((steps, batch, units), dtype=dtype) for _ in range(1, layers_)]
        feeds = xp.zeros((steps + 1, batch, units), dtype=dtype)
        if feed0 is not None:  # decoding step by step: the previous step's htilde
            feeds[0] = feed0
        mem_size = self.attention.memory_size
        cache = AttentionCache(xp.empty((batch, steps, units), dtype=dtype),
                               xp.empty((batch, steps, memory.memory.shape[1]), dtype=dtype),
                               xp.empty((batch, steps, mem_size), dtype=dtype),
                               xp.empty((batch, steps, units), dtype=dtype))
        if self.attention.score == "concat":
            cache.hidden = xp.empty((batch, steps, memory.memory.shape[1], units), dtype=dtype)
        for layer in range(layers_):
            hs[layer][0], cs[layer][0] = h0[layer], c0[layer]
        kernel0, _, bias0 = weights[0]
        rows = self.token_rows
        if is_token_ids(ids):
            backend.gather_rows_add(kernel0, ids, bias0, out=gates[0])  # the token part of every step at once
        else:  # vectors (embedded characters): one GEMM over every step
            backend.matmul(ids.reshape(steps * batch, rows), kernel0[:rows], out=gates[0].reshape(steps * batch, -1))
            gates[0] += bias0
        feed_kernel = kernel0[rows:]
        if self._compiled(backend):  # the loop below as one call, filling the same arrays
            for layer in range(1, layers_):
                gates[layer][...] = weights[layer][2]  # the bias; the input part is added in the loop
            concat = None if cache.hidden is None else (*(self.attention._w(params, key) for key in (
                "query_kernel", "query_bias", "score_vector")), cache.hidden)
            backend.attention_feed_forward(gates, [feed_kernel] + [w[0] for w in weights[1:]], [w[1] for w in weights],
                                           self.attention._w(params, "output_kernel"), memory.memory, memory.keys,
                                           memory.lengths, hs, cs, feeds, layer_inputs, masks, cache.queries,
                                           cache.weights, cache.context, cache.outputs, concat)
        else:
            recurrent = xp.empty((batch, 4 * units), dtype=dtype)
            for t in range(steps):
                for layer in range(layers_):
                    kernel, recurrent_kernel, bias = weights[layer]
                    if layer == 0:
                        gates[0][t] += backend.matmul(feeds[t], feed_kernel)
                    else:
                        x = hs[layer - 1][t + 1] if masks[layer] is None else hs[layer - 1][t + 1] * masks[layer][t]
                        layer_inputs[layer][t] = x
                        backend.matmul(x, kernel, out=gates[layer][t])
                        gates[layer][t] += bias
                    backend.matmul(hs[layer][t], recurrent_kernel, out=recurrent)
                    backend.lstm_cell_forward(gates[layer][t], recurrent, cs[layer][t], cs[layer][t + 1],
                                              hs[layer][t + 1])
                outputs, step = self.attention.forward(params, memory, hs[-1][t + 1][:, None, :])
                for name in ("queries", "weights", "context", "outputs", "hidden"):
                    if getattr(step, name) is not None:
                        getattr(cache, name)[:, t] = getattr(step, name)[:, 0]
                feeds[t + 1] = outputs[:, 0]
        h_n = xp.stack([hs[layer][-1] for layer in range(layers_)])
        c_n = xp.stack([cs[layer][-1] for layer in range(layers_)])
        return feeds[1:], (h_n, c_n), AttentionDecoderCache(memory, cache, ids=ids, gates=gates, hs=hs, cs=cs,
                                                            layer_inputs=layer_inputs, masks=masks, feeds=feeds)

    def backward(self, params, cache: AttentionDecoderCache, d_outputs, d_final_state=None, grads=None,
                 workspaces: dict | None = None):
        """Gradients of every weight into ``grads`` (default ``params.grads``, overwriting), from ``d_outputs``
        (T, B, H) = d htilde and ``d_final_state`` (dh_n, dc_n) or None. Returns ``(d_memory, (d_h0, d_c0))``,
        d_memory time-major (S, B, M) like the memory; over vectors ``(d_memory, (d_h0, d_c0), d_inputs)``, d_inputs
        (T, B, D) like the inputs (with a folded ``input_table``: the gradient w.r.t. the table)."""
        xp = params.backend.xp
        grads = params.grads if grads is None else grads
        memory = cache.memory
        acc = AttentionGrads(xp, self.attention, memory, params.dtype)
        if not self.input_feed:
            d_states = self.attention.backward(params, memory, cache.attention, d_outputs.transpose(1, 0, 2), acc)
            d_inputs, d_state = self.lstm.backward(params, cache.lstm,
                                                   xp.ascontiguousarray(d_states.transpose(1, 0, 2)), d_final_state,
                                                   grads, workspaces)
        else:
            d_state, d_inputs = self._input_feed_backward(params, cache, d_outputs, d_final_state, grads, acc)
        d_memory = xp.ascontiguousarray(self.attention.finish(params, memory, acc, grads).transpose(1, 0, 2))
        return (d_memory, d_state) if self.vocab_size else (d_memory, d_state, d_inputs)

    def _input_feed_backward(self, params, cache, d_outputs, d_final_state, grads, acc):
        backend, xp, dtype = params.backend, params.backend.xp, params.dtype
        steps, batch = cache.ids.shape[:2]
        units, layers_ = self.units, self.num_layers
        if d_final_state is None:
            d_final_state = self.lstm.zero_state(params, batch)
        dh = [d_final_state[0][layer].copy() for layer in range(layers_)]
        dc = [d_final_state[1][layer].copy() for layer in range(layers_)]
        dz = [xp.empty((steps, batch, 4 * units), dtype=dtype) for _ in range(layers_)]
        cells = [cell for _, _, cell in self.lstm.cells()]
        kernel0 = params[f"{cells[0]}.kernel"]
        rows = self.token_rows
        feed_kernel_t = kernel0[rows:].T
        attn = cache.attention
        if self._compiled(backend):  # the loop below as one call; the attention's weight gradients after it
            mem_size = self.attention.memory_size
            d_pre = xp.empty((batch, steps, units), dtype=dtype)
            input_kernels = [kernel0[rows:]] + [params[f"{cell}.kernel"] for cell in cells[1:]]
            recurrent_kernels = [params[f"{cell}.recurrent_kernel"] for cell in cells]
            concat = None
            if attn.hidden is not None:  # d scores (B, T, S) and d q (B, T, A) come out of the loop
                d_scores = xp.empty(attn.weights.shape, dtype=dtype)
                d_q = xp.empty((batch, steps, units), dtype=dtype)
                concat = (self.attention._w(params, "query_kernel"), self.attention._w(params, "score_vector"),
                          attn.hidden, d_scores, d_q)
            backend.attention_feed_backward(cache.gates, cache.cs, cache.masks, input_kernels, recurrent_kernels,
                                            self.attention._w(params, "output_kernel"), cache.memory.memory,
                                            cache.memory.keys, cache.memory.lengths, attn.queries, attn.weights,
                                            attn.outputs, d_outputs, dh, dc, dz, d_pre, acc.d_memory, acc.d_keys,
                                            concat)
            d_pre = d_pre.reshape(batch * steps, units)
            d_output_kernel = acc.weights["output_kernel"]
            backend.matmul(attn.context.reshape(-1, mem_size).T, d_pre, out=d_output_kernel[:mem_size])
            backend.matmul(attn.queries.reshape(-1, units).T, d_pre, out=d_output_kernel[mem_size:])
            if concat is not None:
                d_q = d_q.reshape(batch * steps, units)
                acc.weights["score_vector"][...] = backend.matmul(d_scores.reshape(1, -1),
                                                                  attn.hidden.reshape(-1, units))[0]
                backend.matmul(attn.queries.reshape(-1, units).T, d_q, out=acc.weights["query_kernel"])
                acc.weights["query_bias"][...] = d_q.sum(axis=0)
        else:
            d_feed = xp.zeros((batch, units), dtype=dtype)
            for t in reversed(range(steps)):
                step = AttentionCache(*(None if a is None else a[:, t : t + 1] for a in (
                    attn.queries, attn.weights, attn.context, attn.outputs, attn.hidden)))
                d_above = self.attention.backward(params, cache.memory, step, (d_outputs[t] + d_feed)[:, None, :],
                                                  acc)[:, 0]
                for layer in reversed(range(layers_)):
                    cell = cells[layer]
                    backend.lstm_cell_backward(cache.gates[layer][t], cache.cs[layer][t], cache.cs[layer][t + 1],
                                               dh[layer], d_above, dc[layer], dz[layer][t], dc[layer])
                    dh[layer] = backend.matmul(dz[layer][t], params[f"{cell}.recurrent_kernel"].T)
                    if layer:
                        d_above = backend.matmul(dz[layer][t], params[f"{cell}.kernel"].T)
                        if cache.masks[layer] is not None:
                            d_above *= cache.masks[layer][t]
                    else:
                        d_feed = backend.matmul(dz[0][t], feed_kernel_t)
        d_inputs = None
        for layer, cell in enumerate(cells):
            g = grads.group(cell)
            dz_flat = dz[layer].reshape(steps * batch, 4 * units)
            backend.matmul(cache.hs[layer][:-1].reshape(steps * batch, units).T, dz_flat, out=g["recurrent_kernel"])
            g["bias"][...] = dz_flat.sum(axis=0)
            if layer:
                backend.matmul(cache.layer_inputs[layer].reshape(steps * batch, units).T, dz_flat, out=g["kernel"])
                continue
            if is_token_ids(cache.ids):
                g["kernel"][...] = 0
                backend.scatter_add_rows(g["kernel"], cache.ids.reshape(-1), dz_flat)
            else:  # vectors X: d kernel_0[:D] = X^T @ dz_0, d X = dz_0 @ kernel_0[:D]^T
                inputs = cache.ids.reshape(steps * batch, rows)
                g["kernel"][:rows] = backend.matmul(inputs.T, dz_flat)
                d_inputs = backend.matmul(dz_flat, kernel0[:rows].T).reshape(cache.ids.shape)
            g["kernel"][rows:] = backend.matmul(cache.feeds[:-1].reshape(steps * batch, units).T, dz_flat)
        return (xp.stack(dh), xp.stack(dc)), d_inputs

    # -- step by step (decoding) ---------------------------------------------------------------------------------

    def compiled_greedy(self, backend) -> bool:
        """Whether ``backend`` runs ``greedy_decode`` as one call (numba, every score, with or without feeding)."""
        return backend.attention_greedy_decode is not None and self._compiled(backend)

    def compiled_beam(self, backend) -> bool:
        """Whether ``backend`` runs ``beam_decode`` as one call (numba, every score, with or without feeding)."""
        return backend.attention_beam_decode is not None and self._compiled(backend)

    def compiled_sample(self, backend) -> bool:
        """Whether ``backend`` runs ``sample_decode`` as one call (numba, every score, with or without feeding)."""
        return backend.attention_sample_decode is not None and self._compiled(backend)

    def _decoding_args(self, params, state: "DecoderState", dense_kernel, dense_bias):
        """What the backend's compiled decoders take first (``NumbaBackend.attention_greedy_decode``): the weights,
        the memory and the initial state."""
        cells = [cell for _, _, cell in self.lstm.cells()]
        kernel0 = params[f"{cells[0]}.kernel"]
        concat = None if self.attention.score != "concat" else tuple(
            self.attention._w(params, key) for key in ("query_kernel", "query_bias", "score_vector"))
        memory = state.memory
        return (kernel0, [params[f"{cell}.bias"] for cell in cells],
                [kernel0[self.token_rows :]] + [params[f"{cell}.kernel"] for cell in cells[1:]],
                [params[f"{cell}.recurrent_kernel"] for cell in cells], self.attention._w(params, "output_kernel"),
                dense_kernel, dense_bias, memory.memory, memory.keys, memory.lengths, state.h, state.c, concat)

    def greedy_decode(self, params, state: "DecoderState", dense_kernel, dense_bias, start_id, end_id, tokens,
                      maps=None):
        """Greedy decoding from ``start``'s state in one backend call (``compiled_greedy``): ``tokens`` (B, steps),
        filled with END, gets each row's characters, ``maps`` (B, steps, S) (or None) their attention weights; the
        same bits as ``step`` followed by the output layer and an argmax, step after step."""
        params.backend.attention_greedy_decode(*self._decoding_args(params, state, dense_kernel, dense_bias),
                                               start_id, end_id, tokens, maps)

    def beam_decode(self, params, state: "DecoderState", dense_kernel, dense_bias, start_id, end_id, tokens, scores,
                    length_penalty=0.0):
        """Beam search from ``start``'s state (one row per sentence) in one backend call (``compiled_beam``):
        ``tokens`` (B, K, steps), filled with END, get each sentence's K beams, ``scores`` (B, K) their summed
        log-probabilities over GNMT's length penalty (``length_penalty``: its alpha); the search of
        ``Seq2Seq.beam_decode_ids``'s step-by-step loop."""
        params.backend.attention_beam_decode(*self._decoding_args(params, state, dense_kernel, dense_bias),
                                             start_id, end_id, tokens, scores, float(length_penalty))

    def sample_decode(self, params, state: "DecoderState", dense_kernel, dense_bias, start_id, end_id, temperature,
                      uniforms, tokens) -> int:
        """Sampling from ``start``'s state in one backend call (``compiled_sample``): ``tokens`` (B, steps), filled
        with END, get each row's characters, row b's at step t drawn with ``uniforms[t, b]``; returns the steps
        run."""
        return params.backend.attention_sample_decode(*self._decoding_args(params, state, dense_kernel, dense_bias),
                                                      start_id, end_id, temperature, uniforms, tokens)

    def start(self, params, initial_state, memory, lengths=None) -> DecoderState:
        """The state before the first step: (h0, c0) each (L, B, H), memory (S, B, M)."""
        xp = params.backend.xp
        attn_memory = self.attention.prepare(params, xp.ascontiguousarray(memory.transpose(1, 0, 2)), lengths)
        h0, c0 = initial_state
        return DecoderState(h0, c0, xp.zeros(h0.shape[1:], dtype=params.dtype), attn_memory)

    def step(self, params, prev_ids, state: DecoderState):
        """One step for the previous tokens ``prev_ids`` (B,): returns (htilde (B, H), the next state, the
        attention weights (B, S)). The same operations as a one-step ``forward`` (with ``exact_keys``), so a
        decoder fed the true previous tokens reproduces the teacher-forced outputs; without input feeding on a
        backend that compiles the loop it is the compiled decoders' step (the same bits as ``greedy_decode``), which
        reproduces them to rounding (the teacher-forced forward runs the LSTM first, then the attention over all
        steps at once)."""
        xp = params.backend.xp
        ids = prev_ids[None]  # one step: (1, B) ids or (1, B, D) vectors
        if self.input_feed or self._compiled(params.backend):  # without feeding: the compiled decoders' step
            outputs, (h, c), cache = self._input_feed_forward(params, ids, (state.h, state.c), state.memory, False,
                                                              None, 0, feed0=state.feed)
            return outputs[0], DecoderState(h, c, outputs[0], state.memory), cache.attention.weights[:, 0]
        outputs, (h, c), _ = self.lstm.forward(params, ids, (state.h, state.c))
        htilde, cache = self.attention.forward(params, state.memory, outputs.transpose(1, 0, 2))
        return xp.ascontiguousarray(htilde[:, 0]), DecoderState(h, c, state.feed, state.memory), cache.weights[:, 0]
