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

Backward of the whole model (the LSTM part is in ``lstm`` and ``nn``):

    logits = Y @ W + b,  Y = decoder outputs (T*B, H)
    dW = Y^T @ dlogits      db = sum(dlogits)      dY = dlogits @ W^T
    decoder BPTT with d_outputs = dY             -> d(h0, c0) of each decoder layer, added into d(final h, c) of the
                                                    encoder layer it started from (split in halves when bidirectional)
    encoder BPTT with d_outputs = None, those final-state gradients -> d(initial state of the encoder)
"""

import math

import numpy as np

from .attention import SCORES, AttentionDecoder
from .backends import get_backend
from .data import END, START, Vocab, encode_inputs
from .errors import MinilstmError
from .lstm import lstm_forward
from .nn import LSTM, Dense, Parameters, dropout_key
from .params import FlatParameters

DTYPES = ("float32", "float64")
# Below this many rows a shard is not worth a thread: smaller batches run as one shard. It was 32 while each time
# step called BLAS (whose fixed cost per call dominated small shards); with the compiled time loops a shard of 8 rows
# pays (measured: batch 16 at latent 512 took 1.35x PyTorch's step time on one shard, 0.96-1.06x on two).
MIN_SHARD_ROWS = 8


MAX_LENGTH_PENALTY = 10.0
"""The largest length penalty alpha taken: GNMT's is 0.2-1; far above, ((5 + n) / 6) ** alpha overflows a double
(past ~170 for the longest outputs), and every beam's rank would be 0."""


def check_length_penalty(alpha: float) -> None:
    if not (math.isfinite(alpha) and 0.0 <= alpha <= MAX_LENGTH_PENALTY):
        raise MinilstmError(f"the length penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g} (GNMT's alpha, "
                            f"0.2-1 in practice; 0: none), not {alpha}")


def _cut_at_end(rows: list[list[int]], end_id: int) -> list[list[int]]:
    """Each decoded row up to (not including) its first END; a row without END ran to the length limit."""
    return [row[: row.index(end_id)] if end_id in row else row for row in rows]


