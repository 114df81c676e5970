"""Units: characters, words and SentencePiece pieces split and join sentences losslessly, learn deterministically,
survive serialisation, and refuse bad requests with one line."""

import pytest

from minilstm.data import load_default_pairs
from minilstm.errors import MinilstmError
from minilstm.units import (
    SPACE,
    UNKNOWN,
    CharUnits,
    SentencePieceUnits,
    WordUnits,
    describe_units,
    learn_units,
    parse_units,
    split_words,
)

FRENCH = ["Il était malade, alors il est resté à la maison.", "Je ne sais pas.", "Qu'est-ce que c'est ?",
          "Tom a 30 ans.", "Elle l'a vu hier soir.", "Nous sommes allés au marché."] * 20


@pytest.fixture(scope="module")
def french():
    """The French side of the built-in pairs: enough text for a few hundred pieces."""
    return [fr for _, fr in load_default_pairs(3000)]


def test_char_units_are_the_characters():
    units = CharUnits()
    assert units.split("Va !") == ["V", "a", " ", "!"]
    assert units.join(["V", "a", " ", "!"]) == "Va !"


def test_words_split_with_space_marks_and_join_back():
    assert split_words("Il est là.") == ["Il", SPACE + "est", SPACE + "là", "."]
    assert split_words("Qu'est-ce ?") == ["Qu", "'", "est", "-", "ce", SPACE + "?"]
    units = WordUnits.learn(FRENCH)
    for text in FRENCH:
        assert units.join(units.split(text)) == text


def test_words_unknown_to_the_vocabulary_become_unk():
    units = WordUnits.learn(FRENCH)
    assert units.words[0] == UNKNOWN
    assert units.split("Il est chez Zoé.") == ["Il", SPACE + "est", UNKNOWN, UNKNOWN, "."]


@pytest.mark.parametrize("kind", ["sentencepiece", "sentencepiece-bpe"])
def test_sentencepiece_round_trips_every_sentence_and_unseen_characters(kind, french):
    units = learn_units(f"{kind}:400", french)
    assert len(units.pieces) == 400
    for text in [*FRENCH[:6], *french[::97], "Un bonhomme de neige ☃ et 漢字."]:
        pieces = units.split(text)
        assert units.join(pieces) == text
    assert any(p.startswith("<0x") for p in units.split("☃")), "an unseen character is spelt as its bytes"


def test_sentencepiece_learns_the_same_model_twice_and_reloads_from_bytes(french):
    a, b = learn_units("sentencepiece:400", french), learn_units("sentencepiece:400", french)
    assert a.model == b.model
    again = SentencePieceUnits(a.model, a.name)
    assert again.pieces == a.pieces and again.split(FRENCH[0]) == a.split(FRENCH[0])


def test_a_corrupt_sentencepiece_model_is_one_clear_line():
    with pytest.raises(MinilstmError, match="SentencePiece model is not readable") as e:
        SentencePieceUnits(b"not a model", "sentencepiece:50")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("pieces, message", [(100000, r"allow at most [\d,]+ pieces; ask for fewer"),
                                             (60, r"need at least [\d,]+ pieces .*; ask for more")])
def test_more_or_fewer_pieces_than_the_data_allows_is_one_clear_line(french, pieces, message):
    with pytest.raises(MinilstmError, match=message) as e:
        learn_units(f"sentencepiece:{pieces}", french)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, message", [("sentencepiece:0", "positive whole number"),
                                           ("sentencepiece:", "positive whole number"),
                                           ("sentencepiece:4k", "positive whole number"),
                                           ("bytes", "not a kind of units"), ("char:3", "not a kind of units")])
def test_bad_units_flags_are_one_clear_line(text, message):
    with pytest.raises(MinilstmError, match=message):
        parse_units(text)


def test_units_flags_parse():
    assert parse_units("char") == ("char", None)
    assert parse_units("word") == ("word", None)
    assert parse_units("sentencepiece:4000") == ("sentencepiece", 4000)
    assert parse_units("sentencepiece-bpe:2000") == ("sentencepiece-bpe", 2000)


def test_units_are_described_as_a_reader_names_them():
    assert [describe_units(name) for name in ("char", "word", "sentencepiece:1000", "sentencepiece-bpe:500")] == \
        ["characters", "words", "1,000 SentencePiece pieces", "500 SentencePiece pieces (BPE)"]
