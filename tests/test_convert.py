"""minilstm.convert: to Keras 3 (torch backend) and back, from Keras-built models (.keras and legacy .h5), to a
PyTorch state dict; every conversion predicts what its source predicts. Bad input: one line, exit 2, nothing left."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere: the backend the tests install

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import REPO, assert_user_error

from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.cli import run_main
from minilstm.data import END, START, Dataset, read_pairs
from minilstm.seq2seq import Seq2Seq

keras = pytest.importorskip("keras", reason="the conversion tests need keras and h5py: pip install '.[keras]'")
pytest.importorskip("h5py", reason="the conversion tests need keras and h5py: pip install '.[keras]'")

from minilstm import convert  # noqa: E402

# Keras 3.15's torch backend calls np.array(tensor, copy=False), which torch answers with this warning, hundreds of
# times; it says nothing about our code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

TINY = Path(__file__).parent / "data" / "tiny.txt"
SENTENCES = [english for english, _ in read_pairs(TINY)] + ["Go!", "Hi there."]
UNITS = 16


@pytest.fixture(scope="module")
def dataset():
    return Dataset.from_pairs(read_pairs(TINY))


def random_model(dataset, seed=0):
    """A float32 model over tiny.txt's vocabularies, Keras's initial weights plus noise (biases too): decodes vary."""
    model = Seq2Seq("numpy", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=UNITS, dtype="float32").initialize(seed)
    rng = np.random.default_rng(seed)
    model.set_weights({name: value + rng.normal(0.0, 1.0, value.shape)
                       for name, value in model.get_weights().items()})
    return model


def softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def keras_greedy(keras_model, model: Seq2Seq, texts):
    """The example's greedy decoding run on the Keras model itself: feed START, append the argmax of the last
    step, stop at END or once longer than the longest target (the whole prefix is fed again each step: the
    decoder is causal, so its last output is the next step's)."""
    from minilstm.data import encode_inputs

    enc = encode_inputs(texts, model.input_vocab, model.max_encoder_len)
    start, end = model.target_vocab.index[START], model.target_vocab.index[END]
    prefix = np.full((len(texts), 1), start)
    decoded = [[] for _ in texts]
    done = np.zeros(len(texts), dtype=bool)
    for _ in range(model.max_decoder_len + 1):
        probs = convert.keras_probabilities(keras, keras_model, enc, prefix, len(model.input_vocab),
                                            len(model.target_vocab))
        nxt = probs[:, -1].argmax(axis=1)
        for k, token in enumerate(nxt):
            if not done[k]:
                done[k] = token == end
                if not done[k]:
                    decoded[k].append(int(token))
        if done.all():
            break
        prefix = np.concatenate([prefix, nxt[:, None]], axis=1)
    return [model.target_vocab.decode(ids) for ids in decoded]


def assert_same_predictions(keras_model, model: Seq2Seq, dataset):
    """Teacher-forced probabilities to 1e-5 and greedy decodes equal, Keras against minilstm."""
    expected = convert.keras_probabilities(keras, keras_model, dataset.encoder_input_ids, dataset.decoder_input_ids,
                                           len(model.input_vocab), len(model.target_vocab))
    ours = softmax(model.teacher_forced_logits(dataset.encoder_input_ids, dataset.decoder_input_ids)
                   .astype(np.float64))
    assert expected.shape == ours.shape
    assert np.abs(expected - ours).max() < 1e-5
    decodes = model.translate(SENTENCES)
    assert keras_greedy(keras_model, model, SENTENCES) == decodes
    assert len(set(decodes)) > 5, decodes  # random weights that decode everything alike would prove little


def convert_main(*args):
    return run_main(convert.main, [str(a) for a in args])


def example_keras_model(num_in, num_out, units=UNITS, seed=1, **changes):
    """The Keras example's model, built with Keras's API, with random weights; ``changes`` alter it for the
    error tests: {"dense_activation": ..., "swap_state": True, "decoder_layer": keras.layers.GRU}."""
    encoder_inputs = keras.Input(shape=(None, num_in))
    _, state_h, state_c = keras.layers.LSTM(units, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, num_out))
    decoder_layer = changes.get("decoder_layer", keras.layers.LSTM)(units, return_sequences=True, return_state=True)
    if decoder_layer.__class__.__name__ == "GRU":
        decoder_outputs, _ = decoder_layer(decoder_inputs, initial_state=state_h)
    elif changes.get("swap_state"):
        decoder_outputs, _, _ = decoder_layer(decoder_inputs, initial_state=[state_c, state_h])
    else:
        decoder_outputs, _, _ = decoder_layer(decoder_inputs, initial_state=[state_h, state_c])
    outputs = keras.layers.Dense(num_out, activation=changes.get("dense_activation", "softmax"))(decoder_outputs)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    # Every weight drawn from ``seed`` (Keras's own initial values are drawn unseeded: added to them, the weights, and
    # so float32's rounding of the probabilities, changed from run to run)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0.0, 1.0, w.shape).astype("float32") for w in layer.get_weights()])
    return model


