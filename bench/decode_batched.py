"""bench.py's decode_batched case alone, repeated: minilstm numba, PyTorch CPU and onnxruntime (our ONNX export,
docs/guide/convert.md's loop) take turns decoding the 2,000 validation sentences (``translate(texts, 512)``, batches of
512 for the others, 2 threads each), a first untimed turn each, then ``--rounds`` timed turns each, interleaved; medians
and the ratios. Without bench.py's one-sentence-at-a-time decoding, which takes minutes here.

    python -m bench.decode_batched [--checkpoint DIR] [--rounds N] [--json OUT]

Without ``--checkpoint``: bench.py's ``to_limit`` weights (untrained, END never wins: every row to the length limit).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench.bench import (
    MinilstmContestant,
    OnnxRuntimeContestant,
    TorchContestant,
    cpu_name,
    set_decode_weights,
    weights_to_limit,
)
from minilstm.data import Dataset, resolve_pairs, split_validation


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    _, val_idx = split_validation(len(dataset))
    texts = [dataset.input_texts[k] for k in val_idx]
    contestants = [MinilstmContestant("numba", dataset, 256, "float32"),
                   TorchContestant("cpu", dataset, 256, "float32", args.threads),
                   OnnxRuntimeContestant(dataset, 256, "float32", args.threads)]
    if args.checkpoint:
        from minilstm.checkpoint import load_checkpoint

        weights = load_checkpoint(args.checkpoint).model.get_weights()
    else:
        weights = weights_to_limit(dataset, "float32")
    set_decode_weights(contestants, weights)
    times = {c.name: [] for c in contestants}
    outputs = {}
    for c in contestants:
        outputs[c.name] = c.decode(texts, 512)
    for _ in range(args.rounds):
        for c in contestants:
            time.sleep(0.2)
            start = time.perf_counter()
            c.decode(texts, 512)
            times[c.name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for c in contestants:
        print(f"{c.name}: median {medians[c.name] * 1e3:.0f} ms ({', '.join(f'{t * 1e3:.0f}' for t in times[c.name])})")
    ours = medians["minilstm-numba"]
    print(f"minilstm / pytorch: {ours / medians['pytorch-cpu']:.2f}x; minilstm / onnxruntime: "
          f"{ours / medians['onnxruntime-cpu']:.2f}x")
    reference = outputs["minilstm-numba"]
    same = {name: sum(a == b for a, b in zip(reference, out, strict=True)) for name, out in outputs.items()}
    print(f"translations identical to minilstm's, of {len(texts)}: {same}")
    print(f"mean characters per translation: {sum(map(len, reference)) / len(reference):.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "cpu": cpu_name(), "threads": args.threads, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "checkpoint": str(args.checkpoint) if args.checkpoint else None, "rounds": args.rounds,
            "times_s": times, "medians_s": medians, "identical": same,
            "mean_chars": sum(map(len, reference)) / len(reference)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
