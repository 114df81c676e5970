"""A layer's whole time loop on the CPU as one compiled function: no Python and no BLAS call per time step.

The CPU twin of kernels/lstm_persistent.cu (docs/design.md, "The Numba backend"). The reference
(``lstm.recurrence_forward/backward``) calls BLAS once per time step, and each call repacks the whole recurrent kernel
(1 MiB at latent 256) into OpenBLAS's internal layout before it multiplies 32 or 64 rows by it: a fixed cost paid 150
times per training step. Here the recurrent kernel is packed once per call of the time loop, into the layout our own
register-tiled micro-kernel reads, and the whole loop runs inside one ``nogil`` function. The cores share the work in
one of two ways (``NumbaBackend.unit_split`` chooses): the batch split (a shard of rows per core, each core runs the
whole sequence for its rows, no barrier; every core streams the whole recurrent kernel at every step) or the unit split
(``recurrence_forward_units``/``recurrence_backward_units``: every core runs every row, each owning a range of hidden
units and its slice of the kernel, which stays in its own cache; a barrier per time step, ``barrier.wait``).

The micro-kernel (``_product4``, or ``_product2`` without AVX-512: ``MICRO_ROWS``) multiplies 4 (2) rows by one
panel of 4 vectors (64 columns in float32 with AVX-512, 32 with AVX2: ``simd.REGISTER_BYTES``): 16 (8) accumulators
that stay in registers (``simd``) for the whole reduction, one broadcast and 4 fused multiply-adds per row and step
of the reduction, the panel read contiguously.

Forward, one time step (``_forward_step``), for each block of 4 rows: for each panel of LANES hidden units (16 in
float32), the recurrent pre-activations of the four gates of those units, ``h_{t-1}[rows] @
recurrent_kernel[:, panel's columns of i, f, c, o]``, into a small block (L1-resident); then the cell
(``kernels.lstm_cell_forward``, the kernel the per-step path uses) on the block while it is in L1.

    packed_forward[panel, k, gate, lane] = recurrent_kernel[k, gate * H + panel * LANES + lane]   (0 past H)

Backward, one time step: the cell backward for every row (``kernels.lstm_cell_backward``: dz_t, dc), then
``dh = dz_t @ recurrent_kernel^T`` with the same micro-kernel over the transposed, packed kernel, 4 x LANES output
units per panel:

    packed_backward[panel, j, lane] = recurrent_kernel[panel * 4 * LANES + lane, j]   (0 past H)

The weight gradients stay one large GEMM each after the loop (``lstm.lstm_backward``), which BLAS does well.

Each output element is one chain of fused multiply-adds over k in order, the same for a row whatever its batch or
block, and whichever thread owns its unit: results do not depend on threads, timing, the split or batch composition
(bit-identical from run to run), and differ from BLAS's only by rounding. Float64 keeps libm's exact activations
(the cell kernels), so gradient checks stay exact.
"""

import numpy as np
from numba import njit

from . import barrier, simd
from .kernels import lstm_cell_backward, lstm_cell_backward_units, lstm_cell_forward, lstm_cell_forward_units

# Rows per micro-kernel call, from the vector width (simd.REGISTER_BYTES, decided from the CPU at import): with
# AVX-512, 4 rows x 4 vectors = 16 accumulators, half its 32 registers; with AVX2 (16 registers of 32 bytes), 2 rows
# x 4 vectors = 8 accumulators, 4 panel vectors and the broadcast: 13 registers (3 rows need 17 and spill; measured
# on a Zen 3 core: 2 x 4 ran at 52-62 GFLOP/s, 3 x 4 at 31, 4 x 4 at 24-27, AVX-512's shape split in two 29).
# The shape does not change any result: each output is the same chain of fused multiply-adds over k either way.
MICRO_ROWS = 4 if simd.REGISTER_BYTES == 64 else 2
ROW_GROUP = 16  # rows that share one pass over each panel of the recurrent kernel in the forward step


