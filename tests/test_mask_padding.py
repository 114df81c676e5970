"""--mask-padding: IGNOREd targets, length buckets, and models that read no padding.

The central check: the gradient of a bucketed batch, whose decoder runs to its longest sentence, equals the
position-weighted mean of the gradients of its sentences run one at a time with no padding at all. So the padding
inside a batch changes nothing, to float64 rounding.
"""

from pathlib import Path

import numpy as np
import pytest
from helpers import copy_to_backend, numerical_gradient, relative_error, small_model

from minilstm import layers
from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.data import END, IGNORE, START, Dataset, bucketed_batches, encode_inputs, read_pairs
from minilstm.errors import MinilstmError
from minilstm.seq2seq import Seq2Seq


def _random_sentences(rng, model, n, enc_len, max_steps):
    """``n`` sentences of English length ``enc_len`` with 1..max_steps real decoder targets each, as id arrays
    padded to ``max_steps``: (encoder ids, decoder input ids, masked targets, real steps per row)."""
    enc = rng.integers(0, len(model.input_vocab), size=(n, enc_len))
    steps = rng.integers(1, max_steps + 1, size=n)
    steps[0] = max_steps  # the batch runs to its longest sentence
    dec_in = rng.integers(0, len(model.target_vocab), size=(n, max_steps))
    targets = rng.integers(0, len(model.target_vocab), size=(n, max_steps))
    targets[np.arange(max_steps)[None, :] >= steps[:, None]] = IGNORE
    return enc, dec_in, targets, steps


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows,vocab", [(9, 7), (1, 2), (64, 93)])
def test_softmax_cross_entropy_ignores_negative_targets(cpu_backend, rng, dtype, rows, vocab):
    """Every backend: an IGNORE row adds nothing and gets an exactly zero gradient; the others are as if the
    IGNORE rows were not there (checked against the float64 reference on the kept rows alone)."""
    logits = (rng.standard_normal((rows, vocab)) * 3).astype(dtype)
    targets = rng.integers(0, vocab, size=rows)
    ignored = rng.random(rows) < 0.4
    ignored[0] = rows > 1  # at least one row of each kind where there are two rows
    targets[ignored] = IGNORE
    loss, hits, grad = cpu_backend.softmax_cross_entropy(cpu_backend.asarray(logits), cpu_backend.asarray(targets),
                                                         0.25)
    grad = cpu_backend.to_numpy(grad)
    assert not grad[ignored].any()
    kept = ~ignored
    ref_loss, ref_hits, ref_grad = layers.softmax_cross_entropy(np, logits[kept].astype(np.float64), targets[kept],
                                                                0.25)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert abs(float(loss) - float(ref_loss)) <= tol * max(1.0, abs(float(ref_loss)))
    assert int(hits) == int(ref_hits)
    np.testing.assert_allclose(grad[kept], ref_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("n,enc_len,max_steps,units", [(5, 4, 6, 7), (1, 1, 1, 3), (3, 2, 5, 3)])
def test_bucketed_batch_equals_its_sentences_alone(cpu_backend, rng, n, enc_len, max_steps, units):
    """Loss, hits and every gradient of a padded bucket == the sums over its sentences run alone, unpadded."""
    model = small_model(cpu_backend.name, units=units, enc_len=enc_len, dec_len=max_steps)
    enc, dec_in, targets, steps = _random_sentences(rng, model, n, enc_len, max_steps)
    positions = int(steps.sum())
    loss, hits = model.forward_backward(enc, dec_in, targets, positions=positions)
    batch_grads = {k: cpu_backend.to_numpy(v).copy() for k, v in model.grads.items()}
    loss_sum, hit_sum = 0.0, 0
    grad_sum = {k: np.zeros_like(v) for k, v in batch_grads.items()}
    for i in range(n):
        s = steps[i]
        row_loss, row_hits = model.forward_backward(enc[i : i + 1], dec_in[i : i + 1, :s], targets[i : i + 1, :s],
                                                    positions=int(s))
        assert (targets[i, :s] >= 0).all()
        loss_sum += float(row_loss)
        hit_sum += int(row_hits)
        for k, g in model.grads.items():
            grad_sum[k] += cpu_backend.to_numpy(g) * s  # the row's mean gradient times its positions
    assert float(loss) == pytest.approx(loss_sum, rel=1e-12)
    assert int(hits) == hit_sum
    for k, g in batch_grads.items():
        assert relative_error(g, grad_sum[k] / positions) < 1e-11, k


def test_masked_loss_finite_differences(rng):
    """The masked mean loss (IGNORE targets, mean over the counted positions) against centred differences."""
    model = small_model("numpy", units=3, enc_len=3, dec_len=5)
    enc, dec_in, targets, steps = _random_sentences(rng, model, 4, 3, 5)
    positions = int(steps.sum())
    model.forward_backward(enc, dec_in, targets, positions=positions)

    def loss():
        return float(model.forward_backward(enc, dec_in, targets, compute_grads=False, positions=positions)[0]) / \
            positions

    for name, view in model.params.items():
        expected = numerical_gradient(loss, view)
        assert relative_error(model.grads[name], expected) < 1e-6, name


def test_numba_matches_numpy_on_masked_batches(rng):
    model = small_model("numpy", units=7, enc_len=3, dec_len=6)
    fast = copy_to_backend(model, "numba")
    enc, dec_in, targets, steps = _random_sentences(rng, model, 70, 3, 6)  # 70 rows: two shards on two cores
    expected = model.forward_backward(enc, dec_in, targets, positions=int(steps.sum()))
    got = fast.forward_backward(enc, dec_in, targets, positions=int(steps.sum()))
    assert float(got[0]) == pytest.approx(float(expected[0]), rel=1e-12)
    assert int(got[1]) == int(expected[1])
    assert relative_error(fast.grads.flat, model.grads.flat) < 1e-12


def test_bucketed_batches(rng):
    lengths = rng.integers(1, 6, size=200)
    indices = np.arange(30, 200)
    first = bucketed_batches(indices, lengths, 8, np.random.default_rng(5))
    assert sorted(np.concatenate(first).tolist()) == indices.tolist()  # each index exactly once
    for batch in first:
        assert 1 <= len(batch) <= 8
        assert len(set(lengths[batch].tolist())) == 1
    # One partial batch at most per length.
    for length in set(lengths[indices].tolist()):
        sizes = [len(b) for b in first if lengths[b[0]] == length]
        assert sum(size < 8 for size in sizes) <= 1
    again = bucketed_batches(indices, lengths, 8, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = bucketed_batches(indices, lengths, 8, np.random.default_rng(6))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=False))
    ordered = bucketed_batches(indices, lengths, 8, None)  # no rng: lengths ascending, file order within one
    flat = np.concatenate(ordered)
    assert np.array_equal(flat, indices[np.argsort(lengths[indices], kind="stable")])
    assert bucketed_batches(np.arange(0), lengths, 8, None) == []
    # Sorting by French length within windows: the same rows, far less decoder padding.
    french = rng.integers(1, 40, size=200)
    sorted_plan = bucketed_batches(indices, lengths, 8, np.random.default_rng(5), french)
    assert sorted(np.concatenate(sorted_plan).tolist()) == indices.tolist()
    assert all(len(set(lengths[b].tolist())) == 1 for b in sorted_plan)

    def decoder_steps(plan):
        return sum(len(b) * int(french[b].max()) for b in plan)

    assert decoder_steps(sorted_plan) < 0.8 * decoder_steps(first)
    with pytest.raises(MinilstmError):
        bucketed_batches(indices, lengths, 0, None)


