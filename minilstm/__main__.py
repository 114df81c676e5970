"""``python -m minilstm COMMAND ...``: the same as the ``minilstm`` command."""

import sys

from .cli import main

sys.exit(main())
