"""``python -m minilstm.evaluate CHECKPOINT_OR_RUN_DIR``: honest metrics for a trained model.

On the checkpoint's own validation pairs (the ``--validation-split`` of the data it was trained on, chosen by its
``--validation-split-mode``), or on ``--data PATH`` (all its pairs): the Keras-style loss and accuracy (padding
included, so they match training's numbers; not for a model trained with ``--mask-padding``, which never learnt to
predict padding), the loss and accuracy over real characters only (padding excluded, what ``--mask-padding`` training
logs), greedy decoding's exact-match rate against *any* reference translation of the same English sentence (the file
holds several per sentence), the character error rate against the closest reference, and chrF (when sacrebleu is
installed: ``pip install sacrebleu``); the last three overall and per length of the English sentence in words.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from . import layers
from .checkpoint import load_checkpoint, resolve_checkpoint
from .cli import positive_int, run_main
from .data import Dataset, bucketed_batches, validation_rows
from .decoding import add_decoding_flags, check_decoding_flags
from .errors import MinilstmError
from .files import write_text_atomic
from .pairs import read_pairs, resolve_pairs
from .vocab import END, START


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1): rapidfuzz's, in C++ (the pure-Python
    dynamic programme it replaces took 18 of the 43 s of scoring 5,000 of the whole file's validation pairs)."""
    return Levenshtein.distance(a, b)


def chrf(hypotheses: list[str], references: list[list[str]]) -> float | None:
    """Corpus chrF (sacrebleu), several references per sentence; None when sacrebleu is not installed."""
    try:
        import sacrebleu
    except ImportError:
        return None
    # Reference stream k holds each sentence's k-th reference, or None where it has fewer (sacrebleu skips those).
    # Not a repeat of its first: sacrebleu extracts n-grams for every reference it is given, and on the whole
    # file's 33,426 validation sentences (up to dozens of references each) the repeats took over 17 GB.
    width = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    return float(sacrebleu.corpus_chrf(hypotheses, streams).score)


LENGTH_BUCKETS = (("1-3", 3), ("4-6", 6), ("7-10", 10), ("11+", None))
"""English sentence lengths, in words (``len(english.split())``), that evaluate scores apart: each label and its
longest length (None: no limit). A model that squeezes the sentence into one state does well on short sentences and
falls off past a few words; one overall number hides that (and fra.txt's last pairs, Keras's split, are all long)."""


def length_bucket(english: str) -> str:
    """The :data:`LENGTH_BUCKETS` label of an English sentence."""
    words = len(english.split())
    return next(label for label, longest in LENGTH_BUCKETS if longest is None or words <= longest)


def translation_scores(rows, decoded, references, exact, errors, reference_chars) -> dict:
    """Exact match, character error rate and chrF of the sentences ``rows`` (indices into the per-sentence lists),
    each a corpus number over those sentences as the overall one is over all; ``pairs`` 0 and None for no rows."""
    if not rows:
        return {"pairs": 0, "exact_match": None, "character_error_rate": None, "chrf": None}
    return {"pairs": len(rows), "exact_match": sum(exact[k] for k in rows) / len(rows),
            "character_error_rate": sum(errors[k] for k in rows) / max(1, sum(reference_chars[k] for k in rows)),
            "chrf": chrf([decoded[k] for k in rows], [references[k] for k in rows])}


def score_translations(inputs: list[str], decoded: list[str], references: list[list[str]]) -> tuple[dict, list]:
    """Exact match (against any reference), character error rate (against the closest one) and chrF of the
    translations ``decoded`` of the English ``inputs``, each with its list of ``references``: overall and, under
    ``length_buckets``, per :data:`LENGTH_BUCKETS` bucket; and one example record per sentence. Apart from
    ``evaluate_pairs`` so that translations made elsewhere (another engine's, in ``bench.quality``) are scored by the
    same code."""
    exact, errors, reference_chars, examples = [], [], [], []
    buckets: dict[str, list[int]] = {label: [] for label, _ in LENGTH_BUCKETS}
    for k, (english, hypothesis, refs) in enumerate(zip(inputs, decoded, references, strict=True)):
        exact.append(hypothesis in refs)
        best = min(refs, key=lambda r: edit_distance(hypothesis, r) / max(1, len(r)))
        errors.append(edit_distance(hypothesis, best))
        reference_chars.append(len(best))
        buckets[length_bucket(english)].append(k)
        examples.append({"input": english, "output": hypothesis, "references": refs, "exact": exact[-1]})
    per_sentence = (decoded, references, exact, errors, reference_chars)
    overall = translation_scores(range(len(inputs)), *per_sentence)
    overall["length_buckets"] = {label: translation_scores(rows, *per_sentence) for label, rows in buckets.items()}
    return overall, examples


