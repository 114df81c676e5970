"""The one exception type that means "the user gave us something wrong"."""


class MinilstmError(Exception):
    """A user error: bad input, a missing file, an unknown backend.

    The command-line tools print its message as one line on stderr and exit 2, without a traceback.
    Anything else that escapes is a bug in minilstm and keeps its traceback.
    """
