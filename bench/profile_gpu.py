"""Where a GPU training step goes: each LSTM layer's time loop (forward, backward) alone - per step (cuBLAS GEMM +
cell kernel per time step), persistent (one cooperative launch), and PyTorch's nn.LSTM on cuDNN at the same shape -
and the whole training step of each minilstm recurrence, so the rest (Dense, softmax, weight-gradient GEMMs,
RMSprop) is the difference. GPU times from CUDA events (cupyx.profiler.benchmark), medians; fp32, TF32 off.

    python -m bench.profile_gpu --json bench/results/gpu-profile-<device>.json
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from minilstm import lstm
from minilstm.backends import get_backend
from minilstm.cli import run_main
from minilstm.data import Dataset, resolve_pairs
from minilstm.errors import MinilstmError
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq


def gpu_ms(function, repeats):
    from cupyx.profiler import benchmark

    result = benchmark(function, n_repeat=repeats, n_warmup=5)
    return float(np.median(result.gpu_times[0])) * 1e3


def layer_times(backend, steps, batch, units, repeats, rng):
    """(forward ms, backward ms) of one layer's whole time loop on a cupy backend."""
    cp = backend.xp
    gates_in = cp.asarray(rng.standard_normal((steps, batch, 4 * units)), cp.float32)
    recurrent_kernel = cp.asarray(rng.standard_normal((units, 4 * units)) / 16, cp.float32)
    gates = gates_in.copy()
    hs, cs = cp.zeros((steps + 1, batch, units), cp.float32), cp.zeros((steps + 1, batch, units), cp.float32)
    workspace = lstm.Workspace(cp)

    def forward():
        gates[...] = gates_in
        backend.lstm_recurrence_forward(gates, recurrent_kernel, hs, cs, workspace)

    forward_ms = gpu_ms(forward, repeats)
    d_outputs = cp.asarray(rng.standard_normal((steps, batch, units)), cp.float32)
    dz = cp.empty_like(gates)
    dh, dc = cp.zeros((batch, units), cp.float32), cp.zeros((batch, units), cp.float32)

    def backward():
        backend.lstm_recurrence_backward(gates, cs, recurrent_kernel, d_outputs, dh, dc, dz)

    copy_ms = gpu_ms(lambda: gates.__setitem__(Ellipsis, gates_in), repeats)  # the reset inside forward()
    return forward_ms - copy_ms, gpu_ms(backward, repeats)


def torch_layer_times(steps, batch, n_in, units, repeats):
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    layer = torch.nn.LSTM(n_in, units, device="cuda")
    x = torch.nn.functional.one_hot(torch.randint(0, n_in, (steps, batch), device="cuda"), n_in).float()
    x.requires_grad_(False)
    grad = torch.randn(steps, batch, units, device="cuda")

    def timed(function):
        times = []
        for k in range(repeats + 5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            end.synchronize()
            if k >= 5:
                times.append(start.elapsed_time(end))
        return statistics.median(times)

    with torch.no_grad():
        forward_ms = timed(lambda: layer(x))

    def forward_backward():
        out, _ = layer(x)
        out.backward(grad)

    return forward_ms, timed(forward_backward) - forward_ms


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--latent-dim", type=int, default=256)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    try:
        import cupy
    except ImportError:
        raise MinilstmError("profile_gpu.py needs CuPy and a CUDA GPU (pip install 'minilstm[cuda13]')") from None
    backends = {name: get_backend(name) for name in ("cupy", "cupy-persistent")}
    device = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    device = device.decode() if isinstance(device, bytes) else device
    dataset = Dataset.from_pairs(resolve_pairs(None, 10000))
    rng = np.random.default_rng(0)
    rows = []
    for layer, steps, n_in in (("encoder", dataset.max_encoder_len, len(dataset.input_vocab)),
                               ("decoder", dataset.max_decoder_len, len(dataset.target_vocab))):
        for name, backend in backends.items():
            fwd, bwd = layer_times(backend, steps, args.batch, args.latent_dim, args.repeats, rng)
            rows.append({"part": f"{layer} time loop ({steps} steps)", "contestant": f"minilstm-{name}",
                         "forward_ms": fwd, "backward_ms": bwd})
        fwd, bwd = torch_layer_times(steps, args.batch, n_in, args.latent_dim, args.repeats)
        rows.append({"part": f"{layer} time loop ({steps} steps)", "contestant": "pytorch nn.LSTM (cuDNN)",
                     "forward_ms": fwd, "backward_ms": bwd})
    for name, backend in backends.items():
        model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                        dataset.max_decoder_len, latent_dim=args.latent_dim, dtype="float32").initialize(0)
        optimizer = RMSprop(backend, model.params.flat.size, model.dtype)
        idx = rng.choice(len(dataset), args.batch, replace=False)
        batch = tuple(backend.asarray(a[idx]) for a in (dataset.encoder_input_ids, dataset.decoder_input_ids,
                                                         dataset.decoder_target_ids))

        def step(model=model, optimizer=optimizer, batch=batch):
            model.forward_backward(*batch)
            optimizer.step(model.params.flat, model.grads.flat)

        rows.append({"part": "whole training step", "contestant": f"minilstm-{name}",
                     "forward_ms": None, "backward_ms": None, "total_ms": gpu_ms(step, args.repeats)})
    print(f"# {device}, batch {args.batch}, latent {args.latent_dim}, float32, TF32 off; medians of "
          f"{args.repeats} (GPU time, CUDA events)\n")
    print("| part | contestant | forward ms | backward ms | total ms |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        total = r.get("total_ms", (r["forward_ms"] or 0) + (r["backward_ms"] or 0))
        cells = [f"{v:.3f}" if v is not None else "" for v in (r["forward_ms"], r["backward_ms"], total)]
        print(f"| {r['part']} | {r['contestant']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "batch": args.batch, "latent_dim": args.latent_dim,
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_main(main))