@pytest.mark.slow
def test_checkpoint_to_keras_predicts_what_minilstm_predicts(dataset, tmp_path):
    """minilstm -> .keras (by the command, in a subprocess) -> keras.saving.load_model."""
    model = random_model(dataset)
    checkpoint = save_checkpoint(tmp_path / "ck", model)
    dest = tmp_path / "model.keras"
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-m", "minilstm.convert", checkpoint, dest], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_predictions(keras.saving.load_model(dest), model, dataset)


def test_checkpoint_to_keras_and_back_translates_as_the_original(dataset, tmp_path):
    model = random_model(dataset, seed=2)
    checkpoint = save_checkpoint(tmp_path / "ck", model)
    assert convert_main(checkpoint, tmp_path / "model.keras") == 0
    assert convert_main(tmp_path / "model.keras", tmp_path / "back", "--data", TINY) == 0
    back = load_checkpoint(tmp_path / "back").model
    assert back.config() == model.config()
    assert {k: v.tobytes() for k, v in back.get_weights().items()} == \
        {k: v.tobytes() for k, v in model.get_weights().items()}
    assert back.translate(SENTENCES) == model.translate(SENTENCES)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_built_model_converts_to_minilstm(dataset, tmp_path, suffix):
    """A model made with Keras's own API and random weights, saved as Keras 3 does (.keras) or by its legacy HDF5
    path (.h5): the converted checkpoint gives Keras's probabilities and greedy decodes."""
    keras_model = example_keras_model(len(dataset.input_vocab), len(dataset.target_vocab))
    src = tmp_path / f"example{suffix}"
    keras_model.save(src)
    assert convert_main(src, tmp_path / "ck", "--data", TINY) == 0
    checkpoint = load_checkpoint(tmp_path / "ck")
    assert checkpoint.config["converted_from"]["keras_model"] == str(src)
    assert_same_predictions(keras_model, checkpoint.model, dataset)


def test_checkpoint_to_torch_state_dict_gives_the_same_logits(dataset, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = random_model(dataset, seed=3)
    checkpoint = save_checkpoint(tmp_path / "ck", model)
    dest = tmp_path / "model.safetensors"
    assert convert_main(checkpoint, dest) == 0
    with safe_open(dest, framework="pt") as f:
        meta = f.metadata()
    assert int(meta["latent_dim"]) == UNITS and json.loads(meta["target_vocab"]) == model.target_vocab.to_json()
    num_in, num_out = int(meta["num_encoder_tokens"]), int(meta["num_decoder_tokens"])
    encoder = torch.nn.LSTM(num_in, UNITS, batch_first=True)
    decoder = torch.nn.LSTM(num_out, UNITS, batch_first=True)
    dense = torch.nn.Linear(UNITS, num_out)
    state = load_file(dest)
    for name, module in (("encoder", encoder), ("decoder", decoder), ("dense", dense)):
        module.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(name + ".")})
    assert not state["decoder.bias_hh_l0"].any()
    enc = torch.nn.functional.one_hot(torch.as_tensor(dataset.encoder_input_ids, dtype=torch.long), num_in).float()
    dec = torch.nn.functional.one_hot(torch.as_tensor(dataset.decoder_input_ids, dtype=torch.long), num_out).float()
    with torch.no_grad():
        _, final_state = encoder(enc)
        outputs, _ = decoder(dec, final_state)
        logits = dense(outputs).numpy()
    ours = model.teacher_forced_logits(dataset.encoder_input_ids, dataset.decoder_input_ids)
    assert np.abs(logits - ours).max() < 1e-5


