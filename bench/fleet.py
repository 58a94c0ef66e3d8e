"""``python bench/fleet.py [OPTIONS]`` runs ``tinyfed bench fleet``.

See ``tinyfed bench fleet --help`` for the options and docs/scale.md for the figures.
"""

from __future__ import annotations

import sys

from tinyfed.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "fleet", *sys.argv[1:]]))
