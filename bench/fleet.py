"""``tinyfed bench fleet``: a whole fleet's rounds through the real broker and aggregator.

For each fleet size W: a private Mosquitto (the project's limits), the real ``tinyfed
aggregator`` as a subprocess (no ``--expect``: the workers online; ``--min-workers W``), and W
simulated gateways in this process (:class:`tinyfed.gateway.simulated.SimulatedGateway`: the real
uplink, so they wait for the retained global model, upload once per round, keep the update
until its receipt, as the real gateway does; their MQTT clients run in one asyncio loop). Per
round it prints: first upload -> new global model, last upload -> new global model, the
aggregator's CPU seconds over the round, its peak RSS during the round, updates counted of W.
With two sizes or more it prints the growth of the aggregator's CPU per round between the
first and the last size, measured in the same run (the last round of each size: the first
includes W connections and statuses arriving).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from tinyfed.fleet.report import pyplot
from tinyfed.gateway.simulated import SimulatedGateway
from tinyfed.model import families
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import Topics
from tinyfed.mqtt.session import connect, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto

log = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RoundFigures:
    """One round of one fleet size."""

    workers: int
    round: int
    first_to_global_s: float
    last_to_global_s: float
    cpu_s: float
    peak_rss_mb: float
    counted: int
    close_s: float = float("nan")  #: the aggregator's own time to aggregate at the close

    def line(self) -> str:
        return (
            f"{self.workers:>7,d} {self.round:>5d} {self.first_to_global_s:>12.2f} "
            f"{self.last_to_global_s:>12.2f} {self.cpu_s:>9.2f} {self.peak_rss_mb:>9.1f} "
            f"{self.counted:>7,d}/{self.workers:,d}"
        )

    def close_line(self) -> str:
        return f"{self.workers:>7,d} {self.round:>5d} {self.close_s:>12.2f}"


HEADER = f"{'workers':>7s} {'round':>5s} {'first->global':>12s} {'last->global':>12s} " + (
    f"{'agg CPU s':>9s} {'peak MB':>9s} {'counted':>13s}"
)


class _Watch:
    """Global models and round events of the fleet, with the time they were seen."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.topics = topics
        self.cond = threading.Condition()
        self.globals: dict[int, float] = {}
        self.arch = ""  #: the ``arch`` of the last global model seen
        self.events: dict[int, contract.RoundEvent] = {}
        broker = parse_broker_url(url)
        self.client = make_client(broker, f"bench-watch-{topics.fleet}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        connect(self.client, broker)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe([(self.topics.global_model, 1), (self.topics.rounds, 1)])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        with self.cond:
            if msg.topic == self.topics.global_model and msg.payload:
                g = contract.decode_global(bytes(msg.payload))
                self.globals.setdefault(g.round, now)
                self.arch = g.arch
            elif msg.topic == self.topics.rounds:
                e = contract.decode_round_event(bytes(msg.payload))
                if e.outcome == "closed":
                    self.events[e.round - 1] = e  # by the global model it started from
            self.cond.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):  # Linux: "5" resets VmHWM to the current RSS
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise SystemExit(f"need {needed} open files, the limit is {soft}: raise `ulimit -n`")


async def _wait(cond: threading.Condition, check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with cond:
            if check():
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def run_size(
    workers: int,
    rounds: int,
    *,
    seed: int,
    spread: float,
    timeout: float,
    say: Any,
    model: str = "paper",
) -> list[RoundFigures]:
    """Run ``rounds`` rounds with ``workers`` simulated gateways of the ``model`` family (the
    aggregator's ``--model``: the gateways train whatever global model arrives); the figures
    of each round."""
    _raise_open_files(workers + 1000)
    fleet = f"bench{workers}"
    topics = Topics(fleet)
    out: list[RoundFigures] = []
    with tempfile.TemporaryDirectory(prefix="tinyfed-fleet-") as tmp, Mosquitto() as broker:
        with open(Path(tmp) / "aggregator.log", "wb") as agg_log:
            agg = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tinyfed.cli", "aggregator", "--broker", broker.url),
                    *("--fleet", fleet, "--db", str(Path(tmp) / "agg.db")),
                    *("--min-workers", str(workers), "--round-timeout", str(timeout)),
                    *("--model", model),
                ],
                stdout=agg_log,
                stderr=subprocess.STDOUT,
            )
        watch = _Watch(broker.url, topics)
        url = parse_broker_url(broker.url)
        gateways = [
            SimulatedGateway(
                url,
                topics,
                f"w{i:06d}",
                seed=seed + i,
                train_delay=(0.0, spread),
                threaded=False,
                keep_params=False,
                resend_min=60.0,
            )
            for i in range(workers)
        ]
        try:
            await _wait(watch.cond, lambda: 0 in watch.globals, "global model 0", 60)
            started = time.monotonic()
            for i, g in enumerate(gateways):
                g.start()
                if i % 200 == 199:
                    await asyncio.sleep(0)  # let the loop read CONNACKs between batches
            family = families.by_arch(watch.arch)
            say(
                f"  {workers:,} gateways starting ({time.monotonic() - started:.1f} s); "
                f"{family.name} family, {family.model_bytes:,}-byte models"
            )
            for r in range(rounds):
                cpu0 = _cpu_s(agg.pid)
                _reset_peak(agg.pid)
                await _wait(
                    watch.cond,
                    lambda r=r: r + 1 in watch.globals and r in watch.events,
                    f"global model {r + 1}",
                    timeout,
                )
                cpu = _cpu_s(agg.pid) - cpu0
                # when each gateway handed its update to its MQTT client; at large W this
                # includes the bench process's own backlog (one Python thread playing them all:
                # its view of PUBACKs lags even more, so it cannot serve as the clock)
                sent = [g.sent_at[r] for g in gateways if r in g.sent_at]
                at = watch.globals[r + 1]
                fig = RoundFigures(
                    workers=workers,
                    round=r,
                    first_to_global_s=at - min(sent) if sent else float("nan"),
                    last_to_global_s=at - max(sent) if sent else float("nan"),
                    cpu_s=cpu,
                    peak_rss_mb=_peak_mb(agg.pid),
                    counted=watch.events[r].participant_count,
                )
                say(fig.line())
                out.append(fig)
        finally:
            await asyncio.gather(*(g.stop() for g in gateways), return_exceptions=True)
            agg.terminate()
            try:
                agg.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agg.kill()
            watch.close()
            closes = _close_times(Path(tmp) / "agg.db")
    return [dataclasses.replace(f, close_s=closes.get(f.round, float("nan"))) for f in out]


