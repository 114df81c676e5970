"""Side-by-side benchmark: minilstm's backends and PyTorch, at the Keras example's shape, with real batches.

    python -m bench.bench --json bench/results/cpu.json --plot bench/results/cpu.png
    python -m bench.bench --quick                # under a minute; a test runs it so the benchmark cannot rot

Cases: one training step (forward + backward + RMSprop; median over many steps after warm-up), one full epoch (all
training steps + validation), greedy decoding of the validation sentences (batched vs one at a time; every contestant
warmed up untimed first; onnxruntime joins here, running our ONNX export with the loop of docs/guide/convert.md), and a
sweep of the training step over batch size and latent size. Decoding runs with untrained weights (Keras's initial ones,
END's output bias set to -100 so that no sentence ends early: every row runs to the length limit,
``decode_*_to_limit``) and, given ``--checkpoint``, with those trained weights (``decode_*_trained``), the same
weights for every contestant.
Contestants are interleaved (round-robin, a few steps each) so that drifting machine load hits them all alike;
ratios are to PyTorch on the same device (and to onnxruntime where it ran).
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minilstm.backends import default_backend_name, get_backend
from minilstm.backends.numba import NumbaBackend
from minilstm.data import END, START, Dataset, encode_inputs, resolve_pairs, split_validation
from minilstm.errors import MinilstmError
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


class MinilstmContestant:
    def __init__(self, backend_name, dataset, latent_dim, dtype):
        # "numba:units" / "numba:rows": the numba backend with its split forced (NumbaBackend.unit_split)
        name, _, split = backend_name.partition(":")
        if split and name != "numba":
            raise MinilstmError(f"{backend_name}: only the numba backend has a split to choose")
        self.backend = NumbaBackend(split=split) if split else get_backend(backend_name)
        self.name = f"minilstm-{backend_name}"
        self.device = "gpu" if backend_name.startswith("cupy") else "cpu"
        self.dataset = dataset
        self.model = Seq2Seq(self.backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                             dataset.max_decoder_len, latent_dim=latent_dim, dtype=dtype).initialize(0)
        self.optimizer = RMSprop(self.backend, self.model.params.flat.size, self.model.dtype)

    def prepare(self, idx):
        d = self.dataset
        return tuple(self.backend.asarray(a[idx]) for a in (d.encoder_input_ids, d.decoder_input_ids,
                                                             d.decoder_target_ids))

    def train_step(self, batch):
        self.model.forward_backward(*batch)
        self.optimizer.step(self.model.params.flat, self.model.grads.flat)

    def evaluate(self, batch):
        return self.model.forward_backward(*batch, compute_grads=False)[0]

    def decode(self, texts, batch_size):
        return self.model.translate(texts, batch_size=batch_size, split_sentences=False)

    def synchronize(self):
        self.backend.synchronize()


class TorchContestant:
    """PyTorch's model (``bench.torch_models.TorchSeq2Seq``: the Keras example's, or with ``attention``) on
    ``device``, trained by tf.keras's RMSprop, decoded by batched greedy decoding."""

    def __init__(self, device, dataset, latent_dim, dtype, threads, attention=None, input_feed=True, name=None):
        import torch

        from bench.torch_models import TorchSeq2Seq

        torch.set_num_threads(threads)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        self.name = name or f"pytorch-{device}" + ("-cudnn" if device == "cuda" else "")
        self.device = "gpu" if device == "cuda" else "cpu"
        self.dataset = dataset
        self.model = TorchSeq2Seq(len(dataset.input_vocab), len(dataset.target_vocab), latent_dim, attention=attention,
                                  input_feed=input_feed, dtype=dtype, device=device)
        self.optimizer = self.model.keras_rmsprop()
        self.lengths = None if attention is None else dataset.input_lengths()  # attention: each its own source

    def prepare(self, idx):
        d = self.dataset
        return self.model.upload(d.encoder_input_ids[idx], d.decoder_input_ids[idx], d.decoder_target_ids[idx],
                                 None if self.lengths is None else self.lengths[idx])

    def train_step(self, batch):
        self.model.train_step(self.optimizer, batch)

    def evaluate(self, batch):
        with self.torch.no_grad():
            return self.model.batch_loss(batch, reduction="sum")

    def decode(self, texts, batch_size):
        d, model = self.dataset, self.model
        start, end = d.target_vocab.index[START], d.target_vocab.index[END]
        out = []
        for k in range(0, len(texts), batch_size):
            chunk = texts[k : k + batch_size]
            enc_x = model.one_hot(encode_inputs(chunk, d.input_vocab, d.max_encoder_len), model.n_in)
            valid = None if self.lengths is None else model.valid([len(text) for text in chunk], enc_x.shape[0])
            for row in model.greedy_decode(enc_x, valid, start, end, d.max_decoder_len).tolist():
                out.append(d.target_vocab.decode(row[: row.index(end)] if end in row else row))
        return out

    def synchronize(self):
        self.model.synchronize()


