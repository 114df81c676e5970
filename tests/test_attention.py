"""Attention with input feeding (minilstm/attention.py): float64 finite differences of the layer and of the whole
model, a PyTorch reference (bench/torch_models.py: an nn.LSTMCell loop, as OpenNMT-py runs it) to 1e-10, numba ==
numpy, padding that gets exactly zero weight, and the decoders (batched greedy == one at a time == step by step;
beam 1 == greedy)."""

import numpy as np
import pytest
from helpers import numerical_gradient, relative_error, slow_beyond

from minilstm.attention import SCORES, AttentionDecoder
from minilstm.backends import get_backend
from minilstm.checkpoint import load_checkpoint, save_checkpoint
from minilstm.data import END, START, Vocab, encode_inputs
from minilstm.nn import Parameters
from minilstm.seq2seq import Seq2Seq

# These models are float64: on numba their compiled loops and decoders would compile in float64 too (a minute on a
# cold cache), so the quick tier runs them on numpy, and checks numba in float32 (test_attention_numba.py).
NUMBA_IN_FULL_SUITE = ["numpy", pytest.param("numba", marks=pytest.mark.slow)]

TOLERANCE = 1e-6
NUMPY = get_backend("numpy")


def attention_model(backend, score, input_feed=True, units=3, layers=1, bidirectional=False, dropout=0.0,
                    enc_len=4, dec_len=5, dtype="float64", seed=0, mask_padding=False):
    """A small Seq2Seq with attention and every weight perturbed off Keras's initialisers (no gradient zero)."""
    model = Seq2Seq(backend, Vocab(list(" abcd")), Vocab(list("\t\n ABC")), enc_len, dec_len, latent_dim=units,
                    dtype=dtype, mask_padding=mask_padding, encoder_layers=layers, decoder_layers=layers,
                    bidirectional_encoder=bidirectional, dropout=dropout, attention=score, input_feed=input_feed)
    model.initialize(seed)
    rng = np.random.default_rng(seed + 1)
    model.set_weights({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in model.get_weights().items()})
    return model


def random_attention_batch(rng, model, batch):
    """Ids (B, S), (B, T), (B, T) and source lengths mixing 1, the full length and values in between."""
    enc = rng.integers(0, len(model.input_vocab), size=(batch, model.max_encoder_len))
    dec_in = rng.integers(0, len(model.target_vocab), size=(batch, model.max_decoder_len))
    dec_out = rng.integers(0, len(model.target_vocab), size=(batch, model.max_decoder_len))
    lengths = rng.integers(1, model.max_encoder_len + 1, size=batch)
    lengths[0] = model.max_encoder_len
    if batch > 1:
        lengths[-1] = 1
    return enc, dec_in, dec_out, lengths


# ---------------------------------------------------------------------------------------------------------------
# The layer: every weight, the memory and the initial states, through a random projection of every output


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize("steps,batch,sources,units,layers,dropout", [
    (4, 3, 5, 3, 1, 0.0),
    (3, 2, 4, 3, 2, 0.3),  # stacked, dropout between the layers
    (1, 1, 1, 3, 1, 0.0),  # one step, batch 1, one source position
])
def test_attention_decoder_gradients(rng, score, input_feed, steps, batch, sources, units, layers, dropout):
    """loss = sum(htilde * R) + sum(h_n * Rh) + sum(c_n * Rc), source lengths mixed (1, full, in between)."""
    vocab = 4
    decoder = AttentionDecoder(units, vocab_size=vocab, score=score, input_feed=input_feed, num_layers=layers,
                               dropout=dropout)
    params = Parameters(NUMPY, [decoder], "float64", seed=int(rng.integers(1000)))
    params.set_weights({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.get_weights().items()})
    ids = rng.integers(0, vocab, (steps, batch))
    memory = rng.standard_normal((sources, batch, units))
    lengths = rng.integers(1, sources + 1, size=batch)
    lengths[0], lengths[-1] = 1, sources  # one position (weight 1: its scores get no gradient) and all of them
    h0, c0 = rng.standard_normal((2, layers, batch, units))
    proj, proj_h, proj_c = (rng.standard_normal(s) for s in ((steps, batch, units), h0.shape, c0.shape))
    options = {"training": dropout > 0, "seed": 11 if dropout else None}

    def loss():
        outputs, (h_n, c_n), _ = decoder.forward(params, ids, (h0, c0), memory, lengths, **options)
        return float((outputs * proj).sum() + (h_n * proj_h).sum() + (c_n * proj_c).sum())

    _, _, cache = decoder.forward(params, ids, (h0, c0), memory, lengths, **options)
    d_memory, (d_h0, d_c0) = decoder.backward(params, cache, proj, (proj_h, proj_c))
    checked = {**{name: (view, params.grads[name]) for name, view in params.items()},
               "memory": (memory, d_memory), "h0": (h0, d_h0), "c0": (c0, d_c0)}
    for name, (array, grad) in checked.items():
        expected = numerical_gradient(loss, array)
        scores_only = name.startswith("attention.") and not name.endswith("output_kernel")
        assert np.abs(expected).max() > 0 or (sources == 1 and scores_only), name
        assert relative_error(grad, expected) < TOLERANCE, name


