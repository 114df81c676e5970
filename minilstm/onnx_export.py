"""A checkpoint as ONNX files that onnxruntime (or any ONNX runtime) runs without minilstm.

``python -m minilstm.convert RUN_OR_CHECKPOINT OUT_DIR --to onnx`` (or an OUT_DIR ending in ``.onnx``) writes:

- ``encoder.onnx``: ``source_ids`` int64 (batch, source_len) [and ``source_lengths`` int64 (batch,), attention
  models] -> the decoder's starting state, batch-major so that a program can keep or drop rows with one index:
  ``h``, ``c`` (batch, decoder layers, units): the encoder's final states of every layer and direction, arranged as
  the decoder starts from them (decoder layer l from encoder layer max(0, N - M + l), a bidirectional layer's
  forward and backward halves side by side); attention models add ``memory`` (batch, source_len, M) (the top
  layer's outputs), ``keys`` (batch, source_len, K) (what the scores read: the memory itself for ``dot``, the
  memory times the score or key kernel otherwise, computed once per sentence), ``mask`` bool (batch, source_len)
  (the sentence's real characters) and, with input feeding, ``feed`` (batch, units) (zeros: htilde_0).
- ``decoder_step.onnx``: ``prev_ids`` int64 (batch,) and every output of the encoder, by the same names -> ``logits``
  (batch, target vocabulary), the next state as ``h_out``, ``c_out`` [, ``feed_out``], and, with attention,
  ``attention`` (batch, source_len): this step's weights.
- ``vocab.json``: both vocabularies (their tokens in id order) and the decoding settings (the ids of START and END,
  the padding token and the length to pad to, the longest output), and how a text becomes tokens and back
  (``units``: ``char``; ``word``, with the pattern of a word; or ``sentencepiece:N``): with it a program needs
  nothing of minilstm (docs/guide/convert.md).
- ``input_units.model``, ``target_units.model``: a model of SentencePiece pieces' two SentencePiece models, which
  the ``sentencepiece`` library loads to split a text into pieces and join pieces back.

The layers are ONNX's own operators (opset 17): the standard ``LSTM`` (``layout`` 0, time-major: onnxruntime
refuses 1), a ``Gather`` from an identity matrix for the one-hot characters (from the embedding table, a model
with ``--embedding-dim``: the LSTM then reads its rows), ``MatMul``/``Add`` for Dense and the
attention, ``Softmax`` for the attention weights with padding set to -inf first (so its weight is exactly 0, as
ours). ONNX's LSTM orders its gates i, o, f, c where Keras's are i, f, c, o, keeps weights as (4H, in) and has
two biases: ``W`` = the kernel's gate blocks reordered and transposed, ``R`` likewise, ``B`` = [our bias, zeros].

Float32 only: onnxruntime's LSTM does not run float64 ("LSTM operator does not support double yet"), so a
float64 model is refused in one line rather than written as files no runtime here can run.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .checkpoint import UNITS_FILES
from .errors import MinilstmError
from .files import describe_os_error
from .units import SPACE, UNKNOWN, WORD_PATTERN
from .vocab import END, PAD, START

OPSET = 17
# ONNX gate k is Keras gate KERAS_GATE[k]: ONNX orders i, o, f, c; Keras i, f, c, o.
KERAS_GATE = (0, 3, 1, 2)


def import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise MinilstmError(f"the ONNX export needs the onnx package ({e}): pip install 'minilstm[onnx]'") from None
    return onnx


def check_exportable(model):
    """Raise one line naming what the exporter cannot write (nothing to say: return)."""
    if model.dtype != np.float32:
        raise MinilstmError(f"this model is {model.dtype}: the ONNX export writes float32 models only (onnxruntime's "
                            "LSTM operator does not run float64); train with --dtype float32 to export it")


def _onnx_gates(matrix, units: int):
    """The last axis's four gate blocks from Keras's order (i, f, c, o) to ONNX's (i, o, f, c)."""
    return np.concatenate([matrix[..., g * units : (g + 1) * units] for g in KERAS_GATE], axis=-1)


