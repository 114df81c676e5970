"""The numba backend's compiled input-feeding attention loops (``attention``) against the numpy reference
loops of ``AttentionDecoder`` in float64, on fresh random inputs at odd shapes (batch 1, one source position,
hidden 3, 257 units, a memory wider than the decoder, mixed source lengths), every score, stacked layers with and
without dropout: forward outputs, final states, every cache array backward reads, and every gradient; that the
compiled path is the one taken (and the reference where it is switched off); and a Seq2Seq whose batch is split
into thread shards."""

import numpy as np
import pytest
from helpers import random_batch, relative_error, slow_beyond

from minilstm.attention import AttentionDecoder
from minilstm.backends import get_backend
from minilstm.data import Vocab
from minilstm.nn import Parameters
from minilstm.seq2seq import Seq2Seq

pytest.importorskip("numba", reason="the numba backend needs numba")

from minilstm.backends.numba import NumbaBackend  # noqa: E402

# float32: the rational tanh (~3e-7) and float32 rounding, accumulated over the steps; float64: rounding only.
TOL = {np.float32: 2e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
VOCAB = 6
# (steps, batch, units, source positions, memory size (None: units), score): batch 1 with one source position and
# hidden 3; one position; a memory wider than the decoder; 257 units (partial panels); a row group and a partial
# one (21 rows); all 16 positions of the example; odd sizes everywhere.
SHAPES = [(1, 1, 3, 1, None, "dot"), (4, 3, 5, 1, None, "general"), (3, 1, 3, 4, 7, "general"),
          (3, 7, 257, 5, None, "general"), (5, 21, 16, 4, None, "dot"), (2, 5, 64, 16, None, "general"),
          (6, 18, 33, 9, 20, "general"), (4, 2, 17, 3, None, "dot"), (1, 1, 3, 1, None, "concat"),
          (3, 7, 257, 5, None, "concat"), (5, 21, 16, 4, 9, "concat"), (2, 5, 64, 16, None, "concat")]
CACHE = ("outputs", "h_n", "c_n", "gates", "hs", "cs", "feeds", "queries", "weights", "context", "attention_outputs")


@pytest.fixture(scope="module")
def numba_backend():
    return get_backend("numba")


def problem(rng, steps, batch, units, positions, mem_size, score, num_layers=1, dropout=0.0):
    """A decoder, weights (Keras's initialisers, every one perturbed on the scale of its fan-in) and inputs, with
    each sentence's own source length (the first row's all S)."""
    decoder = AttentionDecoder(units, vocab_size=VOCAB, memory_size=mem_size, score=score, num_layers=num_layers,
                               dropout=dropout)
    initial = Parameters("numpy", [decoder], "float64", seed=int(rng.integers(1 << 30))).get_weights()
    weights = {k: v + 0.3 * rng.standard_normal(v.shape) / np.sqrt(v.shape[0] if v.ndim == 2 else 1)
               for k, v in initial.items()}
    mem_size = decoder.attention.memory_size
    lengths = rng.integers(1, positions + 1, batch)
    lengths[0] = positions
    inputs = {"ids": rng.integers(0, VOCAB, (steps, batch)),
              "state": tuple(rng.standard_normal((2, num_layers, batch, units))),
              "memory": rng.standard_normal((positions, batch, mem_size)), "lengths": lengths,
              "d_outputs": rng.standard_normal((steps, batch, units)),
              "d_state": tuple(rng.standard_normal((2, num_layers, batch, units)))}
    return decoder, weights, inputs


def run(backend, dtype, decoder, weights, inputs, seed=None):
    """Forward and backward on ``backend`` (training with dropout when ``seed`` is given): every array compared, by
    name."""
    params = Parameters(backend, [decoder], dtype)
    params.set_weights(weights)

    def cast(a):
        return np.asarray(a, dtype=dtype)

    outputs, (h_n, c_n), cache = decoder.forward(params, inputs["ids"], tuple(map(cast, inputs["state"])),
                                                 cast(inputs["memory"]), inputs["lengths"],
                                                 training=seed is not None, seed=seed)
    attention = cache.attention
    out = {"outputs": outputs, "h_n": h_n, "c_n": c_n, "gates": np.stack(cache.gates), "hs": np.stack(cache.hs),
           "cs": np.stack(cache.cs), "feeds": cache.feeds, "queries": attention.queries, "weights": attention.weights,
           "context": attention.context, "attention_outputs": attention.outputs}
    if attention.hidden is not None:
        out["hidden"] = attention.hidden
    if decoder.num_layers > 1:
        out["layer_inputs"] = np.stack(cache.layer_inputs[1:])
    out = {k: v.copy() for k, v in out.items()}
    d_memory, (d_h0, d_c0) = decoder.backward(params, cache, cast(inputs["d_outputs"]),
                                              tuple(map(cast, inputs["d_state"])))
    out.update(d_memory=d_memory, d_h0=d_h0, d_c0=d_c0)
    out.update({f"grad {k}": v.copy() for k, v in params.grads.items()})
    return out


def assert_close(actual, expected, dtype, names=None):
    for name in names or expected:
        assert actual[name].dtype == dtype, name
        error = relative_error(actual[name], expected[name])
        assert error < TOL[dtype], (name, error)


class CountCalls:
    """Wraps the backend's operations to count calls: the compiled loops and the reference's per-step cell."""

    NAMES = ("attention_feed_forward", "attention_feed_backward", "attention_greedy_decode", "lstm_cell_forward",
             "lstm_cell_backward")

    def __init__(self, monkeypatch, backend):
        self.calls = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            if getattr(backend, name) is not None:  # None: the backend does not have it
                monkeypatch.setattr(backend, name, self._counted(name, getattr(backend, name)))

    def _counted(self, name, function):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return function(*args, **kwargs)

        return counted


@pytest.mark.parametrize("dtype", slow_beyond(DTYPES))
@pytest.mark.parametrize("steps,batch,units,positions,mem_size,score", slow_beyond(SHAPES, 2))
def test_compiled_loops_equal_reference(numba_backend, monkeypatch, rng, dtype, steps, batch, units, positions,
                                        mem_size, score):
    decoder, weights, inputs = problem(rng, steps, batch, units, positions, mem_size, score)
    expected = run(get_backend("numpy"), np.float64, decoder, weights, inputs)
    counter = CountCalls(monkeypatch, numba_backend)
    actual = run(numba_backend, dtype, decoder, weights, inputs)
    assert counter.calls == {"attention_feed_forward": 1, "attention_feed_backward": 1, "attention_greedy_decode": 0,
                             "lstm_cell_forward": 0, "lstm_cell_backward": 0}
    assert set(actual) == set(expected)
    assert_close(actual, expected, dtype, CACHE)  # the forward's results and everything backward reads
    assert_close(actual, expected, dtype)  # and every gradient
    padding = np.arange(positions)[None, :] >= inputs["lengths"][:, None]
    assert np.all(actual["weights"][np.broadcast_to(padding[:, None, :], actual["weights"].shape)] == 0)


@pytest.mark.parametrize("dtype", slow_beyond(DTYPES))
def test_padding_changes_nothing(numba_backend, rng, dtype):
    """What a padded source position holds never enters a sum (it is skipped, not multiplied by 0): NaN there
    leaves every result the same, bit for bit."""
    decoder, weights, inputs = problem(rng, 4, 6, 9, 5, None, "general")
    inputs["lengths"][1:] = rng.integers(1, 5, 5)
    clean = run(numba_backend, dtype, decoder, weights, inputs)
    padding = np.arange(5)[:, None] >= inputs["lengths"][None, :]
    inputs["memory"][padding] = np.nan
    dirty = run(numba_backend, dtype, decoder, weights, inputs)
    for name in clean:
        if name != "grad attention.score_kernel":  # memory^T d keys (Attention.finish): NaN * 0 there
            assert np.array_equal(clean[name], dirty[name]), name
    assert not dirty["d_memory"][padding].any()


# (layers, dropout, score, steps, batch, units, source positions): stacked decoders, with dropout between layers.
STACKED = [(2, 0.0, "general", 3, 5, 7, 4), (2, 0.3, "dot", 4, 19, 16, 3), (3, 0.5, "general", 3, 3, 33, 5),
           (3, 0.0, "dot", 2, 1, 3, 1), (2, 0.4, "concat", 3, 6, 9, 4)]


@pytest.mark.slow  # stacked attention loops compile anew (~20 s on a cold cache); the quick tier has one layer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers,dropout,score,steps,batch,units,positions", STACKED)
def test_stacked_layers_equal_reference(numba_backend, monkeypatch, rng, dtype, layers, dropout, score, steps, batch,
                                        units, positions):
    decoder, weights, inputs = problem(rng, steps, batch, units, positions, None, score, layers, dropout)
    seed = int(rng.integers(1 << 30)) if dropout else None
    expected = run(get_backend("numpy"), np.float64, decoder, weights, inputs, seed)
    counter = CountCalls(monkeypatch, numba_backend)
    actual = run(numba_backend, dtype, decoder, weights, inputs, seed)
    assert counter.calls["attention_feed_forward"] == counter.calls["attention_feed_backward"] == 1
    assert counter.calls["lstm_cell_forward"] == counter.calls["lstm_cell_backward"] == 0
    assert_close(actual, expected, dtype)


@pytest.mark.parametrize("score,num_layers", [("concat", 1), ("general", 2)])
def test_without_compiled_scores_the_reference_runs(monkeypatch, rng, score, num_layers):
    """A backend that names no compiled score (as bench/attention_step.py's reference contestant) runs the reference
    loop, one cell per step and layer, with the same results."""
    decoder, weights, inputs = problem(rng, 3, 4, 5, 3, None, score, num_layers)
    expected = run(get_backend("numpy"), np.float64, decoder, weights, inputs)
    backend = NumbaBackend(workers=1)
    backend.attention_feed_scores = ()
    counter = CountCalls(monkeypatch, backend)
    actual = run(backend, np.float64, decoder, weights, inputs)
    assert counter.calls["attention_feed_forward"] == counter.calls["attention_feed_backward"] == 0
    assert counter.calls["lstm_cell_forward"] == 3 * num_layers
    assert_close(actual, expected, np.float64)


@pytest.mark.parametrize("dtype", slow_beyond(DTYPES))
def test_decoding_steps_match_teacher_forcing(numba_backend, rng, dtype):
    """One ``step`` at a time (decoding) runs the compiled loop one step long and gives the teacher-forced outputs."""
    decoder, weights, inputs = problem(rng, 5, 4, 6, 3, None, "general")
    params = Parameters(numba_backend, [decoder], dtype)
    params.set_weights(weights)
    initial, memory = tuple(np.asarray(s, dtype=dtype) for s in inputs["state"]), inputs["memory"].astype(dtype)
    outputs, _, _ = decoder.forward(params, inputs["ids"], initial, memory, inputs["lengths"],
                                    exact_keys=True)  # the keys ``start`` computes
    state = decoder.start(params, initial, memory, inputs["lengths"])
    for t in range(5):
        htilde, state, _ = decoder.step(params, inputs["ids"][t], state)
        assert np.array_equal(htilde, outputs[t])


@pytest.mark.parametrize("dtype", slow_beyond(DTYPES))
def test_seq2seq_thread_shards(monkeypatch, rng, dtype):
    """A batch split into 3 row shards, each running the compiled loops on its own thread, gives the numpy model's
    loss and gradients (mixed source lengths)."""
    backend = NumbaBackend(workers=3, split="rows")
    vocab_in, vocab_out = Vocab(list(" abcdefg")), Vocab(list("\t\n ABCDE"))
    models = [Seq2Seq(b, vocab_in, vocab_out, 6, 7, latent_dim=12, dtype=d, attention="general")
              for b, d in ((get_backend("numpy"), "float64"), (backend, dtype))]
    models[0].initialize(int(rng.integers(1 << 30)))
    models[1].set_weights(models[0].get_weights())
    batch = 27
    enc, dec_in, dec_out = random_batch(rng, models[0], batch)
    lengths = rng.integers(1, 7, batch)
    counter = CountCalls(monkeypatch, backend)
    results = [model.forward_backward(enc, dec_in, dec_out, source_lengths=lengths) for model in models]
    assert counter.calls["attention_feed_forward"] == counter.calls["attention_feed_backward"] == 3
    assert abs(float(results[1][0]) - float(results[0][0])) < TOL[dtype] * abs(float(results[0][0]))
    for name, expected in models[0].grads.items():
        error = relative_error(models[1].grads[name], expected)
        assert error < TOL[dtype], (name, error)


@pytest.mark.parametrize("score", ["dot", "general"])
def test_rows_split_over_workers_give_the_same_bits(monkeypatch, rng, score):
    """Outside a row shard (decoding, a step of one shard) a call splits its rows over the workers; rows are
    independent, so every result is the one thread's, bit for bit."""
    decoder, weights, inputs = problem(rng, 4, 29, 20, 6, None, score)
    one = run(NumbaBackend(workers=1), np.float32, decoder, weights, inputs)
    backend = NumbaBackend(workers=3)
    parts = []
    each_worker = backend._each_worker
    monkeypatch.setattr(backend, "_each_worker", lambda part: parts.append(each_worker(part)))
    split = run(backend, np.float32, decoder, weights, inputs)
    assert len(parts) == 2  # forward and backward, each on the 3 workers
    for name in one:
        if not name.startswith("grad "):  # the weight gradients are BLAS GEMMs, which may block differently
            assert np.array_equal(one[name], split[name]), name


def decoding_problem(rng, backend, dtype, score, input_feed, layers, units, batch, positions, decode):
    """A model, sentences (mixed source lengths) and weights under which ``decode(model, enc, lengths)`` (a list of
    token lists per sentence) ends the rows at the most different steps: END's bias made likely enough."""
    vocab_in, vocab_out = Vocab(list(" abcdefg")), Vocab(list("\t\n ABCDE"))
    model = Seq2Seq(backend, vocab_in, vocab_out, positions, 14, latent_dim=units, dtype=dtype,
                    attention=score, input_feed=input_feed,
                    encoder_layers=layers, decoder_layers=layers).initialize(int(rng.integers(1 << 30)))
    initial = model.get_weights()
    enc = rng.integers(0, len(vocab_in), (batch, positions))
    lengths = rng.integers(1, positions + 1, batch)
    end = vocab_out.index["\n"]
    best = (-1, None)
    for _ in range(4):
        weights = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in initial.items()}
        for end_bias in np.linspace(-4, 4, 17):
            weights["dense.bias"][end] = end_bias
            model.set_weights(weights)
            spread = len({len(row) for row in decode(model, enc, lengths)})
            best = max(best, (spread, {k: v.copy() for k, v in weights.items()}), key=lambda x: x[0])
        if best[0] > min(2, batch - 1):
            break
    model.set_weights(best[1])
    return model, enc, lengths


