"""Configuration files for the services: ``tinyfed aggregator|gateway --config FILE``.

A TOML file with one table per service, keys named as the long flags without their dashes
(``round-timeout`` or ``round_timeout``)::

    [aggregator]
    broker = "mqtt://broker.lan:1883"
    fleet = "home"
    expect = "board1,board2"
    round-timeout = 900
    classes = "vermell,verd,blau"

    [gateway]
    device = "serial:///dev/ttyACM0"
    broker = "mqtt://broker.lan:1883"
    fleet = "home"
    worker-id = "board1"

Precedence, highest first: a flag on the command line, then the flag's environment variable
(``TINYFED_BROKER``, ...), then the file, then the built-in default. The file is named by
``--config`` or ``TINYFED_CONFIG``. An unknown key, a table missing, or a file that is not TOML
is an error naming it.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyfed.errors import UsageError

#: The services that read a configuration file, and the environment variable of each flag
#: that has one (it wins over the file).
ENV_OF: dict[str, dict[str, str]] = {
    "aggregator": {
        "broker": "TINYFED_BROKER",
        "fleet": "TINYFED_FLEET",
        "db": "TINYFED_AGGREGATOR_DB",
        "metrics": "TINYFED_AGGREGATOR_METRICS",
        "classes": "TINYFED_CLASSES",
    },
    "gateway": {
        "device": "TINYFED_DEVICE",
        "broker": "TINYFED_BROKER",
        "fleet": "TINYFED_FLEET",
        "spool": "TINYFED_SPOOL",
        "metrics": "TINYFED_GATEWAY_METRICS",
    },
}


def _given(action: argparse.Action, argv: Sequence[str]) -> bool:
    """Whether one of the action's flags is on the command line (``--x v`` or ``--x=v``)."""
    return any(
        token == flag or token.startswith(flag + "=")
        for token in argv
        for flag in action.option_strings
        if flag.startswith("--")
    )


def apply(
    command: str,
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Fill ``args`` from the configuration file of ``command`` (if one is named) where neither
    a flag nor its environment variable says otherwise; return the keys taken from the file."""
    environ = os.environ if env is None else env
    path = getattr(args, "config", None) or environ.get("TINYFED_CONFIG")
    if command not in ENV_OF or not path:
        return []
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from exc
    table = data.get(command)
    if not isinstance(table, dict):
        raise UsageError(f"--config {path}: no [{command}] table")
    actions = {
        a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")
    }
    taken = []
    for key, value in table.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise UsageError(f"--config {path}: [{command}] has no key {key!r}; keys: {known}")
        env_name = ENV_OF[command].get(dest)
        if _given(action, argv) or (env_name and environ.get(env_name)):
            continue  # the command line, then the environment, win over the file
        setattr(args, dest, _typed(action, value, path, command, key))
        taken.append(dest)
    return taken


def _typed(action: argparse.Action, value: Any, path: str | Path, table: str, key: str) -> Any:
    if isinstance(value, dict | list):
        raise UsageError(f"--config {path}: [{table}] {key} must be a single value")
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UsageError(f"--config {path}: [{table}] {key} must be true or false")
        return value
    convert = action.type
    if convert is None:
        return str(value)
    try:
        return convert(str(value)) if callable(convert) else value
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"--config {path}: [{table}] {key} = {value!r}: {exc}") from exc
