"""Texts split into sentences (``minilstm.sentences``) and joined back, and ``translate`` of whole paragraphs: each
sentence decoded as if alone, the text's own whitespace kept, one-sentence texts exactly as without splitting."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilstm.checkpoint import load_checkpoint
from minilstm.models import DEFAULT_MODEL
from minilstm.sentences import split_texts

PARAGRAPH = "I am very tired today. I want to go home. Where is my bag?"


def sentences_of(text, max_len=None):
    return split_texts([text], max_len).sentences


@pytest.mark.parametrize("text, expected", [
    (PARAGRAPH, ["I am very tired today.", "I want to go home.", "Where is my bag?"]),
    ("Mr. Smith went to Washington. He said hi.", ["Mr. Smith went to Washington.", "He said hi."]),
    ("I like fruit, e.g. apples. They are good.", ["I like fruit, e.g. apples.", "They are good."]),
    ("He lives in the U.S. and works there. OK.", ["He lives in the U.S. and works there.", "OK."]),
    ("It costs 3.50 euros. Cheap.", ["It costs 3.50 euros.", "Cheap."]),
    ('"Go home." She left.', ['"Go home."', "She left."]),
    ('She said "Stop!" and left.', ['She said "Stop!" and left.']),
    ("Really?! Yes.", ["Really?!", "Yes."]),
    ("Wait... What?", ["Wait...", "What?"]),
    ("Go.Go. Now.", ["Go.Go.", "Now."]),  # no space after the full stop: not a sentence end
    ("no punctuation\nat all", ["no punctuation", "at all"]),  # a line break always ends one
    ("Go.", ["Go."]),
    ("A\u00a0. Go.\u2009Now.", ["A\u00a0.", "Go.", "Now."]),  # wide spaces (sentencex 1.0 panics on the first)
])
def test_sentences(text, expected):
    assert sentences_of(text) == expected


def test_whitespace_and_line_breaks_are_kept_exactly():
    texts = ["Hi.\n\nBye.\n", "  Hello.  World.\t ", "One.\r\nTwo.\rThree.", "\n\nGo.\n \n"]
    plan = split_texts(texts)
    assert plan.sentences == ["Hi.", "Bye.", "Hello.", "World.", "One.", "Two.", "Three.", "Go."]
    assert [layout.gaps() for layout in plan.layouts] == [
        ["", "\n\n", "\n"], ["  ", "  ", "\t "], ["", "\r\n", "\r", ""], ["\n\n", "\n \n"]]
    assert plan.join(["A", "B", "C", "D", "E", "F", "G", "H"]) == ["A\n\nB\n", "  C  D\t ", "E\r\nF\rG", "\n\nH\n \n"]
    assert plan.join(plan.sentences) == texts


def test_a_text_without_a_sentence_is_kept_whole():
    """Empty and blank texts go to the decoder as they are, which does with them what it did before splitting."""
    plan = split_texts(["", "   ", "\n"])
    assert plan.sentences == ["", "   ", "\n"]
    assert plan.join(["x", "y", "z"]) == ["x", "y", "z"]


def test_a_long_sentence_is_cut_at_a_clause_boundary():
    text = "When I came home yesterday evening, my little brother was already asleep on the sofa in the living room."
    assert len(text) > 60
    assert sentences_of(text, 70) == ["When I came home yesterday evening,",
                                      "my little brother was already asleep on the sofa in the living room."]
    assert all(len(piece) <= 40 for piece in sentences_of(text, 40))
    assert sentences_of("I was tired and I wanted to go home but the bus did not come", 40) == [
        "I was tired and I wanted to go home", "but the bus did not come"]


def test_a_sentence_without_punctuation_is_cut_at_spaces_then_anywhere():
    words = " ".join(["word"] * 120)  # 599 characters
    pieces = sentences_of(words, 50)
    assert all(len(piece) <= 50 for piece in pieces) and " ".join(pieces) == words
    solid = "x" * 600
    pieces = sentences_of(solid, 50)
    assert all(0 < len(piece) <= 50 for piece in pieces) and "".join(pieces) == solid
    plan = split_texts([solid, words], 50)
    assert plan.join(plan.sentences) == [solid, words]


def test_no_limit_leaves_long_sentences_whole():
    assert sentences_of("x" * 600) == ["x" * 600]
    with pytest.raises(ValueError):
        split_texts(["Go."], 0)


def test_n_best_alternatives_take_each_sentences_kth_beam_or_its_best():
    plan = split_texts(["One. Two.", "Three."])
    joined = plan.join_n_best([["a1", "a2", "a3"], ["b1"], ["c1", "c2"]])
    assert joined == [["a1 b1", "a2 b1", "a3 b1"], ["c1", "c2"]]


def test_attention_blocks_sit_at_the_sentences_places():
    plan = split_texts(["Go. Hi!", "Yes."])
    first = np.arange(1, 4 * 3 + 1, dtype=float).reshape(4, 3)  # "Va!" and END, over "Go."
    second = -np.arange(1, 3 * 3 + 1, dtype=float).reshape(3, 3)  # "Ah" and END, over "Hi!"
    third = np.full((5, 4), 7.0)  # "Oui." without END (ran to the limit), over "Yes."
    [text_map, single] = plan.join_attention([first, second, third], ["Va!", "Ah", "Oui."])
    expected = np.zeros((len("Va! Ah") + 1, len("Go. Hi!")))
    expected[0:3, 0:3] = first[:3]  # the first sentence's END row is dropped
    expected[4:6, 4:7] = second[:2]  # row 3: the space between, column 3: the space between
    expected[6, 4:7] = second[2]  # the last sentence's END: the last row
    np.testing.assert_array_equal(text_map, expected)
    np.testing.assert_array_equal(single, third)  # one sentence: its map as it is


@st.composite
def texts_and_limits(draw):
    text = draw(st.text(alphabet=st.sampled_from(list("ab AZé.?!,;:-'\"\n\r\t\u00a0\u2009…")), max_size=120))
    return text, draw(st.one_of(st.none(), st.integers(1, 40)))


@settings(max_examples=300, deadline=None)
@given(texts_and_limits())
def test_split_then_join_gives_the_text_back(case):
    text, max_len = case
    plan = split_texts([text, text[::-1]], max_len)
    assert plan.join(plan.sentences) == [text, text[::-1]]
    for layout in plan.layouts:
        sentences = [layout.text[start:end] for start, end in layout.spans]
        if layout.text.strip():
            assert all(s and s == s.strip() and "\n" not in s and "\r" not in s for s in sentences)
            assert max_len is None or all(len(s) <= max_len for s in sentences)
        else:
            assert sentences == [layout.text]


# -- translating with the shipped model (numpy: nothing to compile) ---------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(DEFAULT_MODEL, backend="numpy").model


def test_a_one_sentence_text_translates_as_without_splitting(shipped):
    texts = ["Go.", "I'm hungry.", "Where is my bag?"]
    maps, maps_unsplit = [], []
    assert shipped.translate(texts, attention_maps=maps) == shipped.translate(texts, attention_maps=maps_unsplit,
                                                                              split_sentences=False)
    for weights, unsplit in zip(maps, maps_unsplit, strict=True):
        np.testing.assert_array_equal(weights, unsplit)
    assert shipped.translate(texts, beam_width=2, n_best=True) == shipped.translate(texts, beam_width=2, n_best=True,
                                                                                    split_sentences=False)


def test_a_paragraph_translates_sentence_by_sentence_in_order(shipped):
    sentences = ["I am very tired today.", "I want to go home.", "Where is my bag?"]
    alone = [shipped.translate([s])[0] for s in sentences]
    texts = ["Go.", PARAGRAPH, "I'm hungry.\n\n  Where is my bag? "]
    assert shipped.translate(texts) == [shipped.translate(["Go."])[0], " ".join(alone),
                                        shipped.translate(["I'm hungry."])[0] + "\n\n  " + alone[2] + " "]


def test_n_best_and_attention_of_a_two_sentence_text(shipped):
    first, second = "Go.", "I'm hungry."
    text = f"{first} {second}"
    beams = [shipped.translate([s], beam_width=3, n_best=True)[0] for s in (first, second)]
    [alternatives] = shipped.translate([text], beam_width=3, n_best=True)
    kth = [[b[k] if k < len(b) else b[0] for b in beams] for k in range(max(map(len, beams)))]
    assert alternatives == [" ".join(pair) for pair in kth]
    maps_alone = []
    t1, t2 = shipped.translate([first, second], attention_maps=maps_alone)
    maps = []
    [translation] = shipped.translate([text], attention_maps=maps)
    assert translation == f"{t1} {t2}"
    [weights] = maps
    m1, m2 = maps_alone
    assert m1.shape[0] == len(t1) + 1 and m2.shape[0] == len(t2) + 1  # both ended: an END row each
    assert weights.shape == (len(translation) + 1, len(text))
    np.testing.assert_array_equal(weights[: len(t1), : len(first)], m1[: len(t1)])
    np.testing.assert_array_equal(weights[len(t1) + 1 :, len(first) + 1 :], m2)
    assert not weights[: len(t1), len(first) :].any() and not weights[len(t1)].any()
    assert not weights[len(t1) + 1 :, : len(first) + 1].any()


def test_translate_command_splits_unless_told_not_to(shipped, capsys):
    from minilstm.cli import run_main
    from minilstm.translate import main

    for flags, expected in (([], shipped.translate([PARAGRAPH])),
                            (["--no-split-sentences"], shipped.translate([PARAGRAPH], split_sentences=False))):
        assert run_main(main, [str(DEFAULT_MODEL), "--backend", "numpy", *flags, PARAGRAPH, "Go."]) == 0
        assert capsys.readouterr().out.splitlines() == [*expected, shipped.translate(["Go."])[0]]
