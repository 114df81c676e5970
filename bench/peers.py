"""The peer: the same seq2seq model in PyTorch (nn.LSTM x2 + nn.Linear, torch.optim.RMSprop), one-hot inputs as in
the Keras example, on the CPU or on CUDA (cuDNN)."""

import numpy as np


class TorchSeq2Seq:
    def __init__(self, n_in, n_out, latent_dim, device="cpu", dtype="float32", seed=0):
        import torch

        self.torch = torch
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.n_in, self.n_out = n_in, n_out
        kw = dict(device=self.device, dtype=self.dtype)
        self.encoder = torch.nn.LSTM(n_in, latent_dim, **kw)
        self.decoder = torch.nn.LSTM(n_out, latent_dim, **kw)
        self.dense = torch.nn.Linear(latent_dim, n_out, **kw)
        self.params = [*self.encoder.parameters(), *self.decoder.parameters(), *self.dense.parameters()]
        self.optimizer = torch.optim.RMSprop(self.params, lr=0.001, alpha=0.9, eps=1e-7)

    def load_keras_weights(self, weights: dict):
        """Weights in minilstm's (Keras) layout -> PyTorch's (transposed, gate order i, f, g, o = i, f, c, o; the
        second LSTM bias zero)."""
        t = self.torch
        with t.no_grad():
            for name, layer in (("encoder", self.encoder), ("decoder", self.decoder)):
                layer.weight_ih_l0.copy_(t.from_numpy(weights[f"{name}.kernel"].T.copy()))
                layer.weight_hh_l0.copy_(t.from_numpy(weights[f"{name}.recurrent_kernel"].T.copy()))
                layer.bias_ih_l0.copy_(t.from_numpy(weights[f"{name}.bias"]))
                layer.bias_hh_l0.zero_()
            self.dense.weight.copy_(t.from_numpy(weights["dense.kernel"].T.copy()))
            self.dense.bias.copy_(t.from_numpy(weights["dense.bias"]))

    def upload(self, encoder_ids, decoder_input_ids, decoder_target_ids):
        """Batch-major id arrays -> time-major tensors on the device (one-hot inputs, as the example feeds)."""
        t = self.torch
        one_hot = t.nn.functional.one_hot
        enc = t.from_numpy(np.ascontiguousarray(encoder_ids.T)).long().to(self.device)
        dec = t.from_numpy(np.ascontiguousarray(decoder_input_ids.T)).long().to(self.device)
        tgt = t.from_numpy(np.ascontiguousarray(decoder_target_ids.T)).long().to(self.device)
        return one_hot(enc, self.n_in).to(self.dtype), one_hot(dec, self.n_out).to(self.dtype), tgt.reshape(-1)

    def logits(self, enc_x, dec_x):
        _, state = self.encoder(enc_x)
        outputs, _ = self.decoder(dec_x, state)
        return self.dense(outputs).reshape(-1, self.n_out)

    def train_step(self, enc_x, dec_x, targets):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.logits(enc_x, dec_x), targets)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def evaluate(self, enc_x, dec_x, targets):
        with self.torch.no_grad():
            logits = self.logits(enc_x, dec_x)
            return self.torch.nn.functional.cross_entropy(logits, targets, reduction="sum")

    def greedy_decode(self, enc_x, start_id, end_id, max_len):
        """Batched greedy decoding (B sentences at once), stopping when every sentence has produced END."""
        t = self.torch
        with t.no_grad():
            _, state = self.encoder(enc_x)
            batch = enc_x.shape[1]
            prev = t.full((batch,), start_id, device=self.device, dtype=t.long)
            finished = t.zeros(batch, dtype=t.bool, device=self.device)
            tokens = []
            for _ in range(max_len + 1):
                x = t.nn.functional.one_hot(prev, self.n_out).to(self.dtype).unsqueeze(0)
                out, state = self.decoder(x, state)
                prev = self.dense(out[0]).argmax(dim=1)
                tokens.append(prev)
                finished |= prev == end_id
                if bool(finished.all()):
                    break
            return t.stack(tokens, 1).cpu().numpy()

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
