"""The Numba backend: NumPy arrays, fused Numba kernels, compiled time loops and decoders, threads over the batch."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all

import numpy as np

from ...errors import MinilstmError
from ...lstm import Workspace
from ..base import Backend
from ..blas import blas_held, cpu_count, hold_blas, row_blocks_exact

# NumbaBackend.unit_split's shapes (split="auto"): (from this many hidden units, below this many rows in the batch).
# Measured (bench/results/unit-split/, training steps in steady state, 2 cores): at latent 256 and 512 the unit split
# is 13-34% faster than the batch split below 16 rows (where the batch split has a single shard: seq2seq's
# MIN_SHARD_ROWS = 8 rows per shard); at latent 512 also at 16 rows (6%), since its GEMMs outside the time loops run on
# every core too (NumbaBackend.matmul); no gain at latent 128, nor from 24 rows (512) or 16 rows (256) up.
UNIT_SPLIT_SHAPES = ((512, 24), (256, 16))
# NumbaBackend.matmul splits a product over the workers from this many multiply-adds (~0.2 ms of one core's work;
# handing a block to a pool thread costs ~50 us).
PARALLEL_MATMUL_MIN_MACS = 1 << 23
# NumbaBackend's compiled attention loops split a batch that is not already a row shard over the workers from this
# many rows per worker (seq2seq's MIN_SHARD_ROWS: a shard of 8 rows pays).
ATTENTION_MIN_ROWS = 8


class NumbaBackend(Backend):
    """NumPy arrays, fused Numba kernels for the pointwise work, BLAS for the GEMMs, and the batch split over
    ``workers`` threads (default: one per core) each calling single-threaded BLAS.

    Why threads over the batch instead of BLAS's own threads: the GEMM on the critical path, one time step (64x256 @
    256x1024), is too small for OpenBLAS to split well; its two threads spend the gain on the hand-off (docs/design.md,
    "The Numba backend"). Two shards of 32 rows, each with its own single-threaded GEMMs and kernels, run the whole
    sequence with no hand-off at all. While the shards run, BLAS is held to one thread (threadpoolctl), so our threads
    and BLAS's never fight over the cores; outside them BLAS keeps its own setting.

    Where the batch split leaves the cores too few rows (below 16 it is a single shard: one core does all the work)
    and the recurrent kernel is large (latent 256 and up; at latent 512 also at 16-23 rows), the workers split the
    hidden units instead (``unit_split``): the batch is one shard, and each LSTM time loop runs on all the workers
    at once, each owning a slice of the units and of the recurrent kernel, with a barrier per time step
    (``recurrence.recurrence_forward_units``); such a step holds BLAS to one thread (``hold_blas``) and runs
    its large GEMMs as blocks of rows on the workers (``matmul``).
    ``split`` (or ``MINILSTM_SPLIT``) forces one or the other: ``"auto"`` (by shape, as measured:
    ``unit_split``), ``"units"``, ``"rows"``.
    """

    name = "numba"
    SPLITS = ("auto", "units", "rows")

    def __init__(self, workers: int | None = None, split: str | None = None):
        try:
            from . import attention_decode, attention_train, barrier, kernels, recurrence
        except ImportError as e:
            raise MinilstmError(f"the numba backend needs numba ({e}); pip install numba, or use --backend numpy") \
                from None
        self.kernels = kernels
        self.time_loops = recurrence
        self.attention_loops = attention_train
        self.attention_decoders = attention_decode
        self._barrier = barrier
        self.workers = max(1, workers if workers is not None else int(os.environ.get("MINILSTM_THREADS", 0))
                           or cpu_count())
        self.split = split or os.environ.get("MINILSTM_SPLIT") or "auto"
        if self.split not in self.SPLITS:
            raise MinilstmError(f"MINILSTM_SPLIT / split must be one of {', '.join(self.SPLITS)}, not {self.split!r}")
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        self._one_thread_blas = None
        if workers is None and self.workers == 1:
            # The process runs on one thread (MINILSTM_THREADS=1, or one CPU): its BLAS too. Left at its default,
            # OpenBLAS ran the step's GEMMs on every core and its worker spun for ~0.1 s after each (``hold_blas``),
            # so two such runs side by side took 2.6x (plain) and 4.6x (attention) their time alone, not ~1x.
            from threadpoolctl import threadpool_limits

            self._one_thread_blas = threadpool_limits(limits=1, user_api="blas")
        # Held while the pool runs: a time loop called from inside a shard (a pool thread) must not split its units
        # over the pool (it would wait for itself), and two callers must not split over the same threads at once.
        self._pool_lock = threading.Lock()
        self._blas = None
        if self.workers > 1:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()

    def parallel_map(self, function, items) -> list:
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        errstate = np.geterr()  # numpy's error handling is per thread: give the workers the caller's

        def run(item):
            with np.errstate(**errstate):
                return function(item)

        with self._pool_lock, self._blas.limit(limits=1, user_api="blas"):
            return list(self._pool.map(run, items))

    def describe(self) -> str:
        return f"numba ({self.workers} thread{'s' if self.workers > 1 else ''})"

    def unit_split(self, batch: int, units: int) -> bool:
        """Whether an LSTM time loop over ``batch`` rows of ``units`` units splits its units over the workers
        (rather than the batch being cut into row shards): with ``split="auto"``, at the UNIT_SPLIT_SHAPES."""
        if self._pool is None or self.split == "rows":
            return False
        return self.split == "units" or any(units >= min_units and batch < max_rows
                                            for min_units, max_rows in UNIT_SPLIT_SHAPES)

    def row_shards(self, batch: int, units: int, min_rows: int) -> int:
        """One shard where the step's time loops split units (and BLAS held to one thread for the step: see
        ``hold_blas``); else the batch split."""
        if self.unit_split(batch, units):
            hold_blas(True)
            return 1
        return super().row_shards(batch, units, min_rows)

    def _each_worker(self, part, on_error=None) -> list:
        """``[part(k) for k in range(workers)]`` run at once: k = 0 on this thread, the others on the pool. Where a
        part fails to start or raises, ``on_error()`` runs first (to release parts waiting for it), then every started
        part is waited for, and the error is raised."""
        futures = []
        try:
            futures = [self._pool.submit(part, k) for k in range(1, self.workers)]
            results = [part(0)]
        except BaseException:
            if on_error is not None:
                on_error()
            wait_all(futures)
            raise
        return results + [future.result() for future in futures]

    def _run_split(self, run_part):
        """``run_part(k, sync)`` for k = 0 .. workers - 1 at once (``_each_worker``), sharing ``sync``
        (``barrier.new_sync()``). Each returns True unless aborted; a part that fails to start or raises sets
        ``sync[ABORT]``, so the others leave their barriers instead of waiting forever."""
        sync = self._barrier.new_sync()

        def abort():
            sync[self._barrier.ABORT] = 1

        def guarded(k):
            try:
                return run_part(k, sync)
            except BaseException:
                abort()
                raise

        if not all(self._each_worker(guarded, on_error=abort)):
            raise RuntimeError("a unit-split time loop was aborted")

    def _try_unit_split(self, batch, units) -> bool:
        """True (holding the pool) where this call runs the unit split; release with ``_pool_lock.release()``."""
        return self.unit_split(batch, units) and self._pool_lock.acquire(blocking=False)

    def matmul(self, a, b, out=None):
        """BLAS; in a unit-split step (BLAS held to one thread, the pool free) a large product is cut into blocks of
        rows of ``a``, one per worker, each a one-thread BLAS call, so the step's GEMMs still use every core without
        waking OpenBLAS's spinning worker thread (``hold_blas``). Why it matters: held to one core, the weight-
        gradient GEMMs cost a unit-split step more than its time loops gained at batch 16, latent 512."""
        rows = a.shape[0]
        if (not blas_held() or self._pool is None or rows < 2 * self.workers
                or rows * a.shape[1] * b.shape[1] < PARALLEL_MATMUL_MIN_MACS or not row_blocks_exact()
                or not self._pool_lock.acquire(blocking=False)):
            return np.matmul(a, b, out=out)
        try:
            if out is None:
                out = np.empty((rows, b.shape[1]), dtype=np.result_type(a, b))
            bounds = [rows * k // self.workers for k in range(self.workers + 1)]

            # Block 0 on this thread (``_each_worker``): with every block on the pool and this thread waiting, the
            # time loops after it ran slower (bench/results/unit-split/README.md, section 6).
            self._each_worker(lambda k: np.matmul(a[bounds[k]:bounds[k + 1]], b, out=out[bounds[k]:bounds[k + 1]]))
        finally:
            self._pool_lock.release()
        return out

    def lstm_cell_forward(self, gates, z_recurrent, c_prev, c, h):
        self.kernels.lstm_cell_forward(gates, z_recurrent, c_prev, c, h)

    def lstm_cell_backward(self, gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev):
        self.kernels.lstm_cell_backward(gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev)

    def lstm_recurrence_forward(self, gates, recurrent_kernel, hs, cs, workspace):
        """The whole time loop in one compiled call (``recurrence``): no BLAS call per step; on all the
        workers at once where ``unit_split`` says so (and the pool is free: not inside a shard)."""
        units = recurrent_kernel.shape[0]
        packed = workspace.get("packed_forward", (self.time_loops.packed_forward_size(units, gates.dtype),),
                               gates.dtype)
        if self._try_unit_split(gates.shape[1], units):
            try:
                self._forward_units(gates, recurrent_kernel, packed, hs, cs, workspace)
            finally:
                self._pool_lock.release()
            return
        self.time_loops.pack_forward(recurrent_kernel, packed)
        z_block = workspace.get("z_block", (self.time_loops.ROW_GROUP, 4 * units), gates.dtype)
        self.time_loops.recurrence_forward(gates, packed, hs, cs, z_block, workspace.get("spill", (64,), gates.dtype))

    def lstm_recurrence_backward(self, gates, cs, recurrent_kernel, d_outputs, dh, dc, dz, workspace=None):
        workspace = workspace or Workspace(np)
        units = recurrent_kernel.shape[0]
        packed = workspace.get("packed_backward", (self.time_loops.packed_backward_size(units, gates.dtype),),
                               gates.dtype)
        if self._try_unit_split(gates.shape[1], units):
            try:
                self._backward_units(gates, cs, recurrent_kernel, packed, d_outputs, dh, dc, dz, workspace)
            finally:
                self._pool_lock.release()
            return
        self.time_loops.pack_backward(recurrent_kernel, packed)
        self.time_loops.recurrence_backward(gates, cs, packed, d_outputs, dh, dc, dz,
                                            workspace.get("spill", (64,), gates.dtype))

    def _forward_units(self, gates, recurrent_kernel, packed, hs, cs, workspace):
        loops, threads, dtype = self.time_loops, self.workers, gates.dtype
        units = recurrent_kernel.shape[0]
        panels = loops.forward_panels(units, dtype)
        z_blocks = workspace.get("z_blocks", (threads, loops.ROW_GROUP, 4 * units), dtype)
        spills = workspace.get("spills", (threads, 64), dtype)

        def part(k, sync):
            first, stop = loops.split_panels(panels, threads, k)
            return loops.recurrence_forward_units(gates, recurrent_kernel, packed, hs, cs, z_blocks[k], spills[k],
                                                  first, stop, sync, threads)

        self._run_split(part)

    def _backward_units(self, gates, cs, recurrent_kernel, packed, d_outputs, dh, dc, dz, workspace):
        loops, threads, dtype = self.time_loops, self.workers, gates.dtype
        units = recurrent_kernel.shape[0]
        panels = loops.backward_panels(units, dtype)
        scratch = workspace.get("cell_scratch", (threads, 3, units), dtype)
        spills = workspace.get("spills", (threads, 64), dtype)

        def part(k, sync):
            first, stop = loops.split_panels(panels, threads, k)
            return loops.recurrence_backward_units(gates, cs, recurrent_kernel, packed, d_outputs, dh, dc, dz,
                                                   spills[k], scratch[k], first, stop, sync, threads)

        self._run_split(part)

    @staticmethod
    def _packed(pack, matrix, size):
        out = np.empty(size, dtype=matrix.dtype)
        pack(matrix, out)
        return out

    def dense(self, inputs, kernel, bias):
        """Our micro-kernel rather than BLAS, so that one decoding step gives the bits ``greedy_decode`` gives."""
        loops = self.time_loops
        packed = self._packed(loops.pack_backward, kernel.T,
                              loops.packed_backward_size_for(kernel.shape[1], kernel.shape[0], kernel.dtype))
        logits = np.empty((inputs.shape[0], kernel.shape[1]), dtype=inputs.dtype)
        loops.dense(np.ascontiguousarray(inputs), packed, bias, logits, np.empty(64, dtype=inputs.dtype))
        return logits

    def greedy_decode(self, kernel, bias, recurrent_kernel, dense_kernel, dense_bias, h, c, start_id, end_id,
                      tokens):
        loops = self.time_loops
        units = recurrent_kernel.shape[0]
        packed_recurrent = self._packed(loops.pack_forward, recurrent_kernel, loops.packed_forward_size(units, h.dtype))
        packed_dense = self._packed(loops.pack_backward, dense_kernel.T,
                                    loops.packed_backward_size_for(dense_kernel.shape[1], units, h.dtype))
        loops.greedy_decode(kernel, bias, packed_recurrent, packed_dense, dense_bias, np.ascontiguousarray(h),
                            np.ascontiguousarray(c), start_id, end_id, tokens)

    attention_feed_scores = ("dot", "general", "concat")
    # The compiled decoders run 16 rows at a time whatever the batch, and a batch of mixed lengths (sorted) is
    # padded to its longest sentence and cut at each distinct length: smaller batches waste less and spread over
    # the workers better. Measured on the shipped model, 2,000 random held-out sentences, 2 threads: 1.0 s in
    # batches of 64 or 128, 1.7 s in batches of 512 (bench/results/serve/mixed-lengths/ab.txt).
    mixed_batch_rows = 128

    def _attention_rows(self, batch, run):
        """``run(first, stop)`` over row ranges covering the batch: one range per worker at once where this call
        holds the pool (not inside a row shard: decoding, a step of one shard) and each gets ATTENTION_MIN_ROWS
        rows; else one range on this thread."""
        parts = min(self.workers, batch // ATTENTION_MIN_ROWS)
        if parts < 2 or not self._pool_lock.acquire(blocking=False):
            run(0, batch)
            return
        try:
            bounds = [batch * k // parts for k in range(parts + 1)]
            self._each_worker(lambda k: run(bounds[k], bounds[k + 1]) if k < parts else None)
        finally:
            self._pool_lock.release()

    @staticmethod
    def _layer_arrays(arrays, dtype):
        """The reference's per-layer list as a tuple for the compiled loops, None (layer 0's input, no dropout) as an
        array with no elements."""
        empty = np.empty((0, 0, 0), dtype=dtype)
        return tuple(empty if a is None else a for a in arrays)

    def _packed_attention_forward(self, input_kernels, recurrent_kernels, output_kernel, concat, dtype):
        """The forward loops' packed weights: per layer ``pack_gates([input kernel; recurrent_kernel])`` (layer 0's
        input kernel has no rows without input feeding), ``pack_backward(output_kernel.T)`` and, for concat
        (``concat`` = (query_kernel, query_bias, score_vector)), (``pack_backward(query_kernel.T)``, query_bias,
        score_vector); arrays with no elements otherwise."""
        attn, loops = self.attention_loops, self.time_loops
        if concat is None:
            empty = np.empty(0, dtype=dtype)
            concat = (empty, empty, empty)
        else:
            query_kernel, query_bias, score_vector = concat
            concat = (self._packed(loops.pack_backward, np.ascontiguousarray(query_kernel.T),
                                   loops.packed_backward_size_for(query_kernel.shape[1], query_kernel.shape[0], dtype)),
                      np.ascontiguousarray(query_bias), np.ascontiguousarray(score_vector))
        units = recurrent_kernels[0].shape[0]
        packed_gates = []
        for pair in zip(input_kernels, recurrent_kernels, strict=True):
            kernel = np.concatenate(pair)
            packed_gates.append(self._packed(attn.pack_gates, kernel,
                                             attn.packed_gates_size(kernel.shape[0], units, dtype)))
        packed_output = self._packed(loops.pack_backward, np.ascontiguousarray(output_kernel.T),
                                     loops.packed_backward_size_for(units, output_kernel.shape[0], dtype))
        return tuple(packed_gates), packed_output, concat

    def attention_feed_forward(self, gates, input_kernels, recurrent_kernels, output_kernel, memory, keys, lengths, hs,
                               cs, feeds, layer_inputs, masks, queries, weights, context, outputs, concat=None):
        """The input-feeding decoder's forward time loop (``attention.attention_feed_forward``, whose doc
        names the arrays); per-layer arguments are lists, ``input_kernels[0]`` the last H rows of layer 0's kernel;
        ``concat``: (query_kernel, query_bias, score_vector, hidden) for the concat score."""
        attn, dtype = self.attention_loops, feeds.dtype
        packed_gates, packed_output, packed_concat = self._packed_attention_forward(
            input_kernels, recurrent_kernels, output_kernel, None if concat is None else concat[:3], dtype)
        hidden = np.empty((0, 0, 0, 0), dtype=dtype) if concat is None else concat[3]
        memory, keys, lengths = (np.ascontiguousarray(a) for a in (memory, keys, lengths))
        gates, hs, cs = tuple(gates), tuple(hs), tuple(cs)
        layer_inputs, masks = self._layer_arrays(layer_inputs, dtype), self._layer_arrays(masks, dtype)
        self._attention_rows(feeds.shape[1], lambda first, stop: attn.attention_feed_forward(
            gates, packed_gates, packed_output, memory, keys, lengths, hs, cs, feeds, layer_inputs, masks, queries,
            weights, context, outputs, (*packed_concat, hidden), attn.GROUP, first, stop))

    def _attention_decoding(self, kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                            dense_bias, memory, keys, lengths, h0, c0, concat):
        """The arguments ``attention_decode``'s decoders share, from the weights (``attention_greedy_decode``)."""
        loops, dtype = self.time_loops, h0.dtype
        packed_gates, packed_output, packed_concat = self._packed_attention_forward(
            input_kernels, recurrent_kernels, output_kernel, concat, dtype)
        packed_dense = self._packed(loops.pack_backward, np.ascontiguousarray(dense_kernel.T),
                                    loops.packed_backward_size_for(dense_kernel.shape[1], dense_kernel.shape[0], dtype))
        memory, keys, lengths, h0, c0 = (np.ascontiguousarray(a) for a in (memory, keys, lengths, h0, c0))
        biases = tuple(np.ascontiguousarray(b) for b in biases)
        return (kernel0, biases, packed_gates, packed_output, packed_dense, dense_bias, memory, keys, lengths, h0, c0,
                packed_concat)

    def attention_greedy_decode(self, kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                                dense_bias, memory, keys, lengths, h0, c0, concat, start_id, end_id, tokens, maps):
        """Batched greedy decoding of an attention model in one call (``attention.attention_greedy_decode``);
        weights as ``attention_feed_forward`` takes them (``input_kernels[0]`` with no rows without input feeding),
        plus layer 0's whole ``kernel0`` and every layer's bias; ``concat``: (query_kernel, query_bias,
        score_vector) or None; ``maps`` (B, steps, S) or None."""
        attn, group = self.attention_decoders, self.attention_loops.GROUP
        args = self._attention_decoding(kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                                        dense_bias, memory, keys, lengths, h0, c0, concat)
        maps = np.empty((0, 0, 0), dtype=h0.dtype) if maps is None else maps
        self._attention_rows(tokens.shape[0], lambda first, stop: attn.attention_greedy_decode(
            *args, start_id, end_id, tokens, maps, group, first, stop))

    def attention_beam_decode(self, kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                              dense_bias, memory, keys, lengths, h0, c0, concat, start_id, end_id, tokens, scores,
                              length_penalty=0.0):
        """Beam search of an attention model in one call (``attention.attention_beam_decode``): ``tokens``
        (B, K, steps) filled with END, ``scores`` (B, K) float64 are written; ``length_penalty`` is GNMT's alpha
        (``Seq2Seq.beam_decode_ids``); the rest as ``attention_greedy_decode``."""
        attn, group = self.attention_decoders, self.attention_loops.GROUP
        args = self._attention_decoding(kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                                        dense_bias, memory, keys, lengths, h0, c0, concat)
        self._attention_rows(tokens.shape[0], lambda first, stop: attn.attention_beam_decode(
            *args, start_id, end_id, tokens, scores, length_penalty, group, first, stop))

    def attention_sample_decode(self, kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                                dense_bias, memory, keys, lengths, h0, c0, concat, start_id, end_id, temperature,
                                uniforms, tokens) -> int:
        """Sampling of an attention model in one call (``attention.attention_sample_decode``), on this thread:
        ``tokens`` (B, steps) filled with END is written with the numbers ``uniforms`` (steps, B); returns the steps
        run. The rest as ``attention_greedy_decode``."""
        attn, group = self.attention_decoders, self.attention_loops.GROUP
        args = self._attention_decoding(kernel0, biases, input_kernels, recurrent_kernels, output_kernel, dense_kernel,
                                        dense_bias, memory, keys, lengths, h0, c0, concat)
        return attn.attention_sample_decode(*args, start_id, end_id, float(temperature), uniforms, tokens, group)

    def attention_feed_backward(self, gates, cs, masks, input_kernels, recurrent_kernels, output_kernel, memory, keys,
                                lengths, queries, weights, outputs, d_outputs, dh, dc, dz, d_pre, d_memory, d_keys,
                                concat=None):
        """The backward time loop (``attention.attention_feed_backward``), per-layer arguments as lists;
        ``d_keys`` None for dot (its keys are the memory, so their gradient goes into ``d_memory``); ``concat``:
        (query_kernel, score_vector, hidden, d_scores, d_q) for the concat score."""
        attn, loops, dtype = self.attention_loops, self.time_loops, d_pre.dtype
        empty = np.empty(0, dtype=dtype)
        if concat is None:
            empty3 = np.empty((0, 0, 0), dtype=dtype)
            concat = (empty, empty, np.empty((0, 0, 0, 0), dtype=dtype), empty3, empty3)
        else:
            query_kernel, score_vector, hidden, d_scores, d_q = concat
            concat = (self._packed(loops.pack_backward, np.ascontiguousarray(query_kernel),
                                   loops.packed_backward_size_for(query_kernel.shape[0], query_kernel.shape[1], dtype)),
                      np.ascontiguousarray(score_vector), hidden, d_scores, d_q)
        units = recurrent_kernels[0].shape[0]
        packed_step = np.empty((len(gates), loops.packed_backward_size_for(2 * units, 4 * units, dtype)), dtype=dtype)
        for layer, pair in enumerate(zip(input_kernels, recurrent_kernels, strict=True)):
            loops.pack_backward(np.concatenate(pair), packed_step[layer])
        packed_output_t = self._packed(loops.pack_backward, np.ascontiguousarray(output_kernel),
                                       loops.packed_backward_size_for(output_kernel.shape[0], units, dtype))
        memory, keys, lengths, d_outputs = (np.ascontiguousarray(a) for a in (memory, keys, lengths, d_outputs))
        d_keys = d_memory if d_keys is None else d_keys
        gates, cs, masks, packed_step, dh, dc, dz = (tuple(gates), tuple(cs), self._layer_arrays(masks, dtype),
                                                     tuple(packed_step), tuple(dh), tuple(dc), tuple(dz))
        self._attention_rows(d_pre.shape[0], lambda first, stop: attn.attention_feed_backward(
            gates, cs, packed_step, packed_output_t, memory, keys, lengths, queries, weights, outputs, masks, d_outputs,
            dh, dc, dz, d_pre, d_memory, d_keys, concat, attn.GROUP, first, stop))

    def gather_rows_add(self, table, ids, bias, out=None):
        if out is None:
            out = np.empty(ids.shape + (table.shape[1],), dtype=table.dtype)
        self.kernels.gather_rows_add(table, ids.reshape(-1), bias, out.reshape(-1, table.shape[1]))
        return out

    def scatter_add_rows(self, out, ids, values):
        self.kernels.scatter_add_rows(out, ids, values)

    def dropout_mask(self, shape, rate, key, row_offset, dtype):
        mask = np.empty(shape, dtype=dtype)
        self.kernels.dropout_mask(mask, rate, np.uint64(key), row_offset)
        return mask

    def softmax_cross_entropy(self, logits, target_ids, grad_scale, label_smoothing=0.0):
        d_logits = np.empty_like(logits)
        loss_sum, n_correct = self.kernels.softmax_cross_entropy(logits, target_ids, grad_scale, d_logits,
                                                                 float(label_smoothing))
        return np.float64(loss_sum), np.int64(n_correct), d_logits

    # The optimizers: a factor of exactly 1 in the array's dtype where there is no clipping (g * 1 is g, bit for bit);
    # a clipping factor is rounded to that dtype first, as numpy does with ``grads * grad_scale``.

    def sum_of_squares(self, array):
        return self.kernels.sum_of_squares(array)

    @staticmethod
    def _factor(array, grad_scale):
        return array.dtype.type(1.0 if grad_scale is None else grad_scale)

    def rmsprop_update(self, params, grads, velocity, learning_rate, rho, epsilon, epsilon_inside_sqrt,
                       grad_scale=None):
        self.kernels.rmsprop_update(params, grads, velocity, learning_rate, rho, epsilon, epsilon_inside_sqrt,
                                    self._factor(grads, grad_scale))

    def adam_update(self, params, grads, m, v, step_size, beta_1, beta_2, epsilon, bias_correction2_sqrt,
                    grad_scale=None):
        self.kernels.adam_update(params, grads, m, v, step_size, beta_1, beta_2, epsilon, bias_correction2_sqrt,
                                 self._factor(grads, grad_scale))

    def sgd_update(self, params, grads, momentum_buffer, learning_rate, momentum, grad_scale=None):
        self.kernels.sgd_update(params, grads, momentum_buffer, learning_rate, momentum,
                                self._factor(grads, grad_scale))

