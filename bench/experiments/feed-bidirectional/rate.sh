#!/bin/bash
# Per-step cost, one core, nothing else running: the shipped architecture (bidirectional 2 x 128, general) without
# input feeding ("best", as equal-time-best/rate.sh measured it) and with it ("feed"), one after the other, twice,
# interleaved; the rate between the first and the last checkpoint (every 100 steps) after the first T1 s.
cd /work/main && . .venv/bin/activate
R=/work/runs/rate
mkdir -p $R
SECS=${SECS:-150}; T1=${T1:-45}
COMMON="--data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100"
export MINILSTM_THREADS=1
it() { python3 -c "import json,os,sys;f=sys.argv[1];print(os.stat(f).st_mtime,json.load(open(f))['optimizer']['iterations'])" $1/latest/config.json 2>/dev/null; }
for round in 1 2; do
  for spec in "best:--bidirectional-encoder --latent-dim 128 --attention general --no-input-feed" \
              "feed:--bidirectional-encoder --latent-dim 128 --attention general"; do
    n=${spec%%:*}; flags=${spec#*:}
    rm -rf $R/$n
    timeout -s INT $SECS python -m minilstm.train $COMMON $flags --out $R/$n > $R/train-$n.log 2>&1 &
    pid=$!; sleep $T1; : > $R/$n.ticks
    while kill -0 $pid 2>/dev/null; do it $R/$n >> $R/$n.ticks; sleep 0.5; done
    python3 -m bench.experiments.ticks_rate $R/$n.ticks "$n (round $round)"
  done
done
