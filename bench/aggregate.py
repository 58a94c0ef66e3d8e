"""``python bench/aggregate.py [OPTIONS]`` runs ``tinyfed bench aggregate``.

See ``tinyfed bench aggregate --help`` for the options and bench/README.md for the figures.
"""

from __future__ import annotations

import sys

from tinyfed.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "aggregate", *sys.argv[1:]]))
