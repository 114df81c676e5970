"""minilstm.convert --to onnx: the files are valid ONNX that onnxruntime runs to our logits (to 1e-5 at every step
of a teacher-forced batch), and the onnxruntime-only decoding loop of docs/guide/convert.md, run as written there,
translates 200 sentences exactly as ``Seq2Seq.translate`` does, for every architecture. Refusals: one line, exit 2,
nothing left."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import slow_beyond
from test_cli import REPO
from test_convert import assert_refused, convert_main
from test_readme_example import readme_example

from minilstm.checkpoint import save_checkpoint
from minilstm.data import Dataset, resolve_pairs
from minilstm.optim import RMSprop
from minilstm.seq2seq import Seq2Seq

onnx = pytest.importorskip("onnx", reason="the ONNX tests need onnx and onnxruntime: pip install '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need onnx and onnxruntime: pip install '.[onnx]'")

UNITS = 32
PAIRS = 600  # the first pairs of the built-in data: sentences of 2 to 18 characters
ARCHITECTURES = {
    "example": {},
    "stacked-2+2": {"encoder_layers": 2, "decoder_layers": 2},
    "bidirectional": {"bidirectional_encoder": True},
    "stacked-bidirectional-3+2": {"encoder_layers": 3, "decoder_layers": 2, "bidirectional_encoder": True},
    "attention-general": {"attention": "general"},
    "attention-dot-2+2": {"attention": "dot", "encoder_layers": 2, "decoder_layers": 2},
    "attention-concat-bidirectional": {"attention": "concat", "bidirectional_encoder": True},
    "attention-general-no-feed": {"attention": "general", "input_feed": False},
    "attention-dot-mask-padding": {"attention": "dot", "mask_padding": True},
    "embedding": {"embedding_dim": 12},
    "embedding-attention-general-stacked-bidirectional": {"embedding_dim": 12, "attention": "general",
                                                          "encoder_layers": 2, "decoder_layers": 2,
                                                          "bidirectional_encoder": True},
    "embedding-attention-concat-no-feed": {"embedding_dim": 12, "attention": "concat", "input_feed": False},
}


@pytest.fixture(scope="module")
def data():
    pairs = resolve_pairs(None, PAIRS)
    return pairs, Dataset.from_pairs(pairs)


def trained_model(data, options, steps=300):
    """A model trained ``steps`` RMSprop steps (learning rate 0.01, batch 32) from Keras's initial weights: weights
    that are neither the initial ones nor random noise, so decodes vary from sentence to sentence."""
    pairs, ds = data
    model = Seq2Seq("numba", ds.input_vocab, ds.target_vocab, ds.max_encoder_len, ds.max_decoder_len,
                    latent_dim=UNITS, dtype="float32", **options).initialize(0)
    optimizer = RMSprop(model.backend, model.params.flat.size, model.dtype, learning_rate=0.01)
    rng = np.random.default_rng(0)
    lengths = np.array([len(english) for english, _ in pairs])
    for _ in range(steps):
        rows = rng.choice(len(pairs), 32, replace=False)
        model.forward_backward(ds.encoder_input_ids[rows], ds.decoder_input_ids[rows], ds.decoder_target_ids[rows],
                               source_lengths=lengths[rows])
        optimizer.step(model.params.flat, model.grads.flat)
    return model


def export(model, tmp_path, name="model-onnx"):
    checkpoint = save_checkpoint(tmp_path / "ck", model)
    dest = tmp_path / name
    assert convert_main(checkpoint, dest, "--to", "onnx") == 0
    return dest


def readme_onnx_functions():
    """docs/guide/convert.md's ``load`` and ``onnx_translate``, exactly as written there (its last line, the usage
    example, left out). bench/bench.py's onnxruntime contestant runs the same code."""
    code = readme_example("onnx-example")
    namespace = {}
    exec(compile(code[: code.index("\nprint(onnx_translate")], "docs/guide/convert.md:onnx-example", "exec"),
         namespace)
    return namespace["load"], namespace["onnx_translate"]


