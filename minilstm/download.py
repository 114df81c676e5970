"""``python -m minilstm.download [--dir DIR]``: fetch the full English-French file (167k pairs) for ``--data``.

Needs internet. The built-in 10,000-pair subset needs no download; this is for ``--num-samples all``.
"""

import argparse
import sys
from pathlib import Path

from .cli import run_main
from .pairs import DEFAULT_URL, download, read_pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilstm.download", description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("data"), help="where fra.txt is written")
    p.add_argument("--url", default=DEFAULT_URL)
    args = p.parse_args(argv)
    print(f"Downloading {args.url} ...", file=sys.stderr, flush=True)
    path = download(args.dir, url=args.url)
    print(f"Wrote {path} ({len(read_pairs(path)):,} pairs); train on it with: python -m minilstm.train --data "
          f"{path} --num-samples all")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
