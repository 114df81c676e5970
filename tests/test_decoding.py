"""Greedy decoding: stepwise equals teacher forcing, batched equals one-by-one, equals the Keras example's own
loop, and survives a save/load round trip."""

from pathlib import Path

import numpy as np
import pytest
from helpers import random_batch, small_model

from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.data import END, START, Dataset, read_pairs
from minilstm.errors import MinilstmError
from minilstm.optim import OPTIMIZERS, RMSprop, make_optimizer
from minilstm.seq2seq import Seq2Seq

TINY = Path(__file__).parent / "data" / "tiny.txt"


def test_stepwise_decoding_reproduces_teacher_forcing(cpu_backend, rng):
    """Fed the true previous character, the one-step decoder gives the teacher-forced logits and argmaxes."""
    model = small_model(cpu_backend, n_in=6, n_out=9, units=5, enc_len=4, dec_len=7)
    enc, dec_in, _ = random_batch(rng, model, 3)
    forced = model.teacher_forced_logits(enc, dec_in)
    h, c = model.encode(enc)
    for t in range(model.max_decoder_len):
        logits, (h, c), _ = model.step(cpu_backend.asarray(dec_in[:, t]), (h, c))
        logits = cpu_backend.to_numpy(logits)
        np.testing.assert_allclose(logits, forced[:, t], rtol=1e-12, atol=1e-12)
        assert (logits.argmax(axis=1) == forced[:, t].argmax(axis=1)).all()


def tiny_model(backend, dtype="float32", seed=3):
    """A model over tests/data/tiny.txt's vocabularies with large random weights, so decodes vary by input."""
    dataset = Dataset.from_pairs(read_pairs(TINY))
    model = Seq2Seq(backend, dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=16, dtype=dtype).initialize(seed)
    rng = np.random.default_rng(seed)
    weights = {k: v + rng.standard_normal(v.shape) for k, v in model.get_weights().items()}
    weights["dense.bias"][model.target_vocab.index[END]] += 2.0  # so that some decodes end early, others do not
    model.set_weights(weights)
    return dataset, model


def keras_greedy_decode(model, text):
    """The Keras example's decode_sequence, literally: one-hot float64 matmuls, batch 1, one character per call."""
    w = {k: v.astype(np.float64) for k, v in model.get_weights().items()}
    units = model.latent_dim
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731

    def cell(x_onehot, h, c, layer):
        z = x_onehot @ w[f"{layer}.kernel"] + h @ w[f"{layer}.recurrent_kernel"] + w[f"{layer}.bias"]
        i, f, g, o = sigmoid(z[:units]), sigmoid(z[units:2 * units]), np.tanh(z[2 * units:3 * units]), \
            sigmoid(z[3 * units:])
        c = f * c + i * g
        return o * np.tanh(c), c

    eye_in, eye_out = np.eye(len(model.input_vocab)), np.eye(len(model.target_vocab))
    h = c = np.zeros(units)
    padded = text + " " * max(0, model.max_encoder_len - len(text))
    for ch in padded:
        h, c = cell(eye_in[model.input_vocab.index[ch]], h, c, "encoder")
    target_seq = eye_out[model.target_vocab.index[START]]
    decoded = ""
    while True:
        h, c = cell(target_seq, h, c, "decoder")
        probs = h @ w["dense.kernel"] + w["dense.bias"]
        sampled_char = model.target_vocab.chars[int(np.argmax(probs))]
        decoded += sampled_char
        if sampled_char == END or len(decoded) > model.max_decoder_len:
            break
        target_seq = eye_out[model.target_vocab.index[sampled_char]]
    return decoded.removesuffix(END)


@pytest.mark.slow
def test_greedy_decoding_equals_keras_loop(cpu_backend):
    dataset, model = tiny_model(cpu_backend, dtype="float64")
    texts = dataset.input_texts + ["Go. Go. Go. Go. Go. Go. Go."]  # the last is longer than max_encoder_len
    ours = model.translate(texts, split_sentences=False)  # each text one input, as the example decodes it
    assert ours == [keras_greedy_decode(model, t) for t in texts]
    assert len(set(ours)) > 1, "decodes do not depend on the input: the test would prove nothing"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_decoding_equals_one_by_one(cpu_backend, dtype):
    dataset, model = tiny_model(cpu_backend, dtype)
    texts = dataset.input_texts * 3 + ["Hi. " * 9]
    batched = model.translate(texts, batch_size=7, split_sentences=False)  # the long text as one input
    one_by_one = [model.translate([t], split_sentences=False)[0] for t in texts]
    assert batched == one_by_one
    assert len(set(batched)) > 1
    # Some decodes stop at END, at least one runs to the length limit: both stopping rules are exercised.
    lengths = {len(s) for s in batched}
    assert min(lengths) < model.max_decoder_len and max(lengths) == model.max_decoder_len + 1