class OnnxRuntimeContestant:
    """onnxruntime (``intra_op_num_threads`` = threads) running minilstm's ONNX export of the same weights, decoded
    by docs/guide/convert.md's onnxruntime-only loop exactly as written there (batched greedy, finished rows
    dropped)."""

    def __init__(self, dataset, latent_dim, dtype, threads):
        import onnx  # noqa: F401 - fail here (skipped) when either is not installed
        import onnxruntime  # noqa: F401

        if str(dtype) != "float32":
            raise MinilstmError(f"the ONNX export is float32 only, not {dtype}")

        readme = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "convert.md").read_text(encoding="utf-8")
        code = re.search(r"<!-- onnx-example -->\n```python\n(.*?)```", readme, re.S).group(1)
        namespace = {}
        exec(compile(code[: code.index("\nprint(onnx_translate")], "README.md:onnx-example", "exec"), namespace)
        self._load, self._translate = namespace["load"], namespace["onnx_translate"]
        self.name, self.device, self.threads = "onnxruntime-cpu", "cpu", threads
        self.model = Seq2Seq("numpy", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                             dataset.max_decoder_len, latent_dim=latent_dim, dtype=dtype).initialize(0)
        self._folder = tempfile.TemporaryDirectory(prefix="bench-onnx-")
        self._sessions = None

    def set_weights(self, weights):
        self.model.set_weights(weights)
        self._sessions = None

    def decode(self, texts, batch_size):
        if self._sessions is None:  # export (again) after new weights
            from minilstm.onnx_export import export_onnx

            folder = Path(self._folder.name) / f"model-{time.monotonic_ns()}"
            export_onnx(self.model, folder)
            self._sessions = self._load(str(folder), self.threads)
        out = []
        for k in range(0, len(texts), batch_size):
            out += self._translate(self._sessions, texts[k : k + batch_size])
        return out

    def synchronize(self):
        pass


def set_decode_weights(contestants, weights):
    """The same weights (minilstm's names and layout) for every decoding contestant."""
    for c in contestants:
        if isinstance(c, TorchContestant):
            c.model.set_weights(weights)
        elif isinstance(c, OnnxRuntimeContestant):
            c.set_weights(weights)
        else:
            c.model.set_weights(weights)


def weights_to_limit(dataset, dtype, latent_dim=256):
    """Untrained weights (Keras's initialisers, seed 0) with END's output bias at -100: END never wins, so every
    sentence decodes to the length limit (the decode step's cost, not hidden by sentences that end early)."""
    weights = Seq2Seq("numpy", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                      dataset.max_decoder_len, latent_dim=latent_dim, dtype=dtype).initialize(0).get_weights()
    weights["dense.bias"][dataset.target_vocab.index[END]] = -100.0
    return weights


def make_contestants(names, dataset, latent_dim, dtype, threads):
    out = []
    for name in names:
        try:
            if name.startswith("pytorch-"):
                out.append(TorchContestant(name.removeprefix("pytorch-"), dataset, latent_dim, dtype, threads))
            else:
                out.append(MinilstmContestant(name.removeprefix("minilstm-"), dataset, latent_dim, dtype))
        except (ImportError, MinilstmError, RuntimeError, AssertionError) as e:
            print(f"# skipping {name}: {str(e).splitlines()[0]}", file=sys.stderr)
    return out


def available_names(args) -> list[str]:
    names = [f"minilstm-{b}" for b in args.backends.split(",") if b]
    if not args.no_torch:
        try:
            import torch

            if "cpu" in args.torch_devices.split(","):
                names.append("pytorch-cpu")
            if torch.cuda.is_available() and "cuda" in args.torch_devices.split(","):
                names.append("pytorch-cuda")
        except ImportError:
            print("# skipping pytorch: not installed (pip install torch==2.13.0)", file=sys.stderr)
    return names


