"""Data-parallel training under mpiexec (MPICH from the test extra; oversubscribed on a small machine). N ranks of one
thread each sum the same gradient parts as one process with N thread shards, so: 2 ranks give its weights to the
byte (a + b is exact in either order), 3 ranks to 1e-12 in float64 (the order of the sum changes); the same with
--mask-padding and with SentencePiece units, and after one rank is SIGKILLed and the run resumed under mpiexec. Bad
setups stop with one line. The NCCL path runs where there are GPUs, and says why it is skipped where there are not.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minilstm import distributed
from minilstm.checkpoint import load_checkpoint
from minilstm.data import rank_share

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
# Tiny, and every global batch a multiple of the ranks' shards (320 pairs: 256 train = 4 batches of 64, 64 val).
RUN = ["--num-samples", "320", "--batch-size", "64", "--latent-dim", "16", "--epochs", "3", "--num-decodes", "2",
       "--seed", "5", "--learning-rate", "0.01", "--progress", "never"]
DATA_PARALLEL_LINE = "data-parallel: 2 ranks (MPI)"


def mpiexec_path() -> str:
    """The mpiexec of the MPI wheel in this environment (the test extra installs it); a missing one fails the tests
    that need it rather than skipping them."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail('no mpiexec: install the test extra (pip install ".[test]"), which brings mpich and mpi4py')
    return found


