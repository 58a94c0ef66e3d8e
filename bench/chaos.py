"""``python bench/chaos.py [--seconds 300] [--gateways 8] [--seed N]``: the chaos scenario, long.

A private Mosquitto (persistence on), the real aggregator as a subprocess and N simulated gateways
(the real gateway's MQTT side, :mod:`tinyfed.gateway.simulated`); for ``--seconds`` the broker or
the aggregator is SIGKILLed at seeded-random moments and restarted after a short random pause, then
the fleet runs on until ``--settle-rounds`` more rounds close. Prints a line per kill, then the
figures (kills, uploads, receipts, lost, double-counted, rounds, failed attempts, stalled,
recomputation mismatches) and ends with one ``key=value`` line. Exit status 1 if any invariant
broke. Same scenario as ``tests/fleet/test_chaos.py``, figures in docs/reliability.md ("Chaos").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from tinyfed.fleet.chaos import ChaosConfig, run_chaos


def _span(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        span = (float(low), float(high or low))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH seconds, got {text!r}") from exc
    if not 0 <= span[0] <= span[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, got {text!r}")
    return span


def build_parser() -> argparse.ArgumentParser:
    d = ChaosConfig()
    p = argparse.ArgumentParser(
        prog="python bench/chaos.py",
        description="Kill the broker and the aggregator at random under a simulated fleet; "
        "check that no acknowledged update is lost or counted twice and rounds keep closing.",
    )
    p.add_argument("--seconds", type=float, default=300.0, help="chaos duration (default 300)")
    p.add_argument("--gateways", type=int, default=8, help="simulated gateways (default 8)")
    p.add_argument("--seed", type=int, default=1, help="seeds kills and updates (default 1)")
    p.add_argument("--round-timeout", type=float, default=d.round_timeout)
    p.add_argument("--min-workers", type=int, default=d.min_workers)
    p.add_argument("--resend-min", type=float, default=d.resend_min)
    p.add_argument("--resend-max", type=float, default=d.resend_max)
    p.add_argument("--kill-every", type=_span, default=d.kill_every, metavar="LOW,HIGH")
    p.add_argument("--down-for", type=_span, default=d.down_for, metavar="LOW,HIGH")
    p.add_argument("--train-delay", type=_span, default=d.train_delay, metavar="LOW,HIGH")
    p.add_argument("--broker-share", type=float, default=d.broker_share)
    p.add_argument("--long-outage-share", type=float, default=d.long_outage_share)
    p.add_argument("--settle-rounds", type=int, default=d.settle_rounds)
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--no-spool", action="store_true", help="gateways keep updates in memory")
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the broker, database and logs here (default: a temporary folder, deleted)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(args.workdir / "gateways.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    else:
        logging.basicConfig(level=logging.ERROR)
    config = ChaosConfig(
        seconds=args.seconds,
        gateways=args.gateways,
        seed=args.seed,
        round_timeout=args.round_timeout,
        min_workers=args.min_workers,
        resend_min=args.resend_min,
        resend_max=args.resend_max,
        train_delay=args.train_delay,
        kill_every=args.kill_every,
        down_for=args.down_for,
        broker_share=args.broker_share,
        long_outage_share=args.long_outage_share,
        settle_rounds=args.settle_rounds,
        settle_timeout=args.settle_timeout,
        spool=not args.no_spool,
        workdir=args.workdir,
    )
    report = asyncio.run(run_chaos(config, say=lambda line: print(line, flush=True)))
    print()
    print(report.table())
    for problem in report.problems():
        print(f"PROBLEM {problem}")
    print(report.summary())
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
