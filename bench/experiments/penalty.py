"""Prototype decoding remedies for the shipped model's repetitions on long inputs, on the tuning tenth of the
held-out sentences (``python -m bench.experiments.make_tune``), by the step loop (slow, plain numpy over
``Seq2Seq.step``); results in ``bench/results/attention/long-sentences/decoding-penalties/results.txt``. Not built
into minilstm: none helped beyond the length penalty, which is (``--length-penalty``).

    python -m bench.experiments.penalty CHECKPOINT tune.json WIDTH ALPHA BETA KIND OUT.json

KIND: ``wu`` (GNMT's coverage penalty, -sum_s log min(coverage_s, 1)), ``summary`` (attention beyond 1 per source
character: sum_s max(coverage_s, 1) - 1), either with ``-final`` (the penalty only on a beam's END candidate; else
on every candidate, every step), or ``blockN`` (no character N-gram twice in an output). Beams rank by
log p / lp(length) - BETA * penalty, lp = ((5 + length) / 6) ** ALPHA.
"""

import json
import sys
import time

import numpy as np

from minilstm import seq2seq
from minilstm.checkpoint import load_checkpoint
from minilstm.data import END, START
from minilstm.evaluate import chrf, length_bucket


def penalised_beam(model, enc_ids, k, lengths, alpha, beta, kind, final, block):
    start_id, end_id = model.target_vocab.index[START], model.target_vocab.index[END]
    state = model.start_decoding(enc_ids, lengths)
    n, vocab, src = np.shape(enc_ids)[0], len(model.target_vocab), np.shape(enc_ids)[1]
    real = np.arange(src)[None, :] < np.asarray(lengths)[:, None]
    state = model.decoder_steps().select(state, model.backend.asarray(np.repeat(np.arange(n), k)))
    logp = np.full((n, k), -np.inf)
    logp[:, 0] = 0.0
    rank, cov = logp.copy(), np.zeros((n, k, src))
    tokens = np.full((n, k, model.max_decoder_len + 1), end_id, dtype=np.int64)
    finished = np.zeros((n, k), dtype=bool)
    prev, rows = model.backend.xp.full(n * k, start_id, dtype=np.int64), np.arange(n)[:, None]
    for step in range(model.max_decoder_len + 1):
        logits, state, weights = model.step(prev, state)
        logits = model.backend.to_numpy(logits).astype(np.float64)
        w = model.backend.to_numpy(weights).astype(np.float64).reshape(n, k, src)
        new_cov = np.where(finished[:, :, None], cov, cov + w)
        if kind == "wu":
            pen = -np.where(real[:, None, :], np.log(np.clip(new_cov, 1e-30, 1.0)), 0).sum(-1)
        else:
            pen = np.where(real[:, None, :], np.maximum(new_cov, 1.0) - 1.0, 0).sum(-1)
        ls = logits - logits.max(axis=1, keepdims=True)
        ls = (ls - np.log(np.exp(ls).sum(axis=1, keepdims=True))).reshape(n, k, vocab)
        if block and step >= block - 1:
            for b in range(n):
                for j in range(k):
                    if finished[b, j] or not np.isfinite(logp[b, j]):
                        continue
                    hist = tokens[b, j, :step].tolist()
                    suffix = hist[len(hist) - (block - 1):]
                    for p in range(len(hist) - (block - 1)):
                        if hist[p : p + block - 1] == suffix:
                            ls[b, j, hist[p + block - 1]] = -np.inf
        cand_logp = logp[:, :, None] + ls
        cand_rank = cand_logp / ((5.0 + step + 1) / 6.0) ** alpha
        if final:
            cand_rank[:, :, end_id] -= beta * pen
        else:
            cand_rank -= beta * pen[:, :, None]
        cand_rank[finished], cand_logp[finished] = -np.inf, -np.inf
        cand_rank[finished, end_id], cand_logp[finished, end_id] = rank[finished], logp[finished]
        cand_rank = cand_rank.reshape(n, k * vocab)
        best = np.argsort(-cand_rank, axis=1, kind="stable")[:, :k]
        parent, token = best // vocab, best % vocab
        rank = np.take_along_axis(cand_rank, best, axis=1)
        logp = np.take_along_axis(cand_logp.reshape(n, k * vocab), best, axis=1)
        cov, tokens, was_finished = new_cov[rows, parent], tokens[rows, parent], finished[rows, parent]
        tokens[:, :, step] = np.where(was_finished, tokens[:, :, step], token)
        finished = was_finished | (token == end_id)
        state = model.decoder_steps().select(state, model.backend.asarray((rows * k + parent).reshape(-1)))
        prev = model.backend.asarray(token.reshape(-1))
        if finished[np.isfinite(rank)].all():
            break
    return seq2seq.Seq2Seq._best_beams(tokens, rank, False, end_id)


def main():
    checkpoint, pairs_file, width, alpha, beta, kind, out = sys.argv[1:8]
    model = load_checkpoint(checkpoint, backend="numba").model
    data = json.load(open(pairs_file))  # [[english, [references]], ...]
    width, alpha, beta = int(width), float(alpha), float(beta)
    final, kind = kind.endswith("-final"), kind.removesuffix("-final")
    block = int(kind[5:]) if kind.startswith("block") else 0

    def search(self, ids, k, lengths=None, *_):
        return penalised_beam(self, ids, k, lengths, alpha, beta, kind, final, block)

    seq2seq.Seq2Seq.beam_decode_ids = search
    if width == 1:
        seq2seq.Seq2Seq.greedy_decode_ids = lambda self, ids, lengths=None, maps=None: search(self, ids, 1, lengths)
    started = time.perf_counter()
    hyps = model.translate([e for e, _ in data], beam_width=width, split_sentences=False)
    result = {"width": width, "alpha": alpha, "beta": beta, "kind": kind, "final": final,
              "seconds": time.perf_counter() - started, "chrf": chrf(hyps, [r for _, r in data])}
    buckets = {}
    for (english, refs), hyp in zip(data, hyps, strict=True):
        buckets.setdefault(length_bucket(english), []).append((hyp, refs))
    result.update({name: chrf([h for h, _ in v], [r for _, r in v]) for name, v in sorted(buckets.items())})
    print(json.dumps(result))
    json.dump({"result": result, "translations": hyps}, open(out, "w"), ensure_ascii=False)


if __name__ == "__main__":
    main()