@pytest.mark.parametrize("name", slow_beyond(ARCHITECTURES, 3))
def test_onnxruntime_gives_our_logits_and_translations(data, tmp_path, name):
    pairs, ds = data
    model = trained_model(data, ARCHITECTURES[name])
    dest = export(model, tmp_path)
    settings = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))
    encoder = ort.InferenceSession(str(dest / "encoder.onnx"))
    decoder = ort.InferenceSession(str(dest / "decoder_step.onnx"))

    # Teacher forcing, every step: 24 pairs of different lengths, as a padded batch (ids and lengths).
    all_lengths = np.array([len(english) for english, _ in pairs])
    rows = np.union1d(np.unique(all_lengths, return_index=True)[1], np.linspace(0, len(pairs) - 1, 16).astype(int))
    lengths = all_lengths[rows]
    assert len(set(lengths)) >= 8
    encoder_ids, decoder_ids = ds.encoder_input_ids[rows], ds.decoder_input_ids[rows]
    if model.mask_padding:  # such a model reads no padding: one batch per English length, as it trained
        order = np.argsort(lengths, kind="stable")
        rows, lengths, decoder_ids = rows[order], lengths[order], decoder_ids[order]
    expected_logits = np.zeros(decoder_ids.shape + (len(ds.target_vocab),), dtype=np.float32)
    got_logits = np.zeros_like(expected_logits)
    groups = [np.flatnonzero(lengths == n) for n in np.unique(lengths)] if model.mask_padding else \
        [np.arange(len(rows))]
    for group in groups:
        ids = encoder_ids[group] if not model.mask_padding else encoder_ids[group][:, : lengths[group[0]]]
        expected_logits[group] = model.teacher_forced_logits(ids, decoder_ids[group], lengths[group])
        inputs = {"source_ids": ids.astype(np.int64)}
        if model.attention:
            inputs["source_lengths"] = lengths[group].astype(np.int64)
        state = dict(zip(settings["state_names"], encoder.run(settings["state_names"], inputs), strict=True))
        for t in range(decoder_ids.shape[1]):
            outputs = decoder.run(["logits"] + [n + "_out" for n in settings["step_state_names"]],
                                  {"prev_ids": decoder_ids[group, t].astype(np.int64), **state})
            got_logits[group, t] = outputs[0]
            state.update(zip(settings["step_state_names"], outputs[1:], strict=True))
    assert np.abs(expected_logits).max() > 1.0  # trained: the logits are not all near 0
    np.testing.assert_allclose(got_logits, expected_logits, rtol=0, atol=1e-5)

    # Greedy decoding with onnxruntime alone (docs/guide/convert.md's loop) == minilstm's, sentence for sentence.
    texts = [english for english, _ in pairs[::3]][:200]
    ours = model.translate(texts, split_sentences=False)  # "Aim. Fire!" too as one input, as the loop reads it
    assert len(set(ours)) > 10, ours[:20]  # the decodes differ from sentence to sentence
    load, onnx_translate = readme_onnx_functions()
    assert onnx_translate(load(str(dest)), texts) == ours


