"""A model of SentencePiece pieces against PyTorch's same model, side by side on one thread each: the training step
and batched greedy decoding, with the output layer as large as the pieces (4,000 by default).

    python -m bench.units_speed --data ../shared/data/fra-eng/fra.txt --units sentencepiece:4000 --json OUT.json

- the model: the quality recipe's (a bidirectional encoder of 2 x 128, a decoder of 256, ``general`` attention
  without input feeding, embeddings of 128, ``--mask-padding``), float32; PyTorch's is ``bench.torch_models``'s
  ``TorchSeq2Seq`` with the same weights (``nn.Embedding``, fused ``nn.LSTM``s, the same attention, ``nn.Linear``);
- the units: learnt from the training pairs by training's own ``unit_vocabularies`` (the held-out split of
  ``minilstm.training``, seed 0; each side's distinct sentences);
- the training step: the same batches for both (``minilstm.data.Batches``: rows of one English length, the decoder
  run to the batch's longest French, padding targets ignored), forward, backward and RMSprop; the contestants take
  turns of ``--steps`` steps, ``--rounds`` times, after untimed warm-up steps; the median per step;
- batched greedy decoding: ``--sentences`` held-out English sentences in batches of ``--decode-batch``, weights with
  END's output bias at -100 so that every sentence runs to the length limit (the same work for both); turns as above;
- the floor: the step's GEMM FLOPs (every position of each batch as run: encoder, decoder, attention and output
  layer, forward and both backward products) over BLAS's own sgemm rate on one thread, measured in the same run.

Prints a table and writes ``--json``; nothing else.
"""

import argparse
import contextlib
import datetime
import io
import json
import os
import statistics
import sys
import time