def test_checkpoint_round_trip_decodes_identically(cpu_backend, tmp_path, rng):
    dataset, model = tiny_model(cpu_backend)
    optimizer = RMSprop(cpu_backend, model.params.flat.size, model.dtype)
    enc, dec_in, dec_out = (dataset.encoder_input_ids[:4], dataset.decoder_input_ids[:4],
                            dataset.decoder_target_ids[:4])
    model.loss_and_grads(enc, dec_in, dec_out)
    optimizer.step(model.params.flat, model.grads.flat)
    save_checkpoint(tmp_path / "ckpt", model, optimizer, {"epoch": 1})
    loaded = load_checkpoint(tmp_path / "ckpt", backend=cpu_backend)
    assert loaded.config["epoch"] == 1
    assert loaded.model.input_vocab == model.input_vocab and loaded.model.target_vocab == model.target_vocab
    for name, value in model.get_weights().items():
        assert np.array_equal(loaded.model.get_weights()[name], value), name
    assert set(loaded.optimizer_state) == {"velocity"}
    assert np.array_equal(loaded.optimizer_state["velocity"], optimizer.velocity)
    assert loaded.model.translate(dataset.input_texts) == model.translate(dataset.input_texts)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "temporary files left behind"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_checkpoint_holds_every_optimizer_state(tmp_path, rng, name):
    """optimizer.safetensors holds each state array by name, config.json the optimizer's name, hyper-parameters
    and step count; a fresh optimizer loaded from them takes the same next step."""
    backend = "numpy"
    dataset, model = tiny_model(backend, "float64")
    optimizer = make_optimizer(name, model.backend, model.params.flat.size, model.dtype, clip_norm=0.5)
    for start in (0, 2):
        model.loss_and_grads(*(ids[start:start + 2] for ids in (dataset.encoder_input_ids, dataset.decoder_input_ids,
                                                                dataset.decoder_target_ids)))
        optimizer.step(model.params.flat, model.grads.flat)
    save_checkpoint(tmp_path / "ckpt", model, optimizer)
    loaded = load_checkpoint(tmp_path / "ckpt", backend=backend)
    assert loaded.config["optimizer"] == {**optimizer.config(), "iterations": 2}
    assert loaded.config["optimizer"]["name"] == name and loaded.config["optimizer"]["clip_norm"] == 0.5
    assert set(loaded.optimizer_state) == set(optimizer.state())
    for key, array in optimizer.state().items():
        assert loaded.optimizer_state[key].tobytes() == array.tobytes(), key
    again = make_optimizer(name, loaded.model.backend, loaded.model.params.flat.size, loaded.model.dtype,
                           clip_norm=0.5)
    again.load_state(loaded.optimizer_state)
    again.iterations = loaded.config["optimizer"]["iterations"]
    grads = rng.standard_normal(model.params.flat.size)
    optimizer.step(model.params.flat, grads)
    again.step(loaded.model.params.flat, grads)
    assert loaded.model.params.flat.tobytes() == model.params.flat.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_beam_width_one_is_greedy(cpu_backend, dtype):
    dataset, model = tiny_model(cpu_backend, dtype)
    texts = dataset.input_texts * 2
    assert model.translate(texts, beam_width=1) == model.translate(texts)
    ids = encode_ids(model, texts)
    assert model.beam_decode_ids(ids, 1) == model.greedy_decode_ids(ids)


def encode_ids(model, texts):
    from minilstm.data import encode_inputs

    return encode_inputs(texts, model.input_vocab, model.max_encoder_len)


def sequence_log_prob(model, text, output_ids):
    """log p(output + END | text), by teacher forcing: the score beam search maximises."""
    end = model.target_vocab.index[END]
    target = list(output_ids) + ([end] if len(output_ids) <= model.max_decoder_len else [])
    h, c = model.encode(encode_ids(model, [text]))
    prev, total = model.target_vocab.index[START], 0.0
    for token in target[: model.max_decoder_len + 1]:
        logits, (h, c), _ = model.step(model.backend.asarray(np.array([prev])), (h, c))
        z = model.backend.to_numpy(logits)[0].astype(np.float64)
        total += z[token] - z.max() - np.log(np.exp(z - z.max()).sum())
        prev = token
    return total