def time_train_steps(contestants, dataset, train_idx, batch_size, warmup, rounds, steps_per_round, seed=0,
                     settle=0.0, turn_warmup=0.0):
    """Median seconds per training step for each contestant, interleaved round-robin, with ``settle`` seconds of
    sleep before each contestant's turn: BLAS and OpenMP worker threads busy-wait for a while after their last call
    (OpenBLAS's for ~0.1 s), and without the pause the next contestant runs beside the previous one's spinning
    threads (measured: PyTorch's batch-1 step 9 ms right after minilstm's 1-shard steps, 5 ms with them asleep).

    Each turn then starts with untimed steps for ``turn_warmup`` seconds (at least one step where it is > 0), so
    that the timed steps run as training runs them, back to back. Why: on this project's virtual machines the
    first steps after a pause are slow for whoever hands work to sleeping threads many times a step (measured,
    numba at batch 1 / latent 256: 13.3, 13.9, 13.4, 14.1, then 6.1, 4.6 ms by position in the turn; steady state
    3.9 ms; PyTorch 6.4-7.4 ms throughout)."""
    rng = np.random.default_rng(seed)
    times = {c.name: [] for c in contestants}
    for c in contestants:
        for _ in range(warmup):
            c.train_step(c.prepare(rng.choice(train_idx, batch_size, replace=False)))
        c.synchronize()
    for _ in range(rounds):
        for c in contestants:
            time.sleep(settle)
            warm_until = time.perf_counter() + turn_warmup
            while turn_warmup > 0:
                c.train_step(c.prepare(rng.choice(train_idx, batch_size, replace=False)))
                c.synchronize()
                if time.perf_counter() >= warm_until:
                    break
            for _ in range(steps_per_round):
                batch = c.prepare(rng.choice(train_idx, batch_size, replace=False))
                c.synchronize()
                start = time.perf_counter()
                c.train_step(batch)
                c.synchronize()
                times[c.name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), len(t)) for name, t in times.items()}


def training_step_flops(batch, latent, encoder_len, decoder_len, n_out) -> float:
    """Floating-point operations of one training step, GEMMs only (the gathers, cells and softmax are O(B*T*H)):
    the recurrent GEMM forward, backward and its weight gradient over all steps of both layers, and the dense
    layer forward, its input gradient and its weight gradient."""
    recurrent = 2 * batch * latent * 4 * latent * (encoder_len + decoder_len)
    dense = 2 * batch * decoder_len * latent * n_out
    return 3 * recurrent + 3 * dense


def sgemm_peak(threads, size=2048, repeats=5) -> float:
    """FLOP/s of BLAS's own sgemm at size^3 with ``threads`` threads: the machine's practical peak."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, a, out=out)
        best = min(_timed(lambda: np.matmul(a, a, out=out)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_epoch(contestant, dataset, train_idx, val_idx, batch_size, seed=0):
    """One epoch as train.py runs it: every training batch (shuffled), then validation in batches of 256."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(train_idx)
    contestant.synchronize()
    start = time.perf_counter()
    for k in range(0, len(order), batch_size):
        contestant.train_step(contestant.prepare(order[k : k + batch_size]))
    for k in range(0, len(val_idx), 256):
        contestant.evaluate(contestant.prepare(val_idx[k : k + 256]))
    contestant.synchronize()
    return time.perf_counter() - start


