"""The PyTorch reference of minilstm's model, which the tests compare our losses and gradients against and the
benchmarks time: one class, ``TorchSeq2Seq``, for the Keras example's seq2seq and for the attention models, written
the way PyTorch users write them (OpenNMT-py's layout for attention).

- encoder: ``nn.LSTM`` over one-hot characters (stacked, optionally bidirectional); each decoder layer starts from
  the encoder layer's final state, the two directions concatenated;
- decoder with attention and input feeding: one ``nn.LSTMCell`` per layer stepped in a Python loop, the layer-0
  input ``[onehot(y_{t-1}), htilde_{t-1}]`` (OpenNMT-py's ``InputFeedRNNDecoder``); otherwise one fused ``nn.LSTM``
  over the whole target (the Keras example; with attention OpenNMT-py's ``StdRNNDecoder``, attending after it);
- attention (``GlobalAttention``, OpenNMT-py's names): scores ``h . hbar`` (dot), ``linear_in(h) . hbar``
  (general) or ``v . tanh(linear_query(h) + linear_context(hbar))`` (concat, OpenNMT's "mlp"), a softmax over each
  sentence's real source positions, ``htilde = tanh(linear_out([context, h]))``;
- ``dense``: ``nn.Linear`` to the logits. Time-major, as minilstm: inputs (T, B, V), logits (T, B, V).
- with ``embedding_dim`` E: ``nn.Embedding(V, E)`` before each side instead of the one-hot characters (inputs are
  then the ids, (T, B)); the LSTMs' input size is E (the input-feeding cell's E + H).

Weights come from minilstm explicitly: ``TorchSeq2Seq.from_minilstm(model)``, or ``set_weights(weights)`` with a
dict in minilstm's (Keras's) names and layout. The mapping: kernels transposed (PyTorch keeps (out, in)), gate
order i, f, c, o = PyTorch's i, f, g, o, our one bias in ``bias_ih`` and ``bias_hh`` held at zero (frozen unless
asked otherwise: two trained biases would each get their own optimizer update, not our model);
``encoder_embedding.weight`` = ``encoder_embedding.embeddings`` (the same (V, E) layout; the decoder's likewise),
``linear_in.weight`` = score_kernel, ``linear_out.weight`` = output_kernelᵀ, ``linear_query`` = query_kernelᵀ and
query_bias, ``linear_context.weight`` = key_kernelᵀ, ``v.weight`` = score_vector as (1, A) (minilstm.convert
exports the same names). ``get_weights()`` and ``get_grads()`` map back, for comparing with ``model.params`` and
``model.grads``.

Needs PyTorch (``pip install torch==2.13.0``, the CPU build is enough).
"""

import numpy as np
import torch

from minilstm.layers import IGNORE
from minilstm.nn import LSTM

SCORES = ("dot", "general", "concat")


class GlobalAttention(torch.nn.Module):
    """Luong attention over a memory (B, S, M) for queries (B, H) or (B, T, H), OpenNMT-py's parameter names."""

    def __init__(self, units: int, memory_size: int, score: str, **factory):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, not {score!r}")
        self.score = score
        linear = torch.nn.Linear
        if score == "general":
            self.linear_in = linear(units, memory_size, bias=False, **factory)
        elif score == "concat":
            self.linear_query = linear(units, units, bias=True, **factory)
            self.linear_context = linear(memory_size, units, bias=False, **factory)
            self.v = linear(units, 1, bias=False, **factory)
        self.linear_out = linear(memory_size + units, units, bias=False, **factory)

    def forward(self, h, memory, valid):
        """htilde like ``h``; ``valid`` (B, S) is True at each sentence's real source positions."""
        query = h[:, None] if h.dim() == 2 else h  # (B, T, H)
        if self.score == "concat":
            hidden = torch.tanh(self.linear_query(query)[:, :, None] + self.linear_context(memory)[:, None])
            scores = self.v(hidden)[..., 0]
        else:
            scores = (self.linear_in(query) if self.score == "general" else query) @ memory.transpose(1, 2)
        weights = torch.softmax(scores.masked_fill(~valid[:, None, :], float("-inf")), dim=2)
        htilde = torch.tanh(self.linear_out(torch.cat([weights @ memory, query], dim=2)))
        return htilde[:, 0] if h.dim() == 2 else htilde


