"""``python -m minilstm.serve ...``: the same as ``minilstm serve ...``."""

import sys

from ..cli import run_main
from . import main

sys.exit(run_main(main))