GREEDY_CASES = [("dot", True, 1, 3, 1, 1, 1), ("general", True, 1, 16, 21, 5, 1), ("concat", True, 1, 17, 37, 4, 2),
                ("general", True, 2, 33, 19, 9, 2), ("dot", True, 3, 8, 40, 6, 3), ("concat", True, 2, 5, 3, 2, 1),
                ("dot", False, 1, 3, 1, 1, 1), ("general", False, 1, 16, 37, 5, 2), ("concat", False, 2, 17, 21, 4, 1),
                ("general", False, 3, 8, 40, 6, 3)]


@pytest.mark.parametrize("dtype", slow_beyond(DTYPES))
@pytest.mark.parametrize("score,input_feed,layers,units,batch,positions,workers", slow_beyond(GREEDY_CASES))
def test_compiled_greedy_decoding_equals_the_step_loop(monkeypatch, rng, dtype, score, input_feed, layers, units,
                                                       batch, positions, workers):
    """``greedy_decode_ids`` of an attention model as one compiled call (``attention_greedy_decode``) gives the
    step-by-step loop's tokens and attention maps bit for bit, rows ending at different steps (dropped from their
    group as they end) or running to the length limit; with and without input feeding (without it the step runs
    the compiled loop too), mixed source lengths, stacked layers, rows split over workers."""
    backend = NumbaBackend(workers=workers)
    model, enc, lengths = decoding_problem(rng, backend, dtype, score, input_feed, layers, units, batch, positions,
                                           lambda model, enc, lengths: model.greedy_decode_ids(enc, lengths))
    counter = CountCalls(monkeypatch, backend)
    compiled_maps = []
    compiled = model.greedy_decode_ids(enc, lengths, compiled_maps)
    assert counter.calls["attention_greedy_decode"] == 1 and counter.calls["attention_feed_forward"] == 0
    monkeypatch.setattr(backend, "attention_greedy_decode", None)
    stepped_maps = []
    stepped = model.greedy_decode_ids(enc, lengths, stepped_maps)
    assert counter.calls["attention_feed_forward"] >= 1
    assert compiled == stepped
    for a, b in zip(compiled_maps, stepped_maps, strict=True):
        assert a.dtype == b.dtype == np.float64 and np.array_equal(a, b)
    if batch > 20:  # the case this is about: rows leave the loop at different steps
        assert len({len(row) for row in compiled}) > 2, [len(row) for row in compiled]


