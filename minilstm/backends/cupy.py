"""The GPU backend: CuPy arrays, cuBLAS GEMMs, and our own CUDA kernels from ``kernels/``.

Two ways to run the recurrence (docs/design.md, "The CuPy backend"), chosen by ``recurrence``:

- ``per-step`` (the reference, ``kernels/lstm.cu``): one cuBLAS GEMM and one fused cell kernel per time step.
- ``persistent`` (``kernels/lstm_persistent.cu``): one cooperative launch per layer and direction runs every time
  step, with the layer's recurrent weights split over the blocks' shared memory. Where a shape does not fit
  (shared memory above 48 KiB per block), that call runs per step instead.

Both share the rest: weight gradients as one GEMM over all steps, deterministic scatter-add (no atomics, so runs
repeat bit for bit), fused softmax cross-entropy and a single fused optimizer launch over the flat parameter buffer
(with gradient clipping, two more before it for the global norm, deterministic too, and no read-back).
"""

from pathlib import Path

import numpy as np

from ..errors import MinilstmError
from .base import Backend

INSTALL_HINT = "pip install 'minilstm[cuda13]' (CUDA 13) or 'minilstm[cuda12]' (CUDA 12), or use --backend numba"
THREADS = 256
RECURRENCES = ("per-step", "persistent")
SHARED_LIMIT = 48 * 1024  # dynamic shared memory a kernel may use without opting in to more
SUM_BLOCKS = 1024  # most blocks in the first pass of the global norm (their partial sums go to one block)


def kernel_dir() -> Path:
    """Where the ``.cu`` sources are: inside the installed package (wheel or editable install) or, in a source
    checkout, the top-level ``kernels/`` folder."""
    try:
        from importlib.resources import files

        installed = files("minilstm.kernels")
        if installed.joinpath("lstm.cu").is_file():
            return Path(str(installed))
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parents[2] / "kernels"
    if (checkout / "lstm.cu").is_file():
        return checkout
    raise MinilstmError("the CUDA kernel sources (kernels/lstm.cu) are missing from this installation; reinstall "
                        "minilstm")


