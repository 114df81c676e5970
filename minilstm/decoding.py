"""Decoding: greedy, beam search with GNMT's length penalty, and sampling, each written once.

The algorithms run over one interface, ``DecoderSteps``: the decoder's state after the encoder, one step (the
logits of the next character), and the selection of rows (the rows still going, or the beams kept). The plain
decoder (an LSTM stack and the output layer) and the attention decoder implement it (``PlainSteps``,
``AttentionSteps``). A backend may also run a whole algorithm as one compiled call (the numba backend: greedy
decoding of a one-layer plain decoder, and all three for attention models); each such fast path sits behind the same
interface (``compiled_greedy``, ``compiled_beam``, ``compiled_sample``) and is tested to give the step loop's
characters, scores and random draws.

On top of the algorithms: ``translate_texts`` (text in, text out, batched by length; texts of several sentences
split into sentences and joined back, ``sentences``) and the decoding flags that
``translate``, ``evaluate`` and ``serve`` share (``add_decoding_flags``, ``check_decoding_flags``).
"""

import math

import numpy as np

from .cli import bounded_float, positive_float, positive_int
from .errors import MinilstmError
from .sentences import split_texts
from .vocab import END, START, encode_inputs

MAX_LENGTH_PENALTY = 10.0
"""The largest length penalty alpha taken: GNMT's is 0.2-1; far above, ((5 + n) / 6) ** alpha overflows a double
(past ~170 for the longest outputs), and every beam's rank would be 0."""


def check_length_penalty(alpha: float) -> None:
    if not (math.isfinite(alpha) and 0.0 <= alpha <= MAX_LENGTH_PENALTY):
        raise MinilstmError(f"the length penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g} (GNMT's alpha, "
                            f"0.2-1 in practice; 0: none), not {alpha}")


def cut_at_end(rows: list[list[int]], end_id: int) -> list[list[int]]:
    """Each decoded row up to (not including) its first END; a row without END ran to the length limit."""
    return [row[: row.index(end_id)] if end_id in row else row for row in rows]


# -- the decoder interface ---------------------------------------------------------------------------------------


class DecoderSteps:
    """What the algorithms need of a model's decoder. ``start`` and ``step`` are the model's (``Seq2Seq``); the
    compiled whole loops answer False (or None) where the backend has none for this model."""

    def __init__(self, model):
        self.model, self.backend, self.params = model, model.backend, model.params
        self.start_id, self.end_id = model.target_vocab.index[START], model.target_vocab.index[END]
        self.max_steps = model.max_decoder_len + 1  # the example's limit: longer than max_decoder_len stops
        self.vocab_size = len(model.target_vocab)

    def start(self, encoder_input_ids, source_lengths=None):
        return self.model.start_decoding(encoder_input_ids, source_lengths)

    def step(self, prev_ids, state):
        """(logits (B, V), the next state, the attention weights (B, S) or None)."""
        return self.model.step(prev_ids, state)

    def select(self, state, rows):
        """The state of rows ``rows`` (an index array on the device)."""
        raise NotImplementedError

    def compiled_greedy(self, state, tokens, maps) -> bool:
        return False

    def compiled_beam(self, state, tokens, scores, length_penalty) -> bool:
        return False

    def compiled_sample(self, state, temperature, rng, tokens) -> bool:
        return False

    def maps_dtype(self):
        """The dtype greedy decoding writes attention weights in (the compiled loop: the model's)."""
        return np.float64


class PlainSteps(DecoderSteps):
    """The Keras example's decoder: state (h, c), each (layers, B, units)."""

    def select(self, state, rows):
        return state[0][:, rows], state[1][:, rows]

    def compiled_greedy(self, state, tokens, maps) -> bool:
        model, p = self.model, self.params
        if self.backend.greedy_decode is None or model.decoder.num_layers != 1:
            return False
        h, c = state
        self.backend.greedy_decode(p["decoder.kernel"], p["decoder.bias"], p["decoder.recurrent_kernel"],
                                   p["dense.kernel"], p["dense.bias"], h[0], c[0], self.start_id, self.end_id, tokens)
        return True


