"""Running ``minilstm serve`` for the tests: a real server process on a free loopback port, and a tiny model."""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minilstm.checkpoint import save_checkpoint
from minilstm.data import END, Dataset, read_pairs
from minilstm.seq2seq import Seq2Seq

TINY = Path(__file__).parent / "data" / "tiny.txt"
# The numba backend compiles its kernels on a cold cache (~30 s here, more under load) before the server is ready.
READY_TIMEOUT = 240


def save_tiny_model(path: Path, attention: str = "none", dtype: str = "float32") -> Path:
    """A model over tests/data/tiny.txt's vocabularies with large random weights (no training: seconds), whose
    greedy decodes differ from input to input (~130 different answers for 200 random inputs), so that a server
    that mixed up answers would be caught. ``attention``: the model's attention score, or none. (Such a chaotic
    model with attention, in float32, decodes a sentence in a batch not always as alone: its matrix products round
    differently by batch size, and that flips near-tied characters; float64 has no such flips.)"""
    dataset = Dataset.from_pairs(read_pairs(TINY))
    model = Seq2Seq("numpy", dataset.input_vocab, dataset.target_vocab, dataset.max_encoder_len,
                    dataset.max_decoder_len, latent_dim=16, dtype=dtype, attention=attention).initialize(5)
    rng = np.random.default_rng(5)
    weights = {k: 2 * (v + rng.standard_normal(v.shape)) for k, v in model.get_weights().items()}
    weights["dense.bias"][model.target_vocab.index[END]] += 4.0
    model.set_weights(weights)
    return save_checkpoint(path, model)


def random_texts(vocab_chars, count: int, seed: int = 0) -> list[str]:
    """``count`` different texts of 1-19 characters of the model's vocabulary, none blank."""
    rng = np.random.default_rng(seed)
    chars = [c for c in vocab_chars if c.strip()]
    texts = []
    while len(texts) < count:
        text = "".join(rng.choice(chars, size=int(rng.integers(1, 20))))
        if text not in texts:
            texts.append(text)
    return texts


class Server:
    """``python -m minilstm.serve CHECKPOINT --port 0 FLAGS...`` in a subprocess (no CHECKPOINT for None: the shipped
    model); ``url`` once it says ready."""

    def __init__(self, checkpoint, *flags, env=None):
        cmd = [sys.executable, "-m", "minilstm.serve", *([] if checkpoint is None else [str(checkpoint)]), "--port",
               "0", *map(str, flags)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines = []
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            line = self._readline(deadline)
            if line is None:
                if self.proc.poll() is None:
                    self.proc.kill()
                errors = self.proc.stderr.read()
                self.stop()
                raise RuntimeError(f"the server did not get ready: {self.lines} {errors}")
            if line.startswith("ready:"):
                self.url = "http://" + line.split("http://")[1].split()[0]
                return

    def _readline(self, deadline) -> str | None:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return None
                self.lines.append(line.rstrip("\n"))
                return self.lines[-1]
            if self.proc.poll() is not None:
                return None
        return None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                stream.close()


def histogram(metrics_text: str, name: str) -> dict[str, float]:
    """The cumulative bucket counts (by ``le``) and ``count`` of a Prometheus histogram in /metrics text."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count "):
            out["count"] = float(line.rsplit(" ", 1)[1])
    return out


def gauge(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)