# minilstm's attention weights -> (this module's parameter, how the layouts differ: "T" transposed, "row" a (1, A)
# matrix of our (A,) vector, "" the same).
ATTENTION_NAMES = {"score_kernel": ("linear_in.weight", ""), "query_kernel": ("linear_query.weight", "T"),
                   "query_bias": ("linear_query.bias", ""), "key_kernel": ("linear_context.weight", "T"),
                   "score_vector": ("v.weight", "row"), "output_kernel": ("linear_out.weight", "T")}


class TorchSeq2Seq(torch.nn.Module):
    """minilstm's ``Seq2Seq`` in PyTorch (module doc): ``n_in`` / ``n_out`` characters, ``units`` a direction in the
    encoder (the decoder has ``units`` x directions), ``layers`` on each side, ``attention`` None or a score."""

    def __init__(self, n_in: int, n_out: int, units: int, *, layers: int = 1, bidirectional: bool = False,
                 attention: str | None = None, input_feed: bool = True, embedding_dim: int = 0, dtype="float32",
                 device="cpu", seed=0):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.n_in, self.n_out, self.layers = n_in, n_out, layers
        self.device = torch.device(device)
        self.dtype = getattr(torch, str(dtype))
        self.directions = 2 if bidirectional else 1
        self.input_feed = input_feed and attention is not None
        hidden = units * self.directions
        factory = {"device": self.device, "dtype": self.dtype}
        self.embedding_dim = int(embedding_dim or 0)
        self.encoder_embedding = self.decoder_embedding = None
        if self.embedding_dim:
            self.encoder_embedding = torch.nn.Embedding(n_in, self.embedding_dim, **factory)
            self.decoder_embedding = torch.nn.Embedding(n_out, self.embedding_dim, **factory)
        in_size, out_size = (self.embedding_dim, self.embedding_dim) if self.embedding_dim else (n_in, n_out)
        self.encoder = torch.nn.LSTM(in_size, units, layers, bidirectional=bidirectional, **factory)
        if self.input_feed:
            self.cells = torch.nn.ModuleList(torch.nn.LSTMCell(out_size + hidden if layer == 0 else hidden, hidden,
                                                               **factory) for layer in range(layers))
            self.decoder = None
        else:
            self.cells = None
            self.decoder = torch.nn.LSTM(out_size, hidden, layers, **factory)
        self.attention = None if attention is None else GlobalAttention(hidden, hidden, attention, **factory)
        self.dense = torch.nn.Linear(hidden, n_out, **factory)
        # minilstm's names for the same weights (its LSTM's naming: encoder, encoder_reverse, encoder_l1, ...)
        self._encoder_cells = LSTM(units, vocab_size=n_in, num_layers=layers, bidirectional=bidirectional,
                                   name="encoder").cells()
        self._decoder_cells = LSTM(hidden, vocab_size=n_out, num_layers=layers, name="decoder").cells()

    @classmethod
    def from_minilstm(cls, model, dtype=None, device="cpu") -> "TorchSeq2Seq":
        """The same architecture as minilstm's ``model`` with its weights (``set_weights``); ``dtype`` its own unless
        given."""
        if model.encoder.num_layers != model.decoder.num_layers:
            raise ValueError("the reference has as many decoder layers as encoder layers")
        reference = cls(len(model.input_vocab), len(model.target_vocab), model.latent_dim,
                        layers=model.encoder.num_layers, bidirectional=model.encoder.bidirectional,
                        attention=model.attention, input_feed=model.input_feed,
                        embedding_dim=model.arch.embedding_dim, dtype=str(model.dtype) if dtype is None else dtype,
                        device=device, seed=None)
        reference.set_weights(model.get_weights())
        return reference

    # -- weights in minilstm's names and layout -------------------------------------------------------------------

    def _lstm_pairs(self):
        """(our name, parameter, layout) of the LSTM weights, bias_hh (ours: none) under the name None."""
        decoder = self.cells if self.decoder is None else self.decoder
        for lstm, cells in ((self.encoder, self._encoder_cells), (decoder, self._decoder_cells)):
            for layer, direction, cell in cells:
                if isinstance(lstm, torch.nn.ModuleList):  # one nn.LSTMCell per layer
                    module, suffix = lstm[layer], ""
                else:
                    module, suffix = lstm, f"_l{layer}" + ("_reverse" if direction else "")
                yield f"{cell}.kernel", getattr(module, f"weight_ih{suffix}"), "T"
                yield f"{cell}.recurrent_kernel", getattr(module, f"weight_hh{suffix}"), "T"
                yield f"{cell}.bias", getattr(module, f"bias_ih{suffix}"), ""
                yield None, getattr(module, f"bias_hh{suffix}"), ""

    def _pairs(self):
        """(our name, parameter, layout) of every weight minilstm's model has."""
        if self.embedding_dim:
            yield "encoder_embedding.embeddings", self.encoder_embedding.weight, ""
            yield "decoder_embedding.embeddings", self.decoder_embedding.weight, ""
        yield from ((name, p, layout) for name, p, layout in self._lstm_pairs() if name is not None)
        if self.attention is not None:
            owned = dict(self.attention.named_parameters())
            for ours, (theirs, layout) in ATTENTION_NAMES.items():
                if theirs in owned:
                    yield f"attention.{ours}", owned[theirs], layout
        yield "dense.kernel", self.dense.weight, "T"
        yield "dense.bias", self.dense.bias, ""

    def set_weights(self, weights: dict, freeze_bias_hh: bool = True):
        """Copy minilstm's weights (its names and layout) in; every ``bias_hh`` to zero, and held there unless
        ``freeze_bias_hh`` is False (then it trains, as PyTorch's second bias does)."""
        with torch.no_grad():
            for name, param, layout in self._pairs():
                value = torch.from_numpy(np.ascontiguousarray(weights[name]))
                param.copy_(value.T if layout == "T" else value[None] if layout == "row" else value)
            for name, param, _ in self._lstm_pairs():
                if name is None:
                    param.zero_()
                    param.requires_grad_(not freeze_bias_hh)

    def _minilstm_layout(self, tensor_of) -> dict[str, np.ndarray]:
        out = {}
        for name, param, layout in self._pairs():
            value = tensor_of(param).detach().cpu().numpy()
            out[name] = value.T if layout == "T" else value[0] if layout == "row" else value
        return out

    def get_weights(self) -> dict[str, np.ndarray]:
        """The weights in minilstm's names and layout (``model.get_weights()``'s)."""
        return self._minilstm_layout(lambda param: param)

    def get_grads(self) -> dict[str, np.ndarray]:
        """The gradients of the last ``backward()`` in minilstm's names and layout (``model.grads``')."""
        return self._minilstm_layout(lambda param: param.grad)

    def keras_rmsprop(self, learning_rate: float = 0.001) -> torch.optim.Optimizer:
        """tf.keras's RMSprop (rho 0.9, epsilon 1e-7 outside the square root, as ours) over the trained parameters."""
        return torch.optim.RMSprop([p for p in self.parameters() if p.requires_grad], lr=learning_rate, alpha=0.9,
                                   eps=1e-7)

    # -- running it -----------------------------------------------------------------------------------------------

    def one_hot(self, ids, classes: int):
        """Batch-major ids (B, T) (NumPy) -> time-major one-hot (T, B, classes) on the model's device and dtype;
        with embeddings the time-major ids themselves (T, B), which ``forward`` looks up."""
        ids = torch.from_numpy(np.ascontiguousarray(np.asarray(ids).T)).long().to(self.device)
        return ids if self.embedding_dim else torch.nn.functional.one_hot(ids, classes).to(self.dtype)

    def _token_inputs(self, x, embedding):
        """One-hot inputs as they are; ids through the side's ``nn.Embedding``."""
        return x if embedding is None else embedding(x)

    def valid(self, lengths, source_len: int):
        """(B, S): True at the first ``lengths[b]`` source positions of each sentence (None: at all of them)."""
        positions = torch.arange(source_len, device=self.device)[None, :]
        if lengths is None:
            return positions >= 0
        return positions < torch.as_tensor(np.asarray(lengths), device=self.device)[:, None]

    def upload(self, encoder_ids, decoder_input_ids, decoder_target_ids, lengths=None):
        """A batch of id arrays (B, S), (B, T), (B, T) -> (encoder one-hot, decoder one-hot, targets (T * B,) in
        the logits' order, valid source positions or None without attention), on the device."""
        enc = self.one_hot(encoder_ids, self.n_in)
        targets = torch.from_numpy(np.ascontiguousarray(np.asarray(decoder_target_ids).T)).long().to(self.device)
        valid = None if self.attention is None else self.valid(lengths, enc.shape[0])
        return enc, self.one_hot(decoder_input_ids, self.n_out), targets.reshape(-1), valid

    def encode(self, enc_x):
        """Memory (B, S, M) and each decoder layer's initial (h, c): the encoder layer's final state, directions
        concatenated."""
        memory, (h_n, c_n) = self.encoder(enc_x)
        d = self.directions
        h = [torch.cat(list(h_n[d * layer : d * layer + d]), dim=1) for layer in range(self.layers)]
        c = [torch.cat(list(c_n[d * layer : d * layer + d]), dim=1) for layer in range(self.layers)]
        return memory.transpose(0, 1), (h, c)

    def decode(self, dec_x, state, memory, valid, feed):
        """The decoder over ``dec_x`` (T, B, V) from ``state`` (per-layer lists h, c), input feeding from ``feed``
        (B, H): the top layer's outputs, htilde with attention (T, B, H); the state and the feed after them."""
        h, c = state
        if self.cells is None:
            outputs, (h_n, c_n) = self.decoder(dec_x, (torch.stack(h), torch.stack(c)))
            if self.attention is not None:
                outputs = self.attention(outputs.transpose(0, 1), memory, valid).transpose(0, 1)
            return outputs, (list(h_n), list(c_n)), feed
        h, c, outputs = list(h), list(c), []
        for t in range(dec_x.shape[0]):
            x = torch.cat([dec_x[t], feed], dim=1)
            for layer, cell in enumerate(self.cells):
                h[layer], c[layer] = cell(x, (h[layer], c[layer]))
                x = h[layer]
            feed = self.attention(x, memory, valid)
            outputs.append(feed)
        return torch.stack(outputs), (h, c), feed

    def forward(self, enc_x, dec_x, valid=None):
        """Teacher-forced logits (T, B, V) of one-hot inputs, or ids with embeddings (``upload``)."""
        enc_x = self._token_inputs(enc_x, self.encoder_embedding)
        dec_x = self._token_inputs(dec_x, self.decoder_embedding)
        memory, state = self.encode(enc_x)
        if valid is None and self.attention is not None:
            valid = self.valid(None, enc_x.shape[0]).expand(enc_x.shape[1], -1)
        outputs, _, _ = self.decode(dec_x, state, memory, valid, torch.zeros_like(state[0][0]))
        return self.dense(outputs)

    def logits(self, encoder_ids, decoder_input_ids, lengths=None):
        """Teacher-forced logits (T, B, V) of id arrays (B, S) and (B, T), attending over ``lengths`` (None: all)."""
        enc, dec, _, valid = self.upload(encoder_ids, decoder_input_ids, decoder_input_ids, lengths)
        return self(enc, dec, valid)

    def batch_loss(self, batch, reduction="mean"):
        """Cross-entropy over the target characters (IGNORE ones left out) of an uploaded batch, "mean" or "sum"."""
        enc, dec, targets, valid = batch
        return torch.nn.functional.cross_entropy(self(enc, dec, valid).reshape(-1, self.n_out), targets,
                                                 ignore_index=IGNORE, reduction=reduction)

    def loss(self, encoder_ids, decoder_input_ids, decoder_target_ids, lengths=None, reduction="mean"):
        """``batch_loss`` of id arrays (B, S), (B, T), (B, T), attending over ``lengths`` (None: all)."""
        return self.batch_loss(self.upload(encoder_ids, decoder_input_ids, decoder_target_ids, lengths), reduction)

    def train_step(self, optimizer, batch):
        """One step on an uploaded batch: mean cross-entropy, backward, ``optimizer.step()``; returns the loss."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.batch_loss(batch)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def greedy_decode(self, enc_x, valid, start_id: int, end_id: int, max_len: int) -> np.ndarray:
        """Batched greedy decoding (B sentences at once, every row kept until all have produced END): ids (B, <=
        max_len + 1)."""
        with torch.no_grad():
            memory, state = self.encode(self._token_inputs(enc_x, self.encoder_embedding))
            batch = enc_x.shape[1]
            if valid is None and self.attention is not None:
                valid = self.valid(None, enc_x.shape[0]).expand(batch, -1)
            prev = torch.full((batch,), start_id, device=self.device, dtype=torch.long)
            feed, finished, tokens = torch.zeros_like(state[0][0]), torch.zeros_like(prev, dtype=torch.bool), []
            for _ in range(max_len + 1):
                x = torch.nn.functional.one_hot(prev, self.n_out).to(self.dtype)[None] if not self.embedding_dim \
                    else self.decoder_embedding(prev)[None]
                outputs, state, feed = self.decode(x, state, memory, valid, feed)
                prev = self.dense(outputs[0]).argmax(dim=1)
                tokens.append(prev)
                finished |= prev == end_id
                if bool(finished.all()):
                    break
            return torch.stack(tokens, 1).cpu().numpy()

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