class Seq2Seq:
    """Weights in Keras's layout (``encoder.kernel`` etc.), views into one flat buffer; gradients likewise."""

    def __init__(self, backend, input_vocab: Vocab, target_vocab: Vocab, max_encoder_len: int, max_decoder_len: int,
                 latent_dim: int = 256, dtype: str = "float32", mask_padding: bool = False, encoder_layers: int = 1,
                 decoder_layers: int = 1, bidirectional_encoder: bool = False, dropout: float = 0.0,
                 attention: str = "none", input_feed: bool = True):
        self.backend = get_backend(backend)
        if str(np.dtype(dtype)) not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        self.input_vocab = input_vocab
        self.target_vocab = target_vocab
        self.max_encoder_len = max_encoder_len
        self.max_decoder_len = max_decoder_len
        self.latent_dim = latent_dim
        self.dtype = np.dtype(dtype)
        self.mask_padding = bool(mask_padding)
        self.encoder = LSTM(latent_dim, vocab_size=len(input_vocab), num_layers=encoder_layers,
                            bidirectional=bidirectional_encoder, dropout=dropout, name="encoder")
        if attention not in ("none", *SCORES):
            raise ValueError(f"attention must be 'none' or one of {SCORES}, not {attention!r}")
        self.attention = None if attention == "none" else attention
        self.input_feed = bool(input_feed) and self.attention is not None
        if self.attention is None:
            self.attention_decoder = None
            self.decoder = LSTM(self.encoder.output_size, vocab_size=len(target_vocab), num_layers=decoder_layers,
                                dropout=dropout, name="decoder")
            decoder_layers_ = [self.decoder]
        else:  # the decoder's LSTM stack plus the attention's weights (minilstm/attention.py)
            self.attention_decoder = AttentionDecoder(
                self.encoder.output_size, vocab_size=len(target_vocab), memory_size=self.encoder.output_size,
                score=self.attention, input_feed=self.input_feed, num_layers=decoder_layers, dropout=dropout)
            self.decoder = self.attention_decoder.lstm
            decoder_layers_ = [self.attention_decoder]
        self.dense = Dense(self.decoder.units, len(target_vocab), name="dense")
        self.params = Parameters(self.backend, [self.encoder, *decoder_layers_, self.dense], self.dtype)
        self.grads = self.params.grads
        self._shard_grads = []  # one gradient buffer per parallel shard (see forward_backward)
        self._workspaces = {}  # shard -> {layer name: lstm.Workspace}: big arrays reused from batch to batch
        self.d_initial_state = None  # (dh0, dc0) of the encoder after the last loss_and_grads

    @property
    def decoder_units(self) -> int:
        return self.decoder.units

    # -- weights -------------------------------------------------------------------------------------------------

    def initialize(self, seed: int | np.random.Generator = 0):
        """Keras initialisers (glorot_uniform kernels, orthogonal recurrent kernels, forget bias 1), drawn on the
        host in float64 from ``seed`` so every backend and dtype starts from the same numbers."""
        self.params.initialize(seed)
        return self

    def set_weights(self, weights: dict):
        self.params.set_weights(weights)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.params.get_weights()

    def architecture(self) -> dict:
        """The options beyond the Keras example's model (all at their defaults: the example's model)."""
        return {"encoder_layers": self.encoder.num_layers, "decoder_layers": self.decoder.num_layers,
                "bidirectional_encoder": self.encoder.bidirectional, "dropout": self.encoder.dropout,
                "attention": self.attention or "none", "input_feed": self.input_feed}

    def is_example_architecture(self) -> bool:
        return self.architecture() == {"encoder_layers": 1, "decoder_layers": 1, "bidirectional_encoder": False,
                                       "dropout": 0.0, "attention": "none", "input_feed": False}

    def config(self) -> dict:
        return {
            "latent_dim": self.latent_dim,
            "dtype": str(self.dtype),
            "input_vocab": self.input_vocab.to_json(),
            "target_vocab": self.target_vocab.to_json(),
            "max_encoder_len": self.max_encoder_len,
            "max_decoder_len": self.max_decoder_len,
            "mask_padding": self.mask_padding,
            **self.architecture(),
        }

    @classmethod
    def from_config(cls, backend, config: dict) -> "Seq2Seq":
        """The model a ``config()`` describes (weights uninitialised); keys a checkpoint from before an option
        existed lacks take that option's default."""
        return cls(backend, Vocab.from_json(config["input_vocab"]), Vocab.from_json(config["target_vocab"]),
                   int(config["max_encoder_len"]), int(config["max_decoder_len"]), int(config["latent_dim"]),
                   config["dtype"], bool(config.get("mask_padding", False)),
                   int(config.get("encoder_layers", 1)), int(config.get("decoder_layers", 1)),
                   bool(config.get("bidirectional_encoder", False)), float(config.get("dropout", 0.0)),
                   str(config.get("attention", "none")), bool(config.get("input_feed", True)))

    # -- training ------------------------------------------------------------------------------------------------

    def _time_major(self, ids):
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
        memory, encoder_state, enc = self.encoder.forward(
            p, encoder_ids, self._encoder_initial_state(initial_state), training=training,
            seed=None if not training else dropout_key(dropout_seed, 1), row_offset=row_offset,
            workspaces=workspaces, return_outputs=self.attention is not None)
        decoder = self.decoder if self.attention is None else self.attention_decoder
        extra = () if self.attention is None else (memory, source_lengths)
        keys = {} if self.attention is None else {"exact_keys": not blas_keys}
        outputs, _, dec = decoder.forward(
            p, decoder_ids, self._decoder_initial_state(encoder_state), *extra, training=training,
            seed=None if not training else dropout_key(dropout_seed, 2), row_offset=row_offset,
            workspaces=workspaces, **keys)
        outputs = outputs.reshape(-1, self.decoder_units)
        logits = self.dense.forward(p, outputs)
        return enc, dec, outputs, logits

    def teacher_forced_logits(self, encoder_input_ids, decoder_input_ids, source_lengths=None):
        """Logits (B, T, V) of the decoder fed the true previous characters, as a host array."""
        dec_ids = self._time_major(decoder_input_ids)
        logits = self._forward(self._time_major(encoder_input_ids), dec_ids, None,
                               source_lengths=self._lengths(source_lengths))[3]
        steps, batch = dec_ids.shape
        return self.backend.to_numpy(logits).reshape(steps, batch, -1).transpose(1, 0, 2)

    def forward_backward(self, encoder_input_ids, decoder_input_ids, decoder_target_ids, compute_grads=True,
                         initial_state=None, positions=None, dropout_seed=None, row_offset=0, source_lengths=None):
        """Loss sum and argmax hits over the counted decoder positions (0-d arrays, not synchronised), and, with
        ``compute_grads``, the gradient of the *mean* loss in ``self.grads``. ``positions`` is how many targets
        count: all B*T (the default), or, where targets hold IGNORE, the caller's count of the others (the caller
        knows it from the sentence lengths; counting here would make a GPU wait). ``dropout_seed`` turns dropout on
        (training; e.g. derived from the run's seed and step) for rows ``row_offset..`` of the global batch.
        ``source_lengths`` (B,): each row's real English characters, the positions attention may look at (None:
        every position, as in a ``mask_padding`` batch of one English length; models without attention ignore it).

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
                self.grads if compute_grads else None, dropout_seed, row_offset, source_lengths)
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
                                                None if source_lengths is None else source_lengths[rows])

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
                                source_lengths=None):
        """One shard: loss sum, hits, and (when ``grads`` is given) its gradient part written into ``grads``,
        plus the gradient w.r.t. the encoder's initial state (shaped as ``initial_state`` was)."""
        p = self.params
        dec_ids = self._time_major(decoder_input_ids)
        target_ids = self._time_major(decoder_target_ids).reshape(-1)
        steps, batch = dec_ids.shape
        enc, dec, outputs, logits = self._forward(self._time_major(encoder_input_ids), dec_ids, initial_state, shard,
                                                  dropout_seed if grads is not None else None, row_offset,
                                                  source_lengths, blas_keys=True)
        loss_sum, n_correct, d_logits = self.backend.softmax_cross_entropy(logits, target_ids, grad_scale)
        if grads is None:
            return loss_sum, n_correct, None
        d_outputs = self.dense.backward(p, outputs, d_logits, grads).reshape(steps, batch, self.decoder_units)
        workspaces = self._workspaces_of(shard)
        if self.attention is None:
            d_memory = None  # the encoder's outputs are not used
            _, d_decoder_state = self.decoder.backward(p, dec, d_outputs, None, grads, workspaces)
        else:
            d_memory, d_decoder_state = self.attention_decoder.backward(p, dec, d_outputs, None, grads, workspaces)
        _, d_state = self.encoder.backward(p, enc, d_memory, self._encoder_final_state_grads(d_decoder_state),
                                           grads, workspaces)
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

    # -- greedy decoding -----------------------------------------------------------------------------------------

    def encode(self, encoder_input_ids, source_lengths=None):
        """The decoder's initial (h, c), each (decoder layers, B, decoder units), for a batch of ids (B, T)
        (``source_lengths``: see ``start_decoding``)."""
        _, state = self._run_encoder(encoder_input_ids, source_lengths, return_outputs=False)
        return self._decoder_initial_state(state)

    def start_decoding(self, encoder_input_ids, source_lengths=None):
        """The decoder's state before its first step: (h, c) as ``encode`` gives them, or, with attention, an
        ``attention.DecoderState`` (those, the input feed, the encoder outputs to attend over). ``source_lengths``
        (B,): each row's real characters (None: every position). A ``mask_padding`` model stops each row's encoder at
        its own length (a bidirectional one also starts its reverse direction there), so rows of different lengths
        share a batch and each gets the state it would get alone (``_run_encoder``); otherwise the encoder reads
        every position."""
        if self.attention is None:
            return self.encode(encoder_input_ids, source_lengths)
        memory, state = self._run_encoder(encoder_input_ids, source_lengths)
        return self.attention_decoder.start(self.params, self._decoder_initial_state(state), memory,
                                            self._lengths(source_lengths))

    def takes_mixed_lengths(self) -> bool:
        """Whether ``start_decoding`` stops each row at its own length (a ``mask_padding`` model): then rows of any
        lengths share a batch, each getting what it gets alone (``_run_encoder``)."""
        return self.mask_padding

    def _run_encoder(self, encoder_input_ids, source_lengths=None, return_outputs=True):
        """The encoder's (outputs (T, B, H) or None, final (h, c)) for ids (B, T).

        With mixed ``source_lengths`` and ``takes_mixed_lengths()``, rows run longest first and the time loop is
        cut at each distinct length: the rows still going continue from their states, so a row's steps are
        exactly those it would run alone and its final state is the one after its last real character (as packed
        sequences do in PyTorch). A cut costs one more compiled call per distinct length, not a step each.
        Outputs past a row's length are zeros (attention never looks there). A bidirectional encoder runs layer by
        layer (``_run_bidirectional``): its reverse direction starts at each row's own last character."""
        ids = self._time_major(encoder_input_ids)
        steps, batch = ids.shape
        lengths = None if source_lengths is None else np.asarray(source_lengths, dtype=np.int64)
        if not self.takes_mixed_lengths() or lengths is None or batch == 0 or (lengths == steps).all():
            outputs, state, _ = self.encoder.forward(self.params, ids, return_outputs=return_outputs)
            return outputs, state
        if lengths.min() < 1 or lengths.max() > steps:
            raise ValueError(f"source lengths must be 1..{steps}, got {lengths.min()}..{lengths.max()}")
        xp, enc = self.backend.xp, self.encoder
        order = np.argsort(-lengths, kind="stable")  # longest first: the rows still going are always a prefix
        ids = xp.ascontiguousarray(ids[:, self.backend.asarray(order)])
        back = self.backend.asarray(np.argsort(order))
        if enc.directions == 2:
            outputs, (h, c) = self._run_bidirectional(ids, lengths[order], return_outputs)
            return (xp.ascontiguousarray(outputs[:, back]) if return_outputs else None,
                    (xp.ascontiguousarray(h[:, back]), xp.ascontiguousarray(c[:, back])))
        shape = (enc.num_layers * enc.directions, batch, enc.units)
        h, c = xp.zeros(shape, dtype=self.dtype), xp.zeros(shape, dtype=self.dtype)
        outputs = xp.zeros((steps, batch, enc.output_size), dtype=self.dtype) if return_outputs else None
        for start, stop, rows in self._segments(lengths):
            out, (h_n, c_n), _ = enc.forward(self.params, xp.ascontiguousarray(ids[start:stop, :rows]),
                                             (xp.ascontiguousarray(h[:, :rows]), xp.ascontiguousarray(c[:, :rows])),
                                             return_outputs=return_outputs)
            h[:, :rows], c[:, :rows] = h_n, c_n
            if return_outputs:
                outputs[start:stop, :rows] = out
        if return_outputs:
            outputs = xp.ascontiguousarray(outputs[:, back])
        return outputs, (xp.ascontiguousarray(h[:, back]), xp.ascontiguousarray(c[:, back]))

    @staticmethod
    def _segments(lengths):
        """The cut time loop's pieces for ``lengths`` sorted longest first: (start, stop, rows) from one distinct
        length to the next, ``rows`` the rows still going (a prefix)."""
        starts = np.concatenate([[0], np.unique(lengths)])
        return [(int(a), int(b), int((lengths > a).sum())) for a, b in zip(starts[:-1], starts[1:], strict=True)]

    def _run_bidirectional(self, ids, lengths, return_outputs=True):
        """``_run_encoder`` of a bidirectional encoder for ids (T, B) whose rows are sorted longest first, lengths
        (B,) in that order: layer by layer, each direction's time loop cut at each distinct length as above. The
        reverse direction reads each row reversed within its own length (row b's step t is its character
        lengths[b] - 1 - t), so it starts at the row's last character, as alone, and its outputs go back to their
        positions the same way (positions past the end stay zeros). Without ``return_outputs`` the top layer's
        outputs are not gathered (the returned outputs are then None)."""
        xp, enc, params = self.backend.xp, self.encoder, self.params
        steps, batch = ids.shape
        segments = self._segments(lengths)
        blocks = [(n, int((lengths > n).sum()), int((lengths >= n).sum())) for _, n, _ in segments]  # rows of length n

        def flip(x):  # each row reversed within its own length (sorted rows: one block of rows per length)
            out = x.copy()
            for n, first, stop in blocks:
                out[:n, first:stop] = x[n - 1 :: -1, first:stop]
            return out

        shape = (enc.num_layers * enc.directions, batch, enc.units)
        h_n, c_n = xp.zeros(shape, dtype=self.dtype), xp.zeros(shape, dtype=self.dtype)
        x = ids
        for layer in range(enc.num_layers):
            keep = return_outputs or layer < enc.num_layers - 1
            outputs = xp.zeros((steps, batch, enc.output_size), dtype=self.dtype) if keep else None
            for direction in range(2):
                cell, index = enc.cell_name(layer, direction), layer * 2 + direction
                inputs = x if direction == 0 else flip(x)
                out = outputs[:, :, direction * enc.units : (direction + 1) * enc.units] if keep else None
                h, c = h_n[index], c_n[index]
                for start, stop, rows in segments:
                    cache = lstm_forward(self.backend, params[f"{cell}.kernel"], params[f"{cell}.recurrent_kernel"],
                                         params[f"{cell}.bias"], xp.ascontiguousarray(inputs[start:stop, :rows]),
                                         xp.ascontiguousarray(h[:rows]), xp.ascontiguousarray(c[:rows]))
                    h[:rows], c[:rows] = cache.hs[-1], cache.cs[-1]
                    if keep:
                        out[start:stop, :rows] = cache.outputs
                if direction == 1 and keep:
                    out[...] = flip(out)
            x = outputs
        return x, (h_n, c_n)

    def step(self, prev_ids, state):
        """One decoder step from ``start_decoding``'s (or the previous step's) state: (logits (B, V), the next
        state, the attention weights (B, S) or None)."""
        if self.attention is None:
            logits, h, c = self.decode_step(prev_ids, *state)
            return logits, (h, c), None
        outputs, state, weights = self.attention_decoder.step(self.params, prev_ids, state)
        p = self.params
        return self.backend.dense(outputs, p["dense.kernel"], p["dense.bias"]), state, weights

    @staticmethod
    def select_rows(state, rows):
        """The decoder state of rows ``rows`` (an index array on the device): rows still going, or beams."""
        if isinstance(state, tuple):
            return state[0][:, rows], state[1][:, rows]
        return state.select(rows)

    def decode_step(self, prev_ids, h, c):
        """One decoder step for the previous characters ``prev_ids`` (B,) from states (layers, B, units): returns
        (logits, h, c). The backend's time loop over one step and its ``dense``: the operations its
        ``greedy_decode`` uses, so that every decoder (greedy, beam, sampling) sees the same logits for the same
        state."""
        p = self.params
        outputs, (h, c), _ = self.decoder.forward(p, prev_ids.reshape(1, -1), (h, c))
        return self.backend.dense(outputs[0], p["dense.kernel"], p["dense.bias"]), h, c

    def greedy_decode_ids(self, encoder_input_ids, source_lengths=None, attention_maps=None) -> list[list[int]]:
        """The example's greedy loop for a whole batch at once: feed START, take the argmax, feed it back; each
        sentence stops at its own END or once it is longer than ``max_decoder_len`` (END is not returned).
        ``attention_maps`` (a list, attention models only) receives one (generated steps, S) array per sentence."""
        xp, p = self.backend.xp, self.params
        start_id, end_id = self.target_vocab.index[START], self.target_vocab.index[END]
        state = self.start_decoding(encoder_input_ids, source_lengths)
        batch = np.shape(encoder_input_ids)[0]
        tokens = np.full((batch, self.max_decoder_len + 1), end_id, dtype=np.int64)
        if self.backend.greedy_decode is not None and self.decoder.num_layers == 1 and self.attention is None:
            h, c = state  # the whole loop in one call
            self.backend.greedy_decode(p["decoder.kernel"], p["decoder.bias"], p["decoder.recurrent_kernel"],
                                       p["dense.kernel"], p["dense.bias"], h[0], c[0], start_id, end_id, tokens)
            return _cut_at_end(tokens.tolist(), end_id)
        maps = None
        compiled = self.attention is not None and self.attention_decoder.compiled_greedy(self.backend)
        if attention_maps is not None and self.attention is not None:  # the compiled loop writes the model's dtype
            maps = np.zeros((batch, self.max_decoder_len + 1, np.shape(encoder_input_ids)[1]),
                            dtype=self.dtype if compiled else np.float64)
        if compiled:
            self.attention_decoder.greedy_decode(p, state, p["dense.kernel"], p["dense.bias"], start_id, end_id,
                                                 tokens, maps)
            if maps is not None:  # each row's steps up to and with its END
                ends = [row.index(end_id) + 1 if end_id in row else len(row) for row in tokens.tolist()]
                attention_maps.extend(maps[k, : ends[k]].astype(np.float64) for k in range(batch))
            return _cut_at_end(tokens.tolist(), end_id)
        active = np.arange(batch)  # rows still decoding; finished ones are dropped, so late steps are cheap
        prev = xp.full(batch, start_id, dtype=np.int64)
        steps_run = np.zeros(batch, dtype=np.int64)
        for step in range(self.max_decoder_len + 1):
            logits, state, weights = self.step(prev, state)
            prev = logits.argmax(axis=1)
            sampled = self.backend.to_numpy(prev)
            tokens[active, step] = sampled
            steps_run[active] = step + 1
            if maps is not None:
                maps[active, step] = self.backend.to_numpy(weights)
            going = sampled != end_id
            if not going.all():
                if not going.any():
                    break
                keep = np.flatnonzero(going)
                active = active[keep]
                keep = self.backend.asarray(keep)
                prev, state = prev[keep], self.select_rows(state, keep)
        if maps is not None:
            attention_maps.extend(maps[k, : steps_run[k]] for k in range(batch))
        return _cut_at_end(tokens.tolist(), end_id)

    def beam_decode_ids(self, encoder_input_ids, beam_width: int, source_lengths=None, n_best: bool = False,
                        length_penalty: float = 0.0) -> list:
        """Beam search: keep the ``beam_width`` best partial translations of every sentence, all sentences and beams
        in one batch, ranked by summed log-probability, divided, with ``length_penalty`` alpha > 0, by GNMT's
        ``lp(n) = ((5 + n) / 6) ** alpha`` of the n characters scored (END included; Wu et al. 2016, eq. 14), which
        keeps the search from preferring short outputs for being short (alpha 0: lp = 1, the plain sum). A beam that
        emits END is finished and carried on unchanged, at its own length's rank. With ``beam_width=1`` this is
        exactly the greedy decoder. With ``n_best`` each sentence gets the list of its beams' ids, best first (ties
        to the lower beam, so the first is the one returned without ``n_best``). Attention models on the numba
        backend run the whole search in one compiled call (the same search)."""
        check_length_penalty(length_penalty)
        xp, k = self.backend.xp, beam_width
        start_id, end_id = self.target_vocab.index[START], self.target_vocab.index[END]
        state = self.start_decoding(encoder_input_ids, source_lengths)
        n, vocab = np.shape(encoder_input_ids)[0], len(self.target_vocab)
        if self.attention is not None and self.attention_decoder.compiled_beam(self.backend):
            tokens = np.full((n, k, self.max_decoder_len + 1), end_id, dtype=np.int64)
            scores = np.empty((n, k))
            self.attention_decoder.beam_decode(self.params, state, self.params["dense.kernel"],
                                               self.params["dense.bias"], start_id, end_id, tokens, scores,
                                               length_penalty)
            return self._best_beams(tokens, scores, n_best, end_id)
        state = self.select_rows(state, self.backend.asarray(np.repeat(np.arange(n), k)))
        scores = np.full((n, k), -np.inf)
        scores[:, 0] = 0.0  # one live beam per sentence at the start
        ranks = scores.copy()  # scores / lp(length): what the search keeps the best of (alpha 0: the scores)
        tokens = np.full((n, k, self.max_decoder_len + 1), end_id, dtype=np.int64)
        finished = np.zeros((n, k), dtype=bool)
        prev = xp.full(n * k, start_id, dtype=np.int64)
        rows = np.arange(n)[:, None]
        for step in range(self.max_decoder_len + 1):
            logits, state, _ = self.step(prev, state)
            logits = self.backend.to_numpy(logits).astype(np.float64)
            log_probs = logits - logits.max(axis=1, keepdims=True)
            log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
            log_probs = log_probs.reshape(n, k, vocab)
            log_probs[finished] = -np.inf
            log_probs[finished, end_id] = 0.0  # a finished beam only continues as itself
            candidates = scores[:, :, None] + log_probs
            keys = candidates / ((5.0 + step + 1) / 6.0) ** length_penalty  # a live beam has step + 1 characters
            keys[finished, end_id] = ranks[finished]  # a finished one keeps its own length's rank
            candidates, keys = candidates.reshape(n, k * vocab), keys.reshape(n, k * vocab)
            # The k best, ties to the lower index (stable), so that k = 1 picks what argmax picks.
            best = np.argsort(-keys, axis=1, kind="stable")[:, :k]
            parent, token = best // vocab, best % vocab
            scores = np.take_along_axis(candidates, best, axis=1)
            ranks = np.take_along_axis(keys, best, axis=1)
            tokens = tokens[rows, parent]
            was_finished = finished[rows, parent]
            tokens[:, :, step] = np.where(was_finished, tokens[:, :, step], token)
            finished = was_finished | (token == end_id)
            flat_parent = self.backend.asarray((rows * k + parent).reshape(-1))
            state = self.select_rows(state, flat_parent)
            prev = self.backend.asarray(token.reshape(-1))
            if finished[np.isfinite(scores)].all():
                break
        return self._best_beams(tokens, ranks, n_best, end_id)

    @staticmethod
    def _best_beams(tokens, scores, n_best, end_id):
        """Each sentence's best beam (``tokens`` (n, k, steps), ``scores`` (n, k)), or all its live ones, best first."""
        if n_best:
            return [_cut_at_end([sentence[b].tolist() for b in np.argsort(-row_scores, kind="stable")
                                 if np.isfinite(row_scores[b])], end_id)
                    for sentence, row_scores in zip(tokens, scores, strict=True)]
        return _cut_at_end([sentence[int(np.argmax(row_scores))].tolist()
                            for sentence, row_scores in zip(tokens, scores, strict=True)], end_id)

    def sample_decode_ids(self, encoder_input_ids, temperature: float, rng: np.random.Generator,
                          source_lengths=None) -> list[list[int]]:
        """Like greedy decoding, but each character is drawn from softmax(logits / temperature), with one number of
        ``rng`` per row and step. Attention models on the numba backend run it in one compiled call (the same
        numbers, the same characters)."""
        start_id, end_id = self.target_vocab.index[START], self.target_vocab.index[END]
        state = self.start_decoding(encoder_input_ids, source_lengths)
        batch = np.shape(encoder_input_ids)[0]
        tokens = np.full((batch, self.max_decoder_len + 1), end_id, dtype=np.int64)
        if self.attention is not None and self.attention_decoder.compiled_sample(self.backend):
            # The step loop draws one number per row and step until every row has ended: draw enough for the
            # longest run, then put the generator back and take as many as the loop would have.
            before = rng.bit_generator.state
            uniforms = rng.random((tokens.shape[1], batch))
            steps = self.attention_decoder.sample_decode(self.params, state, self.params["dense.kernel"],
                                                         self.params["dense.bias"], start_id, end_id, temperature,
                                                         uniforms, tokens)
            rng.bit_generator.state = before
            rng.random((steps, batch))
            return _cut_at_end(tokens.tolist(), end_id)
        done = np.zeros(batch, dtype=bool)
        prev = self.backend.xp.full(batch, start_id, dtype=np.int64)
        for step in range(self.max_decoder_len + 1):
            logits, state, _ = self.step(prev, state)
            z = self.backend.to_numpy(logits).astype(np.float64) / temperature
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            sampled = (p.cumsum(axis=1) < rng.random((batch, 1))).sum(axis=1).clip(max=p.shape[1] - 1)
            sampled[done] = end_id
            tokens[:, step] = sampled
            done |= sampled == end_id
            if done.all():
                break
            prev = self.backend.asarray(sampled)
        return _cut_at_end(tokens.tolist(), end_id)

    def translate(self, texts: list[str], batch_size: int = 512, beam_width: int = 1,
                  temperature: float | None = None, seed: int = 0, attention_maps: list | None = None,
                  n_best: bool = False, length_penalty: float = 0.0) -> list:
        """Translations of ``texts``, many at a time: greedy (the default, exactly the example's algorithm), beam
        search (``beam_width > 1``, its beams ranked by ``beam_decode_ids``'s ``length_penalty``; with ``n_best``,
        each text's list of beam translations, best first, the first being the translation without ``n_best``) or
        sampling (``temperature``). Inputs are padded with spaces to ``max_encoder_len`` as in training (not at all
        for a ``mask_padding`` model); a longer input is padded to its own length, and is batched only with inputs
        of that same padded length (a ``mask_padding`` model batches any lengths: ``start_decoding``, sorted by
        length, at most the backend's ``mixed_batch_rows`` at a time),
        so every sentence gets exactly the string it would get decoded alone. An attention model attends over each
        sentence's own characters only.
        ``attention_maps`` (a list; greedy decoding of an attention model) receives, per text, its attention weights
        (generated characters, the text's characters) as a host array."""
        min_len = 0 if self.mask_padding else self.max_encoder_len
        if self.mask_padding:  # nothing to read: the encoder steps over a row's own characters only
            empty = [k for k, text in enumerate(texts) if not text]
            if empty:
                raise MinilstmError(f"text {empty[0]} is empty ({len(empty)} empty in all): a --mask-padding model "
                                    "reads a sentence's own characters, so give it at least one")
        mixed = self.takes_mixed_lengths()  # then any lengths share a batch (start_decoding), sorted to pad little
        by_length: dict[int, list[int]] = {}
        for k in sorted(range(len(texts)), key=lambda k: len(texts[k])) if mixed else range(len(texts)):
            by_length.setdefault(0 if mixed else max(len(texts[k]), min_len), []).append(k)  # 0: one group
        chunks = []  # (padded length, sentence indices), decoded in parallel where the backend has workers
        if mixed and self.backend.mixed_batch_rows is not None:
            batch_size = min(batch_size, self.backend.mixed_batch_rows)
        for members in by_length.values():
            per_chunk = min(batch_size, -(-len(members) // self.backend.workers))
            for i in range(0, len(members), per_chunk):
                chunk = members[i : i + per_chunk]
                chunks.append((max(max(len(texts[k]) for k in chunk), min_len), chunk))
        seeds = np.random.SeedSequence(seed).spawn(len(chunks))

        def decode(item):
            (length, members), chunk_seed = item
            ids = encode_inputs([texts[k] for k in members], self.input_vocab, length)
            lengths = [len(texts[k]) for k in members]
            if temperature is not None:
                return self.sample_decode_ids(ids, temperature, np.random.default_rng(chunk_seed), lengths), None
            if n_best or beam_width > 1:
                return self.beam_decode_ids(ids, beam_width, lengths, n_best, length_penalty), None
            maps = [] if want_maps else None
            return self.greedy_decode_ids(ids, lengths, maps), maps

        if n_best and temperature is not None:
            raise ValueError("n_best needs beam search, not sampling")
        check_length_penalty(length_penalty)
        want_maps = attention_maps is not None and self.attention is not None
        results = [""] * len(texts)
        maps_by_text = [None] * len(texts)
        decoded_chunks = self.backend.parallel_map(decode, list(zip(chunks, seeds, strict=True)))
        for (_, members), (decoded, maps) in zip(chunks, decoded_chunks, strict=True):
            for j, (k, ids) in enumerate(zip(members, decoded, strict=True)):
                results[k] = [self.target_vocab.decode(x) for x in ids] if n_best else self.target_vocab.decode(ids)
                if maps is not None:
                    maps_by_text[k] = maps[j][:, : len(texts[k])]
        if want_maps:
            attention_maps.extend(maps_by_text)
        return results