@pytest.mark.parametrize("score", SCORES)
def test_padding_gets_zero_weight_and_its_content_changes_nothing(rng, score):
    """Source positions at or past a sentence's length: attention weight exactly 0, outputs bit-identical whatever
    the memory holds there, and their memory gradient exactly 0."""
    units, steps, batch, sources = 4, 3, 3, 6
    decoder = AttentionDecoder(units, vocab_size=5, score=score)
    params = Parameters(NUMPY, [decoder], "float64", seed=3)
    ids = rng.integers(0, 5, (steps, batch))
    memory = rng.standard_normal((sources, batch, units))
    lengths = np.array([6, 2, 1])
    state = tuple(rng.standard_normal((2, 1, batch, units)))
    outputs, _, cache = decoder.forward(params, ids, state, memory, lengths)
    padded = np.arange(sources)[:, None] >= lengths[None, :]  # (S, B)
    assert (cache.attention.weights.transpose(2, 0, 1)[padded] == 0).all()
    assert (cache.attention.weights.sum(axis=2) > 0.999999).all()
    changed = memory.copy()
    changed[padded] = 1e3 * rng.standard_normal((padded.sum(), units))
    outputs_changed, _, _ = decoder.forward(params, ids, state, changed, lengths)
    assert outputs_changed.tobytes() == outputs.tobytes()
    d_memory, _ = decoder.backward(params, cache, rng.standard_normal(outputs.shape))
    assert (d_memory[padded] == 0).all() and np.abs(d_memory[~padded]).min() > 0


# ---------------------------------------------------------------------------------------------------------------
# The whole model


def gradient_check(model, batch_arrays, dropout_seed=None):
    """Every weight of ``model`` against centred differences of its mean loss. Where a tensor's gradient is tiny,
    the differences' own rounding (loss ~1, eps 1e-5: ~1e-11 per element) is larger than 1e-6 of it, so a tensor
    whose gradient norm is below 1e-4 is held to an absolute 1e-9 instead (both bounds fail for a wrong formula,
    whose error is of the gradient's own size)."""
    enc, dec_in, dec_out, lengths = batch_arrays
    options = {"source_lengths": lengths, "dropout_seed": dropout_seed}
    model.forward_backward(enc, dec_in, dec_out, **options)
    grads = {name: view.copy() for name, view in model.grads.items()}

    def loss():
        loss_sum, _ = model.forward_backward(enc, dec_in, dec_out, **options)
        return float(loss_sum) / dec_out.size

    for name, view in model.params.items():
        expected = numerical_gradient(loss, view, eps=1e-5)
        if np.linalg.norm(expected) > 1e-4:
            assert relative_error(grads[name], expected) < TOLERANCE, name
        else:
            assert np.abs(grads[name] - expected).max() < 1e-9, name


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize("architecture", slow_beyond(["1+1", "2+2-bidirectional-dropout"]))
def test_seq2seq_attention_gradients(rng, score, input_feed, architecture):
    stacked = architecture != "1+1"
    model = attention_model(NUMPY, score, input_feed, layers=2 if stacked else 1, bidirectional=stacked,
                            dropout=0.3 if stacked else 0.0, seed=int(rng.integers(1000)))
    gradient_check(model, random_attention_batch(rng, model, 3), dropout_seed=9 if stacked else None)


