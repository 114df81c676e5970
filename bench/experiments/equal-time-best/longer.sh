#!/bin/bash
# The plain model and the best one resumed (bit-exact) from their 100-minute checkpoints, side by side, one thread
# each, for $SECS more seconds (2026-12-03), so each can be compared with the control at equal compute: the
# control's last checkpoint (58,268 steps) cost 58,268 x 87.6 ms measured alone (rate.txt), which is ~48,500
# steps of the best model (105.2 ms) and ~55,000 of the plain one (92.8 ms). A poller copies latest/ whenever it
# has moved 500+ steps, named by its optimizer iterations (the control's poll.sh did the same).
# What happened: side by side they ran at 242 (plain) and 486 (best) ms a step, 2.6x and 4.6x their rate alone: a
# MINILSTM_THREADS=1 process still ran its BLAS on both cores, spinning (fixed in fbcd32f, after these runs
# started). So the plain run was stopped by hand (SIGINT, 05:51, at 24,185 steps; resumable, not used) and the best
# one went on alone until the timeout.
cd /work/main && . .venv/bin/activate
R=/work/runs/best
SECS=${SECS:-4800}
export MINILSTM_THREADS=1
for n in plain best; do
  [ -e $R/$n/at-100min ] || cp -r $R/$n/latest $R/$n/at-100min
  (timeout -s INT $SECS python -m minilstm.train --resume $R/$n --checkpoint-every 100 > $R/longer-$n.log 2>&1; echo rc=$? >> $R/longer-$n.log) &
done
iters() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['optimizer']['iterations'])" $1/config.json 2>/dev/null; }
declare -A last=([plain]=0 [best]=0)
while [ -n "$(jobs -r)" ]; do
  for n in plain best; do
    it=$(iters $R/$n/latest)
    if [ -n "$it" ] && [ $((it - ${last[$n]})) -ge 500 ]; then
      rm -rf $R/$n/tmp-copy && cp -r $R/$n/latest $R/$n/tmp-copy && [ "$(iters $R/$n/tmp-copy)" = "$it" ] && \
        mv $R/$n/tmp-copy $R/$n/at-step-$it && last[$n]=$it && echo "$(date +%s) $n $it" >> $R/longer-steps.log
    fi
  done
  sleep 20
done
wait
date >> $R/longer.done