BEAM_CASES = [("dot", True, 1, 3, 1, 1, 3, 1, 0.0), ("general", True, 1, 16, 13, 5, 4, 2, 0.6),
              ("concat", True, 2, 9, 7, 4, 2, 1, 0.0), ("general", True, 2, 12, 9, 6, 20, 1, 1.5),
              ("dot", False, 1, 5, 1, 3, 1, 1, 0.6), ("general", False, 1, 16, 17, 5, 5, 3, 0.0),
              ("concat", False, 1, 7, 6, 3, 3, 2, 0.6), ("general", False, 3, 8, 11, 4, 2, 1, 0.0)]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("score,input_feed,layers,units,batch,positions,width,workers,alpha", BEAM_CASES)
def test_compiled_beam_search_equals_the_step_loop(monkeypatch, rng, dtype, score, input_feed, layers, units, batch,
                                                   positions, width, workers, alpha):
    """``beam_decode_ids`` as one compiled call (``attention_beam_decode``) keeps the step-by-step search's beams:
    every sentence's n best in the same order (which the scores decide, over a length penalty ``alpha`` or not),
    beams ending at different steps, beams wider than a row group (20 > 16) and than the vocabulary (8: dead
    beams), blocks of sentences split over workers; width 1 is greedy decoding."""
    backend = NumbaBackend(workers=workers)
    model, enc, lengths = decoding_problem(
        rng, backend, dtype, score, input_feed, layers, units, batch, positions,
        lambda model, enc, lengths: [b for s in model.beam_decode_ids(enc, width, lengths, n_best=True) for b in s])
    calls = []
    beam = backend.attention_beam_decode
    monkeypatch.setattr(backend, "attention_beam_decode", lambda *args: calls.append(1) or beam(*args))
    compiled = model.beam_decode_ids(enc, width, lengths, n_best=True, length_penalty=alpha)
    assert calls == [1]
    monkeypatch.setattr(backend, "attention_beam_decode", None)
    stepped = model.beam_decode_ids(enc, width, lengths, n_best=True, length_penalty=alpha)
    assert compiled == stepped
    assert all(len(beams) <= width for beams in compiled)
    if width == 1:
        assert [beams[0] for beams in compiled] == model.greedy_decode_ids(enc, lengths)
    if batch > 5:
        assert len({len(b) for beams in compiled for b in beams}) > 2


