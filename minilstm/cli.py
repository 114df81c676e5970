"""What every command-line entry point shares: user errors as one line and an exit code, never a traceback."""

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


def positive_float(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
