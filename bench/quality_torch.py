"""The PyTorch reference of ``bench.quality``: a character-level seq2seq written the way PyTorch users write one,
trained for a wall-time budget with snapshots along the way, and decoded for scoring.

    python -m bench.quality_torch --data ../shared/data/fra-eng/fra.txt --minutes 30 --snapshot-minutes 5 --out DIR

- model: ``nn.Embedding`` on both sides, a one-way ``nn.LSTM`` encoder over packed sequences (each sentence's own
  final state, no padding read), an ``nn.LSTM`` decoder started from that state, Luong's ``general`` attention after
  the decoder over the sentence's real characters (no input feeding: ``bench.torch_models.GlobalAttention``,
  OpenNMT-py's), ``nn.Linear`` to the characters; PyTorch's default initialisation throughout;
- data: the pairs and held-out split ``minilstm.train --validation-split 0.2 --validation-split-mode random`` trains
  on (``validation_rows``), minilstm's vocabularies (the same characters), batches of 64 pairs of similar length
  (shuffled, sorted by English then French length, cut into batches, the batches in random order, every epoch);
- training: cross-entropy over the real characters (padding ignored), ``torch.optim.Adam`` or ``RMSprop`` with
  PyTorch's defaults at ``--learning-rate`` 1e-3, the held-out loss after every epoch (as ``minilstm.train``
  validates, so both pay for it), one thread;
- the clock and the snapshots are ``minilstm.train``'s (``--max-minutes``, ``--snapshot-minutes``): from the first
  step, everything after it counted; a snapshot (``model.pt``, the state dict) at the first step after each multiple
  of ``--snapshot-minutes``, and one where training stops; ``snapshots.json`` in the same records.

Decoding (``translate``) runs ``minilstm.decoding``'s greedy and beam search over this model's steps
(``TorchSteps``), so both engines are scored by the same search.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.torch_models import GlobalAttention
from minilstm.backends import get_backend
from minilstm.data import validation_rows
from minilstm.decoding import DecoderSteps, beam_search, greedy
from minilstm.pairs import resolve_pairs
from minilstm.run_outputs import SNAPSHOTS_FILE, snapshot_name
from minilstm.training import TrainingClock
from minilstm.vocab import END, PAD, START, Vocab, encode_inputs

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


class Reference(torch.nn.Module):
    """Embeddings, a one-way LSTM encoder, an LSTM decoder, general attention after it, a linear output layer."""

    def __init__(self, n_in: int, n_out: int, units: int, embedding: int):
        super().__init__()
        self.source_embedding = torch.nn.Embedding(n_in, embedding)
        self.target_embedding = torch.nn.Embedding(n_out, embedding)
        self.encoder = torch.nn.LSTM(embedding, units, batch_first=True)
        self.decoder = torch.nn.LSTM(embedding, units, batch_first=True)
        self.attention = GlobalAttention(units, units, "general")
        self.output = torch.nn.Linear(units, n_out)

    def encode(self, source, lengths):
        """Memory (B, S, H), the real source positions (B, S) and the final state of each sentence's own characters."""
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.source_embedding(source), lengths, batch_first=True,
                                                         enforce_sorted=False)
        outputs, state = self.encoder(packed)
        memory, _ = torch.nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])
        valid = torch.arange(source.shape[1])[None, :] < lengths[:, None]
        return memory, valid, state

    def decode(self, previous, state, memory, valid):
        """Logits (B, T, V) of the next characters after ``previous`` (B, T), and the decoder's state after them."""
        outputs, state = self.decoder(self.target_embedding(previous), state)
        return self.output(self.attention(outputs, memory, valid)), state

    def forward(self, source, lengths, previous):
        memory, valid, state = self.encode(source, lengths)
        return self.decode(previous, state, memory, valid)[0]


class Vocabularies:
    """minilstm's vocabularies of the pairs (what ``Dataset.from_pairs`` builds), and the maximum output length."""

    def __init__(self, source: Vocab, target: Vocab, max_decoder_len: int):
        self.source, self.target, self.max_decoder_len = source, target, max_decoder_len

    @classmethod
    def of_pairs(cls, pairs):
        targets = [START + french + END for _, french in pairs]
        return cls(Vocab.from_texts(english for english, _ in pairs), Vocab.from_texts(targets), max(map(len, targets)))

    def to_json(self) -> dict:
        return {"source": self.source.to_json(), "target": self.target.to_json(),
                "max_decoder_len": self.max_decoder_len}

    @classmethod
    def from_json(cls, record: dict):
        return cls(Vocab.from_json(record["source"]), Vocab.from_json(record["target"]), record["max_decoder_len"])


