#!/bin/bash
# The control's step snapshots (control-poll.sh) evaluated on all held-out pairs, one thread, two at a time
# (2026-12-03). Steps chosen for equal compute with the best model's snapshots (its steps x 105.2 / 87.6,
# rate.txt): 3400, 6900, 10000, 10500, 13700 for its 20, 40, 60, 65 and 100 minutes; 11100 ~ its 11,297 steps
# (equal steps); 19600 ~ the plain model's 100 minutes at equal compute (18,714 x 92.8 / 87.6); 58268 the last.
cd /work/main && . .venv/bin/activate
D=bench/results/attention/equal-time-best/control
ev() { MINILSTM_THREADS=1 python -m minilstm.evaluate /work/runs/control/bidir/at-step-$1 --json $D/evaluate-control-step-$1.json > $D/evaluate-control-step-$1.txt 2>&1; }
(ev 10500; ev 13700; ev 58268; ev 6900) &
(ev 11100; ev 19600; ev 3400; ev 10000) &
wait
