"""Word and SentencePiece models end to end: they train (units learnt from the training pairs only), their checkpoint
holds the SentencePiece models and rebuilds the same vocabularies, translate and evaluate read them, a run stopped
mid-epoch resumes to the bit, ``models.build`` ships one with its units, and the Keras export (the example's model is
one of characters) refuses one in one line; so does a corrupt or missing SentencePiece model."""

import numpy as np
import pytest
from test_recipe import history, train, weights

from minilstm import training
from minilstm.checkpoint import UNITS_FILES, load_checkpoint
from minilstm.decoding import translate_texts
from minilstm.errors import MinilstmError
from minilstm.evaluate import evaluate_pairs
from minilstm.train import parse_args
from minilstm.units import SPACE

TINY = ["--num-samples", "600", "--batch-size", "16", "--latent-dim", "8", "--num-decodes", "0", "--progress",
        "never", "--seed", "3", "--epochs", "2", "--embedding-dim", "6", "--attention", "general", "--no-input-feed",
        "--mask-padding", "--validation-split-mode", "random"]
SENTENCEPIECE = ["--units", "sentencepiece:400"]


@pytest.fixture(scope="module")
def sentencepiece_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp")
    assert train([*TINY, *SENTENCEPIECE, "--out", out]) == 0
    return out


def test_a_sentencepiece_checkpoint_is_self_contained(sentencepiece_run):
    final = sentencepiece_run / "final"
    assert all((final / name).is_file() for name in UNITS_FILES.values())
    model = load_checkpoint(final).model
    assert model.input_vocab.units.name == model.target_vocab.units.name == "sentencepiece:400"
    assert len(model.input_vocab) == len(model.target_vocab) == 403  # the pieces and START, END, PAD
    args, _ = parse_args([*TINY, *SENTENCEPIECE, "--out", str(sentencepiece_run / "again")])
    dataset, train_idx, val_idx = training.training_data(args)
    assert dataset.input_vocab == model.input_vocab and dataset.target_vocab == model.target_vocab
    # the pieces were learnt from the training pairs: learnt again from them alone, they are the same
    assert dataset.input_vocab.units.model == model.input_vocab.units.model
    assert dataset.input_lengths().max() == model.max_encoder_len
    assert dataset.input_lengths().sum() < sum(map(len, dataset.input_texts))  # fewer steps than characters
    assert dataset.target_steps().sum() < sum(len(t) - 1 for t in dataset.target_texts)


def test_sentencepiece_models_translate_and_evaluate(sentencepiece_run):
    model = load_checkpoint(sentencepiece_run / "final").model
    texts = ["Go.", "I'm sick.", "Who are you? ☃"]  # an unseen character: spelt in bytes, never an error
    out = translate_texts(model, texts)
    assert len(out) == 3 and all(isinstance(t, str) and SPACE not in t for t in out)
    assert translate_texts(model, texts, beam_width=3) is not None
    pairs = [("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours !")]
    metrics, rows = evaluate_pairs(model, pairs, pairs)
    assert metrics["pairs"] == 3 and 0 <= metrics["chrf"] <= 100


def test_sentencepiece_resume_is_bit_identical(tmp_path, monkeypatch, sentencepiece_run):
    pieces = tmp_path / "pieces"
    assert train([*TINY, *SENTENCEPIECE, "--out", pieces], monkeypatch, stop_after=17) == 130
    assert load_checkpoint(pieces / "latest").config["training"]["progress"]["step"] > 0  # inside an epoch
    assert train(["--resume", pieces]) == 0
    assert weights(pieces / "final") == weights(sentencepiece_run / "final")
    assert history(pieces) == history(sentencepiece_run)


def test_word_models_train_and_translate(tmp_path):
    assert train([*TINY, "--units", "word", "--out", tmp_path]) == 0
    model = load_checkpoint(tmp_path / "final").model
    assert model.input_vocab.units.name == "word" and "<unk>" in model.input_vocab
    assert not any((tmp_path / "final" / name).exists() for name in UNITS_FILES.values())
    assert all(isinstance(t, str) for t in translate_texts(model, ["Go.", "Zyxwv qqq."]))


def test_joint_units_share_one_vocabulary_and_survive_the_checkpoint(tmp_path):
    assert train([*TINY, *SENTENCEPIECE, "--joint-units", "--out", tmp_path]) == 0
    model = load_checkpoint(tmp_path / "final").model
    assert model.input_vocab == model.target_vocab and len(model.input_vocab) == 403
    assert model.input_vocab.units.model == model.target_vocab.units.model
    assert all(isinstance(t, str) for t in translate_texts(model, ["Go.", "I'm sick."]))


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_sentencepiece_model_is_one_line(tmp_path, sentencepiece_run, damage):
    import shutil

    copy = tmp_path / "final"
    shutil.copytree(sentencepiece_run / "final", copy)
    target = copy / UNITS_FILES["target"]
    if damage == "corrupt":
        target.write_bytes(target.read_bytes()[: 100])
    else:
        target.unlink()
    with pytest.raises(MinilstmError, match="SentencePiece model") as e:
        load_checkpoint(copy)
    assert "\n" not in str(e.value) and str(copy) in str(e.value)


def test_the_keras_export_refuses_other_units_in_one_line(tmp_path, sentencepiece_run):
    from minilstm.convert import main as convert

    with pytest.raises(MinilstmError, match="Keras example's model is a character model"):
        convert([str(sentencepiece_run / "final"), str(tmp_path / "m.keras")])
    assert list(tmp_path.iterdir()) == []


def test_build_ships_a_sentencepiece_model_with_its_pieces(tmp_path, sentencepiece_run):
    from minilstm.models.build import main as build

    assert build(["--from", str(sentencepiece_run), "--dest", str(tmp_path / "shipped")]) == 0
    assert all((tmp_path / "shipped" / name).is_file() for name in UNITS_FILES.values())
    texts = ["Go.", "I'm sick.", "Who are you?"]
    shipped, trained = load_checkpoint(tmp_path / "shipped").model, load_checkpoint(sentencepiece_run / "best").model
    assert shipped.input_vocab == trained.input_vocab and shipped.target_vocab == trained.target_vocab
    assert translate_texts(shipped, texts, beam_width=2) == translate_texts(trained, texts, beam_width=2)


@pytest.mark.parametrize("flags, message", [(["--units", "sentencepiece:0"], "positive whole number"),
                                            (["--units", "chars"], "not a kind of units"),
                                            (["--joint-units"], "use it with --units word or sentencepiece")])
def test_bad_units_are_refused_before_training(tmp_path, flags, message):
    with pytest.raises(MinilstmError, match=message):
        parse_args([*TINY, *flags, "--out", str(tmp_path)])


def test_more_pieces_than_the_training_pairs_allow_is_one_line(tmp_path):
    with pytest.raises(MinilstmError, match="allow at most"):
        train([*TINY, "--units", "sentencepiece:50000", "--out", tmp_path])
    assert not (tmp_path / "final").exists()


def test_characters_stay_the_default_and_keep_the_example_vocabulary(tmp_path):
    args, _ = parse_args(["--num-samples", "300", "--out", str(tmp_path)])
    dataset, _, _ = training.training_data(args)
    assert args.units == "char" and dataset.input_vocab.is_chars
    assert dataset.input_vocab.tokens == sorted(set("".join(dataset.input_texts)) | {" "})
    assert np.array_equal(dataset.input_lengths(), [len(t) for t in dataset.input_texts])
