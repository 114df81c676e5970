#!/bin/bash
# The two runs resumed (bit-exact) side by side for $SECS more seconds, one thread each. (The +15 min snapshot is
# not used: --checkpoint-every is not a stored setting and this resume left it out, so latest/ was the 65-min one.)
cd /work/main && . .venv/bin/activate
R=/work/runs/best
SECS=${SECS:-2100}
export MINILSTM_THREADS=1
for n in plain best; do
  (timeout -s INT $SECS python -m minilstm.train --resume $R/$n > $R/more-$n.log 2>&1; echo rc=$? >> $R/more-$n.log) &
done
sleep 900
for n in plain best; do cp -r $R/$n/latest $R/$n/at-80min 2>/dev/null || (sleep 5; cp -r $R/$n/latest $R/$n/at-80min); done
wait
date >> $R/more.done
