"""The Keras example's model: encoder LSTM -> its final (h, c) -> decoder LSTM (teacher forcing) -> Dense -> softmax.

Batches come in as token ids, batch-major ``(B, T)`` like the Keras arrays; internally everything is time-major.
The loss is categorical cross-entropy averaged over every (sample, time step), padding included, and accuracy is
argmax equality over the same positions, exactly as the example's ``model.fit`` reports them.

With ``mask_padding`` (``--mask-padding``) a model is trained on real characters only: each batch holds English
sentences of one length (so the encoder reads no padding and each final state is the sentence's own), runs the
decoder only to its longest French sentence, and marks the targets after each sentence's END as IGNORE, which the
loss, the accuracy and the gradients skip. Such a model also translates without padding its input.

Beyond the example (``nn.LSTM``'s options): stacked encoder and decoder (``encoder_layers``, ``decoder_layers``),
a bidirectional encoder, and dropout between stacked layers. Decoder layer l starts from the final (h, c) of encoder
layer max(0, N - M + l) for N encoder and M decoder layers (layer to layer when N == M; the top layers aligned
otherwise). A bidirectional encoder hands over its forward and backward states concatenated, so the decoder has 2H
units (the common Keras recipe).

With ``embedding_dim`` E each stack reads its characters through a trained table (``nn.Embedding``, (V, E)) instead
of one-hot vectors: x_t = table[y_t], and layer 0's kernel is (E, 4H) (the decoder's (E + H, 4H) with input
feeding). Training gathers the rows of every step and multiplies them by the kernel in one GEMM; backward returns
d x = dz @ kernel^T and scatter-adds its rows into d table. Decoding folds the table into the kernel once per call
(``folded``): (table @ kernel)[y] = table[y] @ kernel, so the decoders run the one-hot model's code, compiled loops
included, with the folded (V, 4H) kernel gathered row by row.

Backward of the whole model (the LSTM part is in ``lstm`` and ``nn``):

    logits = Y @ W + b,  Y = decoder outputs (T*B, H)
    dW = Y^T @ dlogits      db = sum(dlogits)      dY = dlogits @ W^T
    decoder BPTT with d_outputs = dY             -> d(h0, c0) of each decoder layer, added into d(final h, c) of the
                                                    encoder layer it started from (split in halves when bidirectional)
    encoder BPTT with d_outputs = None, those final-state gradients -> d(initial state of the encoder)
    with embeddings: each stack's d inputs (T, B, E) scatter-added into its table's rows
"""

import copy
import dataclasses

import numpy as np

from . import decoding
from .architecture import Architecture
from .attention import AttentionDecoder
from .backends import get_backend
from .decoding import AttentionSteps, DecoderSteps, PlainSteps
from .encoding import run_encoder
from .nn import LSTM, Dense, Embedding, Parameters, dropout_key
from .params import FlatParameters, ParameterView
from .vocab import Vocab

# Below this many rows a shard is not worth a thread: smaller batches run as one shard. It was 32 while each time
# step called BLAS (whose fixed cost per call dominated small shards); with the compiled time loops a shard of 8 rows
# pays (measured: batch 16 at latent 512 took 1.35x PyTorch's step time on one shard, 0.96-1.06x on two).
MIN_SHARD_ROWS = 8


