#!/bin/bash
# The best model's architecture WITH input feeding (bidirectional 2 x 128, general, feeding on), trained as the best
# model was (whole file, --mask-padding, random split, RMSprop at the example's settings, batch 64, seed 0), 2 threads;
# latest/ copied when it reaches 11,297 and 20,200 steps, the best model's evaluated snapshots.
cd /work/main && . .venv/bin/activate
R=/work/runs/feed
export MINILSTM_THREADS=2
(python -m minilstm.train --data ../shared/data/fra-eng/fra.txt --num-samples all --mask-padding --validation-split-mode random --progress never --num-decodes 0 --checkpoint-every 100 --bidirectional-encoder --latent-dim 128 --attention general --out $R/feed --epochs 10 > $R/train.log 2>&1; echo rc=$? >> $R/train.log; touch $R/done) &
for want in 11297 20200; do
  while [ ! -e $R/done ]; do
    it=$(python3 -c "import json;print(json.load(open('$R/feed/latest/config.json'))['optimizer']['iterations'])" 2>/dev/null)
    if [ "$it" = "$want" ] || { [ -n "$it" ] && [ "$it" -gt "$want" ]; }; then
      rm -rf $R/tmp && cp -r $R/feed/latest $R/tmp
      got=$(python3 -c "import json;print(json.load(open('$R/tmp/config.json'))['optimizer']['iterations'])")
      mv $R/tmp $R/at-step-$got; echo "$(date -u +%T) wanted $want got $got" >> $R/steps.log; break
    fi
    sleep 1
  done
done
wait
