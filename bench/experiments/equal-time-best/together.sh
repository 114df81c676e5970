#!/bin/bash
# The plain and the best model side by side, MINILSTM_THREADS=1 each, nothing else running, for $SECS s: their
# per-step rates, to set beside rate.sh's (each alone). Before fbcd32f they ran 2.6x and 4.6x slower side by side
# than alone (longer.sh); with it each process keeps to one core.
cd /work/main && . .venv/bin/activate
R=/work/runs/together
SECS=${SECS:-200}; T1=${T1:-60}
COMMON="--data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100"
export MINILSTM_THREADS=1
it() { python3 -c "import json,os,sys;f=sys.argv[1];print(os.stat(f).st_mtime,json.load(open(f))['optimizer']['iterations'])" $1/latest/config.json 2>/dev/null; }
mkdir -p $R
pids=()
for spec in "plain:" "best:--bidirectional-encoder --latent-dim 128 --attention general --no-input-feed"; do
  n=${spec%%:*}; flags=${spec#*:}
  rm -rf $R/$n
  timeout -s INT $SECS python -m minilstm.train $COMMON $flags --out $R/$n > $R/train-$n.log 2>&1 &
  pids+=($!)
done
sleep $T1; : > $R/plain.ticks; : > $R/best.ticks
while kill -0 ${pids[0]} 2>/dev/null || kill -0 ${pids[1]} 2>/dev/null; do
  it $R/plain >> $R/plain.ticks; it $R/best >> $R/best.ticks; sleep 0.5
done
for n in plain best; do
  python3 -m bench.experiments.ticks_rate $R/$n.ticks "$n (side by side)"
done
