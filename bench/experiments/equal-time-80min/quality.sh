#!/bin/bash
# Three runs started together and stopped together (SIGINT after $SECS), one thread each; snapshots of latest/ every 20 min.
cd /work/main && . .venv/bin/activate
SECS=${SECS:-4800}
COMMON="--data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100"
export MINILSTM_THREADS=1
(timeout -s INT $SECS python -m minilstm.train $COMMON --out /work/runs/q-plain > /work/runs/train-plain.log 2>&1; echo rc=$? >> /work/runs/train-plain.log) &
(timeout -s INT $SECS python -m minilstm.train $COMMON --attention general --no-input-feed --out /work/runs/q-nofeed > /work/runs/train-nofeed.log 2>&1; echo rc=$? >> /work/runs/train-nofeed.log) &
(timeout -s INT $SECS python -m minilstm.train $COMMON --attention general --out /work/runs/q-feed > /work/runs/train-feed.log 2>&1; echo rc=$? >> /work/runs/train-feed.log) &
for m in 20 40 60; do
  sleep 1200
  for n in plain nofeed feed; do cp -r /work/runs/q-$n/latest /work/runs/q-$n/at-${m}min 2>/dev/null || (sleep 5; cp -r /work/runs/q-$n/latest /work/runs/q-$n/at-${m}min); done
  date >> /work/runs/snapshots.log
done
wait
date >> /work/runs/snapshots.log
