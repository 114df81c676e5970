"""The README's layer-API example, run exactly as written there: it must train (the loss falls far below the
uniform guess's log(28) = 3.3) and then generate the sentence it was trained on."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- layer-api-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its layer-API example (or its marker)"
    return match.group(1)


def test_readme_layer_api_example_runs_and_learns(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    loss_line, sample = result.stdout.splitlines()[-2:]
    loss, accuracy = map(float, re.fullmatch(r"loss ([\d.]+), accuracy ([\d.]+)", loss_line).groups())
    assert loss < 0.2 and accuracy > 0.95, loss_line
    assert "the quick brown fox jumps over the lazy dog" in (sample + sample), sample