torch = pytest.importorskip("torch", reason="PyTorch is the reference; install the CPU build: pip install "
                            "torch==2.13.0")


@pytest.mark.parametrize("cpu_backend", NUMBA_IN_FULL_SUITE, indirect=True)
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize("architecture", slow_beyond(["1+1", "2+2-bidirectional"]))
def test_logits_loss_and_gradients_match_pytorch(cpu_backend, rng, score, input_feed, architecture):
    stacked = architecture != "1+1"
    model = attention_model(cpu_backend, score, input_feed, units=5, layers=2 if stacked else 1,
                            bidirectional=stacked, enc_len=6, dec_len=7, seed=int(rng.integers(1000)))
    enc, dec_in, dec_out, lengths = random_attention_batch(rng, model, 4)
    from bench.torch_models import TorchSeq2Seq

    reference = TorchSeq2Seq.from_minilstm(model)
    ref_logits = reference.logits(enc, dec_in, lengths)
    ref_loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, ref_logits.shape[-1]),
                                                 torch.from_numpy(dec_out.T.copy()).reshape(-1))
    ref_loss.backward()
    logits = model.teacher_forced_logits(enc, dec_in, lengths)
    assert relative_error(logits, ref_logits.detach().numpy().transpose(1, 0, 2)) < 1e-10
    loss, _ = model.loss_and_grads(enc, dec_in, dec_out, lengths)
    assert abs(loss - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    ref_grads = reference.get_grads()
    assert set(ref_grads) == set(model.grads.views)
    for name, grad in model.grads.items():
        assert relative_error(grad, ref_grads[name]) < 1e-10, name


# ---------------------------------------------------------------------------------------------------------------
# numba == numpy


@pytest.mark.parametrize("dtype,tolerance", slow_beyond([("float32", 2e-5), ("float64", 1e-12)]))
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize("batch,units,enc_len,layers", slow_beyond([(1, 3, 1, 1), (5, 7, 4, 1), (3, 4, 3, 2)]))
def test_numba_equals_numpy(rng, dtype, tolerance, score, input_feed, batch, units, enc_len, layers):
    """Loss and every gradient. Float64 checks the math: numba's gradients are numpy's to 1e-12, each relative to
    its own norm. Float32 checks that the same code keeps float32's accuracy, relative to the scale the optimizer
    sees, the norm of the whole gradient: a gradient that is a sum of many cancelling terms (a bias of a tiny model,
    norm ~1e-5 from terms ~1e-3) carries float32's rounding of the terms, not of its result, so its error relative to
    its own norm reached 1.7e-4 in numpy's float32 as in numba's (both measured against float64 over 40 draws)
    and says nothing about either; held to its own norm this test failed on a third of the draws."""
    numba_backend = pytest.importorskip("numba") and get_backend("numba")
    seed = int(rng.integers(1000))
    kwargs = dict(units=units, enc_len=enc_len, layers=layers, dropout=0.25 if layers > 1 else 0.0, seed=seed)
    reference = attention_model(NUMPY, score, input_feed, dtype=dtype, **kwargs)
    fast = attention_model(numba_backend, score, input_feed, dtype=dtype, **kwargs)
    arrays = random_attention_batch(rng, reference, batch)
    options = {"source_lengths": arrays[3], "dropout_seed": 4 if layers > 1 else None}
    loss_ref, _ = reference.forward_backward(*arrays[:3], **options)
    loss_fast, _ = fast.forward_backward(*arrays[:3], **options)
    assert abs(float(loss_fast) - float(loss_ref)) <= tolerance * abs(float(loss_ref))
    if dtype == "float64":
        for name, grad in reference.grads.items():
            assert relative_error(fast.grads[name], grad) < tolerance, name
        return
    exact = attention_model(NUMPY, score, input_feed, dtype="float64", **kwargs)
    exact.forward_backward(*arrays[:3], **options)
    scale = np.linalg.norm(exact.grads.flat)
    for name, expected in exact.grads.items():
        for who, model in (("numpy", reference), ("numba", fast)):
            error = np.linalg.norm(model.grads[name] - expected) / scale
            assert error < tolerance, (who, name, error)


# ---------------------------------------------------------------------------------------------------------------
# Decoding


def trained_vocab_model(backend, score, input_feed, mask_padding=False):
    """A model over real characters whose greedy decodes of ``SENTENCES`` differ from each other and of which some
    end before the length limit and some do not: random weights, then the smallest END bias (of a few) that does it."""
    input_vocab = Vocab(list(" .?HIWacdeghilnorstuwy"))
    target_vocab = Vocab(list("\t\n !.?JSabeilnorstuv"))
    model = Seq2Seq(backend, input_vocab, target_vocab, 12, 14, latent_dim=8, dtype="float64",
                    mask_padding=mask_padding, attention=score,
                    input_feed=input_feed)
    model.initialize(5)
    rng = np.random.default_rng(6)
    weights = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in model.get_weights().items()}
    end = target_vocab.index[END]
    for extra in np.linspace(0.0, 4.0, 33):
        bias = weights["dense.bias"].copy()
        bias[end] += extra
        model.set_weights({**weights, "dense.bias": bias})
        decodes = model.translate(SENTENCES)
        full = model.max_decoder_len + 1  # no END within the limit
        if len(set(decodes)) > 2 and any(len(t) < full for t in decodes) and any(len(t) == full for t in decodes):
            return model
    raise AssertionError("no END bias gives a mix of early and full-length decodes")


