"""minilstm.evaluate's scores per length of the English sentence: bucket boundaries, and every bucket's exact match,
character error rate and chrF recomputed here, independently, from a small random model's own translations."""

import numpy as np
import pytest

from minilstm.data import END, Dataset
from minilstm.evaluate import LENGTH_BUCKETS, evaluate_pairs, length_bucket
from minilstm.seq2seq import Seq2Seq

# English sentences of 1 to 13 words, at both sides of every bucket boundary; three have a second French reference.
ENGLISH = ["Go.", "Hi.", "I see.", "Be nice.", "I see it.", "We ran home.", "I see it now.", "Tom ate the cake.",
           "She is very tired.", "We walk to the park.", "I have seen it twice.", "He can play the old piano.",
           "They went to see the film.", "I think she will come here soon.",
           "We have been waiting for you all day.", "Tom said that he would be here by nine today.",
           "I do not think we should go out in rain.", "The man at the station was waiting for the last train.",
           "She told me that she had never seen such a beautiful garden.",
           "I have been waiting for you since this morning at the old station."]
PAIRS = [(e, f"Phrase {k} !") for k, e in enumerate(ENGLISH)] + [(ENGLISH[k], f"Autre {k}.") for k in (0, 5, 11)]


def words_bucket(english):
    """The buckets as the guide states them (1-3, 4-6, 7-10, 11+ words), written out without evaluate's table."""
    words = len(english.split())
    return "1-3" if words <= 3 else "4-6" if words <= 6 else "7-10" if words <= 10 else "11+"


def levenshtein(a, b):
    """Plain dynamic programme, to check evaluate's rapidfuzz-based character error rate independently."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@pytest.fixture(scope="module")
def model():
    """Random weights, large enough that translations differ by input; a stronger END so that some stop early."""
    data = Dataset.from_pairs(PAIRS)
    model = Seq2Seq("numpy", data.input_vocab, data.target_vocab, data.max_encoder_len, 24, latent_dim=32,
                    dtype="float64").initialize(1)
    rng = np.random.default_rng(1)
    weights = {k: v + rng.standard_normal(v.shape) for k, v in model.get_weights().items()}
    weights["dense.bias"][model.target_vocab.index[END]] += 1.0
    model.set_weights(weights)
    return model


def test_bucket_boundaries():
    assert [label for label, _ in LENGTH_BUCKETS] == ["1-3", "4-6", "7-10", "11+"]
    for words, label in [(1, "1-3"), (3, "1-3"), (4, "4-6"), (6, "4-6"), (7, "7-10"), (10, "7-10"), (11, "11+"),
                         (40, "11+")]:
        sentence = " ".join(["word"] * words) + "."
        assert length_bucket(sentence) == label == words_bucket(sentence), (words, label)
    # Words are what str.split() separates: runs of spaces and edges do not count, punctuation is part of a word.
    assert length_bucket("  I   see  it .  ") == "4-6" and length_bucket("Don't-stop, ok?") == "1-3"


def expected_scores(rows, hypotheses, references):
    """Exact match, CER against the closest reference (distance over its length, first on ties) and corpus chrF of
    ``rows``, computed here from the definitions."""
    sacrebleu = pytest.importorskip("sacrebleu", reason="chrF needs sacrebleu")
    if not rows:
        return {"pairs": 0, "exact_match": None, "character_error_rate": None, "chrf": None}
    errors = chars = 0
    for k in rows:
        best = min(references[k], key=lambda r: levenshtein(hypotheses[k], r) / max(1, len(r)))
        errors += levenshtein(hypotheses[k], best)
        chars += len(best)
    width = max(len(references[k]) for k in rows)
    streams = [[references[k][j] if j < len(references[k]) else None for k in rows] for j in range(width)]
    return {"pairs": len(rows), "exact_match": np.mean([hypotheses[k] in references[k] for k in rows]),
            "character_error_rate": errors / chars,
            "chrf": sacrebleu.corpus_chrf([hypotheses[k] for k in rows], streams).score}


def assert_scores_equal(got, want):
    assert got["pairs"] == want["pairs"]
    for name in ("exact_match", "character_error_rate", "chrf"):
        if want[name] is None:
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-12), name


def test_scores_per_bucket_equal_a_recomputation(model):
    hypotheses = model.translate([e for e, _ in PAIRS])
    assert len(set(hypotheses)) > len(PAIRS) // 2  # the random model says different things to different inputs
    # Make some translations exact: every third sentence gets the model's own output as one more reference.
    all_pairs = PAIRS + [(e, h) for k, ((e, _), h) in enumerate(zip(PAIRS, hypotheses, strict=True)) if k % 3 == 0]
    metrics, examples = evaluate_pairs(model, PAIRS, all_pairs, batch_size=7)
    assert [x["output"] for x in examples] == hypotheses
    references = [[f for e2, f in all_pairs if e2 == e] for e, _ in PAIRS]
    buckets = {label: [k for k, (e, _) in enumerate(PAIRS) if words_bucket(e) == label]
               for label in ("1-3", "4-6", "7-10", "11+")}
    assert [len(rows) for rows in buckets.values()] == [8, 8, 4, 3]
    assert list(metrics["length_buckets"]) == list(buckets)
    for label, rows in buckets.items():
        assert_scores_equal(metrics["length_buckets"][label], expected_scores(rows, hypotheses, references))
    # Overall: the same numbers over every pair, as evaluate reported before it had buckets.
    assert_scores_equal(metrics, expected_scores(range(len(PAIRS)), hypotheses, references))
    assert 0 < metrics["exact_match"] < 1
    assert sum(b["pairs"] for b in metrics["length_buckets"].values()) == metrics["pairs"] == len(PAIRS)


def test_an_empty_bucket_is_zero_pairs_and_nulls(model):
    short = [pair for pair in PAIRS if len(pair[0].split()) <= 6]
    metrics, _ = evaluate_pairs(model, short, PAIRS)
    buckets = metrics["length_buckets"]
    assert buckets["7-10"] == buckets["11+"] == {"pairs": 0, "exact_match": None, "character_error_rate": None,
                                                 "chrf": None}
    assert buckets["1-3"]["pairs"] + buckets["4-6"]["pairs"] == len(short)
    assert buckets["1-3"]["character_error_rate"] is not None
