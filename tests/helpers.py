"""Shared test utilities: small models, random batches, a finite-difference gradient checker."""

import numpy as np
import pytest

from minilstm import lstm
from minilstm.backends import Backend
from minilstm.data import Vocab
from minilstm.seq2seq import Seq2Seq


def small_model(backend, n_in=5, n_out=6, units=3, enc_len=4, dec_len=5, dtype="float64", seed=0, **options):
    """A Seq2Seq with synthetic vocabularies; the target vocabulary holds START and END; ``options``: more fields of
    its ``Architecture``."""
    in_chars = " abcdefghijklmnopqrstuvwxyz"[:n_in]
    out_chars = "\t\n ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_out]
    model = Seq2Seq(backend, Vocab(list(in_chars)), Vocab(list(out_chars)), enc_len, dec_len, latent_dim=units,
                    dtype=dtype, **options)
    model.initialize(seed)
    # Keras's bias init is mostly zeros; perturb every weight so no gradient is trivially zero.
    rng = np.random.default_rng(seed + 1)
    model.set_weights({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in model.get_weights().items()})
    return model


def copy_to_backend(model, backend):
    """The same model (vocabularies, lengths, size, dtype, weights) on another backend."""
    copy = Seq2Seq.from_config(backend, model.config())
    copy.set_weights(model.get_weights())
    return copy


def random_batch(rng, model, batch):
    enc = rng.integers(0, len(model.input_vocab), size=(batch, model.max_encoder_len))
    dec_in = rng.integers(0, len(model.target_vocab), size=(batch, model.max_decoder_len))
    dec_out = rng.integers(0, len(model.target_vocab), size=(batch, model.max_decoder_len))
    return enc, dec_in, dec_out


def numerical_gradient(loss_fn, array, eps=1e-6):
    """Centred differences of ``loss_fn()`` w.r.t. every element of ``array`` (modified in place, restored)."""
    grad = np.zeros(array.shape)
    flat = array.reshape(-1)
    for k in range(flat.size):
        saved = flat[k].copy()
        flat[k] = saved + eps
        plus = loss_fn()
        flat[k] = saved - eps
        minus = loss_fn()
        flat[k] = saved
        grad.reshape(-1)[k] = (plus - minus) / (2 * eps)
    return grad


def relative_error(a, b) -> float:
    """||a - b|| / max(||a||, ||b||); infinite where either holds a NaN or an infinity (which would otherwise
    make every comparison false and read as agreement)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


# One layer's time loop on random inputs, and its float64 reference (tests of the numba loops and the unit split).


def random_layer(rng, steps, batch, units, dtype):
    """A recurrent kernel, the gates' input parts (T, B, 4H), and hs, cs (T+1, B, H) with a random initial state."""
    recurrent_kernel = (rng.standard_normal((units, 4 * units)) / np.sqrt(units)).astype(dtype)
    gates = rng.standard_normal((steps, batch, 4 * units)).astype(dtype)
    hs = np.zeros((steps + 1, batch, units), dtype)
    cs = np.zeros((steps + 1, batch, units), dtype)
    hs[0], cs[0] = rng.standard_normal((2, batch, units))
    return recurrent_kernel, gates, hs, cs


def reference_forward(recurrent_kernel, gates, hs, cs):
    """The numpy backend's per-step loop in float64 on the same (possibly float32) inputs: gates, hs, cs."""
    arrays = [a.astype(np.float64) for a in (recurrent_kernel, gates, hs, cs)]
    lstm.recurrence_forward(Backend(), arrays[1], arrays[0], arrays[2], arrays[3], lstm.Workspace(np))
    return arrays[1:]


def reference_backward(gates, cs, recurrent_kernel, d_outputs, dh0, dc0):
    """The numpy backend's backward loop in float64: dz, dh, dc."""
    f64 = [None if a is None else a.astype(np.float64) for a in (gates, cs, recurrent_kernel, d_outputs, dh0, dc0)]
    dz = np.empty(gates.shape)
    lstm.recurrence_backward(Backend(), *f64[:4], f64[4], f64[5], dz)
    return dz, f64[4], f64[5]


def run_forward(backend, recurrent_kernel, gates, hs, cs):
    """``backend``'s forward loop on copies: gates (activated), hs, cs."""
    gates, hs, cs = gates.copy(), hs.copy(), cs.copy()
    backend.lstm_recurrence_forward(gates, recurrent_kernel, hs, cs, lstm.Workspace(np))
    return gates, hs, cs


def run_backward(backend, gates, cs, recurrent_kernel, d_outputs, dh0, dc0):
    """``backend``'s backward loop: dz (NaN where it wrote nothing), dh, dc."""
    dh, dc, dz = dh0.copy(), dc0.copy(), np.full_like(gates, np.nan)
    backend.lstm_recurrence_backward(gates, cs, recurrent_kernel, d_outputs, dh, dc, dz, lstm.Workspace(np))
    return dz, dh, dc


def slow_beyond(cases, keep: int = 1) -> list:
    """``cases`` for ``pytest.mark.parametrize`` with all but the first ``keep`` marked slow: the quick tier
    (``-m "not slow"``) runs a representative few, the full suite every one."""
    cases = list(cases)
    return cases[:keep] + [pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
                           for case in cases[keep:]]
