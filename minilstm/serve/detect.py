"""Which language a text is in, for ``source=auto`` and ``/detect``: py3langid's naive Bayes model (its weights ship
inside the wheel, nothing is downloaded), restricted to common languages and leaning towards English.

Why the restriction: over all of py3langid's 140 languages, short sentences go to rare ones ("Run!" reads as
Quechua); among the 25 languages below they go to a language a user is likely to type. Why the lean: the server
translates English only, and most of what it sees are short English sentences, where a word or two decide between
English and Dutch or Danish. The rule is Bayes's with a prior: English's log-likelihood gets
:data:`ENGLISH_LOG_PRIOR_ODDS` added (English taken to be e² ≈ 7 times as likely as any one other language before
reading the text), so short texts with little evidence stay English while longer ones are decided by their
evidence. The value was chosen on the training side of ``fra.txt``, English and French
(``python -m bench.langid_tuning``); the held-out English sentences and the hand-written ones of
``tests/test_langid.py`` measure it.
"""

import math
import threading

from py3langid.langid import MODEL_FILE, RAW_FLOOR, LanguageIdentifier

LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish", "pl": "Polish",
    "cs": "Czech", "ro": "Romanian", "hu": "Hungarian", "tr": "Turkish", "ru": "Russian", "uk": "Ukrainian",
    "el": "Greek", "ar": "Arabic", "he": "Hebrew", "hi": "Hindi", "zh": "Chinese", "ja": "Japanese", "ko": "Korean",
}
"""The languages a text can be detected as (ISO 639-1 codes, as LibreTranslate's), with names for messages."""

ENGLISH = "en"

ENGLISH_LOG_PRIOR_ODDS = 2.0
"""Added to English's log-likelihood. 2.0 minimises the English sentences not detected as English plus the French
ones detected as English, over the distinct sentences of the training side of ``fra.txt`` (93,404 English:
0.11% + 127,993 French: 0.10%, against 0.27% + 0.03% with no lean); beyond it each English sentence kept costs
more French ones taken for English."""

MAX_CHARS = 2000
"""Only a text's first characters are read: the model walks the text byte by byte in Python on the event loop,
and a language shows itself long before this."""

TOP = 3
"""How many languages an answer lists (LibreTranslate lists its detectors' few candidates, best first)."""

NOTHING_DETECTED = [{"language": ENGLISH, "confidence": 0.0}]
"""The answer for a text with no letter ("", "123", "?!", emoji) or nothing the model knows ("Go."): English, since
nothing contradicts it, with confidence 0, as LibreTranslate answers for what it cannot detect."""


class LanguageDetector:
    """py3langid's model restricted to ``languages``; loaded on first use, then only read (safe across threads)."""

    def __init__(self, languages=tuple(LANGUAGE_NAMES), english_log_prior_odds: float = ENGLISH_LOG_PRIOR_ODDS,
                 max_chars: int = MAX_CHARS, top: int = TOP):
        self.languages = tuple(languages)
        self.english_log_prior_odds, self.max_chars, self.top = english_log_prior_odds, max_chars, top
        self._identifier = None
        self._lock = threading.Lock()

    def _model(self):
        if self._identifier is None:
            with self._lock:
                if self._identifier is None:
                    # Our own instance: set_languages changes the identifier, and py3langid's module-level one is
                    # shared with anything else in the process that calls py3langid.classify.
                    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
                    identifier.set_languages(self.languages)
                    self._identifier = identifier
        return self._identifier

    def load(self) -> "LanguageDetector":
        """Load the model now (a server calls it at startup, so the first request does not pay for it)."""
        self._model()
        return self

    def log_likelihoods(self, text: str) -> dict[str, float] | None:
        """Each language's naive Bayes log-likelihood of ``text`` (its first ``max_chars`` characters), English's
        with the prior added; None when the text has no letter (digits, punctuation, emoji: what the model would
        make of their bytes is noise) or no feature the model knows (too short, as "Go.")."""
        text = text[: self.max_chars]
        if not any(character.isalpha() for character in text):
            return None
        scores = dict(self._model().rank(text))
        if max(scores.values()) <= RAW_FLOOR:
            return None
        if ENGLISH in scores:
            scores[ENGLISH] += self.english_log_prior_odds
        return scores

    def detect(self, text: str) -> list[dict]:
        """LibreTranslate's ``/detect`` answer: up to ``top`` of ``[{"language": code, "confidence": percent}]``,
        best first. The first is the decision; the others are listed only with a confidence above 0. Confidences
        are py3langid's calibrated probabilities over the candidate languages (a softmax of the log-likelihoods
        divided by the square root of the text's length in bytes, so that they do not all read 100 on long texts),
        in percent, rounded to 1 decimal."""
        scores = self.log_likelihoods(text)
        if scores is None:
            return [dict(answer) for answer in NOTHING_DETECTED]
        temperature = math.sqrt(max(1, len(text[: self.max_chars].encode("utf-8", errors="surrogatepass"))))
        best = max(scores.values())
        weights = {lang: math.exp((score - best) / temperature) for lang, score in scores.items()}
        total = sum(weights.values())
        ranked = sorted(weights.items(), key=lambda item: item[1], reverse=True)[: self.top]
        answer = [{"language": lang, "confidence": round(100 * weight / total, 1)} for lang, weight in ranked]
        return answer[:1] + [candidate for candidate in answer[1:] if candidate["confidence"] > 0]

    def is_english(self, text: str) -> bool:
        """Whether ``detect(text)`` decides English (texts with nothing to detect included)."""
        return self.detect(text)[0]["language"] == ENGLISH


_default_detector = LanguageDetector()


def default_detector() -> LanguageDetector:
    """The process's detector with the settings above (its model is loaded on first use)."""
    return _default_detector


def detect(text: str) -> list[dict]:
    """:meth:`LanguageDetector.detect` with the default detector."""
    return _default_detector.detect(text)


def language_name(code: str) -> str:
    """English name of a detected language, e.g. "French" for "fr"; the code itself if it has none."""
    return LANGUAGE_NAMES.get(code, code)


def unsupported_message(code: str) -> str:
    """The 400 error for a text detected as ``code`` when only English is translated: LibreTranslate's wording
    ("fr is not supported") followed by the language's name."""
    return f"{code} is not supported (the text looks {language_name(code)}; this server translates from English)"
