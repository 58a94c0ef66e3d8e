"""``python bench/link.py [OPTIONS]`` runs ``tinyfed bench link``.

See ``tinyfed bench link --help`` for the options and bench/README.md for the figures.
"""

from __future__ import annotations

import sys

from tinyfed.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "link", *sys.argv[1:]]))