def test_exhaustive_beam_finds_the_most_likely_sentence(rng):
    """With as many beams as there are sentences, beam search is exhaustive: it must find the best one, which we
    also find by brute force over every possible output."""
    import itertools

    model = small_model("numpy", n_in=4, n_out=4, units=5, enc_len=3, dec_len=2, seed=int(rng.integers(100)))
    end = model.target_vocab.index[END]
    others = [t for t in range(4) if t != end]
    candidates = [list(seq) for length in range(0, 4) for seq in itertools.product(others, repeat=length)]
    for text in ["abc", "c", "ba"]:
        best = max(candidates, key=lambda seq: sequence_log_prob(model, text, seq))
        found = model.beam_decode_ids(encode_ids(model, [text]), beam_width=64)[0]
        assert found == best, (text, found, best)
        greedy = model.greedy_decode_ids(encode_ids(model, [text]))[0]
        assert sequence_log_prob(model, text, found) >= sequence_log_prob(model, text, greedy) - 1e-12


@pytest.mark.parametrize("alpha", [0.6, 5.0])
def test_exhaustive_beam_with_a_length_penalty_finds_the_best_normalised_sentence(rng, alpha):
    """With a length penalty the search ranks by log p / lp(n), n the characters scored (END included):
    exhaustive, it must return the brute-force maximum of that, and its n-best list must be in that order."""
    import itertools

    model = small_model("numpy", n_in=4, n_out=4, units=5, enc_len=3, dec_len=2, seed=int(rng.integers(100)))
    end = model.target_vocab.index[END]
    others = [t for t in range(4) if t != end]
    candidates = [list(seq) for length in range(0, 4) for seq in itertools.product(others, repeat=length)]

    def rank(text, seq):
        scored = len(seq) + (1 if len(seq) <= model.max_decoder_len else 0)  # a cut-off output has no END
        return sequence_log_prob(model, text, seq) / ((5 + scored) / 6) ** alpha

    changed = 0
    for text in ["abc", "c", "ba", "a", "cab"]:
        best = max(candidates, key=lambda seq, text=text: rank(text, seq))
        found = model.beam_decode_ids(encode_ids(model, [text]), beam_width=64, length_penalty=alpha)[0]
        assert found == best, (text, found, best)
        n_best = model.beam_decode_ids(encode_ids(model, [text]), 64, n_best=True, length_penalty=alpha)[0]
        ranks = [rank(text, seq) for seq in n_best]
        assert n_best[0] == found and ranks == sorted(ranks, reverse=True)
        changed += found != model.beam_decode_ids(encode_ids(model, [text]), beam_width=64)[0]
    if alpha == 5.0:
        assert changed  # the penalty must be able to change the answer, or this test shows nothing


def test_length_penalty_is_a_number_from_0_to_10(cpu_backend):
    """Beyond 10 ((5 + n) / 6) ** alpha heads for a double's overflow (an OverflowError in Python's float power)."""
    _, model = tiny_model(cpu_backend)
    for bad in (-0.5, 10.5, 1000.0, float("nan"), float("inf")):
        with pytest.raises(MinilstmError, match="length penalty must be a number from 0 to 10"):
            model.translate(["Go."], beam_width=2, length_penalty=bad)
        with pytest.raises(MinilstmError, match="length penalty"):
            model.beam_decode_ids(encode_ids(model, ["Go."]), 2, length_penalty=bad)
    assert len(model.translate(["Go."], beam_width=2, length_penalty=10.0)) == 1


def test_beam_batched_equals_one_by_one(cpu_backend):
    dataset, model = tiny_model(cpu_backend, "float64")
    texts = dataset.input_texts
    assert model.translate(texts, beam_width=3, batch_size=5) == [model.translate([t], beam_width=3)[0]
                                                                   for t in texts]


def test_temperature_sampling(cpu_backend):
    dataset, model = tiny_model(cpu_backend, "float64")
    texts = dataset.input_texts
    assert model.translate(texts, temperature=1e-6) == model.translate(texts)  # T -> 0 is greedy
    hot = model.translate(texts, temperature=2.0, seed=1)
    assert hot == model.translate(texts, temperature=2.0, seed=1)  # reproducible
    assert hot != model.translate(texts, temperature=2.0, seed=2)
    assert hot != model.translate(texts)