def train(*args, threads=1, env=None):
    """``python -m minilstm.train`` in one process with ``threads`` shards; (returncode, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "minilstm.train", *map(str, args)], capture_output=True,
                            text=True, timeout=600, env={**ENV, "MINILSTM_THREADS": str(threads), **(env or {})})
    return result.returncode, result.stdout, result.stderr


def mpi_command(ranks, *args, launcher=()):
    return [mpiexec_path(), *launcher, "-n", str(ranks), sys.executable, "-m", "minilstm.train", *map(str, args)]


def train_mpi(ranks, *args, env=None, launcher=()):
    """The same command on ``ranks`` ranks of one thread each."""
    result = subprocess.run(mpi_command(ranks, *args, launcher=launcher), capture_output=True, text=True,
                            timeout=600, env={**ENV, "MINILSTM_THREADS": "1", **(env or {})})
    return result.returncode, result.stdout, result.stderr


def weights(checkpoint_dir) -> dict[str, np.ndarray]:
    return load_checkpoint(checkpoint_dir).model.get_weights()


def assert_same_bytes(a: Path, b: Path):
    wa, wb = weights(a), weights(b)
    different = [name for name in wa if wa[name].tobytes() != wb[name].tobytes()]
    assert not different, f"weights differ: {different}"


def assert_close_weights(reference_dir: Path, got_dir: Path, tolerance: float):
    """Every tensor of ``got_dir`` within ``tolerance`` of ``reference_dir``'s, relative to the tensor's largest."""
    reference, got = weights(reference_dir), weights(got_dir)
    for name in reference:
        assert np.abs(got[name] - reference[name]).max() <= tolerance * np.abs(reference[name]).max(), name


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def train_two_shards_of_every_batch(run: list, out: Path) -> Path:
    """One process, two threads, every batch of two or more rows split into two shards (MIN_SHARD_ROWS lowered to
    1), as two ranks split it."""
    code = ("import sys; import minilstm.seq2seq as s; s.MIN_SHARD_ROWS = 1; from minilstm.train import main; "
            "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, *run, "--out", str(out)], capture_output=True,
                            text=True, timeout=600, env={**ENV, "MINILSTM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    return out


def one_line_error(rc, stdout, stderr, *fragments):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2, (rc, stdout, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_rank_share_cuts_as_the_thread_shards_do():
    batch = np.arange(10, 17)  # 7 rows
    for ranks in (1, 2, 3, 8):
        shares = [rank_share(batch, rank, ranks) for rank in range(ranks)]
        assert np.array_equal(np.concatenate(shares), batch)
        assert [len(s) for s in shares] == [7 * (k + 1) // ranks - 7 * k // ranks for k in range(ranks)]


def test_single_process_does_not_touch_mpi(monkeypatch):
    for name in (*distributed.LAUNCHER_SIZE_VARIABLES, *distributed.LAUNCHER_RANK_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    comm = distributed.connect()
    assert comm.size == 1 and comm.is_root and comm.describe() is None
    grads = np.arange(3.0)
    assert comm.allreduce_sum(grads) is grads and comm.sum_metrics([(1.0, 2)]) == [(1.0, 2)]


@pytest.fixture(scope="module")
def two_shard_reference(tmp_path_factory):
    """One process, two thread shards: the run two ranks must reproduce."""
    out = tmp_path_factory.mktemp("one-process")
    rc, _, stderr = train(*RUN, "--out", out, threads=2)
    assert rc == 0, stderr
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-ranks")
    rc, stdout, stderr = train_mpi(2, *RUN, "--out", out)
    assert rc == 0, stderr
    return out, stdout


@pytest.mark.mpi
def test_two_ranks_give_the_two_shard_weights_to_the_byte(two_shard_reference, two_ranks):
    out, stdout = two_ranks
    assert stdout.startswith(DATA_PARALLEL_LINE + "\n") and stdout.count("Epoch 3/3") == 1  # rank 0 alone prints
    assert "backend numba (1 thread)" in stdout
    assert_same_bytes(out / "final", two_shard_reference / "final")
    assert_same_bytes(out / "best", two_shard_reference / "best")
    for mine, theirs in zip(history(out), history(two_shard_reference), strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert mine[key] == theirs[key], key
    assert load_checkpoint(out / "final").config["training"]["ranks"] == 2


@pytest.mark.mpi
def test_three_ranks_match_three_shards_to_1e12_in_float64(tmp_path):
    run = [*RUN, "--num-samples", "360", "--batch-size", "96", "--dtype", "float64"]  # 288 train = 3 x 96
    rc, _, stderr = train(*run, "--out", tmp_path / "one", threads=3)
    assert rc == 0, stderr
    rc, stdout, stderr = train_mpi(3, *run, "--out", tmp_path / "three")
    assert rc == 0, stderr
    assert "data-parallel: 3 ranks (MPI)" in stdout
    assert_close_weights(tmp_path / "one" / "final", tmp_path / "three" / "final", 1e-12)
    for mine, theirs in zip(history(tmp_path / "three"), history(tmp_path / "one"), strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-12)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-12)


@pytest.mark.mpi
def test_mask_padding_two_ranks_give_the_two_shard_weights_to_the_byte(tmp_path):
    """Buckets make short batches; the reference splits every batch of two or more rows into two shards (its
    MIN_SHARD_ROWS lowered to 1), as two ranks do. A one-row batch is one shard there and 0 + a here: the same."""
    run = [*RUN, "--num-samples", "400", "--batch-size", "16", "--mask-padding"]
    reference = train_two_shards_of_every_batch(run, tmp_path / "one")
    rc, stdout, stderr = train_mpi(2, *run, "--out", tmp_path / "two")
    assert rc == 0, stderr
    assert_same_bytes(tmp_path / "two" / "final", reference / "final")
    assert [h["loss"] for h in history(tmp_path / "two")] == [h["loss"] for h in history(reference)]


def rank_pid(out: Path, rank: int) -> int | None:
    """The pid of rank ``rank`` of the run writing into ``out`` (found by its command line and PMI_RANK)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"minilstm.train" in cmdline and str(out).encode() in cmdline and f"PMI_RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def start_and_kill_rank(out: Path, rank: int):
    """Start a 2-rank run, SIGKILL rank ``rank`` once its first checkpoint is on disk; (returncode, seconds from
    the kill to the end of the job, stdout, stderr)."""
    proc = subprocess.Popen(mpi_command(2, *RUN, *LONGER, "--checkpoint-every", "1",
                                        "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "MINILSTM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (out / "latest").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    pid = rank_pid(out, rank)
    assert pid is not None and proc.poll() is None, "the run ended before it could be killed"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the other rank hangs after one was killed")
    return proc.returncode, time.monotonic() - killed, stdout, stderr


LONGER = ["--epochs", "40", "--latent-dim", "48"]  # long enough to be stopped in the middle


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    rc, _, stderr = train_mpi(2, *RUN, *LONGER, "--out", out)
    assert rc == 0, stderr
    return out


@pytest.mark.mpi
def test_sentencepiece_units_on_two_ranks_give_the_two_shard_weights_to_the_byte(tmp_path):
    """Every rank learns the pieces from the same training pairs, deterministically, so the ranks agree on the
    vocabulary, and the run is the one-process run with two shards, to the byte."""
    run = [*RUN, "--num-samples", "600", "--batch-size", "16", "--mask-padding", "--units", "sentencepiece:400",
           "--embedding-dim", "8", "--attention", "general", "--no-input-feed", "--epochs", "2"]
    reference = train_two_shards_of_every_batch(run, tmp_path / "one")
    rc, stdout, stderr = train_mpi(2, *run, "--out", tmp_path / "two")
    assert rc == 0, stderr
    assert_same_bytes(tmp_path / "two" / "final", reference / "final")
    assert load_checkpoint(tmp_path / "two" / "final").model.input_vocab.units.name == "sentencepiece:400"
    assert [h["loss"] for h in history(tmp_path / "two")] == [h["loss"] for h in history(reference)]


@pytest.mark.mpi
def test_a_killed_rank_ends_the_job_and_resuming_ends_as_if_never_killed(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    rc, seconds, _, stderr = start_and_kill_rank(out, rank=1)  # MPICH's mpiexec kills the other rank at once
    assert rc != 0 and seconds < 10
    assert_no_rank_left(out)
    lines = [line for line in stderr.splitlines() if line.strip()]  # mpiexec's own banner is on stdout
    assert len(lines) <= 1 and all("ended before the run did" in line for line in lines), stderr
    assert load_checkpoint(out / "latest").config["training"]["progress"]["epoch"] < 40
    rc, stdout, stderr = train_mpi(2, "--resume", out)
    assert rc == 0, stderr
    assert "Resuming" in stdout and "reduction" not in stdout and "another order" not in stdout
    assert_same_bytes(out / "final", uninterrupted / "final")
    assert not list(out.glob(".*.tmp-*")) and not list(out.glob(".*.old-*")), "leftovers"


def assert_no_rank_left(out: Path, seconds: float = 10):
    deadline = time.monotonic() + seconds
    while any(rank_pid(out, rank) for rank in (0, 1)):
        assert time.monotonic() < deadline, "a rank of the killed run is still running"
        time.sleep(0.1)


@pytest.mark.mpi
def test_a_rank_that_leaves_on_its_own_ends_the_job(tmp_path):
    """A rank that exits on its own (here rank 1 after 3 steps, as after an error only it met) while the other waits
    in an allreduce: no hang (it leaves without MPI_Finalize, which would wait for the others, so mpiexec ends the
    job), and nothing on stderr but, at most, the one line of a rank that noticed first."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('PMI_RANK') == '1':\n"
        "    import minilstm.optim as optim\n"
        "    step = optim.RMSprop.step\n"
        "    def step_then_leave(self, *args):\n"
        "        step(self, *args)\n"
        "        if self.iterations == 3:\n"
        "            raise SystemExit(3)\n"
        "    optim.RMSprop.step = step_then_leave\n")
    out = tmp_path / "run"
    started = time.monotonic()
    rc, _, stderr = train_mpi(2, *RUN, *LONGER, "--out", out,
                              env={"PYTHONPATH": f"{hook}{os.pathsep}{ENV['PYTHONPATH']}"})
    assert rc != 0 and time.monotonic() - started < 60, (rc, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= 1 and all("ended before the run did" in line for line in lines), stderr
    assert_no_rank_left(out)


WATCH = """
import subprocess, sys, time
from minilstm.distributed import _PeerWatch
peer = subprocess.Popen(["sleep", "0.3"])
watch = _PeerWatch(0, [(1, peer.pid)])
watch.hint = "resume with: the command"
watch.finished = {finished}
time.sleep(6)
print("not stopped")
"""


@pytest.mark.slow  # waits for the watch to notice the lost peer: ~8 s
@pytest.mark.parametrize("finished", [False, True])
def test_peer_watch_ends_a_rank_left_alone_with_one_line(finished):
    """The watch itself, on a peer that is a plain process: once it exits, a rank that is not done says so in one
    line and exits within seconds (where no launcher ends it); a rank that is done lets it go."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", WATCH.format(finished=finished)], capture_output=True, text=True,
                            timeout=60, env=ENV)
    if finished:
        assert result.returncode == 0 and result.stdout == "not stopped\n" and not result.stderr
        return
    assert result.returncode == distributed.EXIT_PEER_LOST and not result.stdout
    assert result.stderr == "error: rank 1 ended before the run did (killed?); stopping the other ranks. resume " \
                            "with: the command\n"
    assert time.monotonic() - started < 5


@pytest.mark.mpi
def test_ctrl_c_to_mpiexec_stops_every_rank_after_the_same_step(uninterrupted, tmp_path):
    """mpiexec passes Ctrl-C on to every rank; they agree on the step to stop after (each rank may see the signal
    during another step), rank 0 writes latest/ and says so once, all exit 130, and resuming ends as if never
    stopped."""
    out = tmp_path / "run"
    proc = subprocess.Popen(mpi_command(2, *RUN, *LONGER, "--out", out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**ENV, "MINILSTM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (out / "latest").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.count("SIGINT: stopped at epoch") == 1 and "Traceback" not in stderr, stderr
    assert f"Resume with: mpiexec -n 2 python -m minilstm.train --resume {out}" in stderr
    rc, _, stderr = train_mpi(2, "--resume", out)
    assert rc == 0, stderr
    assert_same_bytes(out / "final", uninterrupted / "final")


@pytest.mark.mpi
def test_adam_with_clipping_on_two_ranks_resumes_to_the_two_shard_weights(tmp_path):
    """Every rank clips the same summed gradient and keeps the same Adam state: 1 epoch on 2 ranks, then --resume
    under mpiexec (every rank starting from rank 0's broadcast m and v) gives the weights of one process with two
    shards, to the byte."""
    run = [*RUN, "--optimizer", "adam", "--clip-norm", "0.05"]
    rc, _, stderr = train(*run, "--out", tmp_path / "one", threads=2)
    assert rc == 0, stderr
    rc, _, stderr = train_mpi(2, *run, "--epochs", "1", "--out", tmp_path / "two")
    assert rc == 0, stderr
    rc, stdout, stderr = train_mpi(2, "--resume", tmp_path / "two", "--epochs", "3")
    assert rc == 0, stderr
    assert DATA_PARALLEL_LINE in stdout and "Resuming" in stdout
    assert_same_bytes(tmp_path / "two" / "final", tmp_path / "one" / "final")
    assert load_checkpoint(tmp_path / "two" / "final").config["optimizer"]["name"] == "adam"


@pytest.mark.mpi
def test_stacked_model_with_dropout_on_two_ranks_equals_two_shards(tmp_path):
    """Dropout masks follow the global rows: rank 1 draws the masks of its rows as thread shard 1 does, so a
    2+2-layer model with a bidirectional encoder and dropout trains to the same bytes on 2 ranks as on 2 shards."""
    run = [*RUN, "--epochs", "1", "--encoder-layers", "2", "--decoder-layers", "2", "--bidirectional-encoder",
           "--dropout", "0.3"]
    rc, _, stderr = train(*run, "--out", tmp_path / "one", threads=2)
    assert rc == 0, stderr
    rc, stdout, stderr = train_mpi(2, *run, "--out", tmp_path / "two")
    assert rc == 0, stderr
    assert DATA_PARALLEL_LINE in stdout
    assert_same_bytes(tmp_path / "two" / "final", tmp_path / "one" / "final")


@pytest.mark.mpi
def test_resume_on_another_number_of_ranks_goes_on_and_says_so(two_ranks, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(two_ranks[0], out)
    rc, stdout, stderr = train("--resume", out, "--epochs", "4")
    assert rc == 0, stderr
    assert "trained on 2 ranks, it goes on with 1" in stdout and "another order" in stdout
    assert len(history(out)) == 4


@pytest.mark.mpi
def test_one_rank_under_mpiexec_changes_nothing(two_shard_reference, tmp_path):
    rc, stdout, stderr = train_mpi(1, *RUN, "--out", tmp_path / "one", env={"MINILSTM_THREADS": "2"})
    assert rc == 0, stderr
    assert "data-parallel" not in stdout
    assert_same_bytes(tmp_path / "one" / "final", two_shard_reference / "final")


@pytest.mark.mpi
def test_mpiexec_without_mpi4py_is_one_line(tmp_path):
    hidden = tmp_path / "hide" / "mpi4py"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'mpi4py'\")\n")
    env = {"PYTHONPATH": f"{tmp_path / 'hide'}{os.pathsep}{ENV['PYTHONPATH']}"}
    one_line_error(*train_mpi(2, *RUN, "--out", tmp_path / "run", env=env), "mpi4py", "2 ranks", "pip install")


@pytest.mark.mpi
def test_ranks_that_read_different_data_are_one_line(tmp_path):
    """Two ranks run in two folders, each with its own data.txt (as on two machines whose copies differ)."""
    pairs = [f"word {k}\tmot {k}" for k in range(200)]
    for folder, last in (("a", "Go.\tVa !"), ("b", "Go!\tVa ?")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.txt").write_text("\n".join([*pairs, last]) + "\n")
    args = [*RUN, "--data", "data.txt", "--out", tmp_path / "run"]
    command = [mpiexec_path(), "-n", "1", "-wdir", str(tmp_path / "a"), sys.executable, "-m", "minilstm.train",
               *map(str, args), ":", "-n", "1", "-wdir", str(tmp_path / "b"), sys.executable, "-m",
               "minilstm.train", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**ENV, "MINILSTM_THREADS": "1"})
    one_line_error(result.returncode, result.stdout, result.stderr, "rank 1: vocabularies", "same data file")


@pytest.mark.mpi
def test_divergence_on_two_ranks_is_one_line(tmp_path):
    """The NaN check reads the summed loss and gradient, so every rank stops at the same step; rank 0 says so."""
    one_line_error(*train_mpi(2, *RUN, "--learning-rate", "1e38", "--checkpoint-every", "1", "--out", tmp_path / "r"),
                   "diverged")
    load_checkpoint(tmp_path / "r" / "latest")


@pytest.mark.mpi
def test_more_ranks_than_gpus_is_one_line(tmp_path):
    rc, stdout, stderr = train_mpi(2, *RUN, "--backend", "cupy", "--out", tmp_path / "run",
                                   env={"CUDA_VISIBLE_DEVICES": ""})
    one_line_error(rc, stdout, stderr, "--backend cupy: 2 ranks on", "0 GPUs", "a GPU of its own")


@pytest.mark.gpu
def test_nccl_sums_device_arrays_where_there_is_a_gpu():
    """The NCCL communicator on this machine's first GPU (one rank: NCCL's own setup, allreduce of both dtypes and of
    the metrics, broadcast). Two ranks on two GPUs are the 2-rank tests above with --backend cupy."""
    gpus = distributed.gpu_count()
    if gpus < 1:
        pytest.skip("no GPU (or no CuPy) here: the NCCL path needs one")
    import cupy
    from cupy.cuda import nccl
    from mpi4py import MPI

    if not nccl.available:
        pytest.skip("CuPy finds no NCCL library here (pip install nvidia-nccl-cu12 / -cu13)")
    comm = distributed.NcclCommunicator(distributed.MPICommunicator(MPI))
    for dtype in (cupy.float32, cupy.float64):
        values = cupy.arange(5, dtype=dtype)
        assert cupy.array_equal(comm.allreduce_sum(values), cupy.arange(5, dtype=dtype))
    (loss, hits), = comm.sum_metrics([(cupy.asarray(1.5), cupy.asarray(3))])
    assert float(loss) == 1.5 and float(hits) == 3.0


@pytest.mark.gpu
@pytest.mark.mpi
@pytest.mark.skipif(distributed.gpu_count() < 2, reason="needs two GPUs (one per rank) for NCCL between ranks")
def test_two_ranks_on_two_gpus_match_one(tmp_path):
    run = [*RUN, "--backend", "cupy", "--dtype", "float64"]
    rc, _, stderr = train(*run, "--out", tmp_path / "one")
    assert rc == 0, stderr
    rc, stdout, stderr = train_mpi(2, *run, "--out", tmp_path / "two")
    assert rc == 0, stderr
    assert "gradients summed by NCCL" in stdout
    assert_close_weights(tmp_path / "one" / "final", tmp_path / "two" / "final", 1e-10)


@pytest.mark.mpi
def test_data_parallel_bench_runs(tmp_path):
    """bench/data_parallel.py end to end at a tiny size (it times nothing here): both step runs, the per-rank
    compute, MPI's allreduce, one whole-file epoch both ways (here the file's first 400 pairs) and the model table."""
    mpiexec_path()
    result = subprocess.run([sys.executable, "-m", "bench.data_parallel", "--quick", "--out",
                             str(tmp_path), "--full-data", str(REPO / "minilstm" / "default_data" /
                                                                "fra-eng-10k.txt.gz")],
                            capture_output=True, text=True, cwd=REPO, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["ranks"], r["threads"]) for r in results["step"]] == [(1, 2), (2, 1)]
    assert [(r["ranks"], r["threads"]) for r in results["full_file"]] == [(1, 2), (2, 1)]
    assert [r["nodes"] for r in results["model"]] == [1, 2, 4, 8, 16, 32, 64]
    assert "| 64 | 1 |" in (tmp_path / "results.md").read_text()