class AttentionSteps(DecoderSteps):
    """An attention decoder: state ``attention.DecoderState``; the compiled loops are the backend's
    (``AttentionDecoder.compiled_*``)."""

    def __init__(self, model):
        super().__init__(model)
        self.decoder = model.attention_decoder
        self.dense = (self.params["dense.kernel"], self.params["dense.bias"])

    def select(self, state, rows):
        return state.select(rows)

    def maps_dtype(self):
        return self.model.dtype if self.decoder.compiled_greedy(self.backend) else np.float64

    def compiled_greedy(self, state, tokens, maps) -> bool:
        if not self.decoder.compiled_greedy(self.backend):
            return False
        self.decoder.greedy_decode(self.params, state, *self.dense, self.start_id, self.end_id, tokens, maps)
        return True

    def compiled_beam(self, state, tokens, scores, length_penalty) -> bool:
        if not self.decoder.compiled_beam(self.backend):
            return False
        self.decoder.beam_decode(self.params, state, *self.dense, self.start_id, self.end_id, tokens, scores,
                                 length_penalty)
        return True

    def compiled_sample(self, state, temperature, rng, tokens) -> bool:
        if not self.decoder.compiled_sample(self.backend):
            return False
        # The step loop draws one number per row and step until every row has ended: draw enough for the longest
        # run, then put the generator back and advance it by as many as the loop would have drawn.
        before = rng.bit_generator.state
        uniforms = rng.random((self.max_steps, tokens.shape[0]))
        steps = self.decoder.sample_decode(self.params, state, *self.dense, self.start_id, self.end_id, temperature,
                                           uniforms, tokens)
        rng.bit_generator.state = before
        rng.random((steps, tokens.shape[0]))
        return True


# -- the algorithms ----------------------------------------------------------------------------------------------


def greedy(steps: DecoderSteps, encoder_input_ids, source_lengths=None, attention_maps=None) -> list[list[int]]:
    """The example's greedy loop for a whole batch at once: feed START, take the argmax, feed it back; each
    sentence stops at its own END or once it is longer than ``max_decoder_len`` (END is not returned).
    ``attention_maps`` (a list, attention models only) receives one (generated steps, S) array per sentence."""
    backend, end_id = steps.backend, steps.end_id
    state = steps.start(encoder_input_ids, source_lengths)
    batch, positions = np.shape(encoder_input_ids)
    tokens = np.full((batch, steps.max_steps), end_id, dtype=np.int64)
    maps = None
    if attention_maps is not None and isinstance(steps, AttentionSteps):
        maps = np.zeros((batch, steps.max_steps, positions), dtype=steps.maps_dtype())
    if steps.compiled_greedy(state, tokens, maps):  # the whole loop in one call
        if maps is not None:  # each row's steps up to and with its END
            ends = [row.index(end_id) + 1 if end_id in row else len(row) for row in tokens.tolist()]
            attention_maps.extend(maps[k, : ends[k]].astype(np.float64) for k in range(batch))
        return cut_at_end(tokens.tolist(), end_id)
    active = np.arange(batch)  # rows still decoding; finished ones are dropped, so late steps are cheap
    prev = backend.xp.full(batch, steps.start_id, dtype=np.int64)
    steps_run = np.zeros(batch, dtype=np.int64)
    for step in range(steps.max_steps):
        logits, state, weights = steps.step(prev, state)
        prev = logits.argmax(axis=1)
        sampled = backend.to_numpy(prev)
        tokens[active, step] = sampled
        steps_run[active] = step + 1
        if maps is not None:
            maps[active, step] = backend.to_numpy(weights)
        going = sampled != end_id
        if not going.all():
            if not going.any():
                break
            keep = np.flatnonzero(going)
            active = active[keep]
            keep = backend.asarray(keep)
            prev, state = prev[keep], steps.select(state, keep)
    if maps is not None:
        attention_maps.extend(maps[k, : steps_run[k]] for k in range(batch))
    return cut_at_end(tokens.tolist(), end_id)