SENTENCES = ["Hi.", "He ran.", "Who is he?", "Hello there", "a", "He is cold.", "Its cold", "Who?"]


@pytest.mark.parametrize("cpu_backend", NUMBA_IN_FULL_SUITE, indirect=True)
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
def test_batched_greedy_equals_one_at_a_time_and_the_step_loop(cpu_backend, score, input_feed):
    model = trained_vocab_model(cpu_backend, score, input_feed)
    texts = SENTENCES
    batched = model.translate(texts)
    alone = [model.translate([t])[0] for t in texts]
    assert batched == alone
    assert len(set(batched)) > 2 and any(len(t) <= model.max_decoder_len for t in batched)
    start_id, end_id = model.target_vocab.index[START], model.target_vocab.index[END]
    for text, expected in zip(texts, batched, strict=True):
        ids = encode_inputs([text], model.input_vocab, model.max_encoder_len)
        state = model.start_decoding(ids, [len(text)])
        prev, out = start_id, []
        for _ in range(model.max_decoder_len + 1):
            logits, state, weights = model.step(model.backend.asarray(np.array([prev])), state)
            assert weights.shape == (1, model.max_encoder_len)
            assert (model.backend.to_numpy(weights)[0, len(text):] == 0).all()
            prev = int(model.backend.to_numpy(logits).argmax())
            if prev == end_id:
                break
            out.append(prev)
        assert model.target_vocab.decode(out) == expected
    assert model.translate(texts, beam_width=1) == batched  # beam_width 1 goes through greedy's own code:
    assert [sentence[0] for sentence in
            [model.beam_decode_ids(encode_inputs([t], model.input_vocab, model.max_encoder_len), 1, [len(t)])
             for t in texts]] == [model.target_vocab.encode(t) for t in batched]  # the beam decoder itself


@pytest.mark.parametrize("cpu_backend", NUMBA_IN_FULL_SUITE, indirect=True)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
def test_step_by_step_with_the_true_characters_reproduces_teacher_forcing(cpu_backend, rng, input_feed):
    model = trained_vocab_model(cpu_backend, "general", input_feed)
    enc = rng.integers(0, len(model.input_vocab), size=(3, model.max_encoder_len))
    dec_in = rng.integers(0, len(model.target_vocab), size=(3, model.max_decoder_len))
    lengths = np.array([12, 5, 1])
    expected = model.teacher_forced_logits(enc, dec_in, lengths)
    state = model.start_decoding(enc, lengths)
    for t in range(model.max_decoder_len):
        logits, state, _ = model.step(model.backend.asarray(dec_in[:, t]), state)
        assert relative_error(model.backend.to_numpy(logits), expected[:, t]) < 1e-12, t


