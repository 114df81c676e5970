"""The public layer API: ``Embedding``, ``LSTM`` (token ids or vectors in, any number of stacked layers, optionally
bidirectional, inverted dropout between layers), ``Dense``, and ``Parameters``, the weights of some layers in one
flat buffer.

A layer holds no arrays. It names its weights (Keras's layout, one set per layer and direction: ``lstm.kernel``,
``lstm_reverse.kernel``, ``lstm_l1.kernel``, ... like PyTorch's ``weight_ih_l1_reverse``) and reads them, by name,
from the ``Parameters`` given to ``forward``; ``backward`` writes their gradients into ``params.grads`` (or another
buffer of the same layout) and returns the gradients w.r.t. its inputs. So a model is a list of layers, one flat
weight buffer, one flat gradient buffer and one optimizer pass over both: ``Seq2Seq`` is built the same way.

Stacked and bidirectional LSTM, for layer l = 0..L-1 and direction d (forward; reverse = the same loop over the
time-reversed sequence, its outputs handed back in time order):

    x_0 = the inputs;   x_l = y_{l-1} * m_l   (m_l: inverted-dropout multipliers, 0 or 1/(1-p); 1 outside training)
    y_l = [h^fwd_l(t), h^rev_l(t)]  concatenated over the features (2H when bidirectional)
    final states (h_n, c_n): (L * directions, B, H), row l * directions + d, as in PyTorch's nn.LSTM

Backward, from the top layer down: each direction's backward-through-time (``lstm``) takes its half of dL/dy_l and
returns dL/dx_l; the two directions' parts are added, multiplied by m_l, and are dL/dy_{l-1}.

Embedding (Keras's ``Embedding``, PyTorch's ``nn.Embedding``), a table E (V, D) of trained rows; its gradient is the
transpose of a gather, a scatter-add (duplicates of an id add up; the GPU's sorted version in a fixed order):

    x_t[b] = E[ids_t[b]]                     dE[v] = sum over (t, b) with ids_t[b] == v of dL/dx_t[b]

Dropout masks are a pure function of (seed, layer, time step, row, feature) (``dropout_mask``), not draws from a
generator's running state: the same seed gives the same masks on every backend, however a batch is cut into thread
shards or MPI ranks (a shard passes the index of its first row), and after ``--resume``.
"""

import numpy as np

from . import layers
from .backends import get_backend
from .layers import dropout_key, dropout_mask  # noqa: F401 - part of this module's API
from .lstm import Workspace, is_token_ids, lstm_backward, lstm_forward
from .params import FlatParameters

# ---------------------------------------------------------------------------------------------------------------
# Parameters


class Parameters(FlatParameters):
    """The weights of ``layers`` as named views into one flat buffer, on ``backend``; ``grads``: a second buffer of
    the same layout for their gradients. With ``seed`` the weights get the layers' initialisers (``init``: one of
    ``layers.INIT_SCHEMES``, Keras's by default), drawn on the host in float64 from one generator, layer after layer,
    so every backend and dtype starts from the same numbers."""

    def __init__(self, backend, layers_, dtype="float32", seed=None, init: str = "keras"):
        self.backend = get_backend(backend)
        self.dtype = np.dtype(dtype)
        self.layers = list(layers_)
        shapes = {}
        for layer in self.layers:
            for name, shape in layer.shapes().items():
                if name in shapes:
                    raise ValueError(f"two layers name a weight {name!r}: give the layers different names")
                shapes[name] = shape
        super().__init__(self.backend.xp, shapes, self.dtype)
        self.grads = FlatParameters(self.backend.xp, shapes, self.dtype)
        if seed is not None:
            self.initialize(seed, init)

    @property
    def size(self) -> int:
        return self.flat.size

    def initialize(self, seed: int | np.random.Generator = 0, init: str = "keras"):
        layers.check_init_scheme(init)
        rng = np.random.default_rng(seed)
        weights = {}
        for layer in self.layers:
            weights.update(layer.initial_weights(rng, init))
        self.set_weights(weights)
        return self

    def set_weights(self, weights: dict):
        for name, view in self.items():
            value = np.asarray(weights[name])
            if value.shape != view.shape:
                raise ValueError(f"{name}: expected shape {view.shape}, got {value.shape}")
            view[...] = self.backend.asarray(value, dtype=self.dtype)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: self.backend.to_numpy(view).copy() for name, view in self.items()}


# ---------------------------------------------------------------------------------------------------------------
# Layers


