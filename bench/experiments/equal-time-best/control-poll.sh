#!/bin/bash
# Copy latest/ whenever it has moved 500+ steps since the last copy, named by its optimizer iterations.
R=/work/runs/control/bidir
last=0
while [ ! -e /work/runs/control/done ]; do
  it=$(python3 -c "import json;print(json.load(open('$R/latest/config.json'))['optimizer']['iterations'])" 2>/dev/null)
  if [ -n "$it" ] && [ $((it - last)) -ge 500 ]; then
    rm -rf $R/tmp-copy && cp -r $R/latest $R/tmp-copy && \
    [ "$(python3 -c "import json;print(json.load(open('$R/tmp-copy/config.json'))['optimizer']['iterations'])")" = "$it" ] && \
    mv $R/tmp-copy $R/at-step-$it && last=$it && echo "$(date +%s) $it" >> /work/runs/control/steps.log
  fi
  sleep 20
done
