"""``python -m minilstm.convert SRC DEST``: models to and from Keras and PyTorch; the paths tell the direction.

- SRC a Keras model (``.keras`` of Keras 3, or a legacy ``.h5``) built as the Keras example is, DEST a new checkpoint
  directory. The example builds its vocabularies from its data and the model does not keep them, so ``--data`` and
  ``--num-samples`` name the pairs it was trained on (default: the built-in first 10,000, the example's).
- SRC a checkpoint (or a run directory: its best/), DEST ending in ``.keras`` (or ``.h5``): a Keras model of the
  example's architecture with our weights, for ``keras.saving.load_model``.
- SRC a checkpoint, DEST ending in ``.safetensors``: a PyTorch state dict for two ``nn.LSTM`` and an ``nn.Linear``,
  with the hyper-parameters and vocabularies in its metadata; stacked and bidirectional models use ``nn.LSTM``'s
  names (``weight_ih_l1_reverse``), and attention models add OpenNMT-py's ``GlobalAttention`` names (below).
- SRC a checkpoint, DEST a new directory and ``--to onnx`` (or DEST ending in ``.onnx``): ``encoder.onnx``,
  ``decoder_step.onnx`` and ``vocab.json``, for onnxruntime or any ONNX runtime (every architecture; float32;
  ``minilstm.onnx_export``).

Attention in the state dict (OpenNMT-py's names, ``nn.Linear`` weights as (out, in)): ``attention.linear_out.weight``
= output_kernel^T (htilde = tanh(linear_out([c, h])), no bias, for every score); general:
``attention.linear_in.weight`` = score_kernel (score = linear_in(h) . hbar); concat (OpenNMT's "mlp"):
``attention.linear_query.weight`` = query_kernel^T, ``attention.linear_query.bias`` = query_bias,
``attention.linear_context.weight`` = key_kernel^T, ``attention.v.weight`` = score_vector as (1, A). With input
feeding the decoder's layer-0 input is [onehot(y_{t-1}), htilde_{t-1}] (``weight_ih_l0`` has V + H columns), so it runs
one step at a time: one ``nn.LSTMCell`` per layer with ``weight_ih``/``weight_hh``/``bias_ih`` = the layer's.
With ``--embedding-dim`` E the state dict adds ``encoder_embedding.weight`` and ``decoder_embedding.weight`` for
``nn.Embedding(V, E)`` (the LSTMs' input size is then E); the Keras export refuses such a model (one line).

Our weights are already in Keras's layout and names (kernel (V, 4H), recurrent_kernel (H, 4H), bias (4H), gates i,
f, c, o), so Keras conversion copies tensors. PyTorch's ``nn.LSTM`` has the same gate order (i, f, g, o), keeps
weights transposed, and adds two biases: ours goes into ``bias_ih`` and ``bias_hh`` is zero.

Keras is needed only here (``pip install ".[keras]"``) and runs on its torch backend unless KERAS_BACKEND says
otherwise (``pip install torch==2.13.0`` for the CPU build).
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy

from .architecture import DTYPES
from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .cli import positive_int, run_main
from .data import Dataset
from .errors import MinilstmError
from .files import describe_os_error, write_bytes_atomic
from .pairs import resolve_pairs
from .seq2seq import Seq2Seq

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIX = ".safetensors"
ONNX_SUFFIX = ".onnx"
EXAMPLE = ("the Keras example's model: Input(None, V_in) -> LSTM(H, return_state=True); Input(None, V_out) -> "
           "LSTM(H, return_sequences=True, initial_state=the encoder's h and c) -> Dense(V_out, softmax)")


def import_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # our tests and the [keras] extra assume torch
    try:
        import keras
    except ImportError as e:
        raise MinilstmError(f"converting Keras models needs keras and a backend for it ({e}): pip install "
                            "'minilstm[keras]' torch==2.13.0") from None
    return keras


# -- Keras -> minilstm -------------------------------------------------------------------------------------------


def _differs(what: str) -> MinilstmError:
    return MinilstmError(f"not the Keras example's architecture: {what} (expected {EXAMPLE})")


def _inbound(layer_config: dict, kind: str) -> tuple[list, list]:
    """The layers (name, node, tensor) a layer reads as its inputs and as its initial state, from a functional
    model's config. A layer called more than once is not the example's."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise _differs(f"its {kind} layer {layer_config['name']!r} is called {len(nodes)} times")
    history = [arg["config"]["keras_history"] for arg in nodes[0]["args"]
               if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__"]
    states = nodes[0].get("kwargs", {}).get("initial_state") or []
    return [tuple(h) for h in history], [tuple(s["config"]["keras_history"]) for s in states]


def example_layers(model):
    """The encoder LSTM, decoder LSTM and Dense layer of a model built as the Keras example, or one error naming
    the first thing that differs: the layers, how they are connected, or a setting that changes the math."""
    config = model.get_config()
    if not isinstance(config, dict) or "input_layers" not in config or "layers" not in config:
        raise _differs(f"it is a {type(model).__name__}, not a functional model with two inputs")
    layers = config["layers"]
    kinds = [layer["class_name"] for layer in layers if layer["class_name"] != "InputLayer"]
    if sorted(kinds) != ["Dense", "LSTM", "LSTM"]:
        raise _differs(f"its layers besides the inputs are {', '.join(kinds)}, the example's are LSTM, LSTM, Dense")
    inputs = [entry[0] for entry in config["input_layers"]]
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
    if len(inputs) != 2 or len(outputs) != 1:
        raise _differs(f"it has {len(inputs)} inputs and {len(outputs)} outputs, the example 2 (English and French "
                       "one-hot sequences) and 1")
    lstms = [layer for layer in layers if layer["class_name"] == "LSTM"]
    dense = next(layer for layer in layers if layer["class_name"] == "Dense")
    reads = {layer["name"]: _inbound(layer, layer["class_name"]) for layer in [*lstms, dense]}
    encoder = next((layer for layer in lstms if reads[layer["name"]][0] == [(inputs[0], 0, 0)]), None)
    decoder = next((layer for layer in lstms if reads[layer["name"]][0] == [(inputs[1], 0, 0)]), None)
    if encoder is None or decoder is None:
        raise _differs("its first input (English) and second input (French) do not each feed one LSTM directly")
    encoder_name = encoder["name"]
    if reads[decoder["name"]][1] != [(encoder_name, 0, 1), (encoder_name, 0, 2)]:
        raise _differs("the decoder LSTM does not start from the encoder LSTM's final state (h, c)")
    if reads[encoder_name][1]:
        raise _differs("the encoder LSTM has an initial state; the example's starts from zeros")
    if reads[dense["name"]][0] != [(decoder["name"], 0, 0)] or outputs[0][0] != dense["name"]:
        raise _differs("the Dense layer does not read the decoder LSTM's outputs, or is not the model's output")
    by_name = {layer.name: layer for layer in model.layers}
    enc, dec, out = by_name[encoder_name], by_name[decoder["name"]], by_name[dense["name"]]
    for role, layer in (("encoder", enc), ("decoder", dec)):
        settings = layer.get_config()
        wanted = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "go_backwards": False,
                  "stateful": False}
        if role == "decoder":
            wanted["return_sequences"] = True
        for key, value in wanted.items():
            if settings.get(key) != value:
                raise _differs(f"its {role} LSTM has {key}={settings.get(key)!r}, the example's {value!r}")
    if enc.units != dec.units:
        raise _differs(f"its encoder has {enc.units} units and its decoder {dec.units}; they must be equal")
    settings = out.get_config()
    if settings.get("activation") != "softmax" or not settings.get("use_bias"):
        raise _differs(f"its Dense layer has activation={settings.get('activation')!r}, "
                       f"use_bias={settings.get('use_bias')!r}, the example's 'softmax', True")
    return enc, dec, out