def test_the_readme_block_runs_as_written(data, tmp_path):
    """The block itself, usage line included, as a script beside ``runs/seq2seq-onnx``."""
    model = trained_model(data, {})
    (tmp_path / "runs").mkdir()
    export(model, tmp_path / "runs", "seq2seq-onnx")
    script = tmp_path / "example.py"
    script.write_text(readme_example("onnx-example"), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The loop decodes each text whole (this model's longest training input, 10 characters, would have translate
    # cut "I'm hungry." in two).
    assert result.stdout.strip() == repr(model.translate(["Go.", "I'm hungry."], split_sentences=False))


def test_the_files_are_valid_onnx_with_symbolic_batch_and_time(data, tmp_path):
    model = trained_model(data, {"attention": "general", "bidirectional_encoder": True}, steps=1)
    dest = tmp_path / "model.onnx"  # a DEST ending in .onnx needs no --to
    assert convert_main(save_checkpoint(tmp_path / "ck", model), dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["decoder_step.onnx", "encoder.onnx", "vocab.json"]
    shapes = {}
    for name in ("encoder.onnx", "decoder_step.onnx"):
        proto = onnx.load(dest / name)
        onnx.checker.check_model(proto, full_check=True)
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
        lstms = [node for node in proto.graph.node if node.op_type == "LSTM"]
        assert lstms and all(onnx.helper.get_node_attr_value(node, "hidden_size") in (UNITS, 2 * UNITS)
                             for node in lstms)
        assert all(attribute.i == 0 for node in lstms for attribute in node.attribute if attribute.name == "layout")
        for value in [*proto.graph.input, *proto.graph.output]:
            dims = value.type.tensor_type.shape.dim
            shapes[name, value.name] = [d.dim_param or d.dim_value for d in dims]
    units = 2 * UNITS
    assert shapes["encoder.onnx", "source_ids"] == ["batch", "source_len"]
    assert shapes["encoder.onnx", "h"] == ["batch", 1, units]
    assert shapes["encoder.onnx", "memory"] == ["batch", "source_len", units]
    assert shapes["decoder_step.onnx", "prev_ids"] == ["batch"]
    assert shapes["decoder_step.onnx", "logits"] == ["batch", len(model.target_vocab)]
    assert shapes["decoder_step.onnx", "attention"] == ["batch", "source_len"]
    settings = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))
    assert settings["input_vocab"] == model.input_vocab.chars and settings["max_steps"] == model.max_decoder_len + 1
    # the attention weights onnxruntime reports are a distribution over each sentence's real characters only
    encoder = ort.InferenceSession(str(dest / "encoder.onnx"))
    decoder = ort.InferenceSession(str(dest / "decoder_step.onnx"))
    ids = np.zeros((3, 7), dtype=np.int64)
    inputs = {"source_ids": ids, "source_lengths": np.array([7, 1, 4])}
    state = dict(zip(settings["state_names"], encoder.run(settings["state_names"], inputs), strict=True))
    weights = decoder.run(["attention"], {"prev_ids": np.array([1, 2, 3]), **state})[0]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (weights[1, 1:] == 0).all() and (weights[2, 4:] == 0).all() and (weights[0] > 0).all()


@pytest.mark.parametrize("kind", ["sentencepiece", "word"])
def test_a_model_of_words_or_pieces_exports_and_decodes_as_translate(data, tmp_path, kind):
    """The units travel with the files (vocab.json's ``units``, and the SentencePiece models), and the guide's
    loop, run as written there, splits, decodes and joins exactly as ``Seq2Seq.translate``."""
    from minilstm.units import learn_units
    from minilstm.vocab import Vocab

    pairs, _ = data
    spec = "sentencepiece:400" if kind == "sentencepiece" else "word"
    ds = Dataset.from_pairs(pairs, Vocab.from_units(learn_units(spec, [en for en, _ in pairs])),
                            Vocab.from_units(learn_units(spec, [fr for _, fr in pairs])))
    model = trained_model((pairs, ds), {"embedding_dim": 12, "attention": "general", "mask_padding": True})
    dest = export(model, tmp_path)
    settings = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))
    assert settings["units"] == model.input_vocab.units.name and settings["input_vocab"] == model.input_vocab.tokens
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["decoder_step.onnx", "encoder.onnx", "vocab.json"]
        + (["input_units.model", "target_units.model"] if kind == "sentencepiece" else []))
    texts = [english for english, _ in pairs[::3]][:200] + ["Who are you? \u2603", "Zorblax  ran."]
    ours = model.translate(texts, split_sentences=False)
    assert len(set(ours)) > 10, ours[:20]  # the decodes differ from sentence to sentence
    load, onnx_translate = readme_onnx_functions()
    assert onnx_translate(load(str(dest)), texts) == ours


def test_onnx_export_refusals(data, tmp_path, capsys):
    pairs, ds = data
    float64 = Seq2Seq("numpy", ds.input_vocab, ds.target_vocab, ds.max_encoder_len, ds.max_decoder_len,
                      latent_dim=4, dtype="float64").initialize(0)
    ck64 = save_checkpoint(tmp_path / "ck64", float64)
    refuse = lambda *args: assert_refused(capsys, tmp_path, args[:-1], *args[-1])  # noqa: E731
    refuse(ck64, tmp_path / "out", "--to", "onnx", ["float64", "float32 models only", "--dtype float32"])
    refuse(ck64, tmp_path / "m.onnx", ["float64"])
    refuse(ck64, tmp_path / "m.keras", "--to", "onnx", ["--to onnx writes a directory", ".keras"])
    refuse(ck64, tmp_path / "ck64", "--to", "onnx", ["already exists"])


def test_onnx_export_from_the_command_line(data, tmp_path):
    """``minilstm convert CK OUT --to onnx`` in a fresh process: exit 0, the files, one line naming them."""
    model = trained_model(data, {}, steps=1)
    checkpoint = save_checkpoint(tmp_path / "ck", model)
    result = subprocess.run([sys.executable, "-m", "minilstm", "convert", str(checkpoint), str(tmp_path / "out"),
                             "--to", "onnx"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "encoder.onnx, decoder_step.onnx and vocab.json" in result.stdout
    assert (tmp_path / "out" / "decoder_step.onnx").stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary directory left
