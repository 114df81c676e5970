"""Quality per minute of training: named configurations, ours (``minilstm.train`` flags) and a PyTorch reference
(``bench.quality_torch``), each trained for the same wall time on one thread, at most two side by side, with snapshots
along the way; then every snapshot scored on the same held-out sentences.

    python -m bench.quality --data ../shared/data/fra-eng/fra.txt --minutes 30 --out bench/results/quality/NAME
    python -m bench.quality --smoke --out /tmp/quality-smoke          # seconds: checks that everything runs

- training: every run on the same pairs (``--data``, ``--num-samples``) and the same held-out split (20% of the
  English sentences drawn with seed 0, every pair of each: ``minilstm.data.validation_rows``, mode ``random``, as the
  shipped model), characters as units unless a configuration asks for others (``--units``: learnt from the training
  pairs only), ``--minutes`` of training wall time each (``minilstm.train --max-minutes``,
  whose clock starts with the first step: reading the data and building the model are not counted), a snapshot of
  the weights every ``--snapshot-minutes`` and where training stops; one thread per run (``MINILSTM_THREADS=1``,
  ``torch.set_num_threads(1)``), ``--parallel`` runs at a time. Before the timed runs, each of our configurations
  trains a few steps on a few pairs so that Numba's on-disk cache holds its kernels (``--no-warm-up``: not);
- scoring, after all training: ``--sentences`` held-out English sentences (distinct, drawn with ``--sample-seed``),
  each against all its references in the file, by ``minilstm.evaluate``'s exact match, CER and chrF, overall and per
  English length in words; greedy decoding at every snapshot, and beam search (``--beam-width``,
  ``--length-penalty``) at the last one. Both engines decode by ``minilstm.decoding``'s greedy and beam search;
- writes ``OUT/quality.json`` (everything), ``OUT/quality.md`` (the table, with the machine, command and date),
  ``OUT/curves.png`` (greedy chrF against minutes, one line per configuration), and the runs under ``OUT/runs/``
  (each with its ``log.txt``).

A configuration is ``NAME=ENGINE:FLAGS``: ENGINE ``minilstm`` (FLAGS for ``minilstm.train``) or ``torch`` (FLAGS for
``bench.quality_torch``); ``--define`` adds one, ``--configs`` picks which run (``CONFIGS`` are the named ones).
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.machine import cpu_model
from minilstm.checkpoint import load_checkpoint
from minilstm.data import validation_rows
from minilstm.evaluate import LENGTH_BUCKETS, score_translations
from minilstm.pairs import resolve_pairs
from minilstm.run_outputs import SNAPSHOTS_FILE

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    # the one-hot recipe of the model shipped until 2026-12-06 (Keras initialisers, RMSprop 1e-3)
    "minilstm-bi128": "minilstm:--bidirectional-encoder --latent-dim 128 --attention general --no-input-feed "
                      "--mask-padding",
    "minilstm-256": "minilstm:--latent-dim 256 --attention general --no-input-feed --mask-padding",
    "torch-256-adam": "torch:--units 256 --embedding 256 --optimizer adam",
    "torch-256-rmsprop": "torch:--units 256 --embedding 256 --optimizer rmsprop",
}
DEFAULT_CONFIGS = "minilstm-bi128,minilstm-256,torch-256-adam"
SMOKE_SIZE = {"minilstm": ["--latent-dim", "16"], "torch": ["--units", "16", "--embedding", "16"]}
"""--smoke shrinks every model (the last of a repeated flag wins) to train and decode in seconds."""

HELD_OUT = {"validation_split": 0.2, "mode": "random", "seed": 0}
ONE_THREAD = {"MINILSTM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def parse_config(text: str) -> tuple[str, list[str]]:
    engine, _, flags = text.partition(":")
    if engine not in SMOKE_SIZE:
        raise SystemExit(f"error: a configuration is ENGINE:FLAGS with ENGINE minilstm or torch, not {text!r}")
    return engine, shlex.split(flags)


def train_command(engine: str, flags: list[str], args, out: Path) -> list[str]:
    """The command line that trains one configuration for the budget, with snapshots, into ``out``."""
    data = [] if args.data is None else ["--data", str(args.data)]
    samples = ["--num-samples", "all" if args.num_samples is None else str(args.num_samples)]
    if engine == "minilstm":
        return [sys.executable, "-m", "minilstm.train", *data, *samples, "--validation-split",
                str(HELD_OUT["validation_split"]), "--validation-split-mode", HELD_OUT["mode"], "--seed",
                str(HELD_OUT["seed"]), "--backend", "numba", "--epochs", "100000", "--max-minutes", str(args.minutes),
                "--snapshot-minutes", str(args.snapshot_minutes), "--num-decodes", "0", "--progress", "never",
                "--out", str(out), *flags]
    return [sys.executable, "-m", "bench.quality_torch", *data, *samples, "--validation-split",
            str(HELD_OUT["validation_split"]), "--seed", str(HELD_OUT["seed"]), "--minutes", str(args.minutes),
            "--snapshot-minutes", str(args.snapshot_minutes), "--threads", "1", "--out", str(out), *flags]


def environment() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **ONE_THREAD, "PYTHONPATH": path}


def run_side_by_side(jobs: list[tuple[str, list[str], Path]], parallel: int):
    """Run the commands ``jobs`` (name, command, log file), ``parallel`` at a time, in order; stop on a failure."""
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < parallel:
            name, command, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                f.write(shlex.join(command) + "\n")
                f.flush()
                running.append((name, subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                                       env=environment()), log))
            print(f"started {name}", flush=True)
        time.sleep(0.2)
        for item in [item for item in running if item[1].poll() is not None]:
            name, proc, log = item
            running.remove(item)
            print(f"{name}: exit {proc.returncode}; {log.read_text().strip().splitlines()[-1]}", flush=True)
            if proc.returncode != 0:
                failed.append(name)
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} failed; see their log.txt under the --out's runs/")


def units_of(flags: list[str]) -> str:
    """The ``--units`` a configuration's minilstm.train flags ask for (the last one wins), or ``char``."""
    units = "char"
    for k, flag in enumerate(flags):
        if flag == "--units" and k + 1 < len(flags):
            units = flags[k + 1]
        elif flag.startswith("--units="):
            units = flag.split("=", 1)[1]
    return units


