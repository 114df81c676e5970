"""Named initialisations (``--init``): ``keras`` (the default) and ``pytorch``.

``pytorch`` is checked against PyTorch's own modules at the same architecture: every weight of the model drawn from
the distribution PyTorch's default initialisation draws it from (a two-sample Kolmogorov-Smirnov test against
``bench.torch_models.TorchSeq2Seq`` built without copying weights in, so each module keeps its constructor's values).
``keras`` is checked to be exactly what the layers drew before the choice existed (the Keras initialisers in a fixed
order)."""

import numpy as np
import pytest

from minilstm import LSTM, Dense, Embedding, Parameters
from minilstm.architecture import Architecture
from minilstm.layers import INIT_SCHEMES, glorot_uniform, lstm_bias, orthogonal
from minilstm.seq2seq import Seq2Seq
from minilstm.vocab import Vocab

torch = pytest.importorskip("torch", reason="the pytorch scheme is compared with torch's own modules")
from bench.torch_models import TorchSeq2Seq  # noqa: E402

ARCHITECTURES = {
    "plain-embedded": {"embedding_dim": 48},
    "general-bidirectional": {"attention": "general", "input_feed": False, "bidirectional_encoder": True,
                              "embedding_dim": 32},
    "concat-no-feed": {"attention": "concat", "input_feed": False, "embedding_dim": 16},
    "dot-stacked-one-hot": {"attention": "dot", "input_feed": False, "encoder_layers": 2, "decoder_layers": 2},
}


def model(fields, n_in=40, n_out=50, units=64):
    vocab_in = Vocab([chr(0x100 + i) for i in range(n_in)])
    vocab_out = Vocab(["\t", "\n"] + [chr(0x200 + i) for i in range(n_out - 2)])
    return Seq2Seq("numpy", vocab_in, vocab_out, 7, 9,
                   Architecture(latent_dim=units, dtype="float64", mask_padding=True, **fields))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_pytorch_scheme_draws_what_torch_modules_draw(name):
    ours = model(ARCHITECTURES[name]).initialize(0, "pytorch")
    fields = ARCHITECTURES[name]
    theirs = TorchSeq2Seq(len(ours.input_vocab), len(ours.target_vocab), ours.latent_dim,
                          layers=fields.get("encoder_layers", 1),
                          bidirectional=fields.get("bidirectional_encoder", False), attention=fields.get("attention"),
                          input_feed=False, embedding_dim=fields.get("embedding_dim", 0), dtype="float64", seed=1)
    reference = theirs.get_weights()
    # our one LSTM bias starts as torch's b_ih + b_hh: compare with the sum of torch's two
    for cell_name, bias_ih, bias_hh in _torch_biases(theirs):
        reference[cell_name] = bias_ih + bias_hh
    weights = ours.get_weights()
    assert sorted(weights) == sorted(reference)
    for key, value in weights.items():
        assert value.shape == reference[key].shape, key
        assert same_distribution(value.ravel(), reference[key].ravel()), key


def same_distribution(a, b, alpha=1e-4) -> bool:
    """The two-sample Kolmogorov-Smirnov test: False when the largest gap between the empirical distribution functions
    is beyond chance at level ``alpha`` (one wrong answer in 10,000 for samples of one distribution)."""
    grid = np.sort(np.concatenate([a, b]))
    gap = np.abs(np.searchsorted(np.sort(a), grid, side="right") / a.size
                 - np.searchsorted(np.sort(b), grid, side="right") / b.size).max()
    return gap <= np.sqrt(-np.log(alpha / 2) / 2) * np.sqrt((a.size + b.size) / (a.size * b.size))


def test_the_distribution_test_can_fail():
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(256)
    assert same_distribution(rng.uniform(-bound, bound, 1024), rng.uniform(-bound, bound, 1024))
    assert not same_distribution(rng.uniform(-bound, bound, 1024), glorot_uniform(rng, (4, 256)).ravel())
    assert not same_distribution(rng.uniform(-bound, bound, 1024), rng.uniform(-1.3 * bound, 1.3 * bound, 1024))


def _torch_biases(module):
    """(our bias name, torch's bias_ih, its bias_hh) of every LSTM cell: ``_lstm_pairs`` names bias_ih ours and
    yields bias_hh (no name of ours) right after it."""
    pairs = list(module._lstm_pairs())
    for (name, param, _), (_, partner, _) in zip(pairs, pairs[1:], strict=False):
        if name is not None and name.endswith(".bias"):
            yield name, param.detach().numpy(), partner.detach().numpy()


def test_pytorch_scheme_layers():
    """The layer API: each layer's draws in PyTorch's bounds, the embedding standard normal."""
    layers_ = [Embedding(30, 500, name="emb"), LSTM(100, input_size=500, name="lstm"), Dense(100, 30, name="out")]
    params = Parameters("numpy", layers_, dtype="float64", seed=3, init="pytorch").get_weights()
    bound = 1 / np.sqrt(100)
    assert params["emb.embeddings"].std() == pytest.approx(1.0, rel=0.03)
    for key in ("lstm.kernel", "lstm.recurrent_kernel", "out.kernel", "out.bias"):
        assert np.abs(params[key]).max() <= bound
        assert np.abs(params[key]).max() > 0.9 * bound
    assert np.abs(params["lstm.bias"]).max() <= 2 * bound
    assert params["lstm.bias"].std() == pytest.approx(np.sqrt(2 / 3) * bound, rel=0.1)


def test_keras_scheme_is_the_default_and_unchanged():
    """The default draws are the Keras initialisers in the order they always were (the default run's bits)."""
    layers_ = [LSTM(5, vocab_size=7, name="lstm"), Dense(5, 7, name="out")]
    default = Parameters("numpy", layers_, dtype="float64", seed=4).get_weights()
    named = Parameters("numpy", layers_, dtype="float64", seed=4, init="keras").get_weights()
    rng = np.random.default_rng(4)
    expected = {"lstm.kernel": glorot_uniform(rng, (7, 20)), "lstm.recurrent_kernel": orthogonal(rng, (5, 20)),
                "lstm.bias": lstm_bias(5), "out.kernel": glorot_uniform(rng, (5, 7)), "out.bias": np.zeros(7)}
    for key, value in expected.items():
        np.testing.assert_array_equal(default[key], value)
        np.testing.assert_array_equal(named[key], value)


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="init scheme must be one of"):
        Parameters("numpy", [Dense(2, 2)], seed=0, init="xavier")
    assert INIT_SCHEMES == ("keras", "pytorch")
