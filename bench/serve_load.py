"""Load on ``minilstm serve``: closed-loop clients on loopback, throughput and latency per concurrency level.

    python -m bench.serve_load --out bench/results/serve            # the recorded run: 1, 4, 16, 64 clients, 10 s each
    python -m bench.serve_load --smoke                              # 2 s in all: checks the script works

Each mode has its own server (``python -m minilstm.serve CHECKPOINT --port 0 ...``, the shipped model by default),
all started first; at every concurrency level the modes take turns (so that a drift of the machine's speed, up to
1.7x within a minute on this project's virtual machines, hits them alike), each running that many clients for
``--seconds``: each sends one held-out English sentence per request (the checkpoint's validation pairs), waits for
the answer, sends the next. Modes: ``batched``
(the defaults: ``--max-batch 64 --max-delay-ms 5``), ``max-batch-1`` (one sentence at a time, what OpenNMT-py's
server does), ``lists32`` (batched, clients sending lists of 32 sentences) and ``paragraphs4`` (batched, each
request one paragraph of 4 sentences, which the server splits into sentences). Reported per level: sentences/s,
requests/s, p50/p95/p99 request latency, and the batch sizes the server decoded (from its /metrics); plus the
latency of a direct ``Seq2Seq.translate`` call on one sentence, the floor a request pays over loopback. Traffic
goes to 127.0.0.1 only; every run is bounded by ``--seconds`` per level.

The clients share the machine's cores with the server. ``--client wrk`` (the default where ``wrk`` is installed:
``apt-get install wrk``) runs them in wrk, an event-driven C load generator, one thread, one keep-alive connection
per client, each request's body from a Lua script cycling through the sentences: a few microseconds of CPU per
request. ``--client httpx`` runs them in this process as asyncio tasks of httpx (~2-3 ms of Python per request on
these cores): on a 2-core machine such clients take much of the CPU the server would have, and they, not the
server, set the throughput of one-sentence requests (measured: 94 sentences/s at 64 clients, batched or not).
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from minilstm.checkpoint import load_checkpoint, resolve_checkpoint
from minilstm.data import resolve_pairs, validation_rows
from minilstm.models import DEFAULT_MODEL

# mode: (server flags, sentences per request, whether they are sent as one paragraph rather than a list)
MODES = {"batched": ([], 1, False), "max-batch-1": (["--max-batch", "1"], 1, False), "lists32": ([], 32, False),
         # batched, each request one paragraph of 4 sentences (split into sentences by the server)
         "paragraphs4": ([], 4, True),
         # the same batched server on uvicorn's pure-Python stack (h11 parser, asyncio loop): what the C ones buy
         "batched-h11": (["--http", "h11", "--loop", "asyncio"], 1, False),
         "max-batch-1-h11": (["--max-batch", "1", "--http", "h11", "--loop", "asyncio"], 1, False)}
DEFAULT_MODES = ("batched", "max-batch-1", "lists32", "paragraphs4")


def request_body(batch: list[str], paragraph: bool) -> dict:
    """A /translate request of ``batch``: one sentence, a list, or the sentences as one paragraph."""
    q = " ".join(batch) if paragraph else batch if len(batch) > 1 else batch[0]
    return {"q": q, "source": "en", "target": "fr"}


def held_out_sentences(checkpoint) -> list[str]:
    training = load_checkpoint(checkpoint).config.get("training", {}).get("args")
    if training is None:
        raise SystemExit(f"{checkpoint} has no training record: cannot find its held-out pairs")
    pairs = resolve_pairs(training["data"], training["num_samples"])
    _, val_idx = validation_rows(pairs, training["validation_split"], training.get("validation_split_mode", "last"),
                                 training.get("seed", 0))
    return [pairs[k][0] for k in val_idx]


def start_server(checkpoint, flags, code_root: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A server of this checkout's minilstm, or of the checkout at ``code_root`` (its package first on the path)."""
    env = None if code_root is None else {**os.environ, "PYTHONPATH": str(code_root.resolve())}
    proc = subprocess.Popen([sys.executable, "-m", "minilstm.serve", str(checkpoint), "--port", "0", *flags],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line.startswith("ready:"):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, "http://" + line.split("http://")[1].split()[0]


def batch_sizes(url) -> dict[str, float]:
    """Cumulative counts of the server's batch-size histogram, by bucket bound."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("minilstm_batch_size_bucket{"):
            out[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


async def closed_loop(url, sentences, clients: int, per_request: int, seconds: float, paragraph: bool = False) -> dict:
    latencies, done_sentences, rejected = [], 0, 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(k, http):
        nonlocal done_sentences, rejected
        n = k
        while time.perf_counter() < stop_at:
            batch = [sentences[(n + j) % len(sentences)] for j in range(per_request)]
            n += clients * per_request
            body = request_body(batch, paragraph)
            started = time.perf_counter()
            r = await http.post("/translate", json=body)
            if r.status_code == 429:  # the queue was full (--max-queue): counted, and the client tries again
                rejected += 1
                await asyncio.sleep(0.01)
                continue
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            done_sentences += per_request

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "rejected_429": rejected, "sentences": done_sentences,
            "seconds": elapsed,
            "sentences_per_s": done_sentences / elapsed, "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


WRK_SCRIPT = """
local bodies = {%s}
local threads = {}
setup = function(thread) table.insert(threads, thread) end
next_body, rejected, failed, backoff = 0, 0, 0, false  -- globals: done() reads them through thread:get
request = function()
  next_body = next_body %% #bodies + 1
  return wrk.format("POST", "/translate", {["Content-Type"] = "application/json"}, bodies[next_body])
end
response = function(status, headers, body)
  backoff = status == 429
  if status == 429 then rejected = rejected + 1 elseif status ~= 200 then failed = failed + 1 end
end
delay = function()  -- after a 429 the next request waits 10 ms, as the httpx clients do
  if backoff then return 10 end
  return 0
end
done = function(summary, latency, requests)
  local rejected_all, failed_all = 0, 0
  for _, thread in ipairs(threads) do
    rejected_all = rejected_all + thread:get("rejected")
    failed_all = failed_all + thread:get("failed")
  end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%f %%f %%f\\n", summary.requests, summary.duration,
    rejected_all, failed_all,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_closed_loop(url, sentences, clients: int, per_request: int, seconds: float, paragraph: bool = False) -> dict:
    """``closed_loop`` run by wrk: ``clients`` connections on one thread for ``seconds`` (whole seconds, at least
    1). A 429 (the queue was full) counts as rejected, not as a request done, and the thread's next request waits
    10 ms; any other answer than 200 or 429, or a socket error, stops the run. wrk's latency percentiles count every
    answer, the 429s too (quick ones), unlike ``closed_loop``'s: where a level has rejections its percentiles are
    not those of the answered requests alone."""
    bodies = []
    for k in range(0, len(sentences), per_request):
        batch = [sentences[(k + j) % len(sentences)] for j in range(per_request)]
        body = json.dumps(request_body(batch, paragraph))
        bodies.append("[==[" + body + "]==]")  # JSON is ASCII here (ensure_ascii): a safe Lua long string
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ",".join(bodies))
    try:
        result = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
                                 "-s", script.name, url], capture_output=True, text=True, timeout=seconds + 120)
        if result.returncode:
            raise SystemExit(f"wrk failed: {result.stderr.strip() or result.stdout.strip()}")
        out = result.stdout
    finally:
        Path(script.name).unlink()
    fields = next(line for line in out.splitlines() if line.startswith("RESULT ")).split()[1:]
    requests, duration_us, rejected, failed, socket_errors = map(int, fields[:5])
    if socket_errors or failed:
        raise SystemExit(f"wrk saw {socket_errors} socket errors and {failed} answers other than 200 or 429 at "
                         f"{clients} clients:\n{out}")
    p50, p95, p99 = (float(x) / 1000 for x in fields[5:])
    done = requests - rejected
    elapsed = duration_us / 1e6
    return {"clients": clients, "requests": done, "rejected_429": rejected, "sentences": done * per_request,
            "seconds": elapsed, "sentences_per_s": done * per_request / elapsed, "requests_per_s": done / elapsed,
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "client": "wrk"}