def test_masked_target_ids():
    pairs = [("Go.", "Va !"), ("Hello!", "Salut.")]
    data = Dataset.from_pairs(pairs)
    masked = data.masked_target_ids()
    assert data.target_steps().tolist() == [len("Va !") + 1, len("Salut.") + 1]
    assert data.input_lengths().tolist() == [3, 6]
    for row, (_, fr) in enumerate(pairs):
        real = data.target_vocab.decode(masked[row, : len(fr) + 1])
        assert real == fr + END
        assert (masked[row, len(fr) + 1 :] == IGNORE).all()
        assert np.array_equal(masked[row, : len(fr) + 1], data.decoder_target_ids[row, : len(fr) + 1])
    assert START not in data.target_vocab.decode(masked[0, :4])


def test_masked_model_translates_without_padding(cpu_backend, tmp_path):
    """A mask_padding model encodes each sentence at its own length (batched translate == each one alone with no
    padding), and the flag survives a checkpoint."""
    model = small_model(cpu_backend.name, n_in=6, n_out=8, units=5, enc_len=6, dec_len=7)
    weights_rng = np.random.default_rng(4)  # large random weights: decodes that depend on the input
    model.set_weights({k: 1.5 * weights_rng.standard_normal(v.shape) for k, v in model.get_weights().items()})
    model.mask_padding = True
    texts = ["abc", "a", "edcba", "bb", "abcde", "c"]
    alone = [model.target_vocab.decode(model.greedy_decode_ids(encode_inputs([t], model.input_vocab, 0))[0])
             for t in texts]
    assert model.translate(texts, batch_size=2) == alone
    padded = [model.target_vocab.decode(model.greedy_decode_ids(encode_inputs([t], model.input_vocab, 6))[0])
              for t in texts]
    assert padded != alone  # the padding would have mattered: the test can tell the two apart
    save_checkpoint(tmp_path / "ck", model)
    loaded = load_checkpoint(tmp_path / "ck", backend=cpu_backend.name).model
    assert loaded.mask_padding is True
    assert loaded.translate(texts) == alone


