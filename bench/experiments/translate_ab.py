"""Translate timing of the shipped model on the numba backend (2 threads): 2,000 random held-out sentences in one
``translate`` call (batches of 512), and 10 batches of 64 (a server's batch). Run from a repository root with the
name of the tree as argument; the tree in the current directory supplies ``minilstm`` and ``bench.serve_load``
(``PYTHONPATH=.``: the script itself may come from another tree). The A/B of
bench/results/serve/mixed-lengths/ab.txt runs it in two trees, interleaved:

    git worktree add /tmp/old e551f34 && ln -sfn "$PWD/../shared" /tmp/shared
    AB=$PWD/bench/experiments/translate_ab.py
    for i in 1 2; do
        (cd /tmp/old && NUMBA_CACHE_DIR=/tmp/nc_old PYTHONPATH=. python $AB old); PYTHONPATH=. python $AB new
    done

In one tree alone: ``python -m bench.experiments.translate_ab NAME``. Writes /tmp/mb/out-NAME.json (the 2,000
translations), so that the two trees' translations can be compared.
"""

import json
import os
import statistics
import sys
import time

import numpy as np

from bench.serve_load import held_out_sentences
from minilstm.checkpoint import load_checkpoint

PATH = "minilstm/models/en-fr-default"
held = held_out_sentences(PATH)
rng = np.random.default_rng(0)
sentences = [held[k] for k in rng.choice(len(held), 2000, replace=False)]
model = load_checkpoint(PATH, backend="numba").model
model.translate(sentences[:64], split_sentences=False)  # compile
whole = []
for _ in range(5):
    start = time.perf_counter()
    out = model.translate(sentences, batch_size=512, split_sentences=False)
    whole.append(time.perf_counter() - start)
batches = []
for _ in range(3):
    start = time.perf_counter()
    for i in range(0, 640, 64):
        model.translate(sentences[i : i + 64], batch_size=64, split_sentences=False)
    batches.append(time.perf_counter() - start)
os.makedirs("/tmp/mb", exist_ok=True)
with open(f"/tmp/mb/out-{sys.argv[1]}.json", "w") as f:
    json.dump(out, f)
print(f"{sys.argv[1]} 2000 random held-out sentences: {statistics.median(whole):.2f} s (min {min(whole):.2f}); "
      f"10 batches of 64: {1e3 * statistics.median(batches) / 640:.3f} ms/sentence; mean length "
      f"{np.mean([len(s) for s in sentences]):.1f}; distinct lengths in first 64: "
      f"{len({len(s) for s in sentences[:64]})}")
