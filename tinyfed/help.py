"""The help layout every ``tinyfed`` subcommand shares (library layer: imports nothing of tinyfed).

It lives apart from :mod:`tinyfed.cli` so that the subcommand modules, which
:mod:`tinyfed.cli` imports, can use it without importing the command back.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the layout of descriptions and epilogs, and shows every default."""