def _keras_dtype(weights: list) -> str:
    dtype = str(np.asarray(weights[0]).dtype)
    return dtype if dtype in DTYPES else "float32"


def keras_to_checkpoint(src: Path, dest: Path, data, num_samples):
    keras = import_keras()
    try:
        keras_model = keras.saving.load_model(src, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for a file it cannot read; all mean the same
        raise MinilstmError(f"cannot read the Keras model {src}: {type(e).__name__}: {str(e).splitlines()[0]}") \
            from None
    encoder, decoder, dense = example_layers(keras_model)
    enc_w, dec_w, dense_w = (layer.get_weights() for layer in (encoder, decoder, dense))
    num_in, num_out = enc_w[0].shape[0], dec_w[0].shape[0]
    if dense_w[0].shape[1] != num_out:
        raise _differs(f"its Dense layer has {dense_w[0].shape[1]} units but the decoder reads {num_out}-wide "
                       "one-hot characters; the example predicts the decoder's own characters")
    pairs = resolve_pairs(data, num_samples)
    dataset = Dataset.from_pairs(pairs)
    if (len(dataset.input_vocab), len(dataset.target_vocab)) != (num_in, num_out):
        raise MinilstmError(f"the vocabularies of the {len(pairs):,} pairs of {data or 'the built-in data'} have "
                            f"{len(dataset.input_vocab)} input and {len(dataset.target_vocab)} output characters, the "
                            f"model reads {num_in} and predicts {num_out}: pass the --data and --num-samples it was "
                            "trained on")
    model = Seq2Seq("numpy", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=encoder.units, dtype=_keras_dtype(enc_w))
    model.set_weights({"encoder.kernel": enc_w[0], "encoder.recurrent_kernel": enc_w[1], "encoder.bias": enc_w[2],
                       "decoder.kernel": dec_w[0], "decoder.recurrent_kernel": dec_w[1], "decoder.bias": dec_w[2],
                       "dense.kernel": dense_w[0], "dense.bias": dense_w[1]})
    _check_same_predictions(keras, keras_model, model, dataset)
    source = {"keras_model": str(src), "data": None if data is None else str(data), "num_samples": num_samples}
    save_checkpoint(dest, model, None, {"converted_from": source})
    return model


def keras_probabilities(keras, keras_model, encoder_input_ids, decoder_input_ids, num_in: int, num_out: int):
    """The Keras model's teacher-forced softmax outputs (B, T, V) for batches of ids, fed one-hot as it was."""
    onehot_in = np.eye(num_in, dtype="float32")[encoder_input_ids]
    onehot_out = np.eye(num_out, dtype="float32")[decoder_input_ids]
    return keras.ops.convert_to_numpy(keras_model([onehot_in, onehot_out], training=False))


def _check_same_predictions(keras, keras_model, model: Seq2Seq, dataset: Dataset, rows: int = 16):
    """The converted model must predict what the Keras model predicts, on the first pairs: a safety net for any
    difference the architecture check does not name."""
    enc, dec = dataset.encoder_input_ids[:rows], dataset.decoder_input_ids[:rows]
    expected = keras_probabilities(keras, keras_model, enc, dec, len(model.input_vocab), len(model.target_vocab))
    logits = model.teacher_forced_logits(enc, dec).astype(np.float64)
    ours = np.exp(logits - logits.max(axis=2, keepdims=True))
    ours /= ours.sum(axis=2, keepdims=True)
    difference = float(np.abs(ours - expected).max())
    if not difference < 1e-4:
        raise _differs(f"converted, it predicts other probabilities than the Keras model (by up to {difference:.3g})")


# -- minilstm -> Keras, PyTorch ----------------------------------------------------------------------------------


def build_keras_model(keras, model: Seq2Seq):
    """The Keras example's training model, with ``model``'s sizes and weights."""
    dtype, units = str(model.dtype), model.latent_dim
    num_in, num_out = len(model.input_vocab), len(model.target_vocab)
    encoder_inputs = keras.Input(shape=(None, num_in), dtype=dtype, name="encoder_inputs")
    encoder = keras.layers.LSTM(units, return_state=True, dtype=dtype, name="encoder")
    _, state_h, state_c = encoder(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, num_out), dtype=dtype, name="decoder_inputs")
    decoder = keras.layers.LSTM(units, return_sequences=True, return_state=True, dtype=dtype, name="decoder")
    decoder_outputs, _, _ = decoder(decoder_inputs, initial_state=[state_h, state_c])
    dense = keras.layers.Dense(num_out, activation="softmax", dtype=dtype, name="dense")
    keras_model = keras.Model([encoder_inputs, decoder_inputs], dense(decoder_outputs), name="seq2seq")
    w = model.get_weights()
    for name, layer in (("encoder", encoder), ("decoder", decoder)):
        layer.set_weights([w[f"{name}.kernel"], w[f"{name}.recurrent_kernel"], w[f"{name}.bias"]])
    dense.set_weights([w["dense.kernel"], w["dense.bias"]])
    return keras_model


