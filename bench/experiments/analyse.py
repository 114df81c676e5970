"""What goes wrong on long sentences: the shipped model's held-out translations (``python -m minilstm.evaluate
minilstm/models/en-fr-default --json FILE``, greedy, and with ``--beam-width K``), by English word count, finer
than evaluate's buckets: chrF (evaluate's corpus chrF over the bucket), CER, how often the output repeats a word
3-gram that no reference repeats, how often it is over 1.5x or under 0.67x the closest reference's length, and the
bucket's share of the whole file's pairs (what training sees of that length: the random split is uniform in it).

    python -m bench.experiments.analyse greedy.json [beam3.json ...]
"""

import json
import sys
from collections import Counter
from pathlib import Path

from minilstm.evaluate import chrf, edit_distance

REPO = Path(__file__).resolve().parents[2]
BUCKETS = [(1, 3), (4, 6), (7, 8), (9, 10), (11, 12), (13, 15), (16, 99)]


def repeats(text: str) -> bool:
    words = text.split()
    grams = Counter(tuple(words[i : i + 3]) for i in range(len(words) - 2))
    return any(n > 1 for n in grams.values())


def main():
    fra = REPO.parent / "shared" / "data" / "fra-eng" / "fra.txt"
    words = Counter(len(line.split("\t")[0].split()) for line in fra.open(encoding="utf-8") if line.strip())
    total = sum(words.values())
    print(f"{fra}: {total:,} pairs; share by English words: " + ", ".join(
        f"{lo}-{hi if hi < 99 else ''}: {sum(n for w, n in words.items() if lo <= w <= hi) / total:.3f}"
        for lo, hi in BUCKETS))
    for path in sys.argv[1:]:
        rows = json.load(open(path))["translations"]
        print(f"{path}: {len(rows):,} translations")
        print(f"  {'words':8}{'pairs':>7}{'chrF':>8}{'CER':>8}{'repeats':>9}{'>1.5x':>8}{'<0.67x':>8}")
        for low, high in BUCKETS:
            bucket = [r for r in rows if low <= len(r["input"].split()) <= high]
            out = [r["output"] for r in bucket]
            refs = [r["references"] for r in bucket]
            closest = [min(rs, key=lambda ref, o=o: edit_distance(o, ref)) for o, rs in zip(out, refs, strict=True)]
            cer = sum(edit_distance(o, c) for o, c in zip(out, closest, strict=True)) / sum(map(len, closest))
            rep = sum(repeats(o) and not any(repeats(x) for x in rs) for o, rs in zip(out, refs, strict=True))
            long_ = sum(len(o) > 1.5 * len(c) for o, c in zip(out, closest, strict=True))
            short = sum(len(o) < 0.67 * len(c) for o, c in zip(out, closest, strict=True))
            n = len(bucket)
            label = f"{low}-{high}" if high < 99 else f"{low}+"
            print(f"  {label:8}{n:>7,}{chrf(out, refs):8.2f}{cer:8.3f}{rep / n:9.3f}{long_ / n:8.3f}{short / n:8.3f}")


if __name__ == "__main__":
    main()