class _Graph:
    """Nodes, initializers and unique names for one ONNX graph."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint: str = "const") -> str:
        name = self.name(hint)
        value = np.asarray(value)
        if value.dtype.kind in "iu":  # shapes, axes and indices: int64 is what ONNX wants, whatever numpy's default
            value = value.astype(np.int64)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs, outputs=1, hint: str | None = None, **attributes):
        """Add a node; returns its output name (or names, for ``outputs`` > 1 or a list of names)."""
        names = outputs if isinstance(outputs, list) else [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if len(names) == 1 else names

    def lstm(self, x, weights: list, units: int, h0=None, c0=None):
        """ONNX LSTM over x (T, B, D) for one layer; ``weights``: (kernel, recurrent_kernel, bias) per direction.
        Returns (Y (T, directions, B, H), Y_h (directions, B, H), Y_c)."""
        w = np.stack([_onnx_gates(kernel, units).T for kernel, _, _ in weights]).astype(np.float32)
        r = np.stack([_onnx_gates(recurrent, units).T for _, recurrent, _ in weights]).astype(np.float32)
        b = np.stack([np.concatenate([_onnx_gates(bias, units), np.zeros(4 * units)]) for _, _, bias in weights])
        inputs = [x, self.const(w, "W"), self.const(r, "R"), self.const(b.astype(np.float32), "B"), ""]
        if h0 is not None:
            inputs += [h0, c0]
        return self.op("LSTM", inputs, 3, hint="lstm", hidden_size=units,
                       direction="bidirectional" if len(weights) == 2 else "forward")

    def model(self, name: str, inputs: list, outputs: list, doc: str):
        graph = self.helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       producer_name="minilstm", doc_string=doc)
        model.ir_version = 8  # opset 17's; onnxruntime reads it
        return model


def _tensor(onnx, name, elem, shape):
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def _cells(lstm, weights):
    """Per layer, the (kernel, recurrent_kernel, bias) of each direction."""
    return [[(weights[f"{lstm.cell_name(layer, d)}.kernel"], weights[f"{lstm.cell_name(layer, d)}.recurrent_kernel"],
              weights[f"{lstm.cell_name(layer, d)}.bias"]) for d in range(lstm.directions)]
            for layer in range(lstm.num_layers)]


def _token_table(model, weights, side: str):
    """What the characters' ``Gather`` reads, and its name: the side's embedding table, or an identity matrix (the
    one-hot characters)."""
    name = f"{side}_embedding.embeddings"
    if name in weights:
        return weights[name].astype(np.float32), f"{side}_embedding"
    vocab = model.input_vocab if side == "encoder" else model.target_vocab
    return np.eye(len(vocab), dtype=np.float32), "onehot"


def encoder_model(model, onnx):
    g = _Graph(onnx)
    enc, weights, float_ = model.encoder, model.get_weights(), onnx.TensorProto.FLOAT
    units, directions = enc.units, enc.directions
    ids_t = g.op("Transpose", ["source_ids"], perm=[1, 0])  # (S, B): the LSTM operator is time-major
    x = g.op("Gather", [g.const(*_token_table(model, weights, "encoder")), ids_t])  # (S, B, V or E)
    finals = []
    y = None
    cells = _cells(enc, weights)
    for layer, layer_weights in enumerate(cells):
        y, y_h, y_c = g.lstm(x, layer_weights, units)
        finals.append((y_h, y_c))
        if layer + 1 < len(cells):
            # (S, directions, B, H) -> (S, B, directions * H): the next layer's input, directions side by side
            x = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]), g.const(np.array([0, 0, -1]))])
    h_parts, c_parts = [], []
    for layer in range(model.decoder.num_layers):
        y_h, y_c = finals[model._encoder_layer_of(layer)]
        for state, parts in ((y_h, h_parts), (y_c, c_parts)):  # (directions, B, H) -> (B, 1, directions * H)
            parts.append(g.op("Reshape", [g.op("Transpose", [state], perm=[1, 0, 2]),
                                          g.const(np.array([0, 1, directions * units]))]))
    decoder_units = model.decoder_units
    outputs = [_tensor(onnx, "h", float_, ["batch", model.decoder.num_layers, decoder_units]),
               _tensor(onnx, "c", float_, ["batch", model.decoder.num_layers, decoder_units])]
    g.op("Concat", h_parts, ["h"], axis=1)
    g.op("Concat", c_parts, ["c"], axis=1)
    inputs = [_tensor(onnx, "source_ids", onnx.TensorProto.INT64, ["batch", "source_len"])]
    if model.attention is not None:
        inputs.append(_tensor(onnx, "source_lengths", onnx.TensorProto.INT64, ["batch"]))
        memory_size = enc.output_size
        # the top layer's Y (S, directions, B, H) -> (B, S, directions * H)
        g.op("Reshape", [g.op("Transpose", [y], perm=[2, 0, 1, 3]), g.const(np.array([0, 0, -1]))], ["memory"])
        attention = {key.split(".", 1)[1]: value for key, value in weights.items() if key.startswith("attention.")}
        if model.attention == "dot":
            g.op("Identity", ["memory"], ["keys"])
            key_size = memory_size
        else:
            kernel = attention["score_kernel" if model.attention == "general" else "key_kernel"]
            g.op("MatMul", ["memory", g.const(kernel.astype(np.float32), "key_kernel")], ["keys"])
            key_size = kernel.shape[1]
        positions = g.op("Range", [g.const(np.array(0)), g.op("Gather", [g.op("Shape", ["source_ids"]),
                                                                          g.const(np.array(1))]),
                                   g.const(np.array(1))])
        g.op("Less", [g.op("Unsqueeze", [positions, g.const(np.array([0]))]),
                      g.op("Unsqueeze", ["source_lengths", g.const(np.array([1]))])], ["mask"])
        outputs += [_tensor(onnx, "memory", float_, ["batch", "source_len", memory_size]),
                    _tensor(onnx, "keys", float_, ["batch", "source_len", key_size]),
                    _tensor(onnx, "mask", onnx.TensorProto.BOOL, ["batch", "source_len"])]
        if model.input_feed:
            # zeros (B, units): a row of the one-step-ahead state, sized from the batch
            batch = g.op("Gather", [g.op("Shape", ["source_ids"]), g.const(np.array([0]))])
            g.op("ConstantOfShape", [g.op("Concat", [batch, g.const(np.array([decoder_units]))], axis=0)], ["feed"],
                 value=onnx.numpy_helper.from_array(np.zeros(1, dtype=np.float32)))
            outputs.append(_tensor(onnx, "feed", float_, ["batch", decoder_units]))
    return g.model("minilstm_encoder", inputs, outputs,
                   "minilstm encoder: source ids -> the decoder's initial state (see vocab.json)")


def decoder_model(model, onnx):
    g = _Graph(onnx)
    weights, float_ = model.get_weights(), onnx.TensorProto.FLOAT
    layers, units = model.decoder.num_layers, model.decoder_units
    vocab = len(model.target_vocab)
    state_shape = ["batch", layers, units]
    inputs = [_tensor(onnx, "prev_ids", onnx.TensorProto.INT64, ["batch"]), _tensor(onnx, "h", float_, state_shape),
              _tensor(onnx, "c", float_, state_shape)]
    # (B, L, H) -> L states (1, B, H), the LSTM operator's initial_h / initial_c of each layer
    states = {}
    for name in ("h", "c"):
        time_major = g.op("Transpose", [name], perm=[1, 0, 2])
        states[name] = [time_major] if layers == 1 else \
            g.op("Split", [time_major, g.const(np.ones(layers, dtype=np.int64))], layers, axis=0)
    x = g.op("Gather", [g.const(*_token_table(model, weights, "decoder")), "prev_ids"])  # (B, V or E)
    if model.input_feed:
        inputs.append(_tensor(onnx, "feed", float_, ["batch", units]))
        x = g.op("Concat", [x, "feed"], axis=1)  # [onehot(y_{t-1}) or its row, htilde_{t-1}]: kernel rows V + H
    x = g.op("Unsqueeze", [x, g.const(np.array([0]))])  # (1, B, D): one time step
    h_out, c_out = [], []
    top = None
    for layer, layer_weights in enumerate(_cells(model.decoder, weights)):
        y, y_h, y_c = g.lstm(x, layer_weights, units, states["h"][layer], states["c"][layer])
        h_out.append(y_h)
        c_out.append(y_c)
        if layer + 1 < layers:
            x = g.op("Squeeze", [y, g.const(np.array([1]))])  # (1, B, H): the next layer's input
        top = y_h
    g.op("Transpose", [g.op("Concat", h_out, axis=0)], ["h_out"], perm=[1, 0, 2])
    g.op("Transpose", [g.op("Concat", c_out, axis=0)], ["c_out"], perm=[1, 0, 2])
    top = g.op("Squeeze", [top, g.const(np.array([0]))])  # (B, H)
    outputs = [_tensor(onnx, "logits", float_, ["batch", vocab]), _tensor(onnx, "h_out", float_, state_shape),
               _tensor(onnx, "c_out", float_, state_shape)]
    if model.attention is not None:
        top = _attention(g, model, weights, top, inputs, outputs, onnx)
    logits = g.op("MatMul", [top, g.const(weights["dense.kernel"].astype(np.float32), "dense_kernel")])
    g.op("Add", [logits, g.const(weights["dense.bias"].astype(np.float32), "dense_bias")], ["logits"])
    return g.model("minilstm_decoder_step", inputs, outputs,
                   "minilstm decoder, one step: previous ids and state -> logits and the next state (see vocab.json)")


def _attention(g, model, weights, query, inputs, outputs, onnx):
    """Luong attention of ``query`` (B, H) over the memory (minilstm/attention.py's math); returns htilde (B, H)
    and adds the memory's inputs, ``feed_out`` and ``attention`` to the graph's."""
    float_ = onnx.TensorProto.FLOAT
    memory_size, units = model.encoder.output_size, model.decoder_units
    w = {key.split(".", 1)[1]: value.astype(np.float32) for key, value in weights.items()
         if key.startswith("attention.")}
    key_size = units
    inputs += [_tensor(onnx, "memory", float_, ["batch", "source_len", memory_size]),
               _tensor(onnx, "keys", float_, ["batch", "source_len", key_size]),
               _tensor(onnx, "mask", onnx.TensorProto.BOOL, ["batch", "source_len"])]
    if model.attention == "concat":  # v . tanh(h W_q + b_q + keys_s)
        q = g.op("Add", [g.op("MatMul", [query, g.const(w["query_kernel"], "query_kernel")]),
                         g.const(w["query_bias"], "query_bias")])
        hidden = g.op("Tanh", [g.op("Add", ["keys", g.op("Unsqueeze", [q, g.const(np.array([1]))])])])
        scores = g.op("MatMul", [hidden, g.const(w["score_vector"], "score_vector")])  # (B, S)
    else:  # h . keys_s
        scores = g.op("Squeeze", [g.op("MatMul", ["keys", g.op("Unsqueeze", [query, g.const(np.array([2]))])]),
                                  g.const(np.array([2]))])
    scores = g.op("Where", ["mask", scores, g.const(np.array(-np.inf, dtype=np.float32), "minus_inf")])
    g.op("Softmax", [scores], ["attention"], axis=-1)
    context = g.op("Squeeze", [g.op("MatMul", [g.op("Unsqueeze", ["attention", g.const(np.array([1]))]), "memory"]),
                               g.const(np.array([1]))])  # (B, M)
    htilde = g.op("Tanh", [g.op("MatMul", [g.op("Concat", [context, query], axis=1),
                                           g.const(w["output_kernel"], "output_kernel")])])
    if model.input_feed:
        g.op("Identity", [htilde], ["feed_out"])
        outputs.append(_tensor(onnx, "feed_out", float_, ["batch", units]))
    outputs.append(_tensor(onnx, "attention", float_, ["batch", "source_len"]))
    return htilde


def vocab_and_settings(model) -> dict:
    """What a program needs besides the two graphs: tokens, special ids, padding, the length limit, the units."""
    units = model.input_vocab.units.name
    return {
        "units": units,
        **({"word_pattern": WORD_PATTERN, "space_mark": SPACE, "unknown": UNKNOWN} if units == "word" else {}),
        "input_vocab": model.input_vocab.tokens,
        "target_vocab": model.target_vocab.tokens,
        "start_id": model.target_vocab.index[START],
        "end_id": model.target_vocab.index[END],
        "pad_char": PAD,
        # inputs are padded with pad_char to max(pad_to, their own length); sentences of one padded length decode
        # together (minilstm translate does the same): a model trained with --mask-padding pads nothing
        "pad_to": 0 if model.arch.mask_padding else model.max_encoder_len,
        "max_steps": model.max_decoder_len + 1,  # decoding stops at END or after this many tokens
        "attention": model.arch.attention,
        "input_feed": model.arch.input_feed,
        # the encoder's outputs, which decoder_step reads by the same names; those of them that every step
        # changes come back from it as NAME_out
        "state_names": ["h", "c", *(["memory", "keys", "mask"] if model.attention else []),
                        *(["feed"] if model.input_feed else [])],
        "step_state_names": ["h", "c", *(["feed"] if model.input_feed else [])],
    }


def export_onnx(model, dest: Path):
    """Write the directory ``dest`` (module doc), all or nothing: built beside it, checked, then renamed."""
    onnx = import_onnx()
    check_exportable(model)
    files = {"encoder.onnx": encoder_model(model, onnx), "decoder_step.onnx": decoder_model(model, onnx)}
    for name, proto in files.items():
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:  # a bug of ours, not the user's: say so plainly
            raise RuntimeError(f"minilstm wrote an invalid {name}: {str(e).splitlines()[0]}") from e
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir()
        for name, proto in files.items():
            (tmp / name).write_bytes(proto.SerializeToString())
        for side, units_model in model.units_models().items():
            (tmp / UNITS_FILES[side]).write_bytes(units_model)
        (tmp / "vocab.json").write_text(json.dumps(vocab_and_settings(model), ensure_ascii=False, indent=1) + "\n",
                                        encoding="utf-8")
        os.replace(tmp, dest)
    except OSError as e:
        raise MinilstmError(f"cannot write the ONNX files {dest}: {describe_os_error(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