def warm_up(configs: dict, args):
    """A few steps of each of our configurations on a few pairs: Numba compiles (and caches on disk) the kernels the
    timed run will use, so that its first minute is not spent compiling. Its runs go under ``OUT/runs/warm-up``,
    with the timed runs' checkpoints (not results to keep). Its few steps (one epoch of 256 pairs, whatever
    the configuration's --epochs) run without warm-up (a cosine schedule needs more steps than warm-up ones), and with
    words for any units other than characters (256 pairs are too few to learn thousands of pieces from); neither
    changes what gets compiled."""
    jobs = []
    for name, (engine, flags) in configs.items():
        if engine == "minilstm":
            out = args.out / "runs" / "warm-up" / name
            few_steps = ["--num-samples", "256", "--epochs", "1", "--warmup-steps", "0"]  # after the flags: they win
            if units_of(flags) != "char":
                few_steps += ["--units", "word"]  # 256 pairs are too few for thousands of pieces; the same kernels
            jobs.append((f"warm-up {name}", [sys.executable, "-m", "minilstm.train", "--num-decodes", "0", "--progress",
                                             "never", "--backend", "numba", "--out", str(out), *flags, *few_steps],
                         out / "log.txt"))
    run_side_by_side(jobs, args.parallel)


def held_out_sample(args) -> tuple[list[str], list[list[str]]]:
    """The scored English sentences (distinct held-out ones, ``--sentences`` of them drawn with ``--sample-seed``,
    in file order) and each one's references: every French sentence the file pairs it with."""
    pairs = resolve_pairs(args.data, args.num_samples)
    _, val_idx = validation_rows(pairs, HELD_OUT["validation_split"], HELD_OUT["mode"], HELD_OUT["seed"])
    sentences = list(dict.fromkeys(pairs[k][0] for k in val_idx))
    rng = np.random.default_rng(args.sample_seed)
    chosen = np.sort(rng.choice(len(sentences), size=min(args.sentences, len(sentences)), replace=False))
    references: dict[str, list[str]] = {}
    for english, french in pairs:
        references.setdefault(english, []).append(french)
    inputs = [sentences[k] for k in chosen]
    return inputs, [references[english] for english in inputs]