def markdown(records, title):
    rows = [f"\n### {title}\n", "| case | contestant | batch | latent | median | vs PyTorch (same device) | "
            "vs onnxruntime |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def peer(prefix):
        return {(r["case"], r["batch"], r["latent_dim"], r["device"]): r["median_s"] for r in records
                if r["contestant"].startswith(prefix)}

    torch_times, onnx_times = peer("pytorch"), peer("onnxruntime")
    for r in records:
        key = (r["case"], r["batch"], r["latent_dim"], r["device"])
        ratios = [f"{r['median_s'] / ref[key]:.2f}x" if key in ref else "-" for ref in (torch_times, onnx_times)]
        value = r["median_s"]
        shown = f"{value * 1e3:.1f} ms" if value < 10 else f"{value:.1f} s"
        rows.append(f"| {r['case']} | {r['contestant']} | {r['batch']} | {r['latent_dim']} | {shown} | "
                    f"{' | '.join(ratios)} |")
    return "\n".join(rows)


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    main = [r for r in records if r["case"] == "train_step" and r["batch"] == 64 and r["latent_dim"] == 256]
    axes[0].barh([r["contestant"] for r in main], [r["median_s"] * 1e3 for r in main])
    axes[0].set_xlabel("ms per training step (batch 64, latent 256)")
    sweep = [r for r in records if r["case"] == "sweep_train_step"]
    for name in sorted({r["contestant"] for r in sweep}):
        for latent in sorted({r["latent_dim"] for r in sweep}):
            pts = sorted((r["batch"], r["median_s"] * 1e3) for r in sweep
                         if r["contestant"] == name and r["latent_dim"] == latent)
            if pts:
                axes[1].plot(*zip(*pts, strict=True), marker="o", label=f"{name} H={latent}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("batch size")
    axes[1].set_ylabel("ms per training step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few repeats, small sweep: under a minute")
    p.add_argument("--backends",
                   default="numpy,numba" + (",cupy,cupy-persistent" if default_backend_name() == "cupy" else ""),
                   help="minilstm backends to time (default: numpy, numba, and both cupy recurrences where a GPU is "
                   "usable); numba:rows, numba:units force the numba backend's split")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-onnxruntime", action="store_true", help="leave onnxruntime out of the decode case")
    p.add_argument("--torch-devices", default="cpu,cuda",
                   help="where PyTorch runs: cpu, cuda (where there is a GPU), or both (default)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--cases", default="train_step,epoch,decode,sweep")
    p.add_argument("--sweep-batches", help="batch sizes of the sweep (default: 1,16,64,256)")
    p.add_argument("--sweep-latents", help="latent sizes of the sweep (default: 64,256,512)")
    p.add_argument("--sweep-rounds", type=int, default=4, help="interleaved rounds per sweep point (3 steps each)")
    p.add_argument("--settle", type=float, default=0.2,
                   help="seconds of sleep before each contestant's turn in the step timings, so that the previous "
                   "one's spinning BLAS/OpenMP threads are asleep (0: none, as before this option)")
    p.add_argument("--turn-warmup", type=float, default=0.1,
                   help="seconds of untimed steps at the start of each contestant's turn, after the pause, so that "
                   "timed steps run back to back as in training (0: none, as before this option)")
    p.add_argument("--checkpoint", type=Path, help="decode with these trained weights too (always: untrained ones "
                   "whose END never wins, so every sentence runs to the length limit)")
    args = p.parse_args(argv)
    cases = set(args.cases.split(","))
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    train_idx, val_idx = split_validation(len(dataset))
    names = available_names(args)
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("numba", "torch", "cupy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    gpu = None
    if "pytorch-cuda" in names or any(n.startswith("minilstm-cupy") for n in names):
        try:
            import torch

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except ImportError:
            pass
        if gpu is None:
            try:
                import cupy

                gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"]
                gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
            except Exception:  # noqa: BLE001 - only a label
                gpu = None
    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})" for i in threadpool_info()
                     if i.get("user_api") == "blas")
    env = {"cpu": cpu_name(), "gpu": gpu, "threads": args.threads, "versions": versions, "dtype": args.dtype,
           "quick": args.quick, "settle_s": args.settle, "turn_warmup_s": args.turn_warmup,
           "load_before": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%d"), "blas": blas,
           **{name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}
    records = []

    def record(case, name, device, batch, latent, median_s, n, **extra):
        records.append({"case": case, "contestant": name, "device": device, "batch": batch, "latent_dim": latent,
                        "median_s": median_s, "n": n, **extra, **env})

    contestants = make_contestants(names, dataset, 256, args.dtype, args.threads)
    kind = {c.name: c.device for c in contestants}
    if "train_step" in cases:
        warmup, rounds, per_round = (2, 3, 2) if args.quick else (5, 10, 5)
        if args.quick:
            contestants_main = [c for c in contestants if c.name != "minilstm-numpy"] or contestants
        else:
            contestants_main = contestants
        for name, (median, n) in time_train_steps(contestants_main, dataset, train_idx, 64, warmup, rounds,
                                                  per_round, settle=args.settle,
                                                  turn_warmup=args.turn_warmup).items():
            record("train_step", name, kind[name], 64, 256, median, n)
        flops = training_step_flops(64, 256, dataset.max_encoder_len, dataset.max_decoder_len,
                                    len(dataset.target_vocab))
        peak = sgemm_peak(args.threads)
        record("flop_floor", f"sgemm 2048^3 at {peak / 1e9:.0f} GFLOP/s", "cpu", 64, 256, flops / peak, 1,
               gflop_per_step=flops / 1e9, sgemm_gflops=peak / 1e9)
    if "epoch" in cases and not args.quick:
        for c in contestants:
            seconds = time_epoch(c, dataset, train_idx, val_idx, 64)
            record("epoch", c.name, c.device, 64, 256, seconds, 1)
    if "decode" in cases:
        texts = [dataset.input_texts[k] for k in val_idx]
        if args.quick:
            texts = texts[:100]
        decoders = [c for c in contestants if not (args.quick and c.name == "minilstm-numpy")]
        if not args.no_onnxruntime:
            try:
                decoders.append(OnnxRuntimeContestant(dataset, 256, args.dtype, args.threads))
            except (ImportError, MinilstmError) as e:
                print(f"# skipping onnxruntime: {e} (pip install '.[onnx]'; float32)", file=sys.stderr)
        weight_sets = [("to_limit", weights_to_limit(dataset, args.dtype))]
        if args.checkpoint:
            from minilstm.checkpoint import load_checkpoint

            weight_sets.append(("trained", load_checkpoint(args.checkpoint).model.get_weights()))
        for label, weights in weight_sets:
            set_decode_weights(decoders, weights)
            reference = None
            for c in decoders:
                c.decode(texts[:512], 512)  # untimed warm-up: compiles, caches, thread pools
                for text in texts[:3]:
                    c.decode([text], 1)
                c.synchronize()
                start = time.perf_counter()
                batched = c.decode(texts, 512)
                c.synchronize()
                reference = batched if reference is None else reference
                record(f"decode_batched_{label}", c.name, c.device, len(texts), 256, time.perf_counter() - start, 1,
                       checkpoint=str(args.checkpoint) if label == "trained" else None,
                       mean_chars=float(np.mean([len(t) for t in batched])), same_as_first=batched == reference)
                start = time.perf_counter()
                one_by_one = [c.decode([t], 1)[0] for t in texts]
                c.synchronize()
                record(f"decode_one_by_one_{label}", c.name, c.device, len(texts), 256,
                       time.perf_counter() - start, 1, identical=batched == one_by_one)
    if "sweep" in cases:
        batches, latents = ((1, 64), (64,)) if args.quick else ((1, 16, 64, 256), (64, 256, 512))
        if args.sweep_batches:
            batches = tuple(map(int, args.sweep_batches.split(",")))
        if args.sweep_latents:
            latents = tuple(map(int, args.sweep_latents.split(",")))
        sweep_names = [n for n in names if not (args.quick and n == "minilstm-numpy")]
        for latent in latents:
            group = make_contestants(sweep_names, dataset, latent, args.dtype, args.threads)
            for batch in batches:
                steps = (1, 2, 2) if args.quick else (2, args.sweep_rounds, 3)
                for name, (median, n) in time_train_steps(group, dataset, train_idx, batch, *steps,
                                                          settle=args.settle,
                                                          turn_warmup=args.turn_warmup).items():
                    record("sweep_train_step", name, kind.get(name, "cpu"), batch, latent, median, n)
    print(f"# {env['cpu']}, {args.threads} threads" + (f", GPU {gpu}" if gpu else "") + f", {args.dtype}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; BLAS {blas}; OPENBLAS_CORETYPE="
          + str(env["OPENBLAS_CORETYPE"]))
    print(markdown([r for r in records if r["case"] != "flop_floor"], "Results"))
    for floor in (r for r in records if r["case"] == "flop_floor"):
        print(f"\nFLOP floor of a training step: {floor['gflop_per_step']:.2f} GFLOP / {floor['sgemm_gflops']:.0f} "
              f"GFLOP/s (BLAS sgemm at 2048^3, {args.threads} threads) = {floor['median_s'] * 1e3:.1f} ms")
        for r in records:
            if r["case"] == "train_step" and r["device"] == "cpu":
                print(f"  {r['contestant']}: {r['median_s'] / floor['median_s']:.2f}x the floor")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    if args.plot:
        plot(records, args.plot)
    return records


if __name__ == "__main__":
    main()
