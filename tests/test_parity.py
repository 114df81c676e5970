"""The default run (the Keras example's configuration) reproduces its committed parity history to the bit.

Its bits depend on the BLAS kernel OpenBLAS picks for the CPU (its Haswell kernel on AVX2 machines, or where
``OPENBLAS_CORETYPE=Haswell`` is set; SkylakeX on AVX-512 ones): the output layer's and the weight gradients' GEMMs
are BLAS's. So there is one reference per kernel, ``bench/results/parity/seed0-compiled-loops*/`` (a 100-epoch
history and its ``machine.json``), and the test takes the one of the kernel this process's OpenBLAS runs. Where
none matches it skips, saying which kernel it found and how to add its reference."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np  # noqa: F401 - loads OpenBLAS, which threadpoolctl then describes
import pytest
from threadpoolctl import threadpool_info

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "bench" / "results" / "parity"
EPOCHS = 2
COMPARED = ("loss", "accuracy", "val_loss", "val_accuracy")


def openblas_core() -> str | None:
    """The kernel family OpenBLAS runs in this process (``Haswell``, ``SkylakeX``, ``Zen``, ...), None without it."""
    return next((lib.get("architecture") for lib in threadpool_info() if lib.get("internal_api") == "openblas"),
                None)


def references() -> dict[str, Path]:
    """OpenBLAS kernel -> the directory of its reference run."""
    found = {}
    for machine in sorted(REFERENCES.glob("seed0-compiled-loops*/machine.json")):
        found[json.loads(machine.read_text())["openblas_core"]] = machine.parent
    return found


def test_every_reference_is_a_whole_run():
    """Each reference is the 100-epoch default run: 100 epochs, the same first epoch's accuracy (a count of hits,
    which rounding does not move), and a different loss in the last bits for each kernel."""
    found = references()
    assert {"SkylakeX", "Haswell"} <= set(found), found
    histories = {core: [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]
                 for core, path in found.items()}
    for history in histories.values():
        assert [h["epoch"] for h in history] == list(range(1, 101))
    assert len({h[0]["accuracy"] for h in histories.values()}) == 1
    assert len({h[0]["loss"] for h in histories.values()}) == len(histories)


@pytest.mark.slow
def test_default_run_reproduces_its_parity_history(tmp_path):
    core, found = openblas_core(), references()
    if core not in found:
        pytest.skip(f"no parity history for OpenBLAS's {core} kernel (there are: {', '.join(sorted(found))}): run "
                    "python -m minilstm.train --seed 0 on this machine and commit its history as "
                    "bench/results/parity/seed0-compiled-loops-NAME/ with a machine.json")
    reference = [json.loads(line) for line in (found[core] / "history.jsonl").read_text().splitlines()]
    threads = json.loads((found[core] / "machine.json").read_text())["threads"]
    # The reference's thread count: the batch is cut into that many row shards, whose gradients are summed.
    env = dict(os.environ, MINILSTM_THREADS=str(threads), PYTHONPATH=str(REPO))
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "minilstm.train", "--epochs", str(EPOCHS), "--out", str(out),
                             "--progress", "never", "--num-decodes", "0"], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == EPOCHS
    for ours, theirs in zip(history, reference[:EPOCHS], strict=True):
        assert {k: ours[k] for k in COMPARED} == {k: theirs[k] for k in COMPARED}, (core, found[core].name)
