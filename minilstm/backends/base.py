"""Array backends: the array namespace ``xp`` plus the few operations a faster backend replaces.

The model is written once against a backend object. The plain ``Backend`` implements every operation with the
reference ``xp`` code from ``lstm`` and ``layers``; a faster backend (Numba on the CPU, our CUDA kernels through
CuPy on the GPU) subclasses it and overrides some of them, and its tests check each override against the
reference on random inputs.

A backend may also split a batch into ``workers`` shards that run in parallel threads (``parallel_map``): the LSTM
recurrence is independent across the rows of a batch, so each thread runs the whole sequence for its rows and
only the weight gradients are summed at the end.
"""

import math

import numpy as np

from .. import layers, lstm
from ..lstm import Workspace  # noqa: F401 - the workspace type the recurrence operations take
from .blas import hold_blas


class Backend:
    """NumPy, no compiled kernels, one thread of our own: the reference every other backend is checked against."""

    name = "numpy"
    xp = np
    workers = 1
    cheap_sync = True  # reading a result back costs nothing (CPU); False on a GPU, where it waits for the device

    def asarray(self, array, dtype=None):
        """Host (numpy) array -> device array."""
        return self.xp.asarray(array, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """Device array -> host numpy array."""
        return np.asarray(array)

    def synchronize(self):
        """Wait for queued device work (a no-op on the CPU); benchmarks call it before reading a clock."""

    def parallel_map(self, function, items) -> list:
        """``[function(item) for item in items]``, in parallel where the backend has several workers."""
        return [function(item) for item in items]

    def describe(self) -> str:
        return self.name

    def row_shards(self, batch: int, units: int, min_rows: int) -> int:
        """How many row shards (one per worker, in parallel) a model cuts a batch of ``batch`` rows of a ``units``-
        unit LSTM into: one per worker, but no shard under ``min_rows`` rows. Called at the start of every training
        (or evaluation) step: a step that does not split units gives BLAS back its threads (``hold_blas``)."""
        hold_blas(False)
        return max(1, min(self.workers, batch // min_rows))

    # The replaceable operations. Signatures are fixed; outputs are written into the arrays passed in.

    def matmul(self, a, b, out=None):
        """``a @ b`` (into ``out``): the large GEMMs outside the time loops (weight gradients, the output layer, a
        stacked layer's input projections)."""
        return self.xp.matmul(a, b, out=out)

    def lstm_cell_forward(self, gates, z_recurrent, c_prev, c, h):
        lstm.cell_forward(self.xp, gates, z_recurrent, c_prev, c, h)

    def lstm_cell_backward(self, gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev):
        lstm.cell_backward(self.xp, gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev)

    def lstm_recurrence_forward(self, gates, recurrent_kernel, hs, cs, workspace):
        """The whole forward time loop of one layer (arguments: ``lstm.recurrence_forward``). A backend can run it
        as one kernel; the reference is a GEMM and a cell per step."""
        lstm.recurrence_forward(self, gates, recurrent_kernel, hs, cs, workspace)

    def lstm_recurrence_backward(self, gates, cs, recurrent_kernel, d_outputs, dh, dc, dz, workspace=None):
        """The whole backward time loop of one layer (arguments: ``lstm.recurrence_backward``; ``workspace`` is the
        layer's, for scratch arrays)."""
        lstm.recurrence_backward(self, gates, cs, recurrent_kernel, d_outputs, dh, dc, dz)

    def dense(self, inputs, kernel, bias):
        """``inputs @ kernel + bias``: the output layer where decoding runs it one step at a time."""
        logits = inputs @ kernel
        logits += bias
        return logits

    # Most sentences of mixed lengths that ``Seq2Seq.translate`` decodes in one batch (None: its ``batch_size``).
    mixed_batch_rows = None

    # A backend may run batched greedy decoding as one call: greedy_decode(kernel, bias, recurrent_kernel,
    # dense_kernel, dense_bias, h, c, start_id, end_id, tokens), arguments as in numba.recurrence.greedy_decode.
    # None: Seq2Seq runs the loop in Python, one decode_step at a time.
    greedy_decode = None

    # A backend may run the input-feeding attention decoder's time loop (``AttentionDecoder._input_feed_forward``
    # and ``_input_feed_backward``) as one call each way: attention_feed_forward(...) and
    # attention_feed_backward(...), arguments as in ``NumbaBackend``, for the score types named here. None: the
    # reference loop, a few operations per time step.
    attention_feed_forward = None
    attention_feed_backward = None
    attention_feed_scores = ()
    # Batched greedy decoding, beam search and sampling of an attention model (with or without input feeding) as
    # one call each: attention_greedy_decode(...), attention_beam_decode(...), attention_sample_decode(...),
    # arguments as in ``NumbaBackend``. None: the step-by-step loops in ``Seq2Seq.greedy_decode_ids``,
    # ``beam_decode_ids`` and ``sample_decode_ids``.
    attention_greedy_decode = None
    attention_beam_decode = None
    attention_sample_decode = None

    def gather_rows_add(self, table, ids, bias, out=None):
        return layers.gather_rows_add(self.xp, table, ids, bias, out)

    def scatter_add_rows(self, out, ids, values):
        layers.scatter_add_rows(self.xp, out, ids, values)

    def softmax_cross_entropy(self, logits, target_ids, grad_scale, label_smoothing=0.0):
        """Loss sum, hits and d(grad_scale * loss)/d logits, with ``label_smoothing`` (``layers``)."""
        return layers.softmax_cross_entropy(self.xp, logits, target_ids, grad_scale, label_smoothing)

    def dropout_mask(self, shape, rate, key, row_offset, dtype):
        """Inverted-dropout multipliers of a (T, B, F) tensor, a function of (key, position) only (``layers``)."""
        return layers.dropout_mask(self.xp, shape, rate, key, row_offset, dtype)

    def masked_softmax(self, scores, lengths):
        """Attention weights (B, T, S) from scores, over each sentence's first ``lengths[b]`` positions
        (``layers.masked_softmax``)."""
        return layers.masked_softmax(self.xp, scores, lengths)

    def masked_softmax_backward(self, weights, d_weights):
        return layers.masked_softmax_backward(self.xp, weights, d_weights)

    # The optimizers (math in ``optim``): one fused step each over the flat buffers, in place. ``grad_scale`` is the
    # clipping factor from ``clip_scale``, rounded to the gradient's dtype and applied to each element as it is read
    # (the gradient buffer is never written), or None: no clipping, the gradient as it is.

    def sum_of_squares(self, array):
        """sum(x^2) over a flat array, in float64: numpy's pairwise sum here; a faster backend sums in its own fixed
        order (a GPU returns a device scalar)."""
        return float(self.xp.sum(self.xp.square(array, dtype=np.float64)))

    def clip_scale(self, grads, clip_norm):
        """The clipping factor clip_norm / max(norm, clip_norm) for the gradient's global norm (NaN where the norm is
        not finite: ``norm - norm``, as Keras adds it). A host float here; a GPU gives a device array that its update
        kernels read, so clipping never waits for the GPU."""
        norm = math.sqrt(self.sum_of_squares(grads))
        return clip_norm / max(norm, clip_norm) + (norm - norm)

    def rmsprop_update(self, params, grads, velocity, learning_rate, rho, epsilon, epsilon_inside_sqrt,
                       grad_scale=None):
        xp = self.xp
        if grad_scale is not None:
            grads = grads * grads.dtype.type(grad_scale)
        velocity *= rho
        velocity += (1.0 - rho) * grads * grads
        if epsilon_inside_sqrt:
            denom = xp.sqrt(velocity + epsilon)
        else:
            denom = xp.sqrt(velocity)
            denom += epsilon
        params -= learning_rate * grads / denom

    def adam_update(self, params, grads, m, v, step_size, beta_1, beta_2, epsilon, bias_correction2_sqrt,
                    grad_scale=None):
        """``step_size`` = lr / (1 - beta_1^t), ``bias_correction2_sqrt`` = sqrt(1 - beta_2^t)."""
        if grad_scale is not None:
            grads = grads * grads.dtype.type(grad_scale)
        m *= beta_1
        m += (1.0 - beta_1) * grads
        v *= beta_2
        v += (1.0 - beta_2) * grads * grads
        denom = self.xp.sqrt(v)
        denom /= bias_correction2_sqrt
        denom += epsilon
        params -= step_size * m / denom

    def sgd_update(self, params, grads, momentum_buffer, learning_rate, momentum, grad_scale=None):
        if grad_scale is not None:
            grads = grads * grads.dtype.type(grad_scale)
        momentum_buffer *= momentum
        momentum_buffer += grads
        params -= learning_rate * momentum_buffer


NumpyBackend = Backend
