#!/bin/bash
# Every snapshot of the two 100-minute runs evaluated on all held-out pairs (greedy, per length bucket), to see how
# the gain per bucket moves with training time (2026-12-02/03; one thread, beside the control run). The 80-min
# snapshots are left out: they are byte-identical to the 65-min ones (see resume.sh).
cd /work/main && . .venv/bin/activate
R=/work/runs/best
D=bench/results/attention/equal-time-best/by-time
mkdir -p $D
export MINILSTM_THREADS=1
for m in 20 40 60 65; do
  for n in plain best; do
    python -m minilstm.evaluate $R/$n/at-${m}min --json $D/evaluate-$n-${m}min.json > $D/evaluate-$n-${m}min.txt 2>&1
  done
done
