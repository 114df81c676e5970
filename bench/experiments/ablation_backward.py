"""Where the compiled input-feeding backward loop spends its time: ``attention.attention_feed_backward`` with
parts of its step switched off (timing only: the results are wrong), the attention decoder's backward (one row
shard: 32 rows, latent 256, 59 steps, 16 source positions, ``general``, float32, one thread, BLAS held to one
thread; the weight-gradient GEMMs after the loop included, in every mode), modes interleaved round by round, median
and best of the rounds. The companion of ``ablation.py`` (the forward loop).

Parts (bits of MODE): 1 the context's backward (d a_s = d c . hbar_s, and d memory += a_s d c), 2 the scores'
backward (d query += d score_s keys_s, and d keys += d score_s h), 4 the W_c GEMM (d pre @ W_c^T), 8 the gate GEMM
(dz @ [V; U]^T), 16 the cell's backward, 32 only the two accumulations into d memory and d keys (the loop's
read-modify-writes of the (S, M) and (S, H) arrays of every row at every step). MODE 31 leaves what is outside the
loop (packing, the weight-gradient GEMMs, allocations).

    python -m bench.experiments.ablation_backward
"""

import inspect
import textwrap
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

import minilstm.backends.numba.attention_train as attn
from bench.experiments.ablation import one_shard, report

GUARDS = {  # the first line of a call in the loop -> the bit that switches it off
    "_multiply(d_pre_flat, 0, rows, units, packed_output_t, d_joined_flat, mem_size + units, spill)": 4,
    "total = _context_backward(": 1,
    "_dot_backward(d_a, total,": 2,
    "_cell_backward_row(": 16,
    "_multiply(dz[layer].reshape(-1),": 8,
}


@njit(inline="always", error_model="numpy")
def _context_backward_no_rmw(d_context, a, length, memory_t, d_memory, d_a):
    """``_context_backward`` without its accumulation into d memory."""
    zero = attn.one(d_context[0]) - attn.one(d_context[0])
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
    return total


@njit(inline="always", error_model="numpy")
def _dot_backward_no_rmw(d_a, total, h, a, length, keys, d_query, d_keys):
    """``_dot_backward`` without its accumulation into d keys."""
    for s in range(a.shape[0]):
        if s < length:
            d_score = a[s] * (d_a[s] - total)
            key = keys[s]
            for k in range(h.shape[0]):
                d_query[k] += d_score * key[k]


def variant(mode):
    """attention_feed_backward with the parts in ``mode`` switched off, compiled."""
    lines = textwrap.dedent(inspect.getsource(attn.attention_feed_backward.py_func)).splitlines()
    out = []
    continuing = False
    found = 0
    for line in lines:
        if line.startswith("@njit"):
            continue
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if continuing:  # the continuation lines of a guarded call
            out.append("    " + line)
            continuing = stripped.endswith(",")
            continue
        bit = next((b for key, b in GUARDS.items() if stripped.startswith(key)), None)
        if bit is not None:
            found += 1
            if bit == 1:  # its result is read below
                out.append(f"{indent}total = d_a[0]")
            out.append(f"{indent}if MODE & {bit} == 0:")
            out.append("    " + line)
            continuing = stripped.endswith(",")
        else:
            out.append(line)
    assert found == len(GUARDS), "a guarded line was not found: update GUARDS"
    source = "\n".join(out)
    if mode & 32:
        source = source.replace("_context_backward(", "_context_backward_no_rmw(")
        source = source.replace("_dot_backward(", "_dot_backward_no_rmw(")
    namespace = dict(vars(attn), MODE=mode, _context_backward_no_rmw=_context_backward_no_rmw,
                     _dot_backward_no_rmw=_dot_backward_no_rmw)
    exec(source, namespace)  # noqa: S102 - our own function's source, rewritten above
    return njit(nogil=True, error_model="numpy")(namespace["attention_feed_backward"])


def main():
    decoder, params, (ids, state, memory, lengths), rng = one_shard()
    d_outputs = rng.standard_normal(ids.shape + (decoder.units,)).astype(np.float32)
    modes = (0, 1, 2, 32, 4, 8, 16, 31)
    functions = {mode: variant(mode) for mode in modes}
    times = {mode: [] for mode in modes}
    original = attn.attention_feed_backward
    with threadpool_limits(limits=1, user_api="blas"):
        _, _, cache = decoder.forward(params, ids, state, memory, lengths, training=True)
        for round_ in range(12):
            for mode in modes:
                attn.attention_feed_backward = functions[mode]
                start = time.perf_counter()
                decoder.backward(params, cache, d_outputs)
                if round_ >= 2:  # the first two: compiling, warming
                    times[mode].append(time.perf_counter() - start)
    attn.attention_feed_backward = original
    names = {0: "everything", 1: "no context backward", 2: "no scores backward", 32: "no d memory/d keys RMW",
             4: "no W_c GEMM", 8: "no gate GEMM", 16: "no cell backward", 31: "none of these"}
    report(times, names)


if __name__ == "__main__":
    main()
