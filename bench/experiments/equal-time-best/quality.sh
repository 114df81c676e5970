#!/bin/bash
# Two runs started together and stopped together (SIGINT after $SECS), one thread each on the 2-core machine:
# the example's one-layer model and the best attention model we know to try (a bidirectional encoder of 128 units
# a direction, so the decoder keeps 256 units, `general` attention without input feeding). Snapshots of latest/
# every 20 min for the curves.
cd /work/main && . .venv/bin/activate
SECS=${SECS:-3900}
R=/work/runs/best
mkdir -p $R
COMMON="--data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100"
export MINILSTM_THREADS=1
(timeout -s INT $SECS python -m minilstm.train $COMMON --out $R/plain > $R/train-plain.log 2>&1; echo rc=$? >> $R/train-plain.log) &
(timeout -s INT $SECS python -m minilstm.train $COMMON --bidirectional-encoder --latent-dim 128 --attention general --no-input-feed --out $R/best > $R/train-best.log 2>&1; echo rc=$? >> $R/train-best.log) &
for m in 20 40 60; do
  sleep 1200
  for n in plain best; do cp -r $R/$n/latest $R/$n/at-${m}min 2>/dev/null || (sleep 5; cp -r $R/$n/latest $R/$n/at-${m}min); done
  date >> $R/snapshots.log
done
wait
date >> $R/snapshots.log