os.environ.setdefault("MINILSTM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.bench import sgemm_peak  # noqa: E402
from bench.machine import cpu_model  # noqa: E402
from bench.torch_models import TorchSeq2Seq  # noqa: E402
from minilstm.data import Batches, Dataset, encode_inputs, resolve_pairs, validation_rows  # noqa: E402
from minilstm.optim import RMSprop  # noqa: E402
from minilstm.seq2seq import Seq2Seq  # noqa: E402
from minilstm.training import unit_vocabularies  # noqa: E402
from minilstm.vocab import END, START  # noqa: E402

LATENT, EMBEDDING = 128, 128


def build(args):
    pairs = resolve_pairs(args.data, args.num_samples)
    train_rows, held = validation_rows(pairs, 0.2, "random", 0)
    train_pairs = [pairs[k] for k in train_rows]
    with contextlib.redirect_stdout(io.StringIO()):  # its progress line is not part of the report
        vocabs = unit_vocabularies(args.units, train_pairs)
    dataset = Dataset.from_pairs(pairs, *vocabs)
    model = Seq2Seq("numba", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=LATENT, dtype="float32", bidirectional_encoder=True,
                    attention="general", input_feed=False, mask_padding=True,
                    embedding_dim=EMBEDDING).initialize(0, init="pytorch")
    held_texts = sorted({pairs[k][0] for k in held})
    texts = [held_texts[k] for k in np.random.default_rng(0).permutation(len(held_texts))[: args.sentences]]
    return dataset, train_rows, model, texts


def step_flops(model, batch_shapes) -> float:
    """GEMM FLOPs of one training step averaged over ``batch_shapes`` ((B, S, T) each): 3 products (forward, input
    gradient, weight gradient) of 2 * m * k * n each."""
    vocab_out, h, e = len(model.target_vocab), model.decoder_units, EMBEDDING
    total = 0.0
    for b, s, t in batch_shapes:
        encoder = 2 * s * b * (e + LATENT) * 4 * LATENT  # two directions
        decoder = t * b * (e + h) * 4 * h
        attention = t * b * h * h + 2 * t * b * s * h + t * b * 2 * h * h  # key, scores and context, output
        total += 3 * 2 * (encoder + decoder + attention + t * b * h * vocab_out)
    return total / len(batch_shapes)


def interleaved(runs: dict, rounds: int) -> dict:
    """``runs``: name -> a function timing one turn (a list of seconds); the medians after ``rounds`` turns each."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, turn in runs.items():
            time.sleep(0.2)  # BLAS's spinning threads of the other contestant asleep
            times[name] += turn()
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="the pairs file (default: the built-in 10,000 pairs)")
    p.add_argument("--num-samples", default=None, type=lambda v: None if v == "all" else int(v))
    p.add_argument("--units", default="sentencepiece:4000")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per turn")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sentences", type=int, default=512)
    p.add_argument("--decode-batch", type=int, default=128)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dataset, train_rows, model, texts = build(args)
    reference = TorchSeq2Seq.from_minilstm(model)
    ours_opt = RMSprop(model.backend, model.params.flat.size, model.dtype)
    torch_opt = reference.keras_rmsprop()
    batches = Batches(dataset, model.backend, mask_padding=True)
    plan = batches.plan(train_rows, args.batch_size, np.random.default_rng(0))
    stream = iter(batches.epoch(plan))
    shapes = []

    def next_batch():
        batch = next(stream)
        enc, dec_in, targets = batch.arrays
        shapes.append((enc.shape[0], enc.shape[1], dec_in.shape[1]))
        return batch, reference.upload(enc, dec_in, targets)

    def ours_turn(warm=2):
        out = []
        for k in range(warm + args.steps):
            batch, _ = next_batch()
            start = time.perf_counter()
            model.forward_backward(*batch.arrays, positions=batch.positions)
            ours_opt.step(model.params.flat, model.grads.flat)
            if k >= warm:
                out.append(time.perf_counter() - start)
        return out

    def torch_turn(warm=2):
        out = []
        for k in range(warm + args.steps):
            _, uploaded = next_batch()
            start = time.perf_counter()
            reference.train_step(torch_opt, uploaded)
            if k >= warm:
                out.append(time.perf_counter() - start)
        return out

    train = interleaved({"minilstm": ours_turn, "pytorch": torch_turn}, args.rounds)
    flops = step_flops(model, shapes)
    peak = sgemm_peak(1)

    # batched greedy decoding to the length limit: END never wins
    weights = model.get_weights()
    weights["dense.bias"][model.target_vocab.index[END]] = -100.0
    model.set_weights(weights)
    reference = TorchSeq2Seq.from_minilstm(model)
    start_id, end_id = model.target_vocab.index[START], model.target_vocab.index[END]

    def ours_decode():
        start = time.perf_counter()
        model.translate(texts, batch_size=args.decode_batch, split_sentences=False)
        return [time.perf_counter() - start]

    def torch_decode():
        start = time.perf_counter()
        for k in range(0, len(texts), args.decode_batch):
            chunk = texts[k : k + args.decode_batch]
            ids = encode_inputs(chunk, model.input_vocab, 0)
            x = reference.one_hot(ids, reference.n_in)
            valid = reference.valid([model.input_vocab.length(t) for t in chunk], x.shape[0])
            reference.greedy_decode(x, valid, start_id, end_id, model.max_decoder_len)
        return [time.perf_counter() - start]

    ours_decode(), torch_decode()  # compile and warm up, untimed
    decode = interleaved({"minilstm": ours_decode, "pytorch": torch_decode}, args.rounds)
    floor = flops / peak
    report = {
        "command": "python -m bench.units_speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.date.today().isoformat(), "cpu": cpu_model(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "torch": torch.__version__,
        "units": args.units, "vocab": [len(model.input_vocab), len(model.target_vocab)],
        "batch_size": args.batch_size, "mean_batch_shape": np.mean(shapes, axis=0).round(1).tolist(),
        "train_step_s": train, "train_ratio": train["minilstm"] / train["pytorch"],
        "step_gemm_flops": flops, "sgemm_peak_flops_1thread": peak, "floor_s": floor,
        "train_floor_multiple": {name: t / floor for name, t in train.items()},
        "decode_s": decode, "decode_ratio": decode["minilstm"] / decode["pytorch"],
        "decode_sentences": len(texts), "decode_batch": args.decode_batch,
    }
    print(f"{report['cpu']}, OPENBLAS_CORETYPE={report['openblas_coretype']}, {args.units} "
          f"({report['vocab'][0]:,} / {report['vocab'][1]:,} tokens), one thread each")
    multiple = report["train_floor_multiple"]
    print(f"training step (median): minilstm {train['minilstm'] * 1e3:.1f} ms, PyTorch {train['pytorch'] * 1e3:.1f} "
          f"ms, ratio {report['train_ratio']:.2f}; GEMM floor {floor * 1e3:.1f} ms (x{multiple['minilstm']:.2f} "
          f"and x{multiple['pytorch']:.2f})")
    print(f"batched greedy, {len(texts)} sentences (median): minilstm {decode['minilstm']:.2f} s, PyTorch "
          f"{decode['pytorch']:.2f} s, ratio {report['decode_ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
