"""Length penalty ALPHA for beam widths 3 and 5 on the tuning tenth (``python -m bench.experiments.make_tune``), by
the real ``--length-penalty`` (the compiled beam search).

    python -m bench.experiments.tune_alpha CHECKPOINT tune.json
"""

import json
import sys
import time

from minilstm.checkpoint import load_checkpoint
from minilstm.evaluate import chrf, length_bucket

model = load_checkpoint(sys.argv[1], backend="numba").model
data = json.load(open(sys.argv[2]))
texts, refs = [e for e, _ in data], [r for _, r in data]
for width in (3, 5):
    for alpha in (0.0, 0.3, 0.6, 1.0, 1.5, 2.0):
        started = time.perf_counter()
        hyps = model.translate(texts, beam_width=width, length_penalty=alpha, split_sentences=False)
        seconds = time.perf_counter() - started
        buckets = {}
        for english, hyp, ref in zip(texts, hyps, refs, strict=True):
            buckets.setdefault(length_bucket(english), []).append((hyp, ref))
        print(f"k={width} alpha={alpha}: chrF {chrf(hyps, refs):.2f} " + " ".join(
            f"{name} {chrf([h for h, _ in v], [r for _, r in v]):.2f}" for name, v in sorted(buckets.items()))
            + f" ({seconds:.1f} s)", flush=True)