def translator(engine: str, run_dir: Path, record: dict):
    """``translate(texts, beam_width, length_penalty)`` for one snapshot of a run."""
    if engine == "minilstm":
        model = load_checkpoint(run_dir / record["path"], backend="numba").model
        return lambda texts, beam_width, length_penalty: model.translate(
            texts, beam_width=beam_width, length_penalty=length_penalty, split_sentences=False)
    from bench import quality_torch

    model, vocabs = quality_torch.load_snapshot(run_dir, record)
    return lambda texts, beam_width, length_penalty: quality_torch.translate(model, vocabs, texts, beam_width,
                                                                            length_penalty)


def score_run(name: str, engine: str, run_dir: Path, inputs, references, args) -> dict:
    """Greedy scores at every snapshot of the run, beam-search scores at its last; its steps and ms per step."""
    records = json.loads((run_dir / SNAPSHOTS_FILE).read_text())
    points = []
    for record in records:
        translate = translator(engine, run_dir, record)
        greedy, _ = score_translations(inputs, translate(inputs, 1, 0.0), references)
        points.append({**record, "greedy": greedy})
        print(f"{name} {record['minutes']:7.2f} min, step {record['step']}: greedy chrF "
              f"{number(greedy['chrf'], '.2f')}", flush=True)
    beam, examples = score_translations(inputs, translate(inputs, args.beam_width, args.length_penalty), references)
    print(f"{name} final: beam {args.beam_width} chrF {number(beam['chrf'], '.2f')}", flush=True)
    last = records[-1]
    return {"engine": engine, "steps": last["step"], "minutes": last["minutes"],
            "ms_per_step": 60_000 * last["minutes"] / max(1, last["step"]), "epochs": last["epoch"],
            "points": points, "final": {"greedy": points[-1]["greedy"], "beam": beam}, "examples": examples[:10]}


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