def test_a_run_directory_converts_its_best_checkpoint(tmp_path, capsys):
    src = Path(__file__).parent / "data" / "checkpoint_npz_v1"
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    for f in src.iterdir():
        (run_dir / "best" / f.name).write_bytes(f.read_bytes())
    assert convert_main(run_dir, tmp_path / "m.safetensors") == 0
    assert f"Using {run_dir / 'best'}" in capsys.readouterr().err


def assert_refused(capsys, tmp_path, args, *fragments):
    """One ``error:`` line, exit 2, and nothing new in tmp_path (no DEST, no temporary file)."""
    before = set(tmp_path.rglob("*"))
    capsys.readouterr()
    code = convert_main(*args)
    err = capsys.readouterr().err

    class Result:
        returncode, stderr = code, err

    assert_user_error(Result, *fragments)
    assert set(tmp_path.rglob("*")) == before


def test_conversion_errors(dataset, tmp_path, capsys):
    num_in, num_out = len(dataset.input_vocab), len(dataset.target_vocab)
    checkpoint = save_checkpoint(tmp_path / "ck", random_model(dataset))

    def keras_file(name, **changes):
        path = tmp_path / name
        example_keras_model(num_in, num_out, **changes).save(path)
        return path

    good = keras_file("good.keras")
    refuse = lambda *args: assert_refused(capsys, tmp_path, args[:-1], *args[-1])  # noqa: E731
    refuse(keras_file("gru.keras", decoder_layer=keras.layers.GRU), tmp_path / "a", "--data", TINY,
           ["not the Keras example's architecture", "GRU"])
    refuse(keras_file("relu.keras", dense_activation="relu"), tmp_path / "a", "--data", TINY,
           ["Dense layer has activation='relu'"])
    refuse(keras_file("swapped.keras", swap_state=True), tmp_path / "a", "--data", TINY,
           ["does not start from the encoder LSTM's final state"])
    refuse(good, tmp_path / "a", ["vocabularies of the 10,000 pairs of the built-in data", "--data"])
    refuse(good, tmp_path / "a", "--data", TINY, "--num-samples", 3, ["the model reads 36 and predicts 41"])
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    refuse(garbage, tmp_path / "a", "--data", TINY, ["cannot read the Keras model", "garbage.keras"])
    refuse(tmp_path / "absent.keras", tmp_path / "a", ["absent.keras not found"])
    refuse(good, checkpoint, "--data", TINY, ["already exists"])
    refuse(good, tmp_path / "a.safetensors", "--data", TINY, ["new checkpoint directory"])
    refuse(checkpoint, tmp_path / "model.pt", ["ends in .keras", "--to onnx", "model.pt"])
    refuse(checkpoint, tmp_path / "m.keras", "--data", TINY, ["--data and --num-samples are for a Keras SRC"])
    refuse(checkpoint, tmp_path / "nowhere" / "m.keras", ["is not a directory"])
    refuse(tmp_path / "ck" / "config.json", tmp_path / "m.keras", ["neither a Keras model"])


def test_minilstm_command_dispatches(tmp_path):
    """The console script where it is installed (beside this Python), else ``python -m minilstm``: the same code."""
    script = Path(sys.executable).with_name("minilstm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "minilstm"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    old = Path(__file__).parent / "data" / "checkpoint_npz_v1"
    result = subprocess.run([*command, "translate", old, "--backend", "numpy", "Go."], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout == "a               \n", result.stderr
    listed = subprocess.run([*command, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and all(name in listed.stdout for name in
                                          ("train", "translate", "evaluate", "convert", "download"))
    unknown = subprocess.run([*command, "fly"], env=env, capture_output=True, text=True, timeout=60)
    assert_user_error(unknown, "unknown command 'fly'")