def beam_search(steps: DecoderSteps, encoder_input_ids, beam_width: int, source_lengths=None, n_best: bool = False,
                length_penalty: float = 0.0) -> list:
    """Keep the ``beam_width`` best partial translations of every sentence, all sentences and beams in one batch,
    ranked by summed log-probability, divided, with ``length_penalty`` alpha > 0, by GNMT's
    ``lp(n) = ((5 + n) / 6) ** alpha`` of the n characters scored (END included; Wu et al. 2016, eq. 14), which keeps
    the search from preferring short outputs for being short (alpha 0: lp = 1, the plain sum). A beam that emits END
    is finished and carried on unchanged, at its own length's rank. With ``beam_width=1`` this is exactly greedy
    decoding. With ``n_best`` each sentence gets the list of its beams' ids, best first (ties to the lower beam, so
    the first is the one returned without ``n_best``)."""
    check_length_penalty(length_penalty)
    backend, k, end_id, vocab = steps.backend, beam_width, steps.end_id, steps.vocab_size
    state = steps.start(encoder_input_ids, source_lengths)
    n = np.shape(encoder_input_ids)[0]
    tokens = np.full((n, k, steps.max_steps), end_id, dtype=np.int64)
    scores = np.empty((n, k))
    if steps.compiled_beam(state, tokens, scores, length_penalty):
        return _best_beams(tokens, scores, n_best, end_id)
    state = steps.select(state, backend.asarray(np.repeat(np.arange(n), k)))
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0  # one live beam per sentence at the start
    ranks = scores.copy()  # scores / lp(length): what the search keeps the best of (alpha 0: the scores)
    finished = np.zeros((n, k), dtype=bool)
    prev = backend.xp.full(n * k, steps.start_id, dtype=np.int64)
    rows = np.arange(n)[:, None]
    for step in range(steps.max_steps):
        logits, state, _ = steps.step(prev, state)
        logits = backend.to_numpy(logits).astype(np.float64)
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
        state = steps.select(state, backend.asarray((rows * k + parent).reshape(-1)))
        prev = backend.asarray(token.reshape(-1))
        if finished[np.isfinite(scores)].all():
            break
    return _best_beams(tokens, ranks, n_best, end_id)


def _best_beams(tokens, scores, n_best, end_id):
    """Each sentence's best beam (``tokens`` (n, k, steps), ``scores`` (n, k)), or all its live ones, best first."""
    if n_best:
        return [cut_at_end([sentence[b].tolist() for b in np.argsort(-row_scores, kind="stable")
                            if np.isfinite(row_scores[b])], end_id)
                for sentence, row_scores in zip(tokens, scores, strict=True)]
    return cut_at_end([sentence[int(np.argmax(row_scores))].tolist()
                       for sentence, row_scores in zip(tokens, scores, strict=True)], end_id)


def sample(steps: DecoderSteps, encoder_input_ids, temperature: float, rng: np.random.Generator,
           source_lengths=None) -> list[list[int]]:
    """Like greedy decoding, but each character is drawn from softmax(logits / temperature), with one number of
    ``rng`` per row and step."""
    backend, end_id = steps.backend, steps.end_id
    state = steps.start(encoder_input_ids, source_lengths)
    batch = np.shape(encoder_input_ids)[0]
    tokens = np.full((batch, steps.max_steps), end_id, dtype=np.int64)
    if steps.compiled_sample(state, temperature, rng, tokens):
        return cut_at_end(tokens.tolist(), end_id)
    done = np.zeros(batch, dtype=bool)
    prev = backend.xp.full(batch, steps.start_id, dtype=np.int64)
    for step in range(steps.max_steps):
        logits, state, _ = steps.step(prev, state)
        z = backend.to_numpy(logits).astype(np.float64) / temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        sampled = (p.cumsum(axis=1) < rng.random((batch, 1))).sum(axis=1).clip(max=p.shape[1] - 1)
        sampled[done] = end_id
        tokens[:, step] = sampled
        done |= sampled == end_id
        if done.all():
            break
        prev = backend.asarray(sampled)
    return cut_at_end(tokens.tolist(), end_id)


# -- text in, text out -------------------------------------------------------------------------------------------


