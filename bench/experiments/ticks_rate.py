"""Per-step rate from a ticks file of "mtime iterations" lines (bench/experiments/equal-time-best/rate.sh,
together.sh): between the first and the last periodic checkpoint (every 100 steps), not the one written at SIGINT.

    python3 -m bench.experiments.ticks_rate TICKS LABEL
"""

import sys

ticks = sorted({(float(t), int(i)) for t, i in (line.split() for line in open(sys.argv[1]) if line.strip())})
ticks = [tick for tick in ticks if tick[1] % 100 == 0]
(t0, i0), (t1, i1) = ticks[0], ticks[-1]
print(f"{sys.argv[2]}: steps {i0}->{i1} in {t1 - t0:.1f} s: {1000 * (t1 - t0) / (i1 - i0):.1f} ms/step")
