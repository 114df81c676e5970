"""Where the compiled input-feeding forward loop spends its time: ``attention.attention_feed_forward`` with
parts of its step switched off (timing only: the results are wrong), the attention decoder's forward (one row
shard: 32 rows, latent 256, 59 steps, 16 source positions, ``general``, float32, one thread, BLAS held to one
thread), modes interleaved round by round, median and best of the rounds.

Parts (bits of MODE): 1 the attention (scores, softmax, context), 2 the W_c GEMM ([c, h] @ output_kernel), 4 the
LSTM cell, 8 the gate GEMM ([feed, h] @ [V; U]), 16 htilde's tanh and its two stores. MODE 31 leaves what is
outside the loop (packing, the gather, allocations). The variants are made from the function's own source, each
switched-off call wrapped in ``if MODE & bit == 0``.

    python -m bench.experiments.ablation
"""

import inspect
import statistics
import textwrap
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

import minilstm.backends.numba.attention_train as attn
from minilstm.attention import AttentionDecoder
from minilstm.backends.numba import NumbaBackend
from minilstm.nn import Parameters

GUARDS = {  # a line of the loop -> the bit that switches it off
    "_gate_panels(x_flat, rows, depth, units, packed_gates[layer], z_flat, spill)": 8,
    "lstm_cell_forward(gates[layer][t, first:end], z[:rows], c_layer[t, first:end],": 4,
    "_dot_scores(h, keys_t[r], scores, lengths[b])": 1,
    "_softmax_context(scores, lengths[b], memory[b], weights[b, t], context[b, t])": 1,
    "_multiply(joined_flat, 0, rows, mem_size + units, packed_output, pre_flat, units, spill)": 2,
}


def variant(mode):
    """attention_feed_forward with the parts in ``mode`` switched off, compiled."""
    lines = textwrap.dedent(inspect.getsource(attn.attention_feed_forward.py_func)).splitlines()
    out = []
    skip_next = False
    for line in lines:
        if line.startswith("@njit"):
            continue
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if skip_next:  # the continuation line of a guarded call
            out.append("    " + line)
            skip_next = False
            continue
        bit = next((b for key, b in GUARDS.items() if stripped.startswith(key)), None)
        if bit is not None:
            out.append(f"{indent}if MODE & {bit} == 0:")
            out.append("    " + line)
            skip_next = stripped.endswith(",")
        elif stripped == "for k in range(units):" and "value = act_tanh" in "".join(lines[lines.index(line):][:2]):
            out.append(f"{indent}for k in range(units if MODE & 16 == 0 else 0):")
        else:
            out.append(line)
    assert "\n".join(out).count("MODE &") == len(GUARDS) + 1, "a guarded line was not found: update GUARDS"
    namespace = dict(vars(attn), MODE=mode)
    exec("\n".join(out), namespace)  # noqa: S102 - our own function's source, rewritten above
    return njit(nogil=True, error_model="numpy")(namespace["attention_feed_forward"])


def one_shard():
    """The decoder of one row shard at the example's shape, its weights and random inputs, and the generator (for
    more inputs drawn after these): (decoder, params, (ids, state, memory, lengths), rng)."""
    steps, positions, vocab, rows, units = 59, 16, 93, 32, 256
    decoder = AttentionDecoder(units, vocab_size=vocab, score="general")
    params = Parameters(NumbaBackend(workers=1), [decoder], np.float32, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (steps, rows))
    state = tuple(rng.standard_normal((2, 1, rows, units)).astype(np.float32))
    memory = rng.standard_normal((positions, rows, units)).astype(np.float32)
    lengths = rng.integers(positions // 2, positions + 1, rows)
    return decoder, params, (ids, state, memory, lengths), rng


def report(times, names):
    for mode, samples in times.items():
        print(f"  mode {mode:2d} {names[mode]:24s} {1e3 * statistics.median(samples):7.2f} ms "
              f"(best {1e3 * min(samples):.2f})")


def main():
    decoder, params, (ids, state, memory, lengths), _ = one_shard()
    modes = (0, 1, 2, 4, 8, 16, 31)
    functions = {mode: variant(mode) for mode in modes}
    times = {mode: [] for mode in modes}
    original = attn.attention_feed_forward
    with threadpool_limits(limits=1, user_api="blas"):
        for round_ in range(12):
            for mode in modes:
                attn.attention_feed_forward = functions[mode]
                start = time.perf_counter()
                decoder.forward(params, ids, state, memory, lengths)
                if round_ >= 2:  # the first two: compiling, warming
                    times[mode].append(time.perf_counter() - start)
    attn.attention_feed_forward = original
    names = {0: "everything", 1: "no attention", 2: "no W_c GEMM", 4: "no cell", 8: "no gate GEMM",
             16: "no tanh + stores", 31: "none of these"}
    report(times, names)


if __name__ == "__main__":
    main()