def _close_times(db: Path) -> dict[int, float]:
    """Per round, the aggregator's time to aggregate at the close (its stored metric)."""
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute(
                "SELECT round, value FROM metrics WHERE name = 'aggregate_s'"
            ).fetchall()
    except sqlite3.Error:
        return {}
    return {int(r): float(v) for r, v in rows}


def plot(figures: list[RoundFigures], path: Path) -> None:
    """Aggregator CPU per round and last upload -> global model against the fleet size."""
    plt = pyplot()  # imported on use: ~0.3 s, an optional extra

    last = {f.workers: f for f in figures}  # the last round of each size
    sizes = sorted(last)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.loglog(sizes, [last[w].cpu_s for w in sizes], "o-", label="aggregator CPU per round (s)")
    ax.loglog(
        sizes, [last[w].last_to_global_s for w in sizes], "s-", label="last upload → global (s)"
    )
    if len(sizes) > 1:
        w0, c0 = sizes[0], last[sizes[0]].cpu_s
        ax.loglog(sizes, [c0 * w / w0 for w in sizes], ":", color="grey", label="linear in W")
    ax.set_xlabel("workers W (simulated gateways, one update each per round)")
    ax.set_ylabel("seconds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("tinyfed bench fleet: one round through Mosquitto and the aggregator")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    sizes = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--workers: give fleet sizes like 100,1000, got {args.workers!r}")
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {args.rounds}")
    logging.getLogger().setLevel(logging.WARNING)  # 10,000 gateways' info lines teach nothing
    # and at the end each one still holds the update of the round that was cut short
    logging.getLogger("tinyfed.gateway.uplink").setLevel(logging.ERROR)
    print(
        f"fleet bench: {', '.join(f'{w:,}' for w in sizes)} simulated gateways, {args.rounds} "
        f"round(s) each, uploads spread over {args.spread:g} s"
    )
    print(HEADER)
    figures: list[RoundFigures] = []
    for w in sizes:
        figures += asyncio.run(
            run_size(
                w,
                args.rounds,
                seed=args.seed,
                spread=args.spread,
                timeout=args.timeout,
                say=lambda line: print(line, flush=True),
                model=getattr(args, "model", "paper"),
            )
        )
    print("the aggregator's time to aggregate when the round closes (s)")
    for f in figures:
        print(f.close_line())
    last = {f.workers: f for f in figures}  # the last round of each size
    small, big = last[sizes[0]], last[sizes[-1]]
    growth = big.cpu_s / small.cpu_s if small.cpu_s > 0 else float("nan")
    for w0, w1 in itertools.pairwise(sizes):  # each step (fixed costs weigh at small W)
        c0, c1 = last[w0].cpu_s, last[w1].cpu_s
        print(
            f"aggregator CPU per round grows {c1 / c0 if c0 > 0 else float('nan'):.1f}x from "
            f"{w0:,} to {w1:,} workers ({w1 / w0:.0f}x the fleet)"
        )
    print(
        " ".join(
            f"w{f.workers}_r{f.round}=last:{f.last_to_global_s:.2f}s,cpu:{f.cpu_s:.2f}s,"
            f"rss:{f.peak_rss_mb:.0f}MB,counted:{f.counted}"
            for f in figures
        )
        + (f" cpu_growth={growth:.2f}" if len(sizes) > 1 else "")
    )
    if args.plot:
        plot(figures, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def register_bench(subparsers: Any) -> None:
    """Add ``tinyfed bench fleet``."""
    p = subparsers.add_parser(
        "fleet",
        help="W simulated gateways through the real broker and aggregator, rounds timed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workers", default="100,1000", help="fleet sizes, comma-separated (default 100,1000)"
    )
    p.add_argument("--rounds", type=int, default=2, help="rounds per size (default 2)")
    p.add_argument(
        "--spread", type=float, default=2.0, help="uploads spread over this many seconds"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="longest wait for a round (s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--model",
        choices=("paper", "dscnn"),
        default="paper",
        help="the fleet's model family: 41,868-byte models (paper) or 780-byte heads (dscnn)",
    )
    p.add_argument("--plot", metavar="PNG", help="also draw CPU and latency against W")
    p.set_defaults(func=main)


if __name__ == "__main__":  # ``python bench/fleet.py ARGS`` is ``tinyfed bench fleet ARGS``
    from tinyfed import cli

    sys.exit(cli.main(["bench", "fleet", *sys.argv[1:]]))
