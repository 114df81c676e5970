"""Where batched greedy decoding goes on this CPU (numba backend): the 2,000 validation sentences as bench.py decodes
them (``Seq2Seq.translate``, chunks of up to 512 on the backend's workers), then the parts of one decoding step
timed alone on fixed inputs, one thread, at a chunk's 512 rows and latent 256:

- the input part (the per-row gather of the input kernel's rows, as ``greedy_decode`` did it before the table),
- the recurrent micro-kernel plus the cell (``_forward_step``, on gathered gates),
- the same with the input part read from the ``kernel + bias`` table per row group (``_decode_step``, what
  ``greedy_decode`` runs),
- the output layer (``_dense``: the micro-kernel over the packed dense kernel, plus the bias),
- the argmax over the logits and the compaction copies of the rows still going,
- the packing of the two kernels (once per call) and the encoder (once per chunk).

    python -m bench.profile_decode [--checkpoint DIR] [--rounds N]

With ``--checkpoint`` the decode uses trained weights (rows stop at END); without, untrained ones (every row runs
all max_decoder_len + 1 steps). Prints the FLOP floor of the decode (its GEMMs) next to the measured parts.
"""

import argparse
import statistics
from pathlib import Path

import numpy as np
from numba import njit

from bench.profile_cpu import median_us
from minilstm.backends.numba import NumbaBackend, simd
from minilstm.backends.numba import recurrence as loops
from minilstm.data import Dataset, encode_inputs, resolve_pairs, split_validation
from minilstm.seq2seq import Seq2Seq


@njit(nogil=True, error_model="numpy")
def gather(kernel, bias, prev, gates, going):
    """The input part of one step, as greedy_decode writes it."""
    units4 = gates.shape[1]
    for row in range(going):
        for k in range(units4):
            gates[row, k] = kernel[prev[row], k] + bias[k]


@njit(nogil=True, error_model="numpy")
def argmax_compact(logits, h, c, h_next, c_next, sentence, prev, tokens, step, end_id, going):
    """The argmax and the compaction of one step, as greedy_decode writes them (END never wins here, so every row
    is copied: the untrained case)."""
    kept = 0
    for row in range(going):
        best = loops._argmax(logits[row])
        tokens[sentence[row], step] = best
        if best != end_id:
            sentence[kept], prev[kept] = sentence[row], best
            h[kept], c[kept] = h_next[row], c_next[row]
            kept += 1
    return kept


def forward_step(gates, packed, h, c, h_next, c_next, z_block, spill):
    loops._forward_step(gates, packed, h, c, h_next, c_next, z_block, spill)


