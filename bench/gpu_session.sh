#!/usr/bin/env bash
# What the CuPy backend still owes on a GPU, in as few commands as a lent GPU machine allows (each call there may
# run 10 minutes; a lease has 15 minutes in all). Runs from the repository root with the packages the machine already
# has (CuPy, PyTorch with cuDNN, NumPy, Numba, pytest); writes logs and results under OUT.
#
#   bash bench/gpu_session.sh OUT tests     # the GPU tests (marker gpu: every cuda-parametrized one), ~2 min
#   bash bench/gpu_session.sh OUT profile   # each layer's time loop: per step, persistent, cuDNN; ~1 min
#   bash bench/gpu_session.sh OUT bench     # bench.py: cupy, cupy-persistent, PyTorch cuDNN; ~5 min
#   bash bench/gpu_session.sh OUT curves    # 3 epochs on numpy, cupy, cupy-persistent; the curves side by side
#   bash bench/gpu_session.sh OUT sanitize  # compute-sanitizer (memcheck, racecheck, synccheck) on the kernel tests
set -uo pipefail
out=${1:?usage: bash bench/gpu_session.sh OUT tests|profile|bench|curves|sanitize}
stage=${2:?usage: bash bench/gpu_session.sh OUT tests|profile|bench|curves|sanitize}
mkdir -p "$out"
export PYTHONUNBUFFERED=1  # every command below runs as python -m: the repository root is on its path
python=${PYTHON:-python3}
nvidia-smi -L > "$out/device.txt" 2>&1
case $stage in
tests)
    { $python -m pytest -rs -m gpu tests; $python -m pytest -rs -k compiles tests/test_cupy_backend.py; } 2>&1 \
        | tee "$out/gpu-tests.log" ;;
profile)
    $python -m bench.profile_gpu --json "$out/gpu-profile.json" 2>&1 | tee "$out/gpu-profile.md" ;;
bench)
    $python -m bench.bench --backends cupy,cupy-persistent --torch-devices cuda --json "$out/gpu-bench.json" \
        --plot "$out/gpu-bench.png" 2>&1 | tee "$out/gpu-bench.md" ;;
curves)
    for backend in numpy cupy cupy-persistent; do
        $python -m minilstm.train --backend "$backend" --epochs 3 --num-decodes 5 --out "$out/run-$backend" \
            2>&1 | tail -n 12 | tee "$out/train-$backend.log"
    done
    $python - "$out" <<'PY' 2>&1 | tee "$out/curves.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {b: [json.loads(line) for line in (out / f"run-{b}" / "history.jsonl").read_text().splitlines()]
        for b in ("numpy", "cupy", "cupy-persistent")}
print("| epoch | " + " | ".join(f"{b} loss | {b} val_loss" for b in runs) + " |")
print("| --- " * (1 + 2 * len(runs)) + "|")
for k, ref in enumerate(runs["numpy"]):
    print(f"| {ref['epoch']} | " + " | ".join(f"{r[k]['loss']:.6f} | {r[k]['val_loss']:.6f}" for r in runs.values())
          + " |")
for b in ("cupy", "cupy-persistent"):
    worst = max(abs(r[key] - ref[key]) / abs(ref[key]) for r, ref in zip(runs[b], runs["numpy"])
                for key in ("loss", "val_loss"))
    print(f"\n{b}: largest relative difference from numpy over the 3 epochs: {worst:.2e}")
PY
    ;;
sanitize)
    for tool in memcheck racecheck synccheck; do
        compute-sanitizer --tool "$tool" --error-exitcode 1 $python -m pytest -q -x -p no:cacheprovider \
            -k "cuda and (persistent_recurrence or cell_kernels or gather_scatter) and not 20-64-256 and not 3776" \
            tests/test_cupy_backend.py 2>&1 | tail -n 25 | tee "$out/sanitize-$tool.log"
    done ;;
*)
    echo "unknown stage $stage: tests, profile, bench, curves or sanitize" >&2; exit 2 ;;
esac