def evaluate_pairs(model, pairs, all_pairs, batch_size=256, beam_width=1, temperature=None,
                   seed=0, length_penalty=0.0) -> tuple[dict, list[dict]]:
    """Metrics of ``model`` on ``pairs``; references for each English sentence come from ``all_pairs``. The
    decoded translations are greedy unless ``beam_width`` > 1 (its beams ranked with GNMT's ``length_penalty``)
    or a sampling ``temperature`` is given. Exact match, character error rate and chrF come overall and, under
    ``length_buckets``, per :data:`LENGTH_BUCKETS` bucket of the English sentence's length."""
    usable, skipped = [], 0
    for english, french in pairs:
        target = START + french + END
        if (model.input_vocab.unknown_chars(english) or model.target_vocab.unknown_chars(target)
                or model.input_vocab.length(english) > model.max_encoder_len
                or model.target_vocab.length(target) > model.max_decoder_len):
            skipped += 1
        else:
            usable.append((english, french))
    if not usable:
        raise MinilstmError("none of the pairs can be scored: all have characters the model never saw or are "
                            "longer than its maximum lengths")
    data = Dataset.from_pairs(usable, model.input_vocab, model.target_vocab, model.max_encoder_len,
                              model.max_decoder_len)
    loss_sum = real_loss_sum = hits = real_hits = 0.0
    lengths = data.input_lengths()
    if model.mask_padding:  # its encoder reads no padding: batches of one English length, run to that length
        plan = bucketed_batches(np.arange(len(data)), lengths, batch_size, None, data.target_steps())
    else:
        plan = [np.arange(start, min(start + batch_size, len(data))) for start in range(0, len(data), batch_size)]
    masked_targets = data.masked_target_ids()
    target_steps = data.target_steps()
    for idx in plan:
        # A --mask-padding model reads no padding: its encoder runs to the batch's English length, its decoder to the
        # batch's longest French sentence (the real characters' logits are the same: the decoder is causal).
        enc = data.encoder_input_ids[idx, : lengths[idx[0]] if model.mask_padding else None]
        steps = int(target_steps[idx].max()) if model.mask_padding else None
        dec_in, dec_out = data.decoder_input_ids[idx, :steps], data.decoder_target_ids[idx, :steps]
        real_out = masked_targets[idx, :steps]
        logits = model.teacher_forced_logits(enc, dec_in, lengths[idx])  # (B, T, V)
        flat_logits = logits.reshape(-1, logits.shape[2]).astype(np.float64)
        loss_sum += float(layers.softmax_cross_entropy(np, flat_logits, dec_out.reshape(-1), 0.0)[0])
        real_loss_sum += float(layers.softmax_cross_entropy(np, flat_logits, real_out.reshape(-1), 0.0)[0])
        correct = logits.argmax(axis=2) == dec_out
        hits += correct.sum()
        real_hits += (correct & (real_out >= 0)).sum()
    positions = len(data) * model.max_decoder_len
    real_positions = int(target_steps.sum())
    references: dict[str, list[str]] = {}
    for english, french in all_pairs:
        references.setdefault(english, []).append(french)
    started = time.perf_counter()
    decoded = model.translate([e for e, _ in usable], beam_width=beam_width, temperature=temperature, seed=seed,
                              length_penalty=length_penalty, split_sentences=False)  # each pair as it is
    decode_seconds = time.perf_counter() - started
    refs_per_sentence = [references.get(english, [french]) for english, french in usable]
    overall, examples = score_translations([english for english, _ in usable], decoded, refs_per_sentence)
    metrics = {
        "pairs": len(usable), "skipped_pairs": skipped,
        # Keras-style numbers score predictions of padding, which a --mask-padding model was never trained on.
        "loss": None if model.mask_padding else float(loss_sum / positions),
        "accuracy": None if model.mask_padding else float(hits / positions),
        "loss_real_characters": real_loss_sum / real_positions,
        "accuracy_real_characters": float(real_hits / real_positions), "exact_match": overall["exact_match"],
        "character_error_rate": overall["character_error_rate"], "chrf": overall["chrf"],
        "length_buckets": overall["length_buckets"],
        "decoding": "greedy" if temperature is None and beam_width == 1 else
                    f"sampling, temperature {temperature}, seed {seed}" if temperature is not None else
                    f"beam search, width {beam_width}" + (f", length penalty {length_penalty:g}" if length_penalty
                                                          else ""),
        "decode_seconds": decode_seconds,
    }
    return metrics, examples


def length_table(metrics: dict) -> str:
    """The per-length lines of the report: pairs, chrF, CER and exact match of each bucket, then of all pairs."""
    def cell(value, spec):
        return f"{'n/a' if value is None else format(value, spec):>8}"

    lines = [f"  {'English words':<14}{'pairs':>8}{'chrF':>8}{'CER':>8}{'exact':>8}"]
    for label, scores in [*metrics["length_buckets"].items(), ("all", metrics)]:
        lines.append(f"  {label:<14}{scores['pairs']:>8,}{cell(scores['chrf'], '.2f')}"
                     f"{cell(scores['character_error_rate'], '.4f')}{cell(scores['exact_match'], '.4f')}")
    return "\n".join(lines)


