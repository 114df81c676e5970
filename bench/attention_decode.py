"""Decoding an attention model on the numba backend: the whole greedy loop, beam search and sampling as one compiled
call each (``attention.attention_greedy_decode`` / ``attention_beam_decode`` / ``attention_sample_decode``)
against the step-by-step loops of ``Seq2Seq`` (a call per step), on the same sentences, interleaved round by round.

    python -m bench.attention_decode [--checkpoint DIR] [--sentences 2000] [--beam-widths 3,5] [--rounds 3]

Default checkpoint: the shipped model (``general`` attention without input feeding). The "step loop" is the code
path before the decoders were compiled: for a model without input feeding, each step is the LSTM's compiled one-step
loop and then the attention over that step with BLAS (the backend's compiled attention switched off); with input
feeding, each step is the compiled input-feeding loop one step long. Sentences: the first ``--sentences`` English
sentences of the built-in pairs that the model can read, distinct, in batches of 512 as ``translate`` makes them;
and the first ``--alone`` of them one at a time (greedy), as the server decodes a lone request.
Prints the medians and ratios, whether the two give the same translations, and the machine's load before and after.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from minilstm.backends.numba import NumbaBackend
from minilstm.checkpoint import load_checkpoint
from minilstm.data import load_default_pairs

SHIPPED = Path(__file__).resolve().parents[1] / "minilstm" / "models" / "en-fr-default"


def step_loop(backend, model):
    """Make ``backend`` run ``model``'s decoders step by step, as before they were compiled."""
    backend.attention_greedy_decode = None
    backend.attention_beam_decode = None
    backend.attention_sample_decode = None
    if not model.attention_decoder.input_feed:
        backend.attention_feed_scores = ()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--beam-widths", default="3,5")
    parser.add_argument("--alone", type=int, default=200, help="sentences decoded one at a time (greedy), as a "
                        "server decodes a lone request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = {}
    for name in ("compiled", "step loop"):
        backend = NumbaBackend()
        model = load_checkpoint(args.checkpoint, backend=backend).model
        if name == "step loop":
            step_loop(backend, model)
        models[name] = model
    known = set(models["compiled"].input_vocab.index)
    texts = list(dict.fromkeys(en for en, _ in load_default_pairs() if set(en) <= known
                               and len(en) <= models["compiled"].max_encoder_len))[: args.sentences]
    cases = ([("greedy", 1)] + [(f"beam {k}", k) for k in map(int, args.beam_widths.split(","))]
             + [("sample T=1", 1), ("alone", 1)])
    load_before = os.getloadavg()
    times = {(case, name): [] for case, _ in cases for name in models}
    outputs = {}
    for round_ in range(args.rounds + 1):  # round 0: untimed (compiles, warms caches)
        for case, width in cases:
            for name, model in models.items():
                start = time.perf_counter()
                if case == "alone":
                    out = [model.translate([text], split_sentences=False)[0] for text in texts[: args.alone]]
                elif case.startswith("sample"):
                    out = model.translate(texts, temperature=1.0, seed=0, split_sentences=False)
                else:
                    out = model.translate(texts, beam_width=width, split_sentences=False)
                elapsed = time.perf_counter() - start
                if round_:
                    times[case, name].append(elapsed)
                outputs[case, name] = out
    load_after = os.getloadavg()
    result = {"checkpoint": str(args.checkpoint), "sentences": len(texts), "rounds": args.rounds,
              "load_before": load_before, "load_after": load_after, "cases": {}}
    print(f"{len(texts)} sentences, {args.rounds} rounds, load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    for case, _ in cases:
        compiled = statistics.median(times[case, "compiled"])
        stepped = statistics.median(times[case, "step loop"])
        same = sum(a == b for a, b in zip(outputs[case, "compiled"], outputs[case, "step loop"], strict=True))
        result["cases"][case] = {"compiled_s": compiled, "step_loop_s": stepped, "ratio": compiled / stepped,
                                 "same_translations": same}
        label = f"greedy, {len(outputs[case, 'compiled'])} one at a time" if case == "alone" else case
        print(f"{label:28s} compiled {compiled:7.3f} s   step loop {stepped:7.3f} s   {compiled / stepped:.2f}x   "
              f"same translations {same}/{len(outputs[case, 'compiled'])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
