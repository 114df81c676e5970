#!/bin/bash
# Per-step cost of the three models of the equal-time comparison, measured one after another on one thread with
# nothing else running (2026-12-03): the 100-minute runs shared the 2-core machine differently (plain and
# best together, 3 processes on 2 cores for their first hour; the control mostly alone), so wall time is not a fair
# common axis. Each run trains for $SECS s; from T1 on, latest/config.json's mtime and iteration count are read at
# every checkpoint (every 100 steps), and the rate is taken between the first and the last of them.
# rate.txt was measured before fbcd32f, when MINILSTM_THREADS=1 left BLAS on both cores (one numba thread, the
# GEMMs on two), as the training runs themselves ran; rate-one-core.txt after it (one core in all).
cd /work/main && . .venv/bin/activate
R=/work/runs/rate
SECS=${SECS:-200}; T1=${T1:-60}
COMMON="--data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100"
export MINILSTM_THREADS=1
# mtime and iterations of the newest checkpoint, as "seconds iterations"
it() { python3 -c "import json,os,sys;f=sys.argv[1];print(os.stat(f).st_mtime,json.load(open(f))['optimizer']['iterations'])" $1/latest/config.json 2>/dev/null; }
for spec in "plain:" "best:--bidirectional-encoder --latent-dim 128 --attention general --no-input-feed" \
            "control:--bidirectional-encoder --latent-dim 128"; do
  n=${spec%%:*}; flags=${spec#*:}
  rm -rf $R/$n
  timeout -s INT $SECS python -m minilstm.train $COMMON $flags --out $R/$n > $R/train-$n.log 2>&1 &
  pid=$!; sleep $T1; : > $R/$n.ticks
  while kill -0 $pid 2>/dev/null; do it $R/$n >> $R/$n.ticks; sleep 0.5; done
  python3 -m bench.experiments.ticks_rate $R/$n.ticks $n
done