def translate_texts(model, texts: list[str], batch_size: int = 512, beam_width: int = 1,
                    temperature: float | None = None, seed: int = 0, attention_maps: list | None = None,
                    n_best: bool = False, length_penalty: float = 0.0, split_sentences: bool = True) -> list:
    """``Seq2Seq.translate``: translations of ``texts``, many at a time: greedy (the default, exactly the example's
    algorithm), beam search (``beam_width > 1``, ranked with ``length_penalty``; with ``n_best``, each text's list
    of beam translations, best first, the first being the translation without ``n_best``) or sampling
    (``temperature``). The models learnt single sentences, so with ``split_sentences`` (the default) each text is
    cut into sentences (``sentences.split_texts``, none longer than ``max_encoder_len``), the sentences of all texts
    are decoded together, and each text's translations are joined back with its own whitespace; a text that is one
    sentence translates exactly as without splitting. ``attention_maps`` (a list; greedy decoding of an attention
    model) receives, per text, its attention weights (generated characters, the text's characters) as a host array:
    with splitting, each sentence's weights at its place (``SentencePlan.join_attention``)."""
    if n_best and temperature is not None:
        raise ValueError("n_best needs beam search, not sampling")
    check_length_penalty(length_penalty)
    if model.mask_padding:  # nothing to read: the encoder steps over a row's own characters only
        empty = [k for k, text in enumerate(texts) if not text]
        if empty:
            raise MinilstmError(f"text {empty[0]} is empty ({len(empty)} empty in all): a --mask-padding model "
                                "reads a sentence's own characters, so give it at least one")
    if not split_sentences:
        return _translate_sentences(model, texts, batch_size, beam_width, temperature, seed, attention_maps, n_best,
                                    length_penalty)
    plan = split_texts(texts, model.max_encoder_len, model.input_vocab.length)
    maps = None if attention_maps is None else []
    decoded = _translate_sentences(model, plan.sentences, batch_size, beam_width, temperature, seed, maps, n_best,
                                   length_penalty)
    if maps:  # an attention model: every sentence has its map where greedy decoding drew them, none otherwise
        drawn = all(weights is not None for weights in maps)
        attention_maps.extend(plan.join_attention(maps, decoded) if drawn else [None] * len(texts))
    return plan.join_n_best(decoded) if n_best else plan.join(decoded)