def number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"# Quality at equal training time: {s['minutes']:g} minutes each", "",
             f"- machine: {report['machine']}; {s['parallel']} runs at a time, one thread each",
             f"- command: `{report['command']}`", f"- date: {report['date']}",
             f"- data: {s['data'] or 'the built-in subset'} ({s['num_samples'] or 'all'} pairs), held out 20% of the "
             "English sentences at random (seed 0)",
             f"- scored: {s['sentences']:,} held-out sentences (seed {s['sample_seed']}), all references of each; "
             f"greedy at every snapshot, beam {s['beam_width']} (length penalty {s['length_penalty']:g}) at the last",
             "", "| config | steps | ms/step | chrF greedy | chrF beam | CER | exact | "
             + " | ".join(f"chrF {label}" for label, _ in LENGTH_BUCKETS) + " |",
             "| --- " * (7 + len(LENGTH_BUCKETS)) + "|"]
    for name, run in report["configs"].items():
        greedy, beam = run["final"]["greedy"], run["final"]["beam"]
        buckets = [number(greedy["length_buckets"][label]["chrf"], ".2f") for label, _ in LENGTH_BUCKETS]
        lines.append(f"| {name} | {run['steps']:,} | {run['ms_per_step']:.1f} | {number(greedy['chrf'], '.2f')} | "
                     f"{number(beam['chrf'], '.2f')} | {greedy['character_error_rate']:.4f} | "
                     f"{greedy['exact_match']:.4f} | " + " | ".join(buckets) + " |")
    lines += ["", "CER, exact match and the per-length chrF are greedy's; ms/step is the training wall time "
              "(validation and checkpoints included) over the steps. Greedy chrF along the way:", ""]
    for name, run in report["configs"].items():
        points = ", ".join(f"{p['minutes']:.2f} min {number(p['greedy']['chrf'], '.2f')}" for p in run["points"])
        lines.append(f"- {name}: {points}")
    lines += ["", "Configurations:", ""]
    lines += [f"- {name}: `{run['engine']}` {shlex.join(run['flags'])}" for name, run in report["configs"].items()]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run in report["configs"].items():
        line, = ax.plot([p["minutes"] for p in run["points"]], [p["greedy"]["chrf"] for p in run["points"]],
                        marker="o", label=name)
        ax.plot([run["points"][-1]["minutes"]], [run["final"]["beam"]["chrf"]], marker="*", markersize=12,
                color=line.get_color(), linestyle="none")
    ax.set_xlabel("training wall time (minutes, one thread each)")
    ax.set_ylabel("held-out chrF (greedy; star: beam at the end)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="the pairs (default: the built-in subset)")
    p.add_argument("--num-samples", type=int, default=None, help="the first N pairs (default: all)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"which, in order (named: {', '.join(CONFIGS)})")
    p.add_argument("--define", action="append", default=[], metavar="NAME=ENGINE:FLAGS",
                   help="another configuration, e.g. 'adam=minilstm:--latent-dim 256 --optimizer adam'")
    p.add_argument("--minutes", type=float, default=30.0, help="training wall time of each run")
    p.add_argument("--snapshot-minutes", type=float, default=None, help="default: a sixth of --minutes")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--sentences", type=int, default=2000, help="held-out sentences scored")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--beam-width", type=int, default=5)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    p.add_argument("--smoke", action="store_true", help="seconds in all: the built-in data, tiny models and budgets")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.smoke:
        args.num_samples, args.minutes, args.snapshot_minutes = 1000, 0.05, 0.02
        args.sentences, args.warm_up = min(args.sentences, 30), False
    if args.snapshot_minutes is None:
        args.snapshot_minutes = args.minutes / 6
    args.out = args.out.resolve()  # the runs start in the repository root
    args.data = None if args.data is None else args.data.resolve()
    named = {**CONFIGS, **dict(text.split("=", 1) for text in args.define)}
    chosen = [name.strip() for name in args.configs.split(",")] + [text.split("=", 1)[0] for text in args.define]
    unknown = [name for name in chosen if name not in named]
    if unknown:
        raise SystemExit(f"error: unknown configuration {', '.join(unknown)} (named: {', '.join(named)})")
    configs = {}
    for name in dict.fromkeys(chosen):
        engine, flags = parse_config(named[name])
        configs[name] = (engine, flags + SMOKE_SIZE[engine] if args.smoke else flags)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.warm_up:
        warm_up(configs, args)
    runs = args.out / "runs"
    run_side_by_side([(name, train_command(engine, flags, args, runs / name), runs / name / "log.txt")
                      for name, (engine, flags) in configs.items()], args.parallel)
    inputs, references = held_out_sample(args)
    report = {"machine": machine(), "command": "python -m bench.quality " + shlex.join(map(str, argv or sys.argv[1:])),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "configs": {}}
    for name, (engine, flags) in configs.items():
        report["configs"][name] = {"flags": flags, **score_run(name, engine, runs / name, inputs, references, args)}
    (args.out / "quality.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    markdown = report_markdown(report)
    (args.out / "quality.md").write_text(markdown)
    plot_curves(report, args.out / "curves.png")
    print(markdown)
    print(f"wrote {args.out / 'quality.json'}, {args.out / 'quality.md'} and {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