class Seq2Seq:
    """Weights in Keras's layout (``encoder.kernel`` etc.), views into one flat buffer; gradients likewise.

    Built from the data's vocabularies and sequence lengths and an ``Architecture`` (given whole, or as its fields:
    ``Seq2Seq(backend, vocab_in, vocab_out, 20, 30, latent_dim=64, attention="general")``)."""

    def __init__(self, backend, input_vocab: Vocab, target_vocab: Vocab, max_encoder_len: int, max_decoder_len: int,
                 architecture: Architecture | None = None, **options):
        if architecture is not None and options:
            raise TypeError("give an Architecture or its fields, not both")
        arch = architecture if architecture is not None else Architecture(**options)
        self.arch = arch  # the model's one description: config() stores it
        self.backend = get_backend(backend)
        self.input_vocab = input_vocab
        self.target_vocab = target_vocab
        self.max_encoder_len = max_encoder_len
        self.max_decoder_len = max_decoder_len
        self.encoder, self.decoder, self.attention_decoder = self._stacks(arch)
        self.encoder_embedding = self.decoder_embedding = None
        if arch.embedding_dim:
            self.encoder_embedding = Embedding(len(input_vocab), arch.embedding_dim, name="encoder_embedding")
            self.decoder_embedding = Embedding(len(target_vocab), arch.embedding_dim, name="decoder_embedding")
        decoder_layers = [self.decoder if self.attention_decoder is None else self.attention_decoder]
        self.dense = Dense(self.decoder.units, len(target_vocab), name="dense")
        layers_ = [self.encoder_embedding, self.encoder, self.decoder_embedding, *decoder_layers, self.dense]
        self.params = Parameters(self.backend, [layer for layer in layers_ if layer is not None], self.dtype)
        self.grads = self.params.grads
        self._shard_grads = []  # one gradient buffer per parallel shard (see forward_backward)
        self._workspaces = {}  # shard -> {layer name: lstm.Workspace}: big arrays reused from batch to batch
        self.d_initial_state = None  # (dh0, dc0) of the encoder after the last loss_and_grads

    def _stacks(self, arch: Architecture):
        """The encoder, the decoder's LSTM stack and the attention decoder (None without attention) of ``arch``:
        over token ids, or over vectors of ``embedding_dim`` features."""
        def inputs(vocab):
            return {"input_size": arch.embedding_dim} if arch.embedding_dim else {"vocab_size": len(vocab)}

        encoder = LSTM(arch.latent_dim, **inputs(self.input_vocab), num_layers=arch.encoder_layers,
                       bidirectional=arch.bidirectional_encoder, dropout=arch.dropout, name="encoder")
        if arch.attention == "none":
            return encoder, LSTM(encoder.output_size, **inputs(self.target_vocab), num_layers=arch.decoder_layers,
                                 dropout=arch.dropout, name="decoder"), None
        # the decoder's LSTM stack plus the attention's weights (minilstm/attention.py)
        attention_decoder = AttentionDecoder(
            encoder.output_size, **inputs(self.target_vocab), memory_size=encoder.output_size, score=arch.attention,
            input_feed=arch.input_feed, num_layers=arch.decoder_layers, dropout=arch.dropout)
        return encoder, attention_decoder.lstm, attention_decoder

    def folded(self) -> "Seq2Seq":
        """The model decoding runs: this one, or, with embeddings, its one-hot twin whose layer-0 kernels are
        ``table @ kernel`` (each direction's of the encoder; the decoder's token rows, its fed rows kept), the same
        function computed from the weights as they are now. It shares everything else, weights included; fold again
        after the weights change (each decoding call does)."""
        if not self.arch.embedding_dim:
            return self
        twin = copy.copy(self)
        twin.arch = dataclasses.replace(self.arch, embedding_dim=0, embedding_dropout=0.0)
        twin.encoder, twin.decoder, twin.attention_decoder = twin._stacks(twin.arch)
        twin.encoder_embedding = twin.decoder_embedding = None
        p, xp, rows = self.params, self.backend.xp, self.arch.embedding_dim
        replaced = {}
        for embedding, cells in ((self.encoder_embedding, [(0, d) for d in range(self.encoder.directions)]),
                                 (self.decoder_embedding, [(0, 0)])):
            lstm = self.encoder if embedding is self.encoder_embedding else self.decoder
            for layer, direction in cells:
                name = f"{lstm.cell_name(layer, direction)}.kernel"
                kernel = p[name]
                tokens = self.backend.matmul(p[embedding.weight_name], kernel[:rows])
                replaced[name] = tokens if kernel.shape[0] == rows else xp.concatenate([tokens, kernel[rows:]])
        twin.params = ParameterView(p, replaced)
        return twin

    def _embed(self, embedding, ids):
        """Time-major ids (T, B) as the stack's inputs: the ids themselves (one-hot), or their table rows."""
        return ids if embedding is None else embedding.forward(self.params, ids)

    # What the architecture says, read where the model is used.

    @property
    def decoder_units(self) -> int:
        return self.decoder.units

    @property
    def latent_dim(self) -> int:
        return self.arch.latent_dim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.arch.dtype)

    @property
    def attention(self) -> str | None:
        """The attention score, or None: the Keras example's decoder."""
        return None if self.arch.attention == "none" else self.arch.attention

    @property
    def input_feed(self) -> bool:
        return self.arch.input_feed

    # -- weights -------------------------------------------------------------------------------------------------

    def initialize(self, seed: int | np.random.Generator = 0, init: str = "keras"):
        """Keras initialisers (glorot_uniform kernels, orthogonal recurrent kernels, forget bias 1), or PyTorch's
        (``init``, one of ``layers.INIT_SCHEMES``), drawn on the host in float64 from ``seed`` so every backend and
        dtype starts from the same numbers."""
        self.params.initialize(seed, init)
        return self

    def set_weights(self, weights: dict):
        self.params.set_weights(weights)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.params.get_weights()

    @property
    def mask_padding(self) -> bool:
        """Whether the model reads each sentence's own characters only (its weights do not depend on it)."""
        return self.arch.mask_padding

    @mask_padding.setter
    def mask_padding(self, value: bool):
        self.arch = dataclasses.replace(self.arch, mask_padding=bool(value))

    def config(self) -> dict:
        """What ``config.json`` stores of the model: the vocabularies, the lengths and the architecture."""
        arch = self.arch.to_config()
        return {"latent_dim": arch.pop("latent_dim"), "dtype": arch.pop("dtype"),
                "input_vocab": self.input_vocab.to_json(), "target_vocab": self.target_vocab.to_json(),
                "max_encoder_len": self.max_encoder_len, "max_decoder_len": self.max_decoder_len, **arch}

    def units_models(self) -> dict[str, bytes]:
        """The SentencePiece model files a checkpoint stores beside config.json ("input" and "target" sides, those
        that have one)."""
        models = {"input": self.input_vocab.units_model, "target": self.target_vocab.units_model}
        return {side: model for side, model in models.items() if model is not None}

    @classmethod
    def from_config(cls, backend, config: dict, units_models: dict[str, bytes] | None = None) -> "Seq2Seq":
        """The model a ``config()`` describes (weights uninitialised), with the ``units_models()`` its checkpoint
        stored; keys a checkpoint from before an option existed lacks take that option's default."""
        models = units_models or {}
        return cls(backend, Vocab.from_json(config["input_vocab"], models.get("input")),
                   Vocab.from_json(config["target_vocab"], models.get("target")),
                   int(config["max_encoder_len"]), int(config["max_decoder_len"]), Architecture.from_config(config))

    # -- training ------------------------------------------------------------------------------------------------

    def time_major(self, ids):
        """Batch-major ids (B, T) as a contiguous time-major device array (T, B)."""
        return self.backend.xp.ascontiguousarray(self.backend.asarray(ids).T)

    def _workspaces_of(self, shard):
        return self._workspaces.setdefault(shard, {})

    def _encoder_layer_of(self, decoder_layer: int) -> int:
        """The encoder layer whose final state decoder layer ``decoder_layer`` starts from (module doc)."""
        return max(0, self.encoder.num_layers - self.decoder.num_layers + decoder_layer)

    def _decoder_initial_state(self, encoder_state):
        """The decoder's (h0, c0), each (M, B, decoder units), from the encoder's final (h_n, c_n)."""
        xp, enc = self.backend.xp, self.encoder
        out = []
        for states in encoder_state:
            rows = [enc.directions * self._encoder_layer_of(layer) for layer in range(self.decoder.num_layers)]
            out.append(xp.concatenate([states[r : r + enc.directions] for r in rows]) if enc.directions == 1 else
                       xp.stack([xp.concatenate([states[r], states[r + 1]], axis=1) for r in rows]))
        return tuple(out)

    def _encoder_final_state_grads(self, d_decoder_state):
        """Transpose of ``_decoder_initial_state``: the decoder's d(h0, c0) added into d(h_n, c_n) of the encoder."""
        xp, enc, units = self.backend.xp, self.encoder, self.latent_dim
        out = []
        for d_states in d_decoder_state:
            if enc.num_layers == self.decoder.num_layers and enc.directions == 1:
                out.append(d_states)  # one to one
                continue
            d_enc = xp.zeros((enc.num_layers * enc.directions,) + d_states.shape[1:2] + (units,), dtype=self.dtype)
            for layer in range(self.decoder.num_layers):
                row = enc.directions * self._encoder_layer_of(layer)
                for d in range(enc.directions):
                    d_enc[row + d] += d_states[layer][:, d * units : (d + 1) * units]
            out.append(d_enc)
        return tuple(out)

    def _encoder_initial_state(self, initial_state):
        """Accept (h0, c0) as (B, H) arrays (the one-layer encoder's) or (layers * directions, B, H)."""
        if initial_state is None or initial_state[0].ndim == 3:
            return initial_state
        return tuple(state[None] for state in initial_state)

    def _forward(self, encoder_ids, decoder_ids, initial_state, shard=0, dropout_seed=None, row_offset=0,
                 source_lengths=None, blas_keys=False):
        """Time-major ids in; both stacks' caches, the decoder outputs (T*B, H) and the logits (T*B, V) out.
        ``dropout_seed`` (training with dropout) seeds the masks of rows ``row_offset..`` of the batch.
        ``source_lengths`` (B,): the real English characters of each row, which attention looks at (None: all).
        ``blas_keys``: the attention's keys by BLAS (``Attention.prepare``), as training steps and their
        validation losses have always computed them; otherwise row-exact, as decoding computes them."""
        p, workspaces = self.params, self._workspaces_of(shard)
        training = dropout_seed is not None
        masks = {}
        tables = masks["tables"] = self._folded_tables(training, encoder_ids, decoder_ids)  # backward reads them
        if tables["encoder"] is None:
            encoder_ids = self._drop(masks, "encoder_inputs", self._embed(self.encoder_embedding, encoder_ids),
                                     self.arch.embedding_dropout, dropout_seed, row_offset)
        if tables["decoder"] is None:
            decoder_ids = self._drop(masks, "decoder_inputs", self._embed(self.decoder_embedding, decoder_ids),
                                     self.arch.embedding_dropout, dropout_seed, row_offset)
        memory, encoder_state, enc = self.encoder.forward(
            p, encoder_ids, self._encoder_initial_state(initial_state), training=training,
            seed=None if not training else dropout_key(dropout_seed, 1), row_offset=row_offset,
            workspaces=workspaces, return_outputs=self.attention is not None, input_table=tables["encoder"])
        decoder = self.decoder if self.attention is None else self.attention_decoder
        extra = () if self.attention is None else (memory, source_lengths)
        keys = {} if self.attention is None else {"exact_keys": not blas_keys}
        outputs, _, dec = decoder.forward(
            p, decoder_ids, self._decoder_initial_state(encoder_state), *extra, training=training,
            seed=None if not training else dropout_key(dropout_seed, 2), row_offset=row_offset,
            workspaces=workspaces, input_table=tables["decoder"], **keys)
        outputs = self._drop(masks, "outputs", outputs, self.arch.output_dropout, dropout_seed, row_offset)
        outputs = outputs.reshape(-1, self.decoder_units)
        logits = self.dense.forward(p, outputs)
        return enc, dec, outputs, logits, masks

    def _folded_tables(self, training: bool, encoder_ids, decoder_ids) -> dict:
        """Each side's embedding table where the stack reads it folded into its layer-0 kernel (``LSTM.forward``'s
        ``input_table``: a gather from table @ kernel instead of a GEMM over every position), else None: without
        embeddings, where dropout acts on the embedded characters themselves, for an input-feeding decoder (whose
        layer-0 input is the character and the fed vector together), and where the vocabulary has more tokens
        than the batch has positions (words or pieces: folding costs V x E x 4H, the GEMM over the positions
        T x B x E x 4H)."""
        if not self.arch.embedding_dim or (training and self.arch.embedding_dropout):
            return {"encoder": None, "decoder": None}
        p = self.params

        def table(embedding, ids):
            return p[embedding.weight_name] if embedding.vocab_size <= ids.shape[0] * ids.shape[1] else None
        return {"encoder": table(self.encoder_embedding, encoder_ids),
                "decoder": None if self.input_feed else table(self.decoder_embedding, decoder_ids)}

    # Where each dropout's masks come from: dropout_key(step seed, KEY) (1 and 2 are the stacks' own).
    DROPOUT_KEYS = {"encoder_inputs": 3, "decoder_inputs": 4, "outputs": 5}

    def _drop(self, masks: dict, name: str, x, rate: float, dropout_seed, row_offset: int):
        """``x`` (T, B, F) times inverted-dropout multipliers (kept in ``masks[name]`` for backward) when training
        with ``rate`` > 0, else ``x`` itself. Backward through it: d x = d y * the same multipliers."""
        if dropout_seed is None or not rate:
            return x
        mask = self.backend.dropout_mask(x.shape, rate, dropout_key(dropout_seed, self.DROPOUT_KEYS[name]),
                                         row_offset, x.dtype)
        masks[name] = mask
        return x * mask

    def teacher_forced_logits(self, encoder_input_ids, decoder_input_ids, source_lengths=None):
        """Logits (B, T, V) of the decoder fed the true previous characters, as a host array."""
        dec_ids = self.time_major(decoder_input_ids)
        logits = self._forward(self.time_major(encoder_input_ids), dec_ids, None,
                               source_lengths=self._lengths(source_lengths))[3]
        steps, batch = dec_ids.shape
        return self.backend.to_numpy(logits).reshape(steps, batch, -1).transpose(1, 0, 2)

    def forward_backward(self, encoder_input_ids, decoder_input_ids, decoder_target_ids, compute_grads=True,
                         initial_state=None, positions=None, dropout_seed=None, row_offset=0, source_lengths=None,
                         label_smoothing=0.0):
        """Loss sum and argmax hits over the counted decoder positions (0-d arrays, not synchronised), and, with
        ``compute_grads``, the gradient of the *mean* loss in ``self.grads``. ``positions`` is how many targets
        count: all B*T (the default), or, where targets hold IGNORE, the caller's count of the others (the caller
        knows it from the sentence lengths; counting here would make a GPU wait). ``dropout_seed`` turns dropout on
        (training; e.g. derived from the run's seed and step) for rows ``row_offset..`` of the global batch.
        ``source_lengths`` (B,): each row's real English characters, the positions attention may look at (None:
        every position, as in a ``mask_padding`` batch of one English length; models without attention ignore it).
        ``label_smoothing`` eps: the loss and its gradient against (1 - eps) onehot + eps / V (``layers``).

        Where the backend has several workers the batch is split into row shards run in parallel; each shard
        writes its part of the gradient into its own buffer, and the parts are summed here."""
        batch, steps = np.shape(decoder_input_ids)
        grad_scale = 1.0 / (batch * steps if positions is None else max(1, positions))
        n_shards = self.backend.row_shards(batch, self.latent_dim, MIN_SHARD_ROWS)
        bounds = [batch * k // n_shards for k in range(n_shards + 1)]
        shards = [slice(bounds[k], bounds[k + 1]) for k in range(n_shards)]
        source_lengths = self._lengths(source_lengths)
        if n_shards == 1:
            loss_sum, n_correct, d_state = self._forward_backward_shard(
                0, encoder_input_ids, decoder_input_ids, decoder_target_ids, initial_state, grad_scale,
                self.grads if compute_grads else None, dropout_seed, row_offset, source_lengths, label_smoothing)
            self.d_initial_state = d_state
            return loss_sum, n_correct
        while compute_grads and len(self._shard_grads) < n_shards:
            self._shard_grads.append(FlatParameters(self.backend.xp, self.params.shapes, self.dtype))

        def run_shard(k):
            rows = shards[k]
            state = None if initial_state is None else (initial_state[0][..., rows, :], initial_state[1][..., rows, :])
            return self._forward_backward_shard(k, encoder_input_ids[rows], decoder_input_ids[rows],
                                                decoder_target_ids[rows], state, grad_scale,
                                                self._shard_grads[k] if compute_grads else None, dropout_seed,
                                                row_offset + rows.start,
                                                None if source_lengths is None else source_lengths[rows],
                                                label_smoothing)

        results = self.backend.parallel_map(run_shard, range(n_shards))
        loss_sum = sum(r[0] for r in results)
        n_correct = sum(r[1] for r in results)
        if compute_grads:
            xp = self.backend.xp
            xp.add(self._shard_grads[0].flat, self._shard_grads[1].flat, out=self.grads.flat)
            for extra in self._shard_grads[2:n_shards]:
                self.grads.flat += extra.flat
            self.d_initial_state = tuple(xp.concatenate([r[2][k] for r in results], axis=-2) for k in range(2))
        return loss_sum, n_correct

    def _forward_backward_shard(self, shard, encoder_input_ids, decoder_input_ids, decoder_target_ids,
                                initial_state, grad_scale, grads, dropout_seed=None, row_offset=0,
                                source_lengths=None, label_smoothing=0.0):
        """One shard: loss sum, hits, and (when ``grads`` is given) its gradient part written into ``grads``,
        plus the gradient w.r.t. the encoder's initial state (shaped as ``initial_state`` was)."""
        p = self.params
        enc_ids, dec_ids = self.time_major(encoder_input_ids), self.time_major(decoder_input_ids)
        target_ids = self.time_major(decoder_target_ids).reshape(-1)
        steps, batch = dec_ids.shape
        enc, dec, outputs, logits, masks = self._forward(enc_ids, dec_ids, initial_state, shard,
                                                  dropout_seed if grads is not None else None, row_offset,
                                                  source_lengths, blas_keys=True)
        loss_sum, n_correct, d_logits = self.backend.softmax_cross_entropy(logits, target_ids, grad_scale,
                                                                           label_smoothing)
        if grads is None:
            return loss_sum, n_correct, None
        d_outputs = self.dense.backward(p, outputs, d_logits, grads).reshape(steps, batch, self.decoder_units)
        if "outputs" in masks:
            d_outputs *= masks["outputs"]
        workspaces = self._workspaces_of(shard)
        if self.attention is None:
            d_memory = None  # the encoder's outputs are not used
            d_decoder_inputs, d_decoder_state = self.decoder.backward(p, dec, d_outputs, None, grads, workspaces)
        else:
            d_memory, d_decoder_state, *d_decoder_inputs = self.attention_decoder.backward(
                p, dec, d_outputs, None, grads, workspaces)
            d_decoder_inputs = d_decoder_inputs[0] if d_decoder_inputs else None
        d_encoder_inputs, d_state = self.encoder.backward(
            p, enc, d_memory, self._encoder_final_state_grads(d_decoder_state), grads, workspaces)
        if self.decoder_embedding is not None:  # d table: the scatter-add of d inputs (module doc)
            tables = masks["tables"]
            for side, embedding, ids, d_inputs in (("decoder", self.decoder_embedding, dec_ids, d_decoder_inputs),
                                                   ("encoder", self.encoder_embedding, enc_ids, d_encoder_inputs)):
                if tables[side] is not None:  # folded: the stack returned d table itself
                    grads[embedding.weight_name][...] = d_inputs
                    continue
                if f"{side}_inputs" in masks:
                    d_inputs = d_inputs * masks[f"{side}_inputs"]
                embedding.backward(p, ids, d_inputs, grads)
        if initial_state is not None and initial_state[0].ndim == 2:
            d_state = (d_state[0][0], d_state[1][0])
        return loss_sum, n_correct, d_state

    def _lengths(self, source_lengths):
        """Source lengths on the device as int64 (B,), or None; only attention reads them."""
        if source_lengths is None or self.attention is None:
            return None
        return self.backend.asarray(source_lengths, dtype=np.int64)

    def loss_and_grads(self, encoder_input_ids, decoder_input_ids, decoder_target_ids, source_lengths=None):
        """Mean loss and accuracy of the batch as Python floats; every gradient in ``self.grads``."""
        loss_sum, n_correct = self.forward_backward(encoder_input_ids, decoder_input_ids, decoder_target_ids,
                                                    source_lengths=source_lengths)
        positions = np.size(decoder_target_ids)
        return float(loss_sum) / positions, float(n_correct) / positions

    # -- decoding (the algorithms: ``decoding``) ---------------------------------------------------------------

    def encode(self, encoder_input_ids, source_lengths=None):
        """The decoder's initial (h, c), each (decoder layers, B, decoder units), for a batch of ids (B, T)
        (``source_lengths``: see ``start_decoding``)."""
        if self.arch.embedding_dim:
            return self.folded().encode(encoder_input_ids, source_lengths)
        _, state = run_encoder(self, encoder_input_ids, source_lengths, return_outputs=False)
        return self._decoder_initial_state(state)

    def start_decoding(self, encoder_input_ids, source_lengths=None):
        """The decoder's state before its first step: (h, c) as ``encode`` gives them, or, with attention, an
        ``attention.DecoderState`` (those, the input feed, the encoder outputs to attend over). ``source_lengths``
        (B,): each row's real characters (None: every position). A ``mask_padding`` model stops each row's encoder at
        its own length (a bidirectional one also starts its reverse direction there), so rows of different lengths
        share a batch and each gets the state it would get alone (``encoding.run_encoder``); otherwise the encoder
        reads every position. With embeddings this and ``step`` fold them first (``folded``); the decoding algorithms
        fold once per call (``decoder_steps``)."""
        if self.arch.embedding_dim:
            return self.folded().start_decoding(encoder_input_ids, source_lengths)
        if self.attention is None:
            return self.encode(encoder_input_ids, source_lengths)
        memory, state = run_encoder(self, encoder_input_ids, source_lengths)
        return self.attention_decoder.start(self.params, self._decoder_initial_state(state), memory,
                                            self._lengths(source_lengths))

    def takes_mixed_lengths(self) -> bool:
        """Whether ``start_decoding`` stops each row at its own length (a ``mask_padding`` model): then rows of any
        lengths share a batch, each getting what it gets alone (``encoding.run_encoder``)."""
        return self.mask_padding

    def step(self, prev_ids, state):
        """One decoder step for the previous characters ``prev_ids`` (B,) from ``start_decoding``'s (or the
        previous step's) state: (logits (B, V), the next state, the attention weights (B, S) or None). Without
        attention: the backend's time loop over one step and its ``dense``, the operations of its compiled greedy
        loop, so that every algorithm sees the same logits for the same state."""
        if self.arch.embedding_dim:
            return self.folded().step(prev_ids, state)
        p = self.params
        if self.attention is None:
            outputs, state, _ = self.decoder.forward(p, prev_ids.reshape(1, -1), state)
            return self.backend.dense(outputs[0], p["dense.kernel"], p["dense.bias"]), state, None
        outputs, state, weights = self.attention_decoder.step(p, prev_ids, state)
        return self.backend.dense(outputs, p["dense.kernel"], p["dense.bias"]), state, weights

    def decoder_steps(self) -> DecoderSteps:
        """This model's decoder as the interface the decoding algorithms run over (with embeddings, folded once
        here: ``folded``)."""
        model = self.folded()
        return PlainSteps(model) if self.attention is None else AttentionSteps(model)

    def greedy_decode_ids(self, encoder_input_ids, source_lengths=None, attention_maps=None) -> list[list[int]]:
        """Greedy decoding of a batch of ids (B, T) (``decoding.greedy``): each row's ids, END not included."""
        return decoding.greedy(self.decoder_steps(), encoder_input_ids, source_lengths, attention_maps)

    def beam_decode_ids(self, encoder_input_ids, beam_width: int, source_lengths=None, n_best: bool = False,
                        length_penalty: float = 0.0) -> list:
        """Beam search over a batch of ids (``decoding.beam_search``)."""
        return decoding.beam_search(self.decoder_steps(), encoder_input_ids, beam_width, source_lengths, n_best,
                                    length_penalty)

    def sample_decode_ids(self, encoder_input_ids, temperature: float, rng: np.random.Generator,
                          source_lengths=None) -> list[list[int]]:
        """Sampling at ``temperature``, one number of ``rng`` per row and step (``decoding.sample``)."""
        return decoding.sample(self.decoder_steps(), encoder_input_ids, temperature, rng, source_lengths)

    def translate(self, texts: list[str], batch_size: int = 512, beam_width: int = 1,
                  temperature: float | None = None, seed: int = 0, attention_maps: list | None = None,
                  n_best: bool = False, length_penalty: float = 0.0, split_sentences: bool = True) -> list:
        """Translations of ``texts``: greedy by default (exactly the example's algorithm), beam search
        (``beam_width`` > 1, ``n_best``, ``length_penalty``) or sampling (``temperature``, ``seed``); every text gets
        the string it would get decoded alone. With ``split_sentences`` (the default) a text of several sentences
        is decoded sentence by sentence and joined back (``decoding.translate_texts``)."""
        return decoding.translate_texts(self, texts, batch_size, beam_width, temperature, seed, attention_maps,
                                        n_best, length_penalty, split_sentences)