def test_pairwise_sum_is_numpys():
    """The compiled sampler's sum adds in numpy's order (pairwise along a contiguous axis), every length that takes
    each branch: under 8, blocks up to 128, halves above (several levels)."""
    from minilstm.backends.numba.attention_decode import _pairwise_sum

    rng = np.random.default_rng(0)
    for n in [*range(1, 300), 511, 512, 777, 1025, 2049, 5000]:
        values = np.exp(3 * rng.standard_normal(n + 3))
        assert _pairwise_sum(values, 3, n) == values[None, 3:].sum(axis=1, keepdims=True)[0, 0], n


SAMPLE_CASES = [("dot", True, 1, 3, 1, 1, 0.7), ("general", True, 2, 16, 37, 5, 1.0),
                ("concat", True, 1, 9, 7, 4, 2.0), ("general", False, 1, 16, 37, 5, 0.5),
                ("dot", False, 3, 8, 20, 3, 1.3), ("concat", False, 2, 5, 3, 2, 1.0)]


@pytest.mark.parametrize("dtype", slow_beyond(DTYPES))
@pytest.mark.parametrize("score,input_feed,layers,units,batch,positions,temperature", slow_beyond(SAMPLE_CASES))
def test_compiled_sampling_equals_the_step_loop(monkeypatch, rng, dtype, score, input_feed, layers, units, batch,
                                                positions, temperature):
    """``sample_decode_ids`` as one compiled call (``attention_sample_decode``) draws the step loop's characters
    from the same seed, and leaves the generator where the step loop leaves it (one number per row and step, ended
    rows too); batches wider than a row group, rows ending at different steps."""
    backend = NumbaBackend(workers=2)
    model, enc, lengths = decoding_problem(
        rng, backend, dtype, score, input_feed, layers, units, batch, positions,
        lambda model, enc, lengths: model.sample_decode_ids(enc, temperature, np.random.default_rng(5), lengths))
    calls = []
    sample = backend.attention_sample_decode
    monkeypatch.setattr(backend, "attention_sample_decode", lambda *args: calls.append(1) or sample(*args))
    compiled_rng, stepped_rng = np.random.default_rng(11), np.random.default_rng(11)
    compiled = model.sample_decode_ids(enc, temperature, compiled_rng, lengths)
    assert calls == [1]
    monkeypatch.setattr(backend, "attention_sample_decode", None)
    stepped = model.sample_decode_ids(enc, temperature, stepped_rng, lengths)
    assert compiled == stepped
    assert compiled_rng.random() == stepped_rng.random()
    if batch > 5:
        assert len({len(row) for row in compiled}) > 2
