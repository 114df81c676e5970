"""The benchmark's --quick mode runs end to end, so it cannot rot. (Speed is measured there, never asserted.)"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick(tmp_path):
    out = tmp_path / "quick.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "bench.py"), "--quick", "--json", str(out),
                             "--plot", str(tmp_path / "quick.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    cases = {(r["case"], r["contestant"]) for r in records}
    assert ("train_step", "minilstm-numba") in cases
    assert ("decode_batched", "minilstm-numba") in cases
    assert all(r["median_s"] > 0 and r["device"] for r in records)
    assert all(r.get("identical", True) for r in records), "batched and one-by-one decodes differ"
    assert "| train_step | minilstm-numba | 64 | 256 |" in result.stdout
    assert (tmp_path / "quick.png").stat().st_size > 0
