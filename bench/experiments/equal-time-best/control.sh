#!/bin/bash
# The control for the encoder's share: the best model's bidirectional encoder (128 units a direction, decoder 256)
# WITHOUT attention, trained the same way for the same 100 minutes of wall time on one thread (2026-12-02/03; the
# other core ran short jobs: edits, tests, no second training run). Snapshots of latest/ every 20 min.
cd /work/main && . .venv/bin/activate
SECS=${SECS:-6000}
R=/work/runs/control
mkdir -p $R
COMMON="--data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100"
export MINILSTM_THREADS=1
(timeout -s INT $SECS python -m minilstm.train $COMMON --bidirectional-encoder --latent-dim 128 --out $R/bidir > $R/train-bidir.log 2>&1; echo rc=$? >> $R/train-bidir.log) &
for m in 20 40 60 65 80; do
  [ $m = 65 ] && sleep 300 || { [ $m = 80 ] && sleep 900 || sleep 1200; }
  cp -r $R/bidir/latest $R/bidir/at-${m}min 2>/dev/null || (sleep 5; cp -r $R/bidir/latest $R/bidir/at-${m}min)
  date >> $R/snapshots.log
done
wait
date >> $R/snapshots.log