def _grid(n: int) -> tuple[int]:
    return (max(1, min((n + THREADS - 1) // THREADS, 65535)),)


class CupyBackend(Backend):
    name = "cupy"
    cheap_sync = False
    max_chunk = 64  # columns of h (forward) or dz (backward) staged in shared memory at a time

    def __init__(self, recurrence: str = "per-step"):
        try:
            import cupy
        except ImportError as e:
            raise MinilstmError(f"the cupy backend needs CuPy, which is not installed ({e}): {INSTALL_HINT}") from None
        try:
            devices = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001 - CUDARuntimeError, or a driver/library mismatch
            raise MinilstmError(f"the cupy backend found no usable CUDA GPU ({str(e).splitlines()[0]}); use "
                                "--backend numba") from None
        if devices == 0:
            raise MinilstmError("the cupy backend found no CUDA GPU; use --backend numba")

        def compile_source(source: str, cooperative: bool = False):
            return cupy.RawModule(code=source, options=("--std=c++17",), enable_cooperative_groups=cooperative)

        self._start(cupy, compile_source, recurrence)

    def _start(self, xp, compile_source, recurrence: str):
        """Everything but finding CuPy and a GPU: the tests' CPU emulator (tests/cuda_emulator) starts the backend
        here with numpy and its own ``compile_source``."""
        if recurrence not in RECURRENCES:
            raise MinilstmError(f"unknown recurrence {recurrence!r}; choose one of: {', '.join(RECURRENCES)}")
        self.xp = xp
        self.recurrence = recurrence
        self.module = compile_source((kernel_dir() / "lstm.cu").read_text(encoding="utf-8"))
        self.persistent_module = None
        self._kernels = {}
        if recurrence == "persistent":
            try:  # build now, so that a failure is one clear line at the start, not a traceback mid-training
                self.persistent_module = compile_source(
                    (kernel_dir() / "lstm_persistent.cu").read_text(encoding="utf-8"), cooperative=True)
                for name in ("lstm_forward_persistent", "lstm_backward_persistent"):
                    for dtype in (np.float32, np.float64):
                        self._kernel(name, dtype, self.persistent_module)
            except Exception as e:  # noqa: BLE001 - NVRTC, linker or driver errors: all mean "not here"
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise MinilstmError(f"the persistent CUDA kernels do not build on this installation ({first}); CuPy "
                                    "builds cooperative kernels with the CUDA toolkit's cudadevrt. Use --backend "
                                    "cupy") from None
            self._barrier = xp.zeros(2, dtype=np.uint32)  # grid_barrier's state; every launch leaves it usable

    def _kernel(self, name: str, dtype, module=None):
        """The kernel ``name`` instantiated for ``dtype`` (``name_f32``/``name_f64``); dtype None: ``name`` itself."""
        if dtype is None:
            key = name
        else:
            key = f"{name}_{ {np.dtype(np.float32): 'f32', np.dtype(np.float64): 'f64'}[np.dtype(dtype)]}"
        if key not in self._kernels:
            self._kernels[key] = (module or self.module).get_function(key)
        return self._kernels[key]

    def _resident_blocks(self) -> int:
        """How many blocks of a persistent kernel surely run at once: one per multiprocessor (CuPy would shrink a
        larger cooperative grid to what fits, and the kernels trap on a grid too small). Asked once: a host call."""
        if not hasattr(self, "_multiprocessors"):
            props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
            self._multiprocessors = int(props["multiProcessorCount"])
        return self._multiprocessors

    def asarray(self, array, dtype=None):
        return self.xp.asarray(array, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        return self.xp.asnumpy(array)

    def synchronize(self):
        self.xp.cuda.get_current_stream().synchronize()

    def describe(self) -> str:
        props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy ({name}, {self.recurrence} recurrence)"

    @staticmethod
    def _contiguous(*arrays):
        for a in arrays:
            if a is not None and not a.flags.c_contiguous:
                raise ValueError("the CUDA kernels take C-contiguous arrays")

    def lstm_cell_forward(self, gates, z_recurrent, c_prev, c, h):
        self._contiguous(gates, z_recurrent, c_prev, c, h)
        batch, units = c_prev.shape
        self._kernel("lstm_cell_forward", gates.dtype)(
            _grid(batch * units), (THREADS,), (gates, z_recurrent, c_prev, c, h, np.int32(batch), np.int32(units)))

    def lstm_cell_backward(self, gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev):
        self._contiguous(gates, c_prev, c, dh_recurrent, dh_output, dc, dz, dc_prev)
        batch, units = c.shape
        null = np.uint64(0)  # dh_output absent: a null pointer (the encoder's outputs are unused)
        self._kernel("lstm_cell_backward", gates.dtype)(
            _grid(batch * units), (THREADS,),
            (gates, c_prev, c, dh_recurrent, null if dh_output is None else dh_output, dc, dz, dc_prev,
             np.int32(batch), np.int32(units)))

    def gather_rows_add(self, table, ids, bias, out=None):
        cp = self.xp
        width = table.shape[1]
        flat_ids = cp.ascontiguousarray(ids.reshape(-1), dtype=cp.int64)
        if out is None:
            out = cp.empty(ids.shape + (width,), dtype=table.dtype)
        self._contiguous(table, bias, out)
        self._kernel("gather_rows_add", table.dtype)(
            _grid(flat_ids.size * width), (THREADS,),
            (table, flat_ids, bias, out, np.int64(flat_ids.size), np.int32(width)))
        return out

    def scatter_add_rows(self, out, ids, values):
        cp = self.xp
        vocab, width = out.shape
        flat_ids = cp.ascontiguousarray(ids.reshape(-1), dtype=cp.int64)
        order = cp.argsort(flat_ids).astype(cp.int64)  # rows grouped by id, so each sum has a fixed order
        seg_start = cp.zeros(vocab + 1, dtype=cp.int64)
        seg_start[1:] = cp.cumsum(cp.bincount(flat_ids, minlength=vocab))
        self._contiguous(out, values)
        self._kernel("scatter_add_sorted", out.dtype)(
            (vocab, (width + THREADS - 1) // THREADS), (THREADS,), (out, order, seg_start, values, np.int32(width)))

    def softmax_cross_entropy(self, logits, target_ids, grad_scale, label_smoothing=0.0):
        cp = self.xp
        rows, vocab = logits.shape
        self._contiguous(logits)
        targets = cp.ascontiguousarray(target_ids, dtype=cp.int64)
        d_logits = cp.empty_like(logits)
        row_loss = cp.empty(rows, dtype=cp.float64)
        row_hit = cp.empty(rows, dtype=cp.int32)
        threads = 128 if vocab <= 128 else 256
        shared = threads * (logits.dtype.itemsize + 4 + 2 * 8)
        self._kernel("softmax_cross_entropy", logits.dtype)(
            (rows,), (threads,),
            (logits, targets, np.float64(grad_scale), d_logits, row_loss, row_hit, np.int32(vocab),
             np.float64(label_smoothing)),
            shared_mem=shared)
        return row_loss.sum(), row_hit.sum(), d_logits

    # --- attention ------------------------------------------------------------------------------------------------

    @staticmethod
    def _row_threads(width: int) -> int:
        """A power of two from 32 to 256 threads for a block per row of ``width`` elements."""
        threads = 32
        while threads < min(width, 256):
            threads *= 2
        return threads

    def masked_softmax(self, scores, lengths):
        cp = self.xp
        batch, steps, sources = scores.shape
        weights = cp.array(scores, order="C")  # the kernel works in place, on a copy
        lengths = cp.ascontiguousarray(lengths, dtype=cp.int64)
        threads = self._row_threads(sources)
        self._kernel("masked_softmax", weights.dtype)(
            (batch * steps,), (threads,), (weights, lengths, np.int32(steps), np.int32(sources)),
            shared_mem=threads * 8)
        return weights

    def masked_softmax_backward(self, weights, d_weights):
        cp = self.xp
        weights, d_weights = cp.ascontiguousarray(weights), cp.ascontiguousarray(d_weights)
        d_scores = cp.empty_like(weights)
        sources = weights.shape[-1]
        threads = self._row_threads(sources)
        self._kernel("masked_softmax_backward", weights.dtype)(
            (weights.size // sources,), (threads,), (weights, d_weights, d_scores, np.int32(sources)),
            shared_mem=threads * 8)
        return d_scores

    # --- the optimizers -------------------------------------------------------------------------------------------

    def _norm_and_scale(self, array, clip_norm: float):
        """A device array [clipping factor for ``clip_norm``, sum of squares of ``array``] (float64): per-block
        partial sums over a grid that depends on the size alone, then one block adds them, so every run adds in the
        same order. Nothing is read back."""
        cp = self.xp
        self._contiguous(array)
        blocks = max(1, min(-(-array.size // THREADS), SUM_BLOCKS))
        partials = cp.empty(blocks, dtype=cp.float64)
        self._kernel("sum_squares_partial", array.dtype)(
            (blocks,), (THREADS,), (array, np.int64(array.size), partials), shared_mem=THREADS * 8)
        out = cp.empty(2, dtype=cp.float64)
        self._kernel("global_norm_scale", None)(
            (1,), (THREADS,), (partials, np.int32(blocks), np.float64(clip_norm), out), shared_mem=THREADS * 8)
        return out

    def sum_of_squares(self, array):
        """A device scalar."""
        return self._norm_and_scale(array, 1.0)[1]

    def clip_scale(self, grads, clip_norm):
        """A device array whose first element is the factor: the update kernels read it there."""
        return self._norm_and_scale(grads, clip_norm)

    @staticmethod
    def _scale_pointer(grad_scale):
        return np.uint64(0) if grad_scale is None else grad_scale  # null: no clipping

    def rmsprop_update(self, params, grads, velocity, learning_rate, rho, epsilon, epsilon_inside_sqrt,
                       grad_scale=None):
        self._contiguous(params, grads, velocity)
        self._kernel("rmsprop_update", params.dtype)(
            _grid(params.size), (THREADS,),
            (params, grads, velocity, np.int64(params.size), np.float64(learning_rate), np.float64(rho),
             np.float64(epsilon), np.int32(bool(epsilon_inside_sqrt)), self._scale_pointer(grad_scale)))

    def adam_update(self, params, grads, m, v, step_size, beta_1, beta_2, epsilon, bias_correction2_sqrt,
                    grad_scale=None):
        self._contiguous(params, grads, m, v)
        self._kernel("adam_update", params.dtype)(
            _grid(params.size), (THREADS,),
            (params, grads, m, v, np.int64(params.size), np.float64(step_size), np.float64(beta_1),
             np.float64(beta_2), np.float64(epsilon), np.float64(bias_correction2_sqrt),
             self._scale_pointer(grad_scale)))

    def sgd_update(self, params, grads, momentum_buffer, learning_rate, momentum, grad_scale=None):
        self._contiguous(params, grads, momentum_buffer)
        self._kernel("sgd_update", params.dtype)(
            _grid(params.size), (THREADS,),
            (params, grads, momentum_buffer, np.int64(params.size), np.float64(learning_rate), np.float64(momentum),
             self._scale_pointer(grad_scale)))

    # --- the persistent recurrence ----------------------------------------------------------------------------

    def _persistent_plan(self, direction: str, batch: int, units: int, itemsize: int):
        """(blocks, threads, units_per_block, chunk, shared bytes) for a persistent launch, or None where the
        layer's slice of the weights leaves no room in shared memory (then the call runs per step)."""
        units_per_block = -(-units // self._resident_blocks())
        blocks = -(-units // units_per_block)
        if direction == "forward":  # weights (H x 4u) | z (B x 4u) | staged h (B x (chunk + 1))
            fixed, width = units * 4 * units_per_block + batch * 4 * units_per_block, units
        else:  # weights (u x 4H) | dh, dc (B x u each) | staged dz (B x (chunk + 1))
            fixed, width = units_per_block * 4 * units + 2 * batch * units_per_block, 4 * units
        chunk = min(self.max_chunk, width)
        while chunk >= 1 and (fixed + batch * (chunk + 1)) * itemsize > SHARED_LIMIT:
            chunk //= 2
        if chunk < 1:
            return None
        work = batch * 4 * units_per_block  # the widest loop in either kernel
        threads = THREADS if work >= THREADS else max(32, -(-work // 32) * 32)
        return blocks, threads, units_per_block, chunk, (fixed + batch * (chunk + 1)) * itemsize

    def lstm_recurrence_forward(self, gates, recurrent_kernel, hs, cs, workspace):
        steps, batch, four_units = gates.shape
        plan = None
        if self.recurrence == "persistent" and steps > 0:
            plan = self._persistent_plan("forward", batch, four_units // 4, gates.dtype.itemsize)
        if plan is None:
            return super().lstm_recurrence_forward(gates, recurrent_kernel, hs, cs, workspace)
        blocks, threads, units_per_block, chunk, shared = plan
        self._contiguous(gates, recurrent_kernel, hs, cs)
        self._kernel("lstm_forward_persistent", gates.dtype, self.persistent_module)(
            (blocks,), (threads,),
            (gates, recurrent_kernel, hs, cs, self._barrier, np.int32(steps), np.int32(batch),
             np.int32(four_units // 4), np.int32(units_per_block), np.int32(chunk)), shared_mem=shared)

    def lstm_recurrence_backward(self, gates, cs, recurrent_kernel, d_outputs, dh, dc, dz, workspace=None):
        steps, batch, four_units = gates.shape
        plan = None
        if self.recurrence == "persistent" and steps > 0:
            plan = self._persistent_plan("backward", batch, four_units // 4, gates.dtype.itemsize)
        if plan is None:
            return super().lstm_recurrence_backward(gates, cs, recurrent_kernel, d_outputs, dh, dc, dz, workspace)
        blocks, threads, units_per_block, chunk, shared = plan
        self._contiguous(gates, cs, recurrent_kernel, d_outputs, dh, dc, dz)
        self._kernel("lstm_backward_persistent", gates.dtype, self.persistent_module)(
            (blocks,), (threads,),
            (gates, cs, recurrent_kernel, np.uint64(0) if d_outputs is None else d_outputs, dh, dc, dz,
             self._barrier, np.int32(steps), np.int32(batch), np.int32(four_units // 4), np.int32(units_per_block),
             np.int32(chunk)), shared_mem=shared)
