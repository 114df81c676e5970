"""The Keras example's training run in PyTorch (the peer of ``python -m minilstm.train``), for whole-run timings.

    python -m bench.torch_train --epochs 100 --out runs/torch-seed0

The same data, split, batch size and epochs as ``minilstm.train``'s defaults, reshuffled every epoch (by its own
generator), initial weights drawn by minilstm's Keras initialisers (copied into nn.LSTM/nn.Linear; not the same
draw as the train command's), tf.keras's RMSprop (lr 0.001,
rho 0.9, epsilon 1e-7 outside the square root = torch's RMSprop), one-hot inputs as in the example, and the
example's metrics (loss and accuracy over every padded position). Writes history.jsonl, one line per epoch with
its wall time, like minilstm's.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.torch_models import TorchSeq2Seq
from minilstm.data import Dataset, resolve_pairs, split_validation
from minilstm.seq2seq import Seq2Seq


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    dataset = Dataset.from_pairs(resolve_pairs(None, args.num_samples))
    train_idx, val_idx = split_validation(len(dataset))
    model = TorchSeq2Seq(len(dataset.input_vocab), len(dataset.target_vocab), 256)
    init = Seq2Seq("numpy", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                   dataset.max_decoder_len, latent_dim=256, dtype="float32").initialize(args.seed)
    model.set_weights(init.get_weights(), freeze_bias_hh=False)  # bias_hh from 0 and trained, as the recorded runs
    optimizer = model.keras_rmsprop()
    arrays = (dataset.encoder_input_ids, dataset.decoder_input_ids, dataset.decoder_target_ids)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    history = args.out / "history.jsonl"
    history.write_text("")
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(train_idx)
        loss_sum = positions = 0.0
        for k in range(0, len(order), args.batch_size):
            batch = model.upload(*(a[order[k : k + args.batch_size]] for a in arrays))
            loss = model.train_step(optimizer, batch)
            loss_sum += float(loss) * batch[2].numel()
            positions += batch[2].numel()
        val = np.zeros(3)
        for k in range(0, len(val_idx), 256):
            enc_x, dec_x, targets, _ = model.upload(*(a[val_idx[k : k + 256]] for a in arrays))
            with torch.no_grad():
                logits = model(enc_x, dec_x).reshape(-1, model.n_out)
                val += (float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")),
                        float((logits.argmax(1) == targets).sum()), targets.numel())
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "loss": loss_sum / positions, "val_loss": val[0] / val[2],
                  "val_accuracy": val[1] / val[2], "seconds": seconds}
        with history.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"epoch {epoch}: loss {record['loss']:.4f} val_loss {record['val_loss']:.4f} "
              f"val_accuracy {record['val_accuracy']:.4f} {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