def test_workspace_keeps_one_buffer_per_name_across_shapes(rng):
    """Length buckets give batches of many shapes; the workspace must not keep an array per shape (a full-file
    run grew to 12 GB that way), and results must not depend on what the buffer held before."""
    model = small_model("numpy", units=4, enc_len=6, dec_len=8)
    reference = copy_to_backend(model, "numpy")
    for n, enc_len, steps in [(5, 6, 8), (3, 2, 4), (7, 5, 8), (1, 1, 1), (5, 6, 8)]:
        enc, dec_in, targets, real = _random_sentences(rng, model, n, enc_len, steps)
        loss, _ = model.forward_backward(enc, dec_in, targets, positions=int(real.sum()))
        reference._workspaces.clear()  # fresh buffers every time
        expected, _ = reference.forward_backward(enc, dec_in, targets, positions=int(real.sum()))
        assert float(loss) == float(expected)
        assert np.array_equal(model.grads.flat, reference.grads.flat)
    for shard in model._workspaces.values():
        for workspace in shard.values():
            names = [name for name, _ in workspace.buffers]
            assert len(names) == len(set(names))
    decoder = model._workspaces[0]["decoder"]
    assert decoder.buffers[("gates", "float64")].size == 8 * 7 * 16  # the largest batch: 8 steps x 7 rows x 4H


def test_whole_file_buckets_and_its_longest_sentence_trains():
    """On the whole shared file: the length buckets cover every training row once, each batch is padded only to
    its own longest French sentence (far less than the file's maximum), and the longest sentence of the file
    (286 + 351 characters) goes through a masked training step."""
    path = Path(__file__).resolve().parents[2] / "shared/data/fra-eng/fra.txt"
    if not path.is_file():
        pytest.skip(f"full data file not present at {path}")
    data = Dataset.from_pairs(read_pairs(path))
    lengths, steps = data.input_lengths(), data.target_steps()
    plan = bucketed_batches(np.arange(len(data)), lengths, 64, np.random.default_rng(0), steps)
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(len(data)))
    computed = sum(len(b) * (lengths[b[0]] + steps[b].max()) for b in plan)
    padded = len(data) * (data.max_encoder_len + data.max_decoder_len)
    real = int(lengths.sum() + steps.sum())
    assert real <= computed < 1.1 * real and computed < padded / 8
    longest = int(np.argmax(lengths))
    model = Seq2Seq("numba", data.input_vocab, data.target_vocab, data.max_encoder_len, data.max_decoder_len,
                    latent_dim=16, mask_padding=True).initialize(0)
    targets = data.masked_target_ids()[longest : longest + 1, : steps[longest]]
    loss, _ = model.forward_backward(data.encoder_input_ids[longest : longest + 1, : lengths[longest]],
                                     data.decoder_input_ids[longest : longest + 1, : steps[longest]], targets,
                                     positions=int(steps[longest]))
    assert np.isfinite(float(loss)) and np.isfinite(model.grads.flat).all()
