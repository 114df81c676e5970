"""Choose minilstm.serve.detect's lean towards English on data the tests do not use: the distinct English and the
distinct French sentences of the training side of the shipped model's split of ``fra.txt`` (a sample of each with
``--per-language``), scored for a range of English log prior odds.

    python -m bench.langid_tuning --data ../shared/data/fra-eng/fra.txt

Prints, per value, the English sentences not detected as English, the French ones detected as English, their sum
(the two mistakes that matter to an English-only server, weighed alike) and the French ones detected as French;
the chosen value is the smallest that minimises the sum. The tests measure the result on held-out sentences.
"""

import argparse

import numpy as np

from minilstm.data import validation_rows
from minilstm.pairs import read_pairs
from minilstm.serve.detect import ENGLISH, LanguageDetector


def decisions(detector: LanguageDetector, texts: list[str]) -> list[tuple[str, float] | None]:
    """Per text, the best non-English language and its log-likelihood less English's (before the prior); None
    for a text with nothing to detect (always English)."""
    out = []
    for text in texts:
        scores = detector.log_likelihoods(text)
        if scores is None:
            out.append(None)
            continue
        english = scores.pop(ENGLISH) - detector.english_log_prior_odds
        other = max(scores, key=scores.get)
        out.append((other, scores[other] - english))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/fra-eng/fra.txt")
    parser.add_argument("--per-language", type=int, help="a random sample of this many sentences of each language")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    pairs = read_pairs(args.data)
    train, _ = validation_rows(pairs, 0.2, mode="random", seed=0)  # the shipped model's split
    english = sorted({pairs[i][0] for i in train})
    french = sorted({pairs[i][1] for i in train})
    if args.per_language:
        rng = np.random.default_rng(args.seed)
        english, french = (list(rng.choice(texts, args.per_language, replace=False)) for texts in (english, french))

    detector = LanguageDetector()
    english_margins, french_margins = decisions(detector, english), decisions(detector, french)
    print(f"{len(english):,} English and {len(french):,} French training-side sentences of {args.data}")
    print("| English log prior odds | English rejected | French taken for English | sum | French detected |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    best = None
    for odds in np.arange(0.0, 8.01, 0.5):
        rejected = 100 * np.mean([m is not None and m[1] > odds for m in english_margins])
        taken = 100 * np.mean([m is None or m[1] <= odds for m in french_margins])
        french_right = 100 * np.mean([m is not None and m[1] > odds and m[0] == "fr" for m in french_margins])
        print(f"| {odds:.1f} | {rejected:.2f}% | {taken:.2f}% | {rejected + taken:.2f}% | {french_right:.2f}% |")
        if best is None or rejected + taken < best[1] - 1e-9:
            best = (odds, rejected + taken)
    print(f"chosen: {best[0]:.1f} (the smallest value with the lowest sum)")


if __name__ == "__main__":
    main()
