#!/bin/bash
cd /work/main && . .venv/bin/activate
export MINILSTM_THREADS=1
for n in plain nofeed feed; do
  (timeout -s INT 1800 python -m minilstm.train --resume /work/runs/q-$n > /work/runs/more-$n.log 2>&1; echo rc=$? >> /work/runs/more-$n.log) &
done
wait
date >> /work/runs/more.done