class Dense:
    """``y = x @ kernel + bias`` over the last axis of ``x``; Keras's ``Dense`` (glorot_uniform kernel, zero bias)."""

    def __init__(self, input_size: int, units: int, name: str = "dense"):
        self.input_size, self.units, self.name = int(input_size), int(units), name

    def shapes(self) -> dict:
        return {f"{self.name}.kernel": (self.input_size, self.units), f"{self.name}.bias": (self.units,)}

    def initial_weights(self, rng, scheme: str = "keras") -> dict:
        shape = (self.input_size, self.units)
        if scheme == "pytorch":
            return {f"{self.name}.kernel": layers.fan_in_uniform(rng, shape, self.input_size),
                    f"{self.name}.bias": layers.fan_in_uniform(rng, (self.units,), self.input_size)}
        return {f"{self.name}.kernel": layers.glorot_uniform(rng, shape), f"{self.name}.bias": np.zeros(self.units)}

    def forward(self, params, x):
        flat = x.reshape(-1, self.input_size)
        y = params.backend.matmul(flat, params[f"{self.name}.kernel"])
        y += params[f"{self.name}.bias"]
        return y.reshape(x.shape[:-1] + (self.units,))

    def backward(self, params, x, d_y, grads=None):
        """dW = x^T dy, db = sum(dy) written into ``grads`` (default ``params.grads``); returns dx = dy W^T."""
        grads = params.grads if grads is None else grads
        flat, d_flat = x.reshape(-1, self.input_size), d_y.reshape(-1, self.units)
        params.backend.matmul(flat.T, d_flat, out=grads[f"{self.name}.kernel"])
        grads[f"{self.name}.bias"][...] = d_flat.sum(axis=0)
        return params.backend.matmul(d_flat, params[f"{self.name}.kernel"].T).reshape(x.shape)


class Embedding:
    """Token ids (any shape) -> rows of a trained table ``{name}.embeddings`` (``vocab_size``, ``dim``), Keras's
    ``Embedding`` with its default initialiser, uniform(-0.05, 0.05). Before an LSTM it replaces the one-hot input:
    the LSTM then reads vectors of ``dim`` features (``LSTM(units, input_size=dim)``)."""

    def __init__(self, vocab_size: int, dim: int, name: str = "embedding"):
        if vocab_size < 1 or dim < 1:
            raise ValueError("vocab_size and dim must be at least 1")
        self.vocab_size, self.dim, self.name = int(vocab_size), int(dim), name

    @property
    def weight_name(self) -> str:
        return f"{self.name}.embeddings"

    def shapes(self) -> dict:
        return {self.weight_name: (self.vocab_size, self.dim)}

    def initial_weights(self, rng, scheme: str = "keras") -> dict:
        shape = (self.vocab_size, self.dim)
        if scheme == "pytorch":
            return {self.weight_name: rng.standard_normal(shape)}
        return {self.weight_name: rng.uniform(-0.05, 0.05, size=shape)}

    def forward(self, params, ids):
        """The rows of ``ids``: ``ids.shape + (dim,)``, a new array (a gather)."""
        return params.backend.xp.take(params[self.weight_name], ids, axis=0)

    def backward(self, params, ids, d_x, grads=None):
        """Write d table, the scatter-add of ``d_x``'s rows at ``ids`` (module doc), into ``grads`` (default
        ``params.grads``, overwriting)."""
        grads = params.grads if grads is None else grads
        xp, d_table = params.backend.xp, grads[self.weight_name]
        d_table[...] = 0
        params.backend.scatter_add_rows(d_table, xp.ascontiguousarray(ids.reshape(-1)),
                                        xp.ascontiguousarray(d_x.reshape(-1, self.dim)))


class LSTMStackCache:
    """What ``LSTM.backward`` needs: per layer, the caches of its directions and its dropout multipliers."""

    def __init__(self, batch: int, input_table=None):
        self.batch = batch
        self.cells = []  # [layer][direction] -> lstm.LSTMCache
        self.masks = []  # [layer] -> multipliers of the layer's inputs, or None
        self.input_table = input_table  # the embedding table folded into layer 0 (``LSTM.forward``), or None


