"""The ``tinyfed`` command: one entry point, one subcommand per job.

Each command module exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (a callable taking the parsed namespace and returning an exit code). Modules that
contribute benchmarks expose ``register_bench(subparsers)`` for the ``tinyfed bench`` group.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from tinyfed import __version__, config
from tinyfed.aggregator import cli as aggregator_cli
from tinyfed.bench import aggregate as aggregate_bench, fleet as fleet_bench, link as link_bench
from tinyfed.board import cli as board_cli
from tinyfed.data import cli as data_cli
from tinyfed.deploy import cli as deploy_cli
from tinyfed.errors import TinyfedError, UsageError
from tinyfed.experiments import cli as experiments_cli
from tinyfed.features import cli as features_cli
from tinyfed.fleet import cli as fleet_cli
from tinyfed.gateway import cli as gateway_cli
from tinyfed.help import HelpFormatter
from tinyfed.model import cli as model_cli
from tinyfed.pretrain import cli as pretrain_cli


class CommandModule(Protocol):
    """A module that adds top-level subcommands."""

    def register(self, subparsers: argparse._SubParsersAction[Any], /) -> None: ...


class BenchModule(Protocol):
    """A module that adds ``tinyfed bench`` subcommands."""

    def register_bench(self, subparsers: argparse._SubParsersAction[Any], /) -> None: ...


#: Modules that add top-level subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[CommandModule, ...] = (
    data_cli,
    features_cli,
    model_cli,
    pretrain_cli,
    experiments_cli,
    fleet_cli,
    aggregator_cli,
    gateway_cli,
    board_cli,
    deploy_cli,
)

#: Modules that add ``tinyfed bench`` subcommands.
BENCH_MODULES: tuple[BenchModule, ...] = (link_bench, aggregate_bench, fleet_bench)

WORKFLOW = """\
workflow:
  1. make a keyword corpus (espeak-ng voices, split by voice), or import recordings
       tinyfed data synth --words montserrat,pedraforca --silence --out corpus
       tinyfed data import edge-impulse-export/ --out corpus   # Edge Impulse JSON / CBOR
  2. compute the paper's features (or --pipeline centroid)
       tinyfed features --corpus corpus --out X.npy --labels-out Y.npy
  3. train and evaluate the paper's network offline
       tinyfed model init --out init.bin
       tinyfed train --features X.npy --labels Y.npy --init init.bin --out m.bin
       tinyfed eval m.bin --features Xtest.npy --labels Ytest.npy
  4. reproduce the paper's figures (fig5, fig6 on one board; fig7, fig8 on two)
       tinyfed experiment fig5
  5. see a whole fleet learn on this machine (virtual boards, gateways, broker, aggregator)
       tinyfed demo
  6. flash each real board and check it on your desk (link, microphone, buttons, LEDs,
     one training step; pass/fail report)
       tinyfed board flash
       tinyfed board selftest --device serial://auto
  7. run a real fleet: one aggregator, one gateway per board; watch it
       tinyfed aggregator --broker mqtt://localhost:1883 --fleet home
       tinyfed gateway --device serial://auto --broker mqtt://localhost:1883 --fleet home
       tinyfed monitor --broker mqtt://localhost:1883 --fleet home

Run `tinyfed COMMAND --help` for the details of each step.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser from the command modules."""
    parser = argparse.ArgumentParser(
        prog="tinyfed",
        description=(
            "Federated keyword spotting for Arduino Nano 33 BLE Sense boards: each board "
            "learns its user's keywords on the board, and a fleet improves together by "
            "federated averaging over MQTT. No audio ever leaves a board."
        ),
        epilog=WORKFLOW,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyfed {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    if BENCH_MODULES:
        bench = sub.add_parser(
            "bench",
            help="measure speed and memory against the paper's way",
            description="Benchmarks that print figures and end with one key=value line.",
            formatter_class=HelpFormatter,
        )
        bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
        for bench_module in BENCH_MODULES:
            bench_module.register_bench(bench_sub)
    return parser


def subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise KeyError(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tinyfed`` command line; return the process exit code."""
    parser = build_parser()
    tokens = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(tokens)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in config.ENV_OF:  # flags > environment > --config file > defaults
            config.apply(args.command, subcommand_parser(parser, args.command), args, tokens)
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"tinyfed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TinyfedError as exc:  # our errors say what happened and what to do: no traceback
        print(f"tinyfed {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