def _require_training_file(checkpoint, path, what: str) -> None:
    """The checkpoint records its data files as training was given them, often relative to where it ran."""
    if not Path(path).is_file():
        raise MinilstmError(f"{checkpoint} was trained on {what} {path}, which is not found from {Path.cwd()}: run "
                            "evaluate where training ran, or pass --data PATH to score the pairs of a file")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilstm.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint directory written by minilstm.train, or the run "
                   "directory (its --out): then its best/ checkpoint")
    p.add_argument("--data", type=Path, help="score all pairs of this file instead of the checkpoint's validation "
                   "pairs")
    p.add_argument("--num-samples", type=positive_int, help="with --data: its first N pairs")
    p.add_argument("--backend", default=None, help="array backend (default: the checkpoint's)")
    p.add_argument("--json", type=Path, help="also write the metrics and every translation here")
    p.add_argument("--examples", type=int, default=8, help="example translations to show")
    add_decoding_flags(p)
    args = p.parse_args(argv)
    if args.num_samples is not None and args.data is None:
        p.error("--num-samples needs --data (the checkpoint's own validation pairs are scored whole)")
    args.checkpoint, note = resolve_checkpoint(args.checkpoint)
    if note:
        print(note, file=sys.stderr)
    checkpoint = load_checkpoint(args.checkpoint, backend=args.backend or "numpy")
    training = checkpoint.config.get("training", {}).get("args")
    if args.data is not None:
        all_pairs = resolve_pairs(args.data, args.num_samples)
        pairs, where = all_pairs, f"{args.data} ({len(all_pairs):,} pairs)"
    elif training is not None and training.get("validation_data") is not None:
        _require_training_file(args.checkpoint, training["validation_data"], "validation data")
        all_pairs = pairs = read_pairs(training["validation_data"])
        where = f"the checkpoint's validation data {training['validation_data']} ({len(pairs):,} pairs)"
    elif training is not None:
        if training["data"] is not None:
            _require_training_file(args.checkpoint, training["data"], "training data")
        all_pairs = resolve_pairs(training["data"], training["num_samples"])
        # A checkpoint from before --validation-split-mode was trained with its default, Keras's last pairs.
        mode = training.get("validation_split_mode", "last")
        _, val_idx = validation_rows(all_pairs, training["validation_split"], mode, training.get("seed", 0))
        pairs = [all_pairs[k] for k in val_idx]
        where = f"the checkpoint's {len(pairs):,} validation pairs" + (" (held out at random)" if mode == "random"
                                                                      else "")
    else:
        raise MinilstmError(f"{args.checkpoint} does not say what it was trained on; pass --data PATH")
    if args.backend is None and training is not None and training.get("backend") not in (None, "numpy"):
        try:
            checkpoint = load_checkpoint(args.checkpoint, backend=training["backend"])
        except MinilstmError:
            pass  # e.g. trained on a GPU, evaluated on a machine without one: numpy gives the same numbers
    check_decoding_flags(args)
    metrics, examples = evaluate_pairs(checkpoint.model, pairs, all_pairs, beam_width=args.beam_width,
                                       temperature=args.temperature, seed=args.seed,
                                       length_penalty=args.length_penalty)
    print(f"Evaluated {args.checkpoint} on {where}" + (f"; skipped {metrics['skipped_pairs']} with unseen characters "
                                                        "or over-long sentences" if metrics["skipped_pairs"] else ""))
    not_trained = "n/a (trained with --mask-padding)"
    target_units = "characters" if checkpoint.model.target_vocab.is_chars else "tokens"
    rows = [("loss (Keras-style, padding included)",
             not_trained if metrics["loss"] is None else f"{metrics['loss']:.4f}"),
            ("accuracy (Keras-style, padding included)",
             not_trained if metrics["accuracy"] is None else f"{metrics['accuracy']:.4f}"),
            (f"loss over real {target_units}", f"{metrics['loss_real_characters']:.4f}"),
            (f"accuracy over real {target_units}", f"{metrics['accuracy_real_characters']:.4f}"),
            ("decoding", f"{metrics['decoding']} ({metrics['decode_seconds']:.1f} s)"),
            ("exact match (any reference)", f"{metrics['exact_match']:.4f}"),
            ("character error rate (closest reference)", f"{metrics['character_error_rate']:.4f}"),
            ("chrF", "n/a (pip install sacrebleu)" if metrics["chrf"] is None else f"{metrics['chrf']:.2f}")]
    for name, value in rows:
        print(f"  {name:<44} {value}")
    print(length_table(metrics))
    for example in examples[: max(0, args.examples)]:
        mark = "=" if example["exact"] else "~"
        print(f"  {example['input']!r} -> {example['output']!r} {mark} {example['references'][0]!r}")
    if args.json:
        write_text_atomic(args.json, json.dumps({"metrics": metrics, "translations": examples}, ensure_ascii=False,
                                                indent=1), "the --json report")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
