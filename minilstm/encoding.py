"""The encoder's run for decoding: sentences of mixed lengths in one batch, each getting the state it gets alone.

Training batches a ``mask_padding`` model's sentences by length, so its encoder never reads padding. Decoding
wants any lengths in one batch; ``run_encoder`` gives each row exactly the steps it would run alone: rows sorted
longest first, the time loop cut at each distinct length, the rows still going continuing from their states (as
packed sequences do in PyTorch). A cut costs one more compiled call per distinct length, not a step each. A
bidirectional encoder runs layer by layer (``_run_bidirectional``): its reverse direction starts at each row's
own last character.
"""

import numpy as np

from .lstm import lstm_forward


def run_encoder(model, encoder_input_ids, source_lengths=None, return_outputs=True):
    """The encoder's (outputs (T, B, H) or None, final (h, c)) for ids (B, T).

    With mixed ``source_lengths`` and ``model.takes_mixed_lengths()``, the time loop is cut at each distinct length
    (module doc); outputs past a row's length are zeros (attention never looks there). Otherwise the encoder reads
    every position."""
    ids = model.time_major(encoder_input_ids)
    steps, batch = ids.shape
    lengths = None if source_lengths is None else np.asarray(source_lengths, dtype=np.int64)
    if not model.takes_mixed_lengths() or lengths is None or batch == 0 or (lengths == steps).all():
        outputs, state, _ = model.encoder.forward(model.params, ids, return_outputs=return_outputs)
        return outputs, state
    if lengths.min() < 1 or lengths.max() > steps:
        raise ValueError(f"source lengths must be 1..{steps}, got {lengths.min()}..{lengths.max()}")
    backend, enc, dtype = model.backend, model.encoder, model.dtype
    xp = backend.xp
    order = np.argsort(-lengths, kind="stable")  # longest first: the rows still going are always a prefix
    ids = xp.ascontiguousarray(ids[:, backend.asarray(order)])
    back = backend.asarray(np.argsort(order))
    if enc.directions == 2:
        outputs, (h, c) = _run_bidirectional(model, ids, lengths[order], return_outputs)
        return (xp.ascontiguousarray(outputs[:, back]) if return_outputs else None,
                (xp.ascontiguousarray(h[:, back]), xp.ascontiguousarray(c[:, back])))
    shape = (enc.num_layers * enc.directions, batch, enc.units)
    h, c = xp.zeros(shape, dtype=dtype), xp.zeros(shape, dtype=dtype)
    outputs = xp.zeros((steps, batch, enc.output_size), dtype=dtype) if return_outputs else None
    for start, stop, rows in segments(lengths):
        out, (h_n, c_n), _ = enc.forward(model.params, xp.ascontiguousarray(ids[start:stop, :rows]),
                                         (xp.ascontiguousarray(h[:, :rows]), xp.ascontiguousarray(c[:, :rows])),
                                         return_outputs=return_outputs)
        h[:, :rows], c[:, :rows] = h_n, c_n
        if return_outputs:
            outputs[start:stop, :rows] = out
    if return_outputs:
        outputs = xp.ascontiguousarray(outputs[:, back])
    return outputs, (xp.ascontiguousarray(h[:, back]), xp.ascontiguousarray(c[:, back]))


def segments(lengths):
    """The cut time loop's pieces for ``lengths`` sorted longest first: (start, stop, rows) from one distinct
    length to the next, ``rows`` the rows still going (a prefix)."""
    starts = np.concatenate([[0], np.unique(lengths)])
    return [(int(a), int(b), int((lengths > a).sum())) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _run_bidirectional(model, ids, lengths, return_outputs=True):
    """``run_encoder`` of a bidirectional encoder for ids (T, B) whose rows are sorted longest first, lengths (B,)
    in that order: layer by layer, each direction's time loop cut at each distinct length as above. The reverse
    direction reads each row reversed within its own length (row b's step t is its character lengths[b] - 1 - t),
    so it starts at the row's last character, as alone, and its outputs go back to their positions the same way
    (positions past the end stay zeros). Without ``return_outputs`` the top layer's outputs are not gathered (the
    returned outputs are then None)."""
    xp, enc, params, dtype = model.backend.xp, model.encoder, model.params, model.dtype
    steps, batch = ids.shape
    pieces = segments(lengths)
    blocks = [(n, int((lengths > n).sum()), int((lengths >= n).sum())) for _, n, _ in pieces]  # rows of length n

    def flip(x):  # each row reversed within its own length (sorted rows: one block of rows per length)
        out = x.copy()
        for n, first, stop in blocks:
            out[:n, first:stop] = x[n - 1 :: -1, first:stop]
        return out

    shape = (enc.num_layers * enc.directions, batch, enc.units)
    h_n, c_n = xp.zeros(shape, dtype=dtype), xp.zeros(shape, dtype=dtype)
    x = ids
    for layer in range(enc.num_layers):
        keep = return_outputs or layer < enc.num_layers - 1
        outputs = xp.zeros((steps, batch, enc.output_size), dtype=dtype) if keep else None
        for direction in range(2):
            cell, index = enc.cell_name(layer, direction), layer * 2 + direction
            inputs = x if direction == 0 else flip(x)
            out = outputs[:, :, direction * enc.units : (direction + 1) * enc.units] if keep else None
            h, c = h_n[index], c_n[index]
            for start, stop, rows in pieces:
                cache = lstm_forward(model.backend, params[f"{cell}.kernel"], params[f"{cell}.recurrent_kernel"],
                                     params[f"{cell}.bias"], xp.ascontiguousarray(inputs[start:stop, :rows]),
                                     xp.ascontiguousarray(h[:rows]), xp.ascontiguousarray(c[:rows]))
                h[:rows], c[:rows] = cache.hs[-1], cache.cs[-1]
                if keep:
                    out[start:stop, :rows] = cache.outputs
            if direction == 1 and keep:
                out[...] = flip(out)
        x = outputs
    return x, (h_n, c_n)