def median_ms(fn, repeats):
    return median_us(fn, repeats) / 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=512)
    args = parser.parse_args()

    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    backend = NumbaBackend()
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=256, dtype="float32").initialize(0)
    if args.checkpoint:
        from minilstm.checkpoint import load_checkpoint

        model.set_weights(load_checkpoint(args.checkpoint).model.get_weights())
    rng = np.random.default_rng(0)
    _, val_idx = split_validation(len(dataset))  # bench.py's 2,000 validation sentences
    texts = [dataset.input_texts[k] for k in val_idx]
    steps = dataset.max_decoder_len + 1
    units, vocab = 256, len(dataset.target_vocab)
    print(f"simd.REGISTER_BYTES = {simd.REGISTER_BYTES}, lanes(float32) = {simd.lanes(np.float32)}, "
          f"MICRO_ROWS = {getattr(loops, 'MICRO_ROWS', '?')}")

    # The whole thing, as bench.py's decode_batched.
    model.translate(texts[:64], split_sentences=False)
    whole = [median_ms(lambda: model.translate(texts, split_sentences=False), 1) for _ in range(args.rounds)]
    ids = encode_inputs(texts, dataset.input_vocab, dataset.max_encoder_len)
    decoded = model.greedy_decode_ids(ids)
    tokens_run = sum(min(len(d) + 1, steps) for d in decoded)
    print(f"translate(2,000 texts), {backend.workers} worker(s): median {statistics.median(whole):.1f} ms "
          f"(all: {', '.join(f'{w:.0f}' for w in whole)})")
    print(f"row-steps run (with END): {tokens_run} of {len(texts) * steps} ({tokens_run / len(texts):.1f} per row)")

    # The parts, one thread, on fixed inputs.
    p = model.params
    rows = args.rows
    kernel, bias = p["decoder.kernel"], p["decoder.bias"]
    recurrent, dense_kernel, dense_bias = p["decoder.recurrent_kernel"], p["dense.kernel"], p["dense.bias"]
    packed_r = np.empty(loops.packed_forward_size(units, np.float32), np.float32)
    packed_d = np.empty(loops.packed_backward_size_for(vocab, units, np.float32), np.float32)
    pack_ms = median_ms(lambda: (loops.pack_forward(recurrent, packed_r),
                                 loops.pack_backward(np.ascontiguousarray(dense_kernel.T), packed_d)), 20)
    h = (rng.standard_normal((rows, units)) * 0.5).astype(np.float32)
    c = (rng.standard_normal((rows, units)) * 0.5).astype(np.float32)
    h_next, c_next = np.empty_like(h), np.empty_like(c)
    gates = np.empty((rows, 4 * units), np.float32)
    logits = np.empty((rows, vocab), np.float32)
    z_block = np.empty((loops.ROW_GROUP, 4 * units), np.float32)
    spill = np.empty(64, np.float32)
    prev = rng.integers(0, vocab, rows).astype(np.int64)
    sentence = np.arange(rows)
    tokens = np.empty((rows, steps), np.int64)
    repeats = 50
    t_gather = median_ms(lambda: gather(kernel, bias, prev, gates, rows), repeats)
    gates_in = gates.copy()

    def recurrent_step():
        gates[:] = gates_in
        forward_step(gates, packed_r, h, c, h_next, c_next, z_block, spill)

    t_copy = median_ms(lambda: gates.__setitem__(slice(None), gates_in), repeats)
    t_step = median_ms(recurrent_step, repeats) - t_copy
    table = kernel + bias
    gates_block = np.empty((loops.ROW_GROUP, 4 * units), np.float32)
    t_decode_step = median_ms(lambda: loops._decode_step(table, prev, packed_r, h, c, h_next, c_next, gates_block,
                                                         z_block, spill), repeats)
    t_dense = median_ms(lambda: loops.dense(h_next, packed_d, dense_bias, logits, spill), repeats)
    h_keep, c_keep = h.copy(), c.copy()
    t_argmax = median_ms(lambda: argmax_compact(logits, h_keep, c_keep, h_next, c_next, sentence, prev.copy(),
                                                tokens, 0, -1, rows), repeats)
    encoder_ids = ids[:rows]
    t_encode = median_ms(lambda: model.encode(encoder_ids), 10)

    flop_rec = 2 * rows * units * 4 * units
    flop_dense = 2 * rows * units * vocab
    per_step = t_decode_step + t_dense + t_argmax
    print(f"\nOne decoding step of {rows} rows, one thread (median of {repeats}):")
    print("| part | ms | GFLOP/s |")
    print("| --- | --- | --- |")
    print(f"| input gather (kernel[prev] + bias) | {t_gather:.3f} | |")
    print(f"| recurrent micro-kernel + cell (_forward_step) | {t_step:.3f} | {flop_rec / t_step / 1e6:.1f} |")
    print(f"| input part from the table + recurrent micro-kernel + cell (_decode_step) | {t_decode_step:.3f} "
          f"| {flop_rec / t_decode_step / 1e6:.1f} |")
    print(f"| output layer (_dense) | {t_dense:.3f} | {flop_dense / t_dense / 1e6:.1f} |")
    print(f"| argmax + compaction copies | {t_argmax:.3f} | |")
    print(f"| sum per step (_decode_step, _dense, argmax) | {per_step:.3f} "
          f"| {(flop_rec + flop_dense) / per_step / 1e6:.1f} |")
    print(f"| packing both kernels (once per call) | {pack_ms:.3f} | |")
    print(f"| encoder, {rows} rows x {dataset.max_encoder_len} steps (once per chunk; may use both cores) "
          f"| {t_encode:.3f} | {2 * rows * dataset.max_encoder_len * units * 4 * units / t_encode / 1e6:.1f} |")

    n = len(texts)
    decoder_flops = n * steps * 2 * units * (4 * units + vocab)
    encoder_flops = n * dataset.max_encoder_len * 2 * units * 4 * units
    print(f"\nFLOP of the untrained decode: decoder {decoder_flops / 1e9:.1f} GFLOP "
          f"({n} rows x {steps} steps x 2*{units}*({4 * units}+{vocab})), encoder {encoder_flops / 1e9:.1f} GFLOP")
    est = (n / 2) / rows * (steps * per_step + t_encode + pack_ms)
    print(f"sum of the parts for the untrained decode on 2 cores (each {n // 2} rows): {est:.0f} ms")


if __name__ == "__main__":
    main()
