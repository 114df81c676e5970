"""minilstm: a from-scratch LSTM engine and the Keras character-level seq2seq example, hand-written."""

from .errors import MinilstmError

__version__ = "0.1.0"
__all__ = ["MinilstmError", "__version__"]