@pytest.mark.parametrize("cpu_backend", NUMBA_IN_FULL_SUITE, indirect=True)
def test_beam_search_and_sampling_run_with_attention(cpu_backend):
    model = trained_vocab_model(cpu_backend, "concat", True)
    texts = ["Hi.", "He ran.", "Who is he?"]
    beams = model.translate(texts, beam_width=3)
    assert beams == [model.translate([t], beam_width=3)[0] for t in texts]
    sampled = model.translate(texts, temperature=0.7, seed=1)
    assert sampled == model.translate(texts, temperature=0.7, seed=1) and all(isinstance(s, str) for s in sampled)


@pytest.mark.parametrize("cpu_backend", NUMBA_IN_FULL_SUITE, indirect=True)
def test_attention_maps_cover_each_sentence_and_sum_to_one(cpu_backend):
    model = trained_vocab_model(cpu_backend, "general", True)
    texts = ["Hi.", "Who is he?", "a"]
    maps = []
    translations = model.translate(texts, attention_maps=maps)
    assert len(maps) == len(texts)
    for text, translation, weights in zip(texts, translations, maps, strict=True):
        # one row per generated character, END included unless the sentence ran to the limit
        assert weights.shape[1] == len(text)
        assert weights.shape[0] in (len(translation) + 1, len(translation))
        assert np.allclose(weights.sum(axis=1), 1.0)


@pytest.mark.parametrize("cpu_backend", NUMBA_IN_FULL_SUITE, indirect=True)
def test_checkpoint_round_trip_keeps_the_attention(tmp_path, cpu_backend):
    model = trained_vocab_model(cpu_backend, "concat", False)
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt", backend=cpu_backend).model
    assert loaded.attention == "concat" and loaded.input_feed is False
    assert set(loaded.get_weights()) == set(model.get_weights())
    texts = ["Hi.", "Who is he?"]
    assert loaded.translate(texts) == model.translate(texts)


# ---------------------------------------------------------------------------------------------------------------
# Export