def padded(rows: list[np.ndarray], fill: int) -> torch.Tensor:
    out = np.full((len(rows), max(map(len, rows))), fill, dtype=np.int64)
    for k, row in enumerate(rows):
        out[k, : len(row)] = row
    return torch.from_numpy(out)


class Pairs:
    """The pairs as id arrays: English, and the French between START and END."""

    def __init__(self, pairs, vocabs: Vocabularies):
        self.source = [np.array(vocabs.source.encode(english)) for english, _ in pairs]
        self.target = [np.array(vocabs.target.encode(START + french + END)) for _, french in pairs]
        self.source_pad, self.target_pad = vocabs.source.index[PAD], vocabs.target.index[PAD]

    def batch(self, rows):
        """(source (B, S), source lengths (B,), decoder input (B, T), targets (B, T), padding -100: ignored)."""
        source = padded([self.source[k] for k in rows], self.source_pad)
        lengths = torch.tensor([len(self.source[k]) for k in rows])
        previous = padded([self.target[k][:-1] for k in rows], self.target_pad)
        targets = padded([self.target[k][1:] for k in rows], -100)
        return source, lengths, previous, targets

    def length_sorted(self, rows: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Batches of pairs of similar length: ``rows`` (shuffled by ``rng`` first, so that equal lengths mix
        differently every epoch) sorted by English then French length, cut into batches, in random order."""
        rows = rows if rng is None else rng.permutation(rows)
        source_len = np.array([len(self.source[k]) for k in rows])
        target_len = np.array([len(self.target[k]) for k in rows])
        rows = rows[np.lexsort((target_len, source_len))]
        batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        return batches if rng is None else [batches[k] for k in rng.permutation(len(batches))]


def loss_of(model, batch, reduction="mean"):
    source, lengths, previous, targets = batch
    logits = model(source, lengths, previous)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction=reduction)


def held_out_loss(model, data: Pairs, batches) -> float:
    with torch.no_grad():
        total = sum(float(loss_of(model, data.batch(rows), "sum")) for rows in batches)
    return total / sum(sum(len(data.target[k]) - 1 for k in rows) for rows in batches)


class Run:
    """What a run writes into its ``--out``: config.json, the snapshots and their list."""

    def __init__(self, out: Path, config: dict):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        self.records = []

    def snapshot(self, model, record: dict):
        minutes = record["minutes"] if record["mark"] is None else record["mark"]
        record = {**record, "path": f"snapshots/{snapshot_name(minutes)}"}
        path = self.out / record["path"]
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{WEIGHTS_FILE}.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path / WEIGHTS_FILE)
        self.records.append(record)
        tmp = self.out / f".{SNAPSHOTS_FILE}.tmp"
        tmp.write_text(json.dumps(self.records, indent=1) + "\n")
        os.replace(tmp, self.out / SNAPSHOTS_FILE)


def train(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pairs = resolve_pairs(args.data, args.num_samples)
    train_idx, val_idx = validation_rows(pairs, args.validation_split, "random", args.seed)
    vocabs = Vocabularies.of_pairs(pairs)
    data = Pairs(pairs, vocabs)
    model = Reference(len(vocabs.source), len(vocabs.target), args.units, args.embedding)
    optimizer = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[args.optimizer](
        model.parameters(), lr=args.learning_rate)
    rng = np.random.default_rng(args.seed)
    val_batches = data.length_sorted(val_idx, 256, None)
    config = {"units": args.units, "embedding": args.embedding, "vocabularies": vocabs.to_json(),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    run = Run(args.out, config)
    print(f"Training on {len(train_idx):,} pairs, validating on {len(val_idx):,}; PyTorch {torch.__version__}, "
          f"{args.threads} thread(s), {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    clock = TrainingClock(args.minutes, args.snapshot_minutes)
    steps = epochs = 0
    last_snapshot = None

    def snapshot(mark, step_in_epoch):
        nonlocal last_snapshot
        if last_snapshot != steps:
            last_snapshot = steps
            run.snapshot(model, {"minutes": clock.run_seconds() / 60, "mark": mark, "epoch": epochs,
                                 "step_in_epoch": step_in_epoch, "step": steps})

    clock.start()
    while not clock.out_of_time():
        model.train()
        started = time.perf_counter()
        for step_in_epoch, rows in enumerate(data.length_sorted(train_idx, args.batch_size, rng), start=1):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(model, data.batch(rows))
            loss.backward()
            optimizer.step()
            steps += 1
            if not math.isfinite(float(loss)):
                raise SystemExit(f"error: the loss is {float(loss)} at step {steps}")
            if clock.out_of_time():
                break
            mark = clock.snapshot_due()
            if mark is not None:
                snapshot(mark, step_in_epoch)
        else:
            epochs += 1
            step_in_epoch = 0
            model.eval()
            print(f"Epoch {epochs} - {time.perf_counter() - started:.1f}s - {steps} steps - held-out loss "
                  f"{held_out_loss(model, data, val_batches):.4f}", flush=True)
    snapshot(None, step_in_epoch)
    minutes = clock.seconds() / 60
    print(f"Time budget: stopped after {minutes:.2f} minutes of training, {steps} steps, {epochs} whole epochs",
          flush=True)
    return {"steps": steps, "minutes": minutes, "epochs": epochs}


# -- decoding --------------------------------------------------------------------------------------------------------


class TorchSteps(DecoderSteps):
    """``minilstm.decoding``'s decoder interface over the reference model, in NumPy ids and logits: its greedy
    decoding and beam search run over it exactly as over our models. State: (h, c, memory, valid)."""

    def __init__(self, model: Reference, vocabs: Vocabularies):
        self.model, self.backend = model, get_backend("numpy")
        self.start_id, self.end_id = vocabs.target.index[START], vocabs.target.index[END]
        self.max_steps = vocabs.max_decoder_len + 1  # minilstm's limit
        self.vocab_size = len(vocabs.target)

    def start(self, encoder_input_ids, source_lengths=None):
        with torch.no_grad():
            memory, valid, (h, c) = self.model.encode(torch.from_numpy(np.asarray(encoder_input_ids, np.int64)),
                                                      torch.as_tensor(source_lengths))
        return h, c, memory, valid

    def step(self, prev_ids, state):
        h, c, memory, valid = state
        with torch.no_grad():
            logits, (h, c) = self.model.decode(torch.from_numpy(np.asarray(prev_ids, np.int64))[:, None], (h, c),
                                               memory, valid)
        return logits[:, 0].numpy(), (h, c, memory, valid), None

    def select(self, state, rows):
        rows = torch.from_numpy(np.asarray(rows, np.int64))
        h, c, memory, valid = state
        return h[:, rows], c[:, rows], memory[rows], valid[rows]


def load_snapshot(run_dir: Path, record: dict) -> tuple[Reference, Vocabularies]:
    """The model of one ``snapshots.json`` record of a run, and its vocabularies."""
    config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    vocabs = Vocabularies.from_json(config["vocabularies"])
    model = Reference(len(vocabs.source), len(vocabs.target), config["units"], config["embedding"])
    model.load_state_dict(torch.load(run_dir / record["path"] / WEIGHTS_FILE, weights_only=True))
    return model.eval(), vocabs


def translate(model: Reference, vocabs: Vocabularies, texts: list[str], beam_width: int = 1,
              length_penalty: float = 0.0, batch_size: int = 256) -> list[str]:
    """Greedy (``beam_width`` 1) or beam-search translations of ``texts``, batched by length."""
    steps = TorchSteps(model, vocabs)
    order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
    results = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        ids = encode_inputs([texts[k] for k in members], vocabs.source, 0)
        lengths = [len(texts[k]) for k in members]
        rows = greedy(steps, ids, lengths) if beam_width == 1 else \
            beam_search(steps, ids, beam_width, lengths, length_penalty=length_penalty)
        for k, row in zip(members, rows, strict=True):
            results[k] = vocabs.target.decode(row)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="the pairs (default: minilstm's built-in subset)")
    p.add_argument("--num-samples", default="all", help="the first N pairs, or all")
    p.add_argument("--validation-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--embedding", type=int, default=256)
    p.add_argument("--optimizer", choices=("adam", "rmsprop"), default="adam")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--minutes", type=float, required=True, help="the training wall-time budget")
    p.add_argument("--snapshot-minutes", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.num_samples = None if args.num_samples == "all" else int(args.num_samples)
    summary = train(args)
    (args.out / "run.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