def direct_latency(checkpoint, sentences, backend, seconds) -> float:
    """Median ms of ``Seq2Seq.translate([one sentence])`` in this process (after a warm-up call)."""
    model = load_checkpoint(checkpoint, backend=backend).model
    model.translate(sentences[:2])
    times, stop_at, k = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < stop_at or len(times) < 5:
        started = time.perf_counter()
        model.translate([sentences[k % len(sentences)]])
        times.append(time.perf_counter() - started)
        k += 1
    return statistics.median(times) * 1000


def table(results) -> str:
    lines = ["| mode | clients | sentences/s | requests/s | p50 ms | p95 ms | p99 ms | 429s | batches (size: count) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, levels in results["modes"].items():
        for r in levels:
            sizes = ", ".join(f"<={le}: {n:g}" for le, n in r["batch_sizes"].items() if n)
            lines.append(f"| {mode} | {r['clients']} | {r['sentences_per_s']:.1f} | {r['requests_per_s']:.1f} | "
                         f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['rejected_429']} | {sizes} |")
    direct = f"Direct `Seq2Seq.translate` of one sentence: {results['direct_ms']:.2f} ms (median)"
    if results.get("client") == "wrk":
        direct += ("\n\nClients: wrk. Its latency percentiles count every answer, the 429s too: in a row with "
                   "429s they are not those of the answered requests alone.")
    return "\n".join(lines) + f"\n\n{direct}\n"


def plot(results, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, levels in results["modes"].items():
        ax.plot([r["p99_ms"] for r in levels], [r["sentences_per_s"] for r in levels], "o-", label=mode)
        for r in levels:
            ax.annotate(str(r["clients"]), (r["p99_ms"], r["sentences_per_s"]), fontsize=7)
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("sentences / s")
    ax.set_xscale("log")
    ax.legend()
    ax.set_title("minilstm serve, closed-loop clients (labels: clients)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", nargs="?", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--levels", default="1,4,16,64", help="concurrency levels")
    p.add_argument("--seconds", type=float, default=10.0, help="per level and mode")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"of {', '.join(MODES)}")
    p.add_argument("--backend", default="numba")
    p.add_argument("--client", choices=("wrk", "httpx"), default="wrk" if shutil.which("wrk") else "httpx",
                   help="the load generator (default: wrk where it is installed; module doc)")
    p.add_argument("--baseline", type=Path, help="also run each mode's server from the checkout at this path (a "
                   "git worktree of an earlier commit), as MODE@baseline taking turns with the others: a same-run "
                   "comparison with earlier code")
    p.add_argument("--out", type=Path, help="write load.json, load.md and load.png here")
    p.add_argument("--smoke", action="store_true", help="a 2-second check that everything runs (levels 1,4; "
                   "0.25 s each); numbers meaningless")
    args = p.parse_args(argv)
    if args.smoke:
        args.levels, args.seconds = "1,4", 0.25
    checkpoint, _ = resolve_checkpoint(args.checkpoint)
    sentences = held_out_sentences(checkpoint)
    levels = [int(x) for x in args.levels.split(",")]
    results = {"checkpoint": str(checkpoint), "seconds_per_level": args.seconds, "modes": {}, "client": args.client,
               "direct_ms": direct_latency(checkpoint, sentences, args.backend, min(args.seconds, 2.0))}
    modes = args.modes.split(",")
    if args.baseline is not None:  # the baseline's modes: those it can serve (it may not split paragraphs)
        modes += [f"{mode}@baseline" for mode in modes if not MODES[mode][2]]
        results["baseline"] = str(args.baseline)
    servers = {}
    try:
        for mode in modes:  # one server per mode, all started first: the modes then take turns at each level
            name, _, baseline = mode.partition("@")
            servers[mode] = start_server(checkpoint, ["--backend", args.backend, *MODES[name][0]],
                                         args.baseline if baseline else None)
        results["modes"] = {mode: [] for mode in modes}
        for clients in levels:
            for mode in modes:
                (_, per_request, paragraph), url = MODES[mode.partition("@")[0]], servers[mode][1]
                before = batch_sizes(url)
                if args.client == "wrk":
                    r = wrk_closed_loop(url, sentences, clients, per_request, args.seconds, paragraph)
                else:
                    r = asyncio.run(closed_loop(url, sentences, clients, per_request, args.seconds, paragraph))
                after = batch_sizes(url)
                # per-bucket counts (not cumulative) of the batches of this level
                cumulative = {le: after[le] - before.get(le, 0) for le in after}
                bounds = list(cumulative)
                r["batch_sizes"] = {le: cumulative[le] - (cumulative[bounds[i - 1]] if i else 0)
                                    for i, le in enumerate(bounds)}
                results["modes"][mode].append(r)
                print(f"{mode:20} {clients:3} clients: {r['sentences_per_s']:8.1f} sentences/s, p50 "
                      f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    print(table(results))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "load.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "load.md").write_text(table(results))
        plot(results, args.out / "load.png")


if __name__ == "__main__":
    main()
