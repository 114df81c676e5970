"""The layer-API examples of the README (the language model) and of docs/guide/layers.md (the attention model), run
exactly as written there: the language model must train (the loss falls far below the uniform guess's log(28) = 3.3)
and then generate the sentence it was trained on; the attention model must learn to reverse its input."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = {"layer-api-example": "README.md", "attention-example": "docs/guide/layers.md",
                 "onnx-example": "docs/guide/convert.md"}  # where each marked example lives


def readme_example(marker: str = "layer-api-example") -> str:
    text = (REPO / EXAMPLE_FILES[marker]).read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"{EXAMPLE_FILES[marker]} lost its example (or its marker {marker})"
    return match.group(1)


def run_example(tmp_path, marker: str) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(readme_example(marker), encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_readme_layer_api_example_runs_and_learns(tmp_path):
    result = run_example(tmp_path, "layer-api-example")
    assert result.returncode == 0, result.stderr
    loss_line, sample = result.stdout.splitlines()[-2:]
    loss, accuracy = map(float, re.fullmatch(r"loss ([\d.]+), accuracy ([\d.]+)", loss_line).groups())
    assert loss < 0.2 and accuracy > 0.95, loss_line
    assert "the quick brown fox jumps over the lazy dog" in (sample + sample), sample


def test_readme_attention_example_learns_to_reverse(tmp_path):
    """The attention example trains an encoder-decoder to write its input backwards: near-perfect accuracy, the
    right reversal of an unseen string, and its last character's attention on the input's first."""
    result = run_example(tmp_path, "attention-example")
    assert result.returncode == 0, result.stderr
    loss_line, decoded = result.stdout.splitlines()[-2:]
    loss, accuracy = map(float, re.fullmatch(r"loss ([\d.]+), accuracy ([\d.]+)", loss_line).groups())
    assert loss < 0.1 and accuracy > 0.98, loss_line
    assert decoded == "dagcbeh attends to [0]", decoded
