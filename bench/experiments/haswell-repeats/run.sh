#!/bin/bash
# The timings of 2026-12-03 that were made with OPENBLAS_CORETYPE unset only, again with
# OPENBLAS_CORETYPE=Haswell set in this command alone (the standards: the machine's setting and the other one).
# Nothing else running; each script warms Numba up before its clock starts. Run from the repository root, with
# e551f34 checked out at /tmp/old (git worktree add /tmp/old e551f34) for the translate A/B.
set -euo pipefail
. .venv/bin/activate
export OPENBLAS_CORETYPE=Haswell
D=bench/results/haswell-repeats
AB=$PWD/bench/experiments/translate_ab.py  # PYTHONPATH=.: the tree it runs in supplies the code
{ date -u; lscpu | grep -E "Model name|^CPU\(s\)|Flags"; echo "OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE";
  git log -1 --format="head %h %s"; python -c "import numpy, numba; print('numpy', numpy.__version__, 'numba', numba.__version__)"; } > $D/machine.txt
# 1. the decode table (compiled decoders against the step loops)
python -m bench.attention_decode --json $D/decode.json > $D/decode.txt 2>&1
# 2. the mixed-lengths translate A/B: e551f34 (one batch per source length) against this tree, interleaved
(cd /tmp/old && NUMBA_CACHE_DIR=/tmp/nc_old PYTHONPATH=. python $AB warm-old > /dev/null)
: > $D/translate-ab.txt
for i in 1 2; do
    (cd /tmp/old && NUMBA_CACHE_DIR=/tmp/nc_old PYTHONPATH=. python $AB old) >> $D/translate-ab.txt
    PYTHONPATH=. python $AB new >> $D/translate-ab.txt
done
python -c "import json; o, n = (json.load(open(f'/tmp/mb/out-{k}.json')) for k in ('old', 'new')); \
print('same translations', sum(a == b for a, b in zip(o, n)), 'of', len(n))" >> $D/translate-ab.txt
# 3. serve load: the full table, then the 64-client level three more times
python -m bench.serve_load --out $D/serve --modes batched,max-batch-1,lists32,batched-h11 > $D/serve.txt 2>&1
for i in 1 2 3; do python -m bench.serve_load --levels 64 --modes batched,max-batch-1 2>&1 | grep "64 clients"; done > $D/serve-64-repeats.txt
# 4. where the compiled forward loop's time goes
python -m bench.experiments.ablation > $D/ablation.txt 2>&1
date -u >> $D/machine.txt
