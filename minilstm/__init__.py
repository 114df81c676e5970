"""minilstm: a from-scratch LSTM engine and the Keras character-level seq2seq example, hand-written.

The layer API: ``Embedding``, ``LSTM``, ``Dense`` and ``Parameters`` (minilstm.nn), ``Attention`` and
``AttentionDecoder`` (minilstm.attention), the optimizers (minilstm.optim) and their learning-rate ``Schedule``
(minilstm.schedules), the array backends (``get_backend``) and the loss (``softmax_cross_entropy``); the seq2seq
model is ``minilstm.seq2seq``.
"""

from .attention import Attention, AttentionDecoder
from .backends import get_backend
from .errors import MinilstmError
from .nn import LSTM, Dense, Embedding, Parameters
from .optim import SGD, Adam, RMSprop, make_optimizer
from .schedules import Schedule


def softmax_cross_entropy(backend, logits, target_ids, grad_scale, label_smoothing=0.0):
    """Loss sum, argmax hits and d(grad_scale * loss)/d logits for logits (n, V) and targets (n,) (negative: not
    counted), on ``backend``'s fused kernel; ``label_smoothing`` eps: against the target (1 - eps) onehot + eps / V,
    as torch's ``CrossEntropyLoss(label_smoothing=eps)``."""
    return get_backend(backend).softmax_cross_entropy(logits, target_ids, grad_scale, label_smoothing)


__version__ = "0.1.0"
__all__ = ["LSTM", "SGD", "Adam", "Attention", "AttentionDecoder", "Dense", "Embedding", "MinilstmError", "Parameters",
           "RMSprop", "Schedule", "get_backend", "make_optimizer", "softmax_cross_entropy", "__version__"]