def _translate_sentences(model, texts: list[str], batch_size: int, beam_width: int, temperature: float | None,
                         seed: int, attention_maps: list | None, n_best: bool, length_penalty: float) -> list:
    """``translate_texts`` without splitting: each text decoded as one input. Inputs are padded with spaces to
    ``max_encoder_len`` as in training (not at all for a ``mask_padding`` model); a longer input is padded to its
    own length, and is batched only with inputs of that same padded length (a ``mask_padding`` model batches any
    lengths: ``encoding.run_encoder``, sorted by length, at most the backend's ``mixed_batch_rows`` at a time), so
    every sentence gets exactly the string it would get decoded alone. An attention model attends over each
    sentence's own characters only."""
    min_len = 0 if model.mask_padding else model.max_encoder_len
    mixed = model.takes_mixed_lengths()  # then any lengths share a batch, sorted to pad little
    steps_of = list(map(model.input_vocab.length, texts))  # encoder steps: characters, words or pieces
    by_length: dict[int, list[int]] = {}
    for k in sorted(range(len(texts)), key=lambda k: steps_of[k]) if mixed else range(len(texts)):
        by_length.setdefault(0 if mixed else max(steps_of[k], min_len), []).append(k)  # 0: one group
    chunks = []  # (padded length, sentence indices), decoded in parallel where the backend has workers
    if mixed and model.backend.mixed_batch_rows is not None:
        batch_size = min(batch_size, model.backend.mixed_batch_rows)
    for members in by_length.values():
        per_chunk = min(batch_size, -(-len(members) // model.backend.workers))
        for i in range(0, len(members), per_chunk):
            chunk = members[i : i + per_chunk]
            chunks.append((max(max(steps_of[k] for k in chunk), min_len), chunk))
    seeds = np.random.SeedSequence(seed).spawn(len(chunks))
    want_maps = attention_maps is not None and model.attention is not None
    steps = model.decoder_steps()

    def decode(item):
        (length, members), chunk_seed = item
        ids = encode_inputs([texts[k] for k in members], model.input_vocab, length)
        lengths = [steps_of[k] for k in members]
        if temperature is not None:
            return sample(steps, ids, temperature, np.random.default_rng(chunk_seed), lengths), None
        if n_best or beam_width > 1:
            return beam_search(steps, ids, beam_width, lengths, n_best, length_penalty), None
        maps = [] if want_maps else None
        return greedy(steps, ids, lengths, maps), maps

    results = [""] * len(texts)
    maps_by_text = [None] * len(texts)
    decoded_chunks = model.backend.parallel_map(decode, list(zip(chunks, seeds, strict=True)))
    for (_, members), (decoded, maps) in zip(chunks, decoded_chunks, strict=True):
        for j, (k, ids) in enumerate(zip(members, decoded, strict=True)):
            results[k] = [model.target_vocab.decode(x) for x in ids] if n_best else model.target_vocab.decode(ids)
            if maps is not None:
                maps_by_text[k] = maps[j][:, : steps_of[k]]
                if not model.input_vocab.is_chars or not model.target_vocab.is_chars:
                    maps_by_text[k] = characters_map(maps_by_text[k], model.input_vocab, texts[k],
                                                     model.target_vocab, ids)
    if want_maps:
        attention_maps.extend(maps_by_text)
    return results


def characters_map(weights, input_vocab, text: str, target_vocab, ids) -> np.ndarray:
    """An attention map over tokens (a row per generated token and one for END if it ended, a column per token
    of ``text``) as one over characters (a row per character of the translation and END, a column per character
    of ``text``), as a character model draws it: each character carries the weight of the token it is part of, so
    that a word or piece shows as a block. A character spelt by several tokens (SentencePiece's byte fallback)
    carries their sum as an input, and their mean as an output; a marker generated mid-sentence has no row."""
    weights = np.asarray(weights, dtype=np.float64)
    columns = _tokens_to_chars(input_vocab.locate(text), len(text))  # (input tokens, characters)
    by_char = weights @ columns
    translation, spans = target_vocab.decode_located(ids)
    rows = _tokens_to_chars(spans, len(translation)).T  # (characters, generated tokens)
    rows /= np.maximum(rows.sum(axis=1, keepdims=True), 1)
    out = rows @ by_char[: len(ids)]
    return np.concatenate([out, by_char[len(ids) :]])  # and the END row, where there is one


def _tokens_to_chars(spans: list, length: int) -> np.ndarray:
    """(tokens, characters) 0/1: 1 where the character lies in the token's span; an empty span holds the character
    at its start (the first bytes of a character spelt in bytes), a None span nothing."""
    out = np.zeros((len(spans), length))
    for t, span in enumerate(spans):
        if span is not None and length:
            start, end = span
            out[t, min(start, length - 1) : max(end, min(start, length - 1) + 1)] = 1
    return out


# -- the flags of translate, evaluate and serve ------------------------------------------------------------------


def length_penalty_flag(text: str) -> float:
    """GNMT's alpha, 0 to ``MAX_LENGTH_PENALTY`` (10: far above, the penalty overflows a double)."""
    return bounded_float(text, lambda v: 0.0 <= v <= MAX_LENGTH_PENALTY, "a number from 0 to 10")


def add_decoding_flags(parser, sampling: bool = True, beam_help: str = "") -> None:
    """--beam-width and --length-penalty, and with ``sampling`` --temperature and --seed."""
    parser.add_argument("--beam-width", type=positive_int, default=1,
                        help="beam search with this many beams (1: greedy, the Keras example's algorithm)" + beam_help)
    parser.add_argument("--length-penalty", type=length_penalty_flag, default=0.0, metavar="ALPHA",
                        help="rank beams by log-probability over GNMT's length penalty ((5 + length) / 6) ** ALPHA "
                             "(0: none); needs --beam-width 2 or more")
    if sampling:
        parser.add_argument("--temperature", type=positive_float, default=None,
                            help="sample each character from softmax(logits / T) instead of taking the argmax")
        parser.add_argument("--seed", type=int, default=0, help="seeds --temperature sampling")


def check_decoding_flags(args) -> None:
    """The combinations the parser cannot refuse, each one line: sampling and beams together, and a length penalty
    without beams to rank."""
    if getattr(args, "temperature", None) is not None and args.beam_width > 1:
        raise MinilstmError("--temperature and --beam-width exclude each other: sample, or search, not both")
    if args.length_penalty and args.beam_width < 2:
        raise MinilstmError("--length-penalty ranks the beams of beam search: give --beam-width 2 or more too")