def checkpoint_to_keras(model: Seq2Seq, dest: Path):
    keras = import_keras()
    keras_model = build_keras_model(keras, model)
    tmp = dest.with_name(f".{dest.stem}.tmp-{os.getpid()}{dest.suffix}")  # Keras wants the suffix
    try:
        keras_model.save(tmp)
        os.replace(tmp, dest)
    except OSError as e:
        raise MinilstmError(f"cannot write the Keras model {dest}: {describe_os_error(e)}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


# Our attention weights -> (OpenNMT-py's name, transposed?) (module doc).
TORCH_ATTENTION_NAMES = {"output_kernel": ("linear_out.weight", True), "score_kernel": ("linear_in.weight", False),
                         "query_kernel": ("linear_query.weight", True), "query_bias": ("linear_query.bias", False),
                         "key_kernel": ("linear_context.weight", True), "score_vector": ("v.weight", False)}


def torch_state_dict(model: Seq2Seq) -> dict[str, np.ndarray]:
    """``encoder.*``/``decoder.*`` for ``nn.LSTM(V, H, num_layers, bidirectional, batch_first=True)``, ``dense.*``
    for ``nn.Linear(H, V)``, and ``attention.*`` (module doc) for a model with attention."""
    w = model.get_weights()
    state = {}
    for lstm in (model.encoder, model.decoder):
        for layer, direction, cell in lstm.cells():
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            state[f"{lstm.name}.weight_ih{suffix}"] = w[f"{cell}.kernel"].T
            state[f"{lstm.name}.weight_hh{suffix}"] = w[f"{cell}.recurrent_kernel"].T
            state[f"{lstm.name}.bias_ih{suffix}"] = w[f"{cell}.bias"]
            state[f"{lstm.name}.bias_hh{suffix}"] = np.zeros_like(w[f"{cell}.bias"])
    for side in ("encoder", "decoder"):  # nn.Embedding(V, E): the same layout as ours
        if f"{side}_embedding.embeddings" in w:
            state[f"{side}_embedding.weight"] = w[f"{side}_embedding.embeddings"]
    for key, value in w.items():
        if key.startswith("attention."):
            name, transpose = TORCH_ATTENTION_NAMES[key.split(".", 1)[1]]
            state[f"attention.{name}"] = value.T if transpose else (value[None] if name == "v.weight" else value)
    state["dense.weight"] = w["dense.kernel"].T
    state["dense.bias"] = w["dense.bias"]
    return {name: np.ascontiguousarray(value) for name, value in state.items()}


def torch_metadata(model: Seq2Seq) -> dict[str, str]:
    """Everything needed to rebuild and use the modules; safetensors metadata is strings only."""
    return {
        "format": "pt",
        "architecture": "minilstm seq2seq: encoder nn.LSTM(num_encoder_tokens, latent_dim, batch_first=True) over "
                        "one-hot English characters; decoder nn.LSTM(num_decoder_tokens, latent_dim, "
                        "batch_first=True) from the encoder's final (h, c); dense nn.Linear(latent_dim, "
                        "num_decoder_tokens), softmax",
        "latent_dim": str(model.arch.latent_dim),
        "num_encoder_tokens": str(len(model.input_vocab)),
        "num_decoder_tokens": str(len(model.target_vocab)),
        "max_encoder_seq_length": str(model.max_encoder_len),
        "max_decoder_seq_length": str(model.max_decoder_len),
        "dtype": model.arch.dtype,
        "mask_padding": json.dumps(model.arch.mask_padding),
        "input_vocab": json.dumps(model.input_vocab.to_json(), ensure_ascii=False),
        "target_vocab": json.dumps(model.target_vocab.to_json(), ensure_ascii=False),
        **{key: json.dumps(value) for key, value in model.arch.beyond_example().items()},
    }


def checkpoint_to_torch(model: Seq2Seq, dest: Path):
    data = safetensors.numpy.save(torch_state_dict(model), metadata=torch_metadata(model))
    write_bytes_atomic(dest, data, "the PyTorch state dict")


# -- command line ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilstm.convert", description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="a .keras/.h5 Keras model, or a checkpoint or run directory")
    p.add_argument("dest", type=Path, help="a new checkpoint directory (from Keras), or a file ending in .keras or "
                   ".safetensors, or a new directory for the ONNX files (from a checkpoint)")
    p.add_argument("--to", choices=("onnx",), help="from a checkpoint: write ONNX files into the directory DEST "
                   "(the default for a DEST ending in .onnx)")
    p.add_argument("--data", type=Path, help="from Keras: the pairs the model was trained on (default: the "
                   "built-in first 10,000 pairs)")
    p.add_argument("--num-samples", type=positive_int, default=None, help="from Keras: the first N pairs of "
                   "--data (default: 10,000, the example's)")
    args = p.parse_args(argv)
    src, dest = args.src, args.dest
    if not src.exists():
        raise MinilstmError(f"{src} not found: pass a Keras model (.keras, .h5) or a checkpoint directory")
    if dest.exists():
        raise MinilstmError(f"{dest} already exists; convert to a new path (or remove it first)")
    if not dest.parent.is_dir():
        raise MinilstmError(f"{dest.parent} is not a directory; create it first")
    to_onnx = args.to == "onnx" or dest.suffix.lower() == ONNX_SUFFIX
    if src.is_file() and src.suffix.lower() in KERAS_SUFFIXES:
        if to_onnx:
            raise MinilstmError("the ONNX export reads a checkpoint; convert the Keras model to a checkpoint first")
        if dest.suffix.lower() in (*KERAS_SUFFIXES, TORCH_SUFFIX):
            raise MinilstmError(f"from a Keras model DEST is a new checkpoint directory, not a {dest.suffix} file")
        model = keras_to_checkpoint(src, dest, args.data, args.num_samples or 10_000)
        print(f"Wrote {dest}: latent {model.latent_dim}, {len(model.input_vocab)} input and "
              f"{len(model.target_vocab)} output characters; translate with: python -m minilstm.translate {dest}")
        return 0
    if src.is_file():
        raise MinilstmError(f"{src} is neither a Keras model (.keras, .h5) nor a checkpoint directory")
    if args.data is not None or args.num_samples is not None:
        raise MinilstmError("--data and --num-samples are for a Keras SRC; a checkpoint has its vocabularies")
    path, note = resolve_checkpoint(src)
    if note:
        print(note, file=sys.stderr)
    suffix = dest.suffix.lower()
    if not to_onnx and suffix not in (*KERAS_SUFFIXES, TORCH_SUFFIX):
        raise MinilstmError(f"from a checkpoint DEST ends in .keras (a Keras model) or .safetensors (a PyTorch "
                            f"state dict), or is a directory for ONNX files with --to onnx, not {dest.name!r}")
    if to_onnx and suffix in (*KERAS_SUFFIXES, TORCH_SUFFIX):
        raise MinilstmError(f"--to onnx writes a directory of ONNX files, not a {suffix} file: name DEST without it")
    model = load_checkpoint(path).model
    if to_onnx:
        from .onnx_export import export_onnx

        export_onnx(model, dest)
        units = " and the SentencePiece models" if model.units_models() else ""
        print(f"Wrote {dest}: encoder.onnx, decoder_step.onnx and vocab.json{units} (decode them with onnxruntime "
              "alone: docs/guide/convert.md)")
        return 0
    if suffix == TORCH_SUFFIX:
        checkpoint_to_torch(model, dest)
        print(f"Wrote {dest}: a PyTorch state dict for encoder/decoder nn.LSTM and dense nn.Linear"
              f"{' and attention' if model.attention else ''} (hyper-parameters and vocabularies in its metadata)")
        return 0
    if not model.input_vocab.is_chars:
        raise MinilstmError(f"{path} reads and writes {model.input_vocab.units.name} units, not characters: the Keras "
                            "example's model is a character model (the PyTorch export, to a .safetensors file, "
                            "takes the weights of every model)")
    if not model.arch.is_example():
        options = ", ".join(f"{k}={v}" for k, v in model.arch.beyond_example().items() if k != "input_feed")
        raise MinilstmError(f"{path} is not the Keras example's model ({options}); the Keras export writes that one "
                            "only (the PyTorch export, to a .safetensors file, takes every model)")
    else:
        checkpoint_to_keras(model, dest)
        print(f"Wrote {dest}: the Keras example's model with the weights of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
