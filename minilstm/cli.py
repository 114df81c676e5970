"""What every command-line entry point shares: user errors as one line and an exit code, never a traceback; and the
``minilstm`` command, which runs ``minilstm train ...`` as ``python -m minilstm.train ...`` and so on."""

import importlib
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_main(main, argv=None) -> int:
    """Call ``main(argv)``; a ``MinilstmError`` becomes ``error: ...`` on stderr and exit 2, Ctrl-C exit 130."""
    from .errors import MinilstmError

    try:
        return main(argv) or 0
    except MinilstmError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `... | head`: the reader went away, nothing more to say
        return 0


def positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def bounded_float(text: str, accept, expected: str) -> float:
    """``float(text)`` where ``accept(value)`` holds, else argparse's one-line error "expected EXPECTED"."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    return bounded_float(text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    return bounded_float(text, lambda v: v >= 0, "a number >= 0")


def unit_fraction(text: str) -> float:
    """A number in [0, 1): a decay rate such as Adam's betas, or a dropout rate."""
    return bounded_float(text, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


COMMANDS = {
    "train": "train a model (the Keras example by default)",
    "translate": "translate sentences with a checkpoint",
    "evaluate": "loss, accuracy, exact match and more on validation pairs",
    "convert": "to and from Keras models (.keras, .h5); to PyTorch state dicts (.safetensors) and ONNX (--to onnx)",
    "download": "fetch the full English-French file",
    "average": "average the weights of checkpoints of one model",
    "serve": "a LibreTranslate-compatible translation server with dynamic batching, and its page",
}


def main(argv=None) -> int:
    """The ``minilstm`` console script: ``minilstm COMMAND [ARGS]`` dispatches to ``minilstm.COMMAND``'s main."""
    from . import __version__

    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "usage: minilstm {" + ",".join(COMMANDS) + "} ...\n\n" + "\n".join(
        f"  {name:<10} {text}" for name, text in COMMANDS.items()) + "\n\n'minilstm COMMAND --help' for its options"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if argv[:1] == ["--version"]:
        print(f"minilstm {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"error: {given}; use one of: {', '.join(COMMANDS)} (minilstm --help)", file=sys.stderr)
        return EXIT_USER_ERROR
    module = importlib.import_module(f"minilstm.{argv[0]}")
    return run_main(module.main, argv[1:])
