"""bench.py's decode_batched case alone, repeated: minilstm numba and PyTorch CPU take turns decoding the 2,000
validation sentences (``translate(texts, 512)`` and PyTorch's 512-row batches, 2 threads each), a first untimed
turn each, then ``--rounds`` timed turns each, interleaved; medians and the ratio. Without bench.py's
one-sentence-at-a-time decoding, which takes minutes here.

    python bench/decode_batched.py [--checkpoint DIR] [--rounds N]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import MinilstmContestant, TorchContestant  # noqa: E402
from minilstm.data import Dataset, resolve_pairs, split_validation  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    _, val_idx = split_validation(len(dataset))
    texts = [dataset.input_texts[k] for k in val_idx]
    contestants = [MinilstmContestant("numba", dataset, 256, "float32"),
                   TorchContestant("cpu", dataset, 256, "float32", args.threads)]
    if args.checkpoint:
        from minilstm.checkpoint import load_checkpoint

        trained = load_checkpoint(args.checkpoint).model.get_weights()
        contestants[0].model.set_weights(trained)
        contestants[1].model.load_keras_weights(trained)
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
    ours, theirs = (statistics.median(times[c.name]) for c in contestants)
    for c in contestants:
        print(f"{c.name}: median {statistics.median(times[c.name]) * 1e3:.0f} ms "
              f"({', '.join(f'{t * 1e3:.0f}' for t in times[c.name])})")
    same = sum(a == b for a, b in zip(*outputs.values(), strict=True))
    print(f"ratio numba / pytorch: {ours / theirs:.2f}x; identical translations: {same} of {len(texts)}")


if __name__ == "__main__":
    main()
