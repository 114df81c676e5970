#!/bin/bash
# The best model's snapshots from longer.sh, and the control's at equal compute with them, evaluated on all held-out
# pairs (one thread each, two at a time; 2026-12-03). Equal compute: the control's steps = the best's x
# 105.2 / 87.6 (rate.txt, as the runs ran) or x 129.4 / 84.6 (rate-one-core.txt, one core in all):
# 11,297 -> 13,700 | 17,400; 20,200 -> 24,400 | 30,700; 38,100 -> 45,500 | 58,268 (the control's last).
# best/ (41,553 steps, the end of epoch 19, the lowest held-out loss) is the model shipped since.
cd /work/main && . .venv/bin/activate
export MINILSTM_THREADS=1
D=bench/results/attention/equal-time-best
b() { python -m minilstm.evaluate /work/runs/best/best/$1 --json $D/longer/evaluate-best-$2.json > $D/longer/evaluate-best-$2.txt 2>&1; }
c() { python -m minilstm.evaluate /work/runs/control/bidir/at-step-$1 --json $D/control/evaluate-control-step-$1.json > $D/control/evaluate-control-step-$1.txt 2>&1; }
(b at-step-20200 step-20200; b at-step-38100 step-38100; c 17400; c 45500) &
(b best step-41553; c 24400; c 30700) &
wait