class LSTM:
    """A stack of ``num_layers`` LSTM layers of ``units`` units over token ids (``vocab_size``) or vectors
    (``input_size``), optionally ``bidirectional``, with inverted ``dropout`` between layers (PyTorch's nn.LSTM
    arguments; the math is in the module docstring). Time-major: inputs (T, B) or (T, B, D), outputs (T, B, H * D)."""

    def __init__(self, units: int, *, vocab_size: int | None = None, input_size: int | None = None,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0, name: str = "lstm"):
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (token-id inputs) and input_size (vector inputs)")
        if units < 1 or num_layers < 1:
            raise ValueError("units and num_layers must be at least 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.units, self.num_layers, self.name = int(units), int(num_layers), name
        self.vocab_size, self.input_size = vocab_size, input_size
        self.directions = 2 if bidirectional else 1
        self.dropout = float(dropout)

    @property
    def bidirectional(self) -> bool:
        return self.directions == 2

    @property
    def output_size(self) -> int:
        return self.units * self.directions

    def cell_name(self, layer: int, direction: int = 0) -> str:
        return self.name + (f"_l{layer}" if layer else "") + ("_reverse" if direction else "")

    def cells(self):
        """(layer, direction, name) of every layer and direction, in weight order."""
        return [(layer, d, self.cell_name(layer, d)) for layer in range(self.num_layers)
                for d in range(self.directions)]

    def shapes(self) -> dict:
        out = {}
        for layer, _, cell in self.cells():
            rows = (self.vocab_size or self.input_size) if layer == 0 else self.output_size
            out[f"{cell}.kernel"] = (rows, 4 * self.units)
            out[f"{cell}.recurrent_kernel"] = (self.units, 4 * self.units)
            out[f"{cell}.bias"] = (4 * self.units,)
        return out

    def initial_weights(self, rng, scheme: str = "keras") -> dict:
        """Keras's LSTM initialisers: glorot_uniform kernel, orthogonal recurrent kernel, forget-gate bias 1; or
        PyTorch's (``layers.INIT_SCHEMES``)."""
        out, shapes = {}, self.shapes()
        if scheme == "pytorch":
            for _, _, cell in self.cells():
                for key in ("kernel", "recurrent_kernel"):
                    out[f"{cell}.{key}"] = layers.fan_in_uniform(rng, shapes[f"{cell}.{key}"], self.units)
                bias_ih = layers.fan_in_uniform(rng, (4 * self.units,), self.units)
                out[f"{cell}.bias"] = bias_ih + layers.fan_in_uniform(rng, (4 * self.units,), self.units)
            return out
        for _, _, cell in self.cells():
            out[f"{cell}.kernel"] = layers.glorot_uniform(rng, shapes[f"{cell}.kernel"])
            out[f"{cell}.recurrent_kernel"] = layers.orthogonal(rng, (self.units, 4 * self.units))
            out[f"{cell}.bias"] = layers.lstm_bias(self.units)
        return out

    def zero_state(self, params, batch: int):
        xp = params.backend.xp
        shape = (self.num_layers * self.directions, batch, self.units)
        return xp.zeros(shape, dtype=params.dtype), xp.zeros(shape, dtype=params.dtype)

    def forward(self, params, inputs, initial_state=None, *, training: bool = False, seed: int | None = None,
                row_offset: int = 0, workspaces: dict | None = None, return_outputs: bool = True,
                input_table=None):
        """Run the stack over ``inputs`` from ``initial_state`` (h0, c0), each (L * directions, B, H) (zeros when
        None). Returns ``(outputs, (h_n, c_n), cache)``: outputs (T, B, H * directions) of the top layer (None with
        ``return_outputs=False``), the final states like the initial ones, and what ``backward`` needs.

        ``training`` applies dropout, with masks drawn from ``seed`` (required then: e.g. the step number, so a
        rerun draws the same masks) for rows ``row_offset..`` of the batch. ``workspaces`` (a dict the caller
        keeps) lets repeated calls reuse their arrays; the outputs and the cache stay valid until the next call with
        the same ``workspaces``.

        ``input_table`` (V, D), for a stack over vectors: ``inputs`` are token ids (T, B) and layer 0 reads
        ``input_table[inputs]``, an embedding in front, computed folded: ``table[ids] @ kernel`` is
        ``(table @ kernel)[ids]``, one (V, D) x (D, 4H) product and a row gather instead of a (T*B, D) x (D, 4H)
        GEMM (V is a few dozen characters, T*B thousands of positions). ``backward`` then returns the gradient
        w.r.t. the table."""
        backend, xp = params.backend, params.backend.xp
        steps, batch = inputs.shape[:2]
        takes_ids = self.vocab_size is not None or input_table is not None
        if is_token_ids(inputs) != takes_ids:
            raise ValueError(f"{self.name} takes {'token ids' if takes_ids else 'float vectors'} "
                             f"(got an array of {inputs.dtype})")
        if input_table is not None and (self.vocab_size is not None or input_table.shape[1] != self.input_size):
            raise ValueError(f"{self.name}: an input_table needs a stack over vectors of its width "
                             f"({self.input_size}), not {input_table.shape}")
        dropping = training and self.dropout > 0 and self.num_layers > 1
        if dropping and seed is None:
            raise ValueError("training with dropout needs a seed (e.g. the step number), so that the masks repeat")
        workspaces = {} if workspaces is None else workspaces
        h0, c0 = self.zero_state(params, batch) if initial_state is None else initial_state
        cache = LSTMStackCache(batch, input_table)
        h_n, c_n = xp.empty_like(h0), xp.empty_like(c0)
        x = inputs
        outputs = None
        for layer in range(self.num_layers):
            mask = None
            if layer and dropping:
                mask = backend.dropout_mask(x.shape, self.dropout, dropout_key(seed, layer), row_offset, x.dtype)
                x = x * mask
            cells = []
            for direction in range(self.directions):
                cell = self.cell_name(layer, direction)
                index = layer * self.directions + direction
                workspace = workspaces.setdefault(cell, Workspace(xp))
                kernel = params[f"{cell}.kernel"]
                if layer == 0 and input_table is not None:  # folded: (table @ kernel)[ids] (docstring)
                    folded = workspace.get("folded_kernel", (input_table.shape[0], kernel.shape[1]), kernel.dtype)
                    kernel = backend.matmul(input_table, kernel, out=folded)
                cells.append(lstm_forward(backend, kernel, params[f"{cell}.recurrent_kernel"],
                                          params[f"{cell}.bias"], x, h0[index], c0[index], workspace,
                                          reverse=direction == 1))
                h_n[index], c_n[index] = cells[-1].hs[-1], cells[-1].cs[-1]
            cache.cells.append(cells)
            cache.masks.append(mask)
            top = layer == self.num_layers - 1
            if top and not return_outputs:
                break
            if self.directions == 1:
                x = cells[0].outputs
            else:
                x = xp.empty((steps, batch, self.output_size), dtype=params.dtype)
                x[:, :, : self.units] = cells[0].outputs
                x[:, :, self.units :] = cells[1].outputs
            outputs = x
        return outputs, (h_n, c_n), cache

    def backward(self, params, cache: LSTMStackCache, d_outputs, d_final_state=None, grads=None,
                 workspaces: dict | None = None):
        """Backpropagate through the stack. ``d_outputs`` (T, B, H * directions) or None (outputs unused),
        ``d_final_state`` (dh_n, dc_n) or None (final states unused). Writes every weight gradient into ``grads``
        (default ``params.grads``, overwriting) and returns ``(d_inputs, (d_h0, d_c0))``; d_inputs is None for
        token-id inputs, and the gradient w.r.t. the table (V, D) where ``forward`` had an ``input_table``:

            S = onehot(ids)^T dZ  (V, 4H: a scatter-add)     d kernel = table^T S
            d table = sum over the directions of S kernel^T
        """
        backend, xp = params.backend, params.backend.xp
        grads = params.grads if grads is None else grads
        workspaces = {} if workspaces is None else workspaces
        if d_final_state is None:
            d_final_state = self.zero_state(params, cache.batch)
        d_hn, d_cn = d_final_state
        d_h0, d_c0 = xp.empty_like(d_hn), xp.empty_like(d_cn)
        d_y = d_outputs
        d_inputs = None
        table = cache.input_table
        for layer in reversed(range(self.num_layers)):
            folded = layer == 0 and table is not None
            wants_input_grad = (layer > 0 or self.vocab_size is None) and not folded
            d_x = None
            for direction in range(self.directions):
                cell = self.cell_name(layer, direction)
                index = layer * self.directions + direction
                d_y_cell = d_y if d_y is None or self.directions == 1 else \
                    d_y[:, :, direction * self.units : (direction + 1) * self.units]
                workspace = workspaces.setdefault(cell, Workspace(xp))
                cell_grads = grads.group(cell)
                kernel, d_kernel = params[f"{cell}.kernel"], cell_grads["kernel"]
                if folded:  # the gradient w.r.t. the folded kernel (V, 4H) first: S in the docstring
                    cell_grads["kernel"] = workspace.get("d_folded_kernel", (table.shape[0], kernel.shape[1]),
                                                         kernel.dtype)
                result = lstm_backward(backend, cache.cells[layer][direction], params[f"{cell}.recurrent_kernel"],
                                       d_y_cell, d_hn[index], d_cn[index], cell_grads, workspace,
                                       kernel=kernel if wants_input_grad else None)
                d_h0[index], d_c0[index] = result[0], result[1]
                if folded:
                    s_folded = cell_grads["kernel"]
                    backend.matmul(table.T, s_folded, out=d_kernel)
                    d_table = backend.matmul(s_folded, kernel.T)
                    d_x = d_table if d_x is None else d_x + d_table
                elif wants_input_grad:
                    d_x = result[2] if d_x is None else d_x + result[2]
            if cache.masks[layer] is not None:
                d_x = d_x * cache.masks[layer]
            if layer == 0:
                d_inputs = d_x
            d_y = d_x
        return d_inputs, (d_h0, d_c0)
