"""The benchmark's --quick mode runs end to end, so it cannot rot. (Speed is measured there, never asserted.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow
def test_bench_quick(tmp_path):
    out = tmp_path / "quick.json"
    result = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--json", str(out), "--plot",
                             str(tmp_path / "quick.png")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    cases = {(r["case"], r["contestant"]) for r in records}
    assert ("train_step", "minilstm-numba") in cases
    assert ("decode_batched_to_limit", "minilstm-numba") in cases
    assert ("decode_batched_to_limit", "onnxruntime-cpu") in cases  # the test extra installs onnxruntime
    assert all(r["median_s"] > 0 and r["device"] for r in records)
    assert all(r.get("identical", True) for r in records), "batched and one-by-one decodes differ"
    decodes = [r for r in records if r["case"] == "decode_batched_to_limit"]
    assert all(r["same_as_first"] for r in decodes), "contestants decode the same weights differently"
    assert all(r["mean_chars"] == 60 for r in decodes), "every row should run to the limit: 59 + 1 characters"
    assert "| train_step | minilstm-numba | 64 | 256 |" in result.stdout
    assert (tmp_path / "quick.png").stat().st_size > 0


@pytest.mark.slow
def test_mask_padding_bench_runs(tmp_path):
    """bench/mask_padding.py end to end on two tiny runs (one parity, one --mask-padding): it times both modes and
    writes the comparison table with both runs' evaluate metrics."""
    common = ["--num-samples", "320", "--epochs", "1", "--batch-size", "32", "--latent-dim", "16", "--num-decodes",
              "0", "--progress", "never"]
    for name, extra in (("parity", []), ("masked", ["--mask-padding"])):
        result = subprocess.run([sys.executable, "-m", "minilstm.train", *common, *extra, "--out", tmp_path / name],
                                capture_output=True, text=True, env=ENV, timeout=600)
        assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "bench.mask_padding", "--parity", tmp_path / "parity",
                             "--masked", tmp_path / "masked", "--num-samples", "320", "--latent-dim", "16",
                             "--repeats", "1", "--out", tmp_path / "report"],
                            capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report" / "README.md").read_text()
    assert "| per epoch (256 training pairs + validation) |" in report
    for mode in ("parity", "mask-padding"):
        assert f"| {mode} | best | 1 |" in report and f"| {mode} | final | 1 |" in report
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["epoch_seconds"]) == {"parity", "mask-padding"}
    assert results["work"]["mask-padding"][1] < results["work"]["parity"][1]  # fewer cell evaluations