def packed_forward_size(units: int, dtype) -> int:
    lanes = simd.lanes(dtype)
    return -(-units // lanes) * units * 4 * lanes


def packed_backward_size(units: int, dtype) -> int:
    return packed_backward_size_for(units, 4 * units, dtype)


def packed_backward_size_for(rows: int, columns: int, dtype) -> int:
    """Size of ``pack_backward`` of a (rows, columns) matrix: panels of 4 x LANES rows, each (columns, 4 x LANES)."""
    width = 4 * simd.lanes(dtype)
    return -(-rows // width) * columns * width


@njit(inline="always", error_model="numpy")
def _pack_forward_panels(recurrent_kernel, packed, first_panel, stop_panel):
    units = recurrent_kernel.shape[0]
    lanes = simd.lanes_of(packed)
    panels = -(-units // lanes)
    if first_panel < stop_panel and stop_panel == panels:
        packed[(panels - 1) * units * 4 * lanes : panels * units * 4 * lanes] = 0.0  # lanes past H stay 0
    for k in range(units):
        row = recurrent_kernel[k]
        for panel in range(first_panel, stop_panel):
            count = min(lanes, units - panel * lanes)
            base = (panel * units + k) * 4 * lanes
            for gate in range(4):
                source = gate * units + panel * lanes
                packed[base + gate * lanes : base + gate * lanes + count] = row[source : source + count]


@njit(cache=True, nogil=True, error_model="numpy")
def pack_forward(recurrent_kernel, packed):
    _pack_forward_panels(recurrent_kernel, packed, 0, -(-recurrent_kernel.shape[0] // simd.lanes_of(packed)))


@njit(inline="always", error_model="numpy")
def _pack_backward_panels(recurrent_kernel, packed, first_panel, stop_panel):
    units, four_units = recurrent_kernel.shape
    width = 4 * simd.lanes_of(packed)
    packed[first_panel * four_units * width : stop_panel * four_units * width] = 0.0
    for panel in range(first_panel, stop_panel):
        for j0 in range(0, four_units, 16):
            tile = min(16, four_units - j0)
            for lane in range(min(width, units - panel * width)):
                row = recurrent_kernel[panel * width + lane]
                base = (panel * four_units + j0) * width + lane
                for j in range(tile):
                    packed[base + j * width] = row[j0 + j]


@njit(cache=True, nogil=True, error_model="numpy")
def pack_backward(recurrent_kernel, packed):
    """A transpose, in tiles of 16 columns so that the 16 output rows a tile writes stay in L1. Any (rows, columns)
    matrix packs so (the dense kernel for decoding, transposed)."""
    _pack_backward_panels(recurrent_kernel, packed, 0, -(-recurrent_kernel.shape[0] // (4 * simd.lanes_of(packed))))


# ---------------------------------------------------------------------------------------------------------------
# The micro-kernel: rows of a (rows, depth) times one packed panel (depth, 4 vectors), accumulators in registers.
# Arrays are passed flat with offsets: a view per row costs a reference-count call inside the loop, and around a
# call every vector register is spilled to the stack (seen in the generated code).


@njit(inline="always", error_model="numpy")
def _product4(a, start, depth, packed, base):
    """The 4 rows of ``depth`` numbers from a[start] times the panel from packed[base]: 16 vectors, (row, vector)."""
    lanes = simd.lanes_of(packed)
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = simd.zeros(packed)
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = simd.zeros(packed)
    for k in range(depth):
        offset = base + k * 4 * lanes
        b0 = simd.load(packed, offset)
        b1 = simd.load(packed, offset + lanes)
        b2 = simd.load(packed, offset + 2 * lanes)
        b3 = simd.load(packed, offset + 3 * lanes)
        x = simd.broadcast(a, start + k)
        c00, c01, c02, c03 = simd.fma(x, b0, c00), simd.fma(x, b1, c01), simd.fma(x, b2, c02), simd.fma(x, b3, c03)
        x = simd.broadcast(a, start + depth + k)
        c10, c11, c12, c13 = simd.fma(x, b0, c10), simd.fma(x, b1, c11), simd.fma(x, b2, c12), simd.fma(x, b3, c13)
        x = simd.broadcast(a, start + 2 * depth + k)
        c20, c21, c22, c23 = simd.fma(x, b0, c20), simd.fma(x, b1, c21), simd.fma(x, b2, c22), simd.fma(x, b3, c23)
        x = simd.broadcast(a, start + 3 * depth + k)
        c30, c31, c32, c33 = simd.fma(x, b0, c30), simd.fma(x, b1, c31), simd.fma(x, b2, c32), simd.fma(x, b3, c33)
    return ((c00, c01, c02, c03), (c10, c11, c12, c13), (c20, c21, c22, c23), (c30, c31, c32, c33))


@njit(inline="always", error_model="numpy")
def _product2(a, start, depth, packed, base):
    """``_product4`` for 2 rows: 8 vectors, (row, vector); the AVX2 shape (16 registers)."""
    lanes = simd.lanes_of(packed)
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = simd.zeros(packed)
    for k in range(depth):
        offset = base + k * 4 * lanes
        b0 = simd.load(packed, offset)
        b1 = simd.load(packed, offset + lanes)
        b2 = simd.load(packed, offset + 2 * lanes)
        b3 = simd.load(packed, offset + 3 * lanes)
        x = simd.broadcast(a, start + k)
        c00, c01, c02, c03 = simd.fma(x, b0, c00), simd.fma(x, b1, c01), simd.fma(x, b2, c02), simd.fma(x, b3, c03)
        x = simd.broadcast(a, start + depth + k)
        c10, c11, c12, c13 = simd.fma(x, b0, c10), simd.fma(x, b1, c11), simd.fma(x, b2, c12), simd.fma(x, b3, c13)
    return ((c00, c01, c02, c03), (c10, c11, c12, c13))


@njit(inline="always", error_model="numpy")
def _product1(a, start, depth, packed, base):
    """One row: 4 vectors (the rows left over after the blocks of MICRO_ROWS)."""
    lanes = simd.lanes_of(packed)
    c0 = c1 = c2 = c3 = simd.zeros(packed)
    for k in range(depth):
        offset = base + k * 4 * lanes
        x = simd.broadcast(a, start + k)
        c0 = simd.fma(x, simd.load(packed, offset), c0)
        c1 = simd.fma(x, simd.load(packed, offset + lanes), c1)
        c2 = simd.fma(x, simd.load(packed, offset + 2 * lanes), c2)
        c3 = simd.fma(x, simd.load(packed, offset + 3 * lanes), c3)
    return c0, c1, c2, c3


@njit(inline="always", error_model="numpy")
def _spill4(z, spill):
    """The 4 vectors of ``z`` to spill[0 : 4 * LANES]. Tuples of vectors are indexed with constants only: an index
    known at run time makes Numba put the whole tuple in memory."""
    lanes = simd.lanes_of(spill)
    simd.store(spill, 0, z[0])
    simd.store(spill, lanes, z[1])
    simd.store(spill, 2 * lanes, z[2])
    simd.store(spill, 3 * lanes, z[3])


# ---------------------------------------------------------------------------------------------------------------
# The time loops.


@njit(inline="always", error_model="numpy")
def _store_gates(z, out, start, unit, units, spill):
    """The 4 vectors ``z`` (gates i, f, c, o of the units from ``unit``) into a row of ``out`` (4H) at ``start``,
    in Keras's layout (gate blocks of H), cut at ``units``."""
    lanes = simd.lanes_of(spill)
    if unit + lanes <= units:
        simd.store(out, start + unit, z[0])
        simd.store(out, start + units + unit, z[1])
        simd.store(out, start + 2 * units + unit, z[2])
        simd.store(out, start + 3 * units + unit, z[3])
    else:
        _spill4(z, spill)
        for gate in range(4):
            for lane in range(units - unit):
                out[start + gate * units + unit + lane] = spill[gate * lanes + lane]


# One block of MICRO_ROWS rows through the micro-kernel, its results stored (the shape chosen at import; a tuple of
# vectors is indexed with constants only, so each shape is its own function).
if MICRO_ROWS == 4:
    @njit(inline="always", error_model="numpy")
    def _block_gates(a, start, depth, packed, base, out, out_row, unit, units, spill):
        """Rows a[start], a[start + depth], ... times the panel at ``base`` into rows of ``out`` (4H) from
        ``out_row`` (``_store_gates``)."""
        z = _product4(a, start, depth, packed, base)
        _store_gates(z[0], out, out_row, unit, units, spill)
        _store_gates(z[1], out, out_row + 4 * units, unit, units, spill)
        _store_gates(z[2], out, out_row + 8 * units, unit, units, spill)
        _store_gates(z[3], out, out_row + 12 * units, unit, units, spill)
else:
    @njit(inline="always", error_model="numpy")
    def _block_gates(a, start, depth, packed, base, out, out_row, unit, units, spill):
        z = _product2(a, start, depth, packed, base)
        _store_gates(z[0], out, out_row, unit, units, spill)
        _store_gates(z[1], out, out_row + 4 * units, unit, units, spill)


@njit(inline="always", error_model="numpy")
def _recurrent_panels(h_prev_flat, first, end, units, packed, first_panel, stop_panel, z_flat, spill):
    """The recurrent pre-activations of rows [first, end) for the units of panels [first_panel, stop_panel) into
    ``z_flat`` (the group's rows of 4H, Keras's layout): for each panel, the micro-kernel over the group's blocks of
    MICRO_ROWS rows, so that the panel is read from memory once per group, then from L1/L2."""
    four_units = 4 * units
    lanes = simd.lanes_of(packed)
    for panel in range(first_panel, stop_panel):
        base = panel * units * 4 * lanes
        unit = panel * lanes
        row = first
        while row < end:
            z_row = (row - first) * four_units
            if row + MICRO_ROWS <= end:
                _block_gates(h_prev_flat, row * units, units, packed, base, z_flat, z_row, unit, units, spill)
                row += MICRO_ROWS
            else:
                _store_gates(_product1(h_prev_flat, row * units, units, packed, base), z_flat, z_row, unit, units,
                             spill)
                row += 1


@njit(nogil=True, error_model="numpy")
def _forward_step(gates, packed, h_prev, c_prev, h, c, z_block, spill):
    """One time step for a batch: ``gates`` (B, 4H) holds the input part on entry and the activated gates on exit;
    writes ``h``, ``c`` (B, H).

    Rows go in groups of ROW_GROUP: for each panel, the micro-kernel runs over the group's blocks of 4 rows (the
    panel is read from memory once per group, then from L1/L2), filling the group's recurrent pre-activations
    (``z_block``, ROW_GROUP x 4H: 64 KiB at latent 256, in L2); then the cell (``kernels.lstm_cell_forward``)
    runs on the group while it is there. Measured: this beat running the cell on the registers inside each panel,
    whose vector activations made the 12 accumulators of the other rows spill to the stack (13 vs 17.5 ms per 75
    steps of 32 rows)."""
    batch, four_units = gates.shape
    units = four_units // 4
    panels = -(-units // simd.lanes_of(packed))
    h_prev_flat, z_flat = h_prev.reshape(-1), z_block.reshape(-1)
    first = 0
    while first < batch:
        end = min(first + ROW_GROUP, batch)
        _recurrent_panels(h_prev_flat, first, end, units, packed, 0, panels, z_flat, spill)
        lstm_cell_forward(gates[first:end], z_block[: end - first], c_prev[first:end], c[first:end], h[first:end])
        first = end


@njit(cache=True, nogil=True, error_model="numpy")
def recurrence_forward(gates, packed, hs, cs, z_block, spill):
    """``lstm.recurrence_forward`` with the recurrent kernel packed by ``pack_forward``. Scratch: ``z_block``
    (ROW_GROUP, 4H), ``spill`` (4 * LANES,). All arrays C-contiguous."""
    for t in range(gates.shape[0]):
        _forward_step(gates[t], packed, hs[t], cs[t], hs[t + 1], cs[t + 1], z_block, spill)


@njit(inline="always", error_model="numpy")
def _store_units(z, out, start, count, spill):
    """out[start : start + count] = the first ``count`` numbers of the 4 vectors ``z``."""
    lanes = simd.lanes_of(spill)
    if count == 4 * lanes:
        simd.store(out, start, z[0])
        simd.store(out, start + lanes, z[1])
        simd.store(out, start + 2 * lanes, z[2])
        simd.store(out, start + 3 * lanes, z[3])
    else:
        _spill4(z, spill)
        for lane in range(count):
            out[start + lane] = spill[lane]


if MICRO_ROWS == 4:
    @njit(inline="always", error_model="numpy")
    def _block_units(a, start, depth, packed, base, out, target, width, count, spill):
        """Rows a[start], a[start + depth], ... times the panel at ``base`` into rows of ``out`` (``width``
        columns) from ``target`` (``_store_units``)."""
        z = _product4(a, start, depth, packed, base)
        _store_units(z[0], out, target, count, spill)
        _store_units(z[1], out, target + width, count, spill)
        _store_units(z[2], out, target + 2 * width, count, spill)
        _store_units(z[3], out, target + 3 * width, count, spill)
else:
    @njit(inline="always", error_model="numpy")
    def _block_units(a, start, depth, packed, base, out, target, width, count, spill):
        z = _product2(a, start, depth, packed, base)
        _store_units(z[0], out, target, count, spill)
        _store_units(z[1], out, target + width, count, spill)


@njit(inline="always", error_model="numpy")
def _multiply_panels(a, start, rows, depth, packed, out, width, spill, first_panel, stop_panel):
    """Columns of panels [first_panel, stop_panel) of ``_multiply``."""
    panel_width = 4 * simd.lanes_of(packed)
    for panel in range(first_panel, stop_panel):
        base = panel * depth * panel_width
        column = panel * panel_width
        count = min(panel_width, width - column)
        row = 0
        while row < rows:
            first = start + row * depth
            target = row * width + column
            if row + MICRO_ROWS <= rows:
                _block_units(a, first, depth, packed, base, out, target, width, count, spill)
                row += MICRO_ROWS
            else:
                _store_units(_product1(a, first, depth, packed, base), out, target, count, spill)
                row += 1


@njit(inline="always", error_model="numpy")
def _multiply(a, start, rows, depth, packed, out, width, spill):
    """out (rows, width) = the ``rows`` rows of ``depth`` numbers from a[start] times the matrix packed by
    ``pack_backward`` (panels of 4 x LANES output columns), all flat: panel by panel, so that each panel is read
    from memory once for all rows."""
    _multiply_panels(a, start, rows, depth, packed, out, width, spill, 0, -(-width // (4 * simd.lanes_of(packed))))


@njit(cache=True, nogil=True, error_model="numpy")
def recurrence_backward(gates, cs, packed, d_outputs, dh, dc, dz, spill):
    """``lstm.recurrence_backward`` with the recurrent kernel packed by ``pack_backward`` (``d_outputs`` may be
    None); ``spill`` (4 * LANES,) is scratch. All arrays C-contiguous."""
    steps, batch, four_units = gates.shape
    units = four_units // 4
    dh_flat, dz_flat = dh.reshape(-1), dz.reshape(-1)
    for t in range(steps - 1, -1, -1):
        if d_outputs is None:
            lstm_cell_backward(gates[t], cs[t], cs[t + 1], dh, None, dc, dz[t], dc)
        else:
            lstm_cell_backward(gates[t], cs[t], cs[t + 1], dh, d_outputs[t], dc, dz[t], dc)
        _multiply(dz_flat, t * batch * four_units, batch, four_units, packed, dh_flat, units, spill)


# ---------------------------------------------------------------------------------------------------------------
# The unit split: the threads share one layer's time loop, each owning a range of panels (hidden units), and meet
# at a barrier (``barrier.wait``) once per time step. ``threads`` copies of the same function run at once, copy
# ``k`` with the panel range ``split_panels(panels, threads, k)``; ``sync`` is their shared ``barrier.new_sync()``.
# Each returns True, or False when the run was aborted (``sync[barrier.ABORT]``).


def split_panels(panels: int, threads: int, part: int) -> tuple[int, int]:
    """Panels [first, stop) of thread ``part`` of ``threads``: contiguous, as even as whole panels allow."""
    return panels * part // threads, panels * (part + 1) // threads


def forward_panels(units: int, dtype) -> int:
    """Panels of the forward split: LANES units each (16 in float32)."""
    return -(-units // simd.lanes(dtype))


def backward_panels(units: int, dtype) -> int:
    """Panels of the backward split: 4 x LANES units each (64 in float32), the columns one micro-kernel call of
    ``dz @ recurrent_kernel^T`` writes."""
    return -(-units // (4 * simd.lanes(dtype)))


@njit(cache=True, nogil=True, error_model="numpy")
def recurrence_forward_units(gates, recurrent_kernel, packed, hs, cs, z_block, spill, first_panel, stop_panel,
                             sync, threads):
    """``recurrence_forward`` for the units of panels [first_panel, stop_panel) of every row, this thread's part
    of a unit split. It packs its own panels first (they are then in its core's cache), and per time step computes
    its units' recurrent pre-activations from the whole h_{t-1} and its units' cell, writing its columns of
    ``gates[t]``, ``hs[t + 1]``, ``cs[t + 1]``; then it waits at the barrier until every thread's part of h_t is
    written, which step t + 1 reads. Nothing else is shared: ``z_block`` (ROW_GROUP, 4H) and ``spill`` are this
    thread's own scratch. Each element is computed exactly as in ``recurrence_forward`` (the same micro-kernel
    chain over k, the same cell operations), so the bits do not depend on the split."""
    steps, batch, four_units = gates.shape
    units = four_units // 4
    lanes = simd.lanes_of(packed)
    first_unit, stop_unit = first_panel * lanes, min(stop_panel * lanes, units)
    _pack_forward_panels(recurrent_kernel, packed, first_panel, stop_panel)
    z_flat = z_block.reshape(-1)
    for t in range(steps):
        if first_panel < stop_panel:
            h_prev_flat = hs[t].reshape(-1)
            first = 0
            while first < batch:
                end = min(first + ROW_GROUP, batch)
                _recurrent_panels(h_prev_flat, first, end, units, packed, first_panel, stop_panel, z_flat, spill)
                lstm_cell_forward_units(gates[t, first:end], z_block[: end - first], cs[t, first:end],
                                        cs[t + 1, first:end], hs[t + 1, first:end], first_unit, stop_unit)
                first = end
        if t + 1 < steps and not barrier.wait(sync, threads * (t + 1)):
            return False
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def recurrence_backward_units(gates, cs, recurrent_kernel, packed, d_outputs, dh, dc, dz, spill, scratch,
                              first_panel, stop_panel, sync, threads):
    """``recurrence_backward`` for the units of panels [first_panel, stop_panel) (panels of 4 x LANES units), this
    thread's part of a unit split. Per time step: the cell backward of its units (its columns of ``dz[t]``, its
    units of ``dc``), the barrier (``dz[t]`` whole), then its units of ``dh = dz[t] @ recurrent_kernel^T`` (its rows
    of the kernel, packed by itself). The next step's cell reads only this thread's own units of ``dh`` and ``dc``,
    so one barrier per step is all. ``scratch`` (3, 4 x LANES x (stop_panel - first_panel)) is its own."""
    steps, batch, four_units = gates.shape
    units = four_units // 4
    width = 4 * simd.lanes_of(packed)
    first_unit, stop_unit = first_panel * width, min(stop_panel * width, units)
    _pack_backward_panels(recurrent_kernel, packed, first_panel, stop_panel)
    dh_flat, dz_flat = dh.reshape(-1), dz.reshape(-1)
    for t in range(steps - 1, -1, -1):
        if first_panel < stop_panel:
            if d_outputs is None:
                lstm_cell_backward_units(gates[t], cs[t], cs[t + 1], dh, None, dc, dz[t], dc, first_unit, stop_unit,
                                         scratch)
            else:
                lstm_cell_backward_units(gates[t], cs[t], cs[t + 1], dh, d_outputs[t], dc, dz[t], dc, first_unit,
                                         stop_unit, scratch)
        if not barrier.wait(sync, threads * (steps - t)):
            return False
        _multiply_panels(dz_flat, t * batch * four_units, batch, four_units, packed, dh_flat, units, spill,
                         first_panel, stop_panel)
    return True


# ---------------------------------------------------------------------------------------------------------------
# Batched greedy decoding: the decoder's whole loop in one call.


@njit(inline="always", error_model="numpy")
def _argmax(row):
    """The index of the first of equal maxima, as numpy's argmax (a NaN never wins here)."""
    best = 0
    for k in range(1, row.shape[0]):
        if row[k] > row[best]:
            best = k
    return best


@njit(nogil=True, error_model="numpy")
def _dense(h, packed, bias, logits, spill):
    """logits = h @ kernel + bias, the dense kernel packed by ``pack_backward(kernel.T)`` (panels of 4 x LANES
    outputs). The same micro-kernel and order as everywhere here, so a row's logits do not depend on its batch."""
    batch, units = h.shape
    vocab = bias.shape[0]
    _multiply(h.reshape(-1), 0, batch, units, packed, logits.reshape(-1), vocab, spill)
    for row in range(batch):
        for k in range(vocab):
            logits[row, k] += bias[k]


@njit(cache=True, nogil=True, error_model="numpy")
def dense(h, packed, bias, logits, spill):
    _dense(h, packed, bias, logits, spill)


@njit(nogil=True, error_model="numpy")
def _decode_step(table, prev, packed, h_prev, c_prev, h, c, gates_block, z_block, spill):
    """``_forward_step`` for decoding: a row's input part is the row ``prev[row]`` of ``table`` (the input kernel
    plus the bias), copied per row group into ``gates_block`` (ROW_GROUP, 4H) right before the cell, so that it
    is read from L1/L2 rather than gathered for the whole batch first (2 MiB at 512 rows, past L2). Same numbers,
    same operations: the same bits as ``_forward_step`` on the gathered gates."""
    batch, units = h_prev.shape
    four_units = 4 * units
    panels = -(-units // simd.lanes_of(packed))
    h_prev_flat, z_flat = h_prev.reshape(-1), z_block.reshape(-1)
    first = 0
    while first < batch:
        end = min(first + ROW_GROUP, batch)
        _recurrent_panels(h_prev_flat, first, end, units, packed, 0, panels, z_flat, spill)
        for row in range(first, end):
            source, target = table[prev[row]], gates_block[row - first]
            for k in range(four_units):
                target[k] = source[k]
        lstm_cell_forward(gates_block[: end - first], z_block[: end - first], c_prev[first:end], c[first:end],
                          h[first:end])
        first = end


@njit(cache=True, nogil=True, error_model="numpy")
def greedy_decode(kernel, bias, packed_recurrent, packed_dense, dense_bias, h0, c0, start_id, end_id, tokens):
    """The example's greedy loop for a whole batch: from states ``h0``, ``c0`` (B, H) feed START, take the argmax
    of the logits (the first of equal maxima, as numpy's argmax), feed it back; a row stops at its END.
    ``tokens`` (B, steps) is filled with END first and gets each row's characters. Finished rows are dropped (the
    rest move up), so late steps only compute the sentences still going.

    The input part of a step is a row of ``kernel + bias`` (a table computed once: the same sums the per-step
    gather gave), read per row group (``_decode_step``). The new states are written to a second pair of arrays,
    which then swap with the first: rows move only where an earlier row of the batch has finished."""
    batch, units = h0.shape
    vocab = dense_bias.shape[0]
    dtype = h0.dtype
    table = np.empty(kernel.shape, dtype=dtype)
    for v in range(kernel.shape[0]):
        for k in range(4 * units):
            table[v, k] = kernel[v, k] + bias[k]
    h, c = h0.copy(), c0.copy()
    h_next, c_next = np.empty_like(h), np.empty_like(c)
    logits = np.empty((batch, vocab), dtype=dtype)
    gates_block = np.empty((ROW_GROUP, 4 * units), dtype=dtype)
    z_block = np.empty((ROW_GROUP, 4 * units), dtype=dtype)
    spill = np.empty(4 * simd.lanes_of(h0), dtype=dtype)
    sentence = np.arange(batch)  # row -> the sentence it decodes
    prev = np.full(batch, start_id, dtype=np.int64)
    going = batch
    for step in range(tokens.shape[1]):
        _decode_step(table, prev, packed_recurrent, h[:going], c[:going], h_next[:going], c_next[:going],
                     gates_block, z_block, spill)
        _dense(h_next[:going], packed_dense, dense_bias, logits[:going], spill)
        kept = 0
        for row in range(going):
            best = _argmax(logits[row])
            tokens[sentence[row], step] = best
            if best != end_id:  # still going: move up into place ``kept``
                if kept != row:
                    sentence[kept] = sentence[row]
                    h_next[kept], c_next[kept] = h_next[row], c_next[row]
                prev[kept] = best
                kept += 1
        going = kept
        if going == 0:
            break
        h, h_next = h_next, h
        c, c_next = c_next, c