@pytest.mark.parametrize("score", SCORES)
def test_torch_export_names_rebuild_the_model_in_pytorch(tmp_path, score):
    """The .safetensors export, read back by name only as its documentation says (nn.LSTM encoder, nn.LSTMCell
    decoder with input feeding, OpenNMT-py's GlobalAttention names), gives our logits; Keras export refuses the
    model with one line."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from minilstm.convert import main as convert_main
    from minilstm.errors import MinilstmError

    model = trained_vocab_model(NUMPY, score, True)
    checkpoint = save_checkpoint(tmp_path / "ckpt", model)
    dest = tmp_path / "model.safetensors"
    assert convert_main([str(checkpoint), str(dest)]) == 0
    with safe_open(dest, framework="pt") as f:
        meta = f.metadata()
    assert meta["attention"] == f'"{score}"' and meta["input_feed"] == "true"
    s = {k: v.double() for k, v in load_file(dest).items()}
    units, n_in, n_out = model.latent_dim, len(model.input_vocab), len(model.target_vocab)
    encoder = torch.nn.LSTM(n_in, units, batch_first=True, dtype=torch.float64)
    encoder.load_state_dict({k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("encoder.")})
    cell = torch.nn.LSTMCell(n_out + units, units, dtype=torch.float64)
    cell.load_state_dict({k.split(".", 1)[1].replace("_l0", ""): v for k, v in s.items() if k.startswith("decoder.")})
    texts = ["Hi.", "Who is he?", "a"]
    enc = encode_inputs(texts, model.input_vocab, model.max_encoder_len)
    dec_in = np.random.default_rng(0).integers(0, n_out, size=(len(texts), 6))
    lengths = np.array([len(t) for t in texts])
    with torch.no_grad():
        memory, (h, c) = encoder(torch.nn.functional.one_hot(torch.from_numpy(enc).long(), n_in).double())
        h, c = h[0], c[0]
        valid = torch.arange(memory.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]
        feed, logits = torch.zeros_like(h), []
        for t in range(dec_in.shape[1]):
            y = torch.nn.functional.one_hot(torch.from_numpy(dec_in[:, t]).long(), n_out).double()
            h, c = cell(torch.cat([y, feed], dim=1), (h, c))
            if score == "concat":
                query = h @ s["attention.linear_query.weight"].T + s["attention.linear_query.bias"]
                hidden = torch.tanh(query[:, None] + memory @ s["attention.linear_context.weight"].T)
                scores = hidden @ s["attention.v.weight"][0]
            else:
                query = h if score == "dot" else h @ s["attention.linear_in.weight"].T
                scores = torch.einsum("bh,bsh->bs", query, memory)
            weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)
            context = torch.einsum("bs,bsh->bh", weights, memory)
            feed = torch.tanh(torch.cat([context, h], dim=1) @ s["attention.linear_out.weight"].T)
            logits.append(feed @ s["dense.weight"].T + s["dense.bias"])
    expected = torch.stack(logits, dim=1).numpy()
    assert relative_error(model.teacher_forced_logits(enc, dec_in, lengths), expected) < 1e-12
    with pytest.raises(MinilstmError, match=r"not the Keras example's model \(.*attention=" + score):
        convert_main([str(checkpoint), str(tmp_path / "model.keras")])


# ---------------------------------------------------------------------------------------------------------------
# The commands: resume, data parallel, translate's picture, errors


@pytest.mark.slow
def test_attention_run_resumes_bit_identical(tmp_path):
    """1 epoch + --resume (killed inside the second epoch, resumed again) == 2 epochs at once, to the byte, with
    general attention, input feeding and --mask-padding."""
    from test_resume import resume_in_pieces, weights

    run = ["--num-samples", "600", "--batch-size", "32", "--latent-dim", "16", "--num-decodes", "0", "--seed", "3",
           "--progress", "never", "--mask-padding", "--attention", "general"]
    out = resume_in_pieces(tmp_path, run)
    assert weights(out / "final") == weights(tmp_path / "whole" / "final")
    assert load_checkpoint(out / "final").model.attention == "general"


@pytest.mark.mpi
def test_attention_on_two_ranks_equals_two_shards(tmp_path):
    """A 2+2-layer model with a bidirectional encoder, dropout and concat attention with input feeding trains to
    the same bytes on 2 MPI ranks as on 2 thread shards (each rank attends over its rows' own source lengths)."""
    from test_distributed import DATA_PARALLEL_LINE, RUN, assert_same_bytes, train, train_mpi

    run = [*RUN, "--epochs", "1", "--encoder-layers", "2", "--decoder-layers", "2", "--bidirectional-encoder",
           "--dropout", "0.3", "--attention", "concat"]
    rc, _, stderr = train(*run, "--out", tmp_path / "one", threads=2)
    assert rc == 0, stderr
    rc, stdout, stderr = train_mpi(2, *run, "--out", tmp_path / "two")
    assert rc == 0, stderr
    assert DATA_PARALLEL_LINE in stdout
    assert_same_bytes(tmp_path / "two" / "final", tmp_path / "one" / "final")


def test_translate_draws_the_attention_map_and_refuses_what_it_cannot(tmp_path, capsys):
    from minilstm.translate import main as translate_main

    model = trained_vocab_model(NUMPY, "general", True)
    checkpoint = save_checkpoint(tmp_path / "ckpt", model)
    png = tmp_path / "map.png"
    assert translate_main([str(checkpoint), "Hi.", "Who is he?", "--attention-map", str(png), "--backend",
                           "numpy"]) == 0
    assert capsys.readouterr().out.splitlines() == model.translate(["Hi.", "Who is he?"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    from minilstm.errors import MinilstmError

    with pytest.raises(MinilstmError, match="greedy decoding's weights"):
        translate_main([str(checkpoint), "Hi.", "--attention-map", str(png), "--beam-width", "2"])
    with pytest.raises(MinilstmError, match="not a directory"):
        translate_main([str(checkpoint), "Hi.", "--attention-map", str(tmp_path / "no" / "map.png")])
    plain = Seq2Seq(NUMPY, model.input_vocab, model.target_vocab, 12, 14, latent_dim=8).initialize(0)
    plain_checkpoint = save_checkpoint(tmp_path / "plain", plain)
    with pytest.raises(MinilstmError, match="has no attention"):
        translate_main([str(plain_checkpoint), "Hi.", "--attention-map", str(png)])


def test_no_input_feed_without_attention_is_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "minilstm.train", "--no-input-feed", "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "--no-input-feed is for models with --attention" in lines[0]
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------------------
# The CUDA kernels (kernels/lstm.cu: masked_softmax, masked_softmax_backward), on a GPU or the CPU emulator


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "emulator"])
def device(request):
    from test_cupy_backend import Device

    return Device(request.param)


@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("batch,steps,sources", [(1, 1, 1), (3, 5, 7), (2, 3, 300)])
def test_masked_softmax_kernels_equal_the_float64_reference(device, rng, dtype, tolerance, batch, steps, sources):
    """Weights and d scores against numpy in float64 on fresh inputs, lengths mixing 1, the full row and between
    (300 positions: more than one block's threads); padded positions exactly 0."""
    from minilstm import layers

    backend, xp = device.backend(), device.xp
    scores = 3 * rng.standard_normal((batch, steps, sources))
    lengths = rng.integers(1, sources + 1, size=batch)
    lengths[0] = sources
    lengths[-1] = 1 if batch > 1 else lengths[-1]
    d_weights = rng.standard_normal(scores.shape)
    expected = layers.masked_softmax(np, scores, lengths)
    weights = xp.asnumpy(backend.masked_softmax(xp.asarray(scores, dtype), xp.asarray(lengths)))
    assert relative_error(weights, expected) < tolerance
    padded = np.arange(sources)[None, None, :] >= lengths[:, None, None]
    assert (weights[np.broadcast_to(padded, weights.shape)] == 0).all()
    expected_d = layers.masked_softmax_backward(np, expected, d_weights)
    d_scores = xp.asnumpy(backend.masked_softmax_backward(xp.asarray(expected, dtype), xp.asarray(d_weights, dtype)))
    assert relative_error(d_scores, expected_d) < 10 * tolerance


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
def test_cupy_backend_with_attention_equals_numpy(device, rng, score, input_feed):
    """The whole model (2+2 layers, bidirectional encoder, dropout) on the GPU backend: numpy's loss and gradients
    in float64, and its translations."""
    from helpers import copy_to_backend

    reference = attention_model(NUMPY, score, input_feed, units=4, layers=2, bidirectional=True, dropout=0.3)
    model = copy_to_backend(reference, device.backend())
    enc, dec_in, dec_out, lengths = random_attention_batch(rng, reference, 3)
    loss_ref, _ = reference.forward_backward(enc, dec_in, dec_out, source_lengths=lengths, dropout_seed=2)
    import cuda_emulator

    launches = dict(cuda_emulator.calls)
    loss, _ = model.forward_backward(*(device.xp.asarray(a) for a in (enc, dec_in, dec_out)),
                                     source_lengths=device.xp.asarray(lengths), dropout_seed=2)
    if device.kind == "emulator":  # the kernels ran, once per decoder step with input feeding
        for kernel in ("masked_softmax_f64", "masked_softmax_backward_f64"):
            ran = cuda_emulator.calls[kernel] - launches.get(kernel, 0)
            assert ran == (reference.max_decoder_len if input_feed else 1), kernel
    assert abs(float(loss) - float(loss_ref)) <= 1e-12 * abs(float(loss_ref))
    for name, grad in reference.grads.items():
        assert relative_error(device.xp.asnumpy(model.grads[name]), grad) < 1e-12, name
    texts = ["ab", "dcba", "a"]
    assert model.translate(texts) == reference.translate(texts)