def test_gpu_profile_without_a_gpu_says_so():
    """bench/profile_gpu.py needs a GPU; without one (CI) it stops with one line, not a traceback."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is here: bench/profile_gpu.py would run for real")
    except Exception:  # noqa: BLE001, S110 - absent or unusable: the case this test is about
        pass
    result = subprocess.run([sys.executable, "-m", "bench.profile_gpu", "--repeats", "1"],
                            capture_output=True, text=True, cwd=REPO, timeout=120, env=ENV)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "GPU" in result.stderr


@pytest.mark.slow
def test_recurrent_step_bench_checks_then_times(tmp_path):
    """bench/recurrent_step.py at tiny, odd shapes: every version is checked against float64 before it is timed; with
    --threads 2 the row shards (17 rows: two) and the unit split too."""
    out = tmp_path / "step.json"
    result = subprocess.run([sys.executable, "-m", "bench.recurrent_step", "--rows", "5,17", "--units",
                             "21", "--steps", "3", "--repeats", "2", "--threads", "2", "--json", str(out)],
                            capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert {r["version"] for r in records} == {"forward/per-step BLAS", "forward/compiled", "backward/per-step BLAS",
                                               "backward/compiled", "sgemm", "forward/row shards x2",
                                               "forward/unit split x2", "backward/row shards x2",
                                               "backward/unit split x2"}
    assert {r["shards"] for r in records if r["rows"] == 17 and "row shards" in r["version"]} == {2}
    assert all(r["median_s"] > 0 for r in records)
    assert all(r["relative_error"] < 1e-4 for r in records if r["relative_error"] is not None)


@pytest.mark.slow
def test_barrier_wait_bench_runs():
    result = subprocess.run([sys.executable, "-m", "bench.barrier_wait", "--burners", "0", "--steps", "50",
                             "--rounds", "1", "--repeats", "1"], capture_output=True, text=True, env=ENV, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| 0 |" in result.stdout


@pytest.mark.slow
def test_split_step_bench_runs(tmp_path):
    out = tmp_path / "split.json"
    result = subprocess.run([sys.executable, "-m", "bench.split_step", "--shapes", "3x16",
                             "--contestants", "rows,units", "--repeats", "1", "--seconds", "0.05", "--json", str(out)],
                            capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert {r["contestant"] for r in json.loads(out.read_text())} == {"rows", "units"}


@pytest.mark.slow
def test_attention_bench_quick(tmp_path):
    """bench/attention.py's five training-step contestants, its FLOP floor and the decoding case, on a tiny setting
    (its times mean nothing)."""
    out = tmp_path / "attention.json"
    result = subprocess.run([sys.executable, "-m", "bench.attention", "--quick", "--json", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert set(record["steps"]) == {"minilstm-feed", "minilstm-no-feed", "minilstm-plain", "torch-feed",
                                    "torch-no-feed"}
    assert all(v["median_ms"] > 0 for v in record["steps"].values())
    assert record["flop_floor"]["gflop_per_step"] > 0 and len(record["decode_validation"]) == 2


@pytest.mark.slow
def test_attention_training_parity_in_float64_agrees_to_rounding(tmp_path):
    """bench/attention_training_parity.py's PyTorch model (bench/torch_models.py's TorchSeq2Seq, our weights copied
    in) trained beside ours in float64 for a few steps from the same weights on the same batches: the held-out
    losses agree to rounding, which a wrong weight mapping, gate order, bias or optimizer setting would break."""
    import gzip

    pytest = __import__("pytest")
    pytest.importorskip("torch", reason="the parity script's peer is PyTorch")
    data = tmp_path / "pairs.txt"
    with gzip.open(REPO / "minilstm" / "default_data" / "fra-eng-10k.txt.gz", "rt", encoding="utf-8") as f:
        data.write_text("".join(line for _, line in zip(range(700), f, strict=False)), encoding="utf-8")
    out = tmp_path / "parity.json"
    result = subprocess.run([sys.executable, "-m", "bench.attention_training_parity", "--data", str(data),
                             "--steps", "3", "--report-every", "3", "--val-stride", "1", "--threads", "1",
                             "--dtype", "float64", "--json", str(out)],
                            capture_output=True, text=True, env=dict(ENV, MINILSTM_THREADS="1"), cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["step"] == 3 and abs(row["ratio"] - 1) < 1e-9, row


@pytest.mark.slow
def test_quality_bench_smoke(tmp_path):
    """bench/quality.py --smoke: our two configurations and PyTorch's trained side by side for seconds, with
    snapshots, every snapshot scored greedy and the last with beam search; the report, its table and the curves."""
    result = subprocess.run([sys.executable, "-m", "bench.quality", "--smoke", "--out", tmp_path], capture_output=True,
                            text=True, env=ENV, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "quality.json").read_text())
    assert list(report["configs"]) == ["minilstm-bi128", "minilstm-256", "torch-256-adam"]
    for run in report["configs"].values():
        minutes = [point["minutes"] for point in run["points"]]
        assert minutes == sorted(minutes) and run["steps"] > 0
        assert run["points"][-1]["mark"] is None  # the snapshot where the budget stopped it
        assert all(point["greedy"]["pairs"] == 30 for point in run["points"])
        assert run["final"]["beam"]["chrf"] is not None and set(run["final"]["greedy"]["length_buckets"]) == \
            {"1-3", "4-6", "7-10", "11+"}
    table = (tmp_path / "quality.md").read_text()
    assert "| config | steps | ms/step | chrF greedy | chrF beam |" in table and "| torch-256-adam |" in table
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_unit_lengths_counts_what_it_says():
    """bench.unit_lengths on the built-in pairs: characters' lengths are the sentences' own, pieces are never longer
    than characters, and an epoch of batches of one row runs no padding."""
    from bench.unit_lengths import epoch_positions, side_lengths
    from minilstm.data import resolve_pairs

    pairs = resolve_pairs(None, 2000)
    english = [pair[0] for pair in pairs]
    distinct = list(dict.fromkeys(english))
    vocabulary, mean, longest = side_lengths(english, "char", 3)
    assert vocabulary is None
    assert mean == pytest.approx(sum(map(len, distinct[::3])) / len(distinct[::3]))
    assert longest == max(map(len, distinct[::3]))
    pieces, piece_mean, piece_longest = side_lengths(english, "sentencepiece:400", 3)
    assert pieces == 400 and piece_mean < mean and piece_longest <= longest
    run, padding = epoch_positions(pairs, "char", 1)
    assert padding == 0 and run > len(pairs) * 2  # every French sentence and its END, at least one character
    batched_run, batched_padding = epoch_positions(pairs, "char", 32)
    assert batched_run == pytest.approx(run / (1 - batched_padding)) and batched_padding > 0


def test_units_speed_builds_character_and_piece_models():
    """bench.units_speed's model on characters (no units to learn) and on pieces learnt from the training side."""
    import argparse

    pytest.importorskip("torch")
    from bench.units_speed import build

    for units, vocabulary in (("char", None), ("sentencepiece:400", 400)):
        args = argparse.Namespace(data=None, num_samples=2000, units=units, sentences=8)
        dataset, train_rows, model, texts = build(args)
        assert model.target_vocab.units.name == units and len(texts) == 8
        assert 0 < len(train_rows) < 2000
        if vocabulary is not None:
            assert len(model.target_vocab) > vocabulary  # the pieces and the START/END/padding entries
