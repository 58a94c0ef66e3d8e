"""The chaos scenario: a fleet of simulated gateways while the broker and the aggregator die.

:func:`run_chaos` runs a private Mosquitto (persistence on), the real aggregator as a
subprocess and N simulated gateways (:class:`tinyfed.gateway.simulated.SimulatedGateway`, the real
uplink) in the calling asyncio loop, SIGKILLs the broker or the aggregator at seeded-random
moments for a fixed time (restarting it after a random pause, now and then longer than a
round), lets the fleet settle, then checks the aggregator's database against what the gateways
made and were told: :class:`ChaosReport` (``tests/fleet/test_chaos.py``, ``bench/chaos.py``,
docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tinyfed.aggregator.settings import from_args
from tinyfed.aggregator.store import Store
from tinyfed.aggregator.strategies import RoundAggregate, Strategy
from tinyfed.cli import build_parser
from tinyfed.gateway.simulated import Made, SimulatedGateway, db_round
from tinyfed.mqtt.contract import Receipt, Topics
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- chaos

Victim = Literal["broker", "aggregator"]


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run.

    Args:
        seconds: how long the chaos lasts (kills happen only in this window).
        gateways: simulated gateways (workers ``w1`` .. ``wN``, all in ``--expect``).
        seed: seeds the kill schedule and the gateways.
        round_timeout: the aggregator's ``--round-timeout``.
        min_workers: the aggregator's ``--min-workers``.
        resend_min: the gateways' first wait for a receipt.
        resend_max: the gateways' longest wait between two sends.
        train_delay: the simulated boards' training time range (s).
        kill_every: time between two kills, uniform in this range (s).
        down_for: how long a killed process stays down, uniform in this range (s).
        broker_share: probability that a kill is the broker's (else the aggregator's).
        long_outage_share: probability that a killed process stays down longer than a round
            (1 to 1.5 times ``round_timeout``) instead of ``down_for``: rounds then close at
            their deadline without some updates, or fail.
        settle_rounds: rounds that should close after the chaos before the run stops.
        settle_timeout: the longest wait for them (s).
        warmup_timeout: the longest wait for the first round to close before the chaos (s).
        spool: give each gateway a spool folder (under ``workdir``).
        workdir: folder for the broker, the database, the logs and spools (a temporary one if
            None, deleted at the end).
    """

    seconds: float = 20.0
    gateways: int = 4
    seed: int = 1
    round_timeout: float = 8.0
    min_workers: int = 1
    resend_min: float = 2.0
    resend_max: float = 8.0
    train_delay: tuple[float, float] = (0.2, 1.0)
    kill_every: tuple[float, float] = (0.5, 3.0)
    down_for: tuple[float, float] = (0.1, 2.0)
    broker_share: float = 0.5
    long_outage_share: float = 0.1
    settle_rounds: int = 3
    settle_timeout: float = 40.0
    warmup_timeout: float = 30.0
    spool: bool = False
    workdir: Path | None = None


@dataclass
class ChaosReport:
    """What a chaos run did and what the database says about it."""

    config: ChaosConfig
    kills: Counter[str] = field(default_factory=Counter)  #: by victim
    aggregator_crashes: list[str] = field(default_factory=list)  #: exits we did not cause
    uploads: int = 0  #: updates made by the gateways
    resends: int = 0  #: updates queued again for want of a receipt
    accepted: int = 0  #: "accepted" receipts seen by the gateways
    rejected: int = 0  #: "rejected" receipts seen by the gateways
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    counted: int = 0  #: participant rows
    lost: list[str] = field(default_factory=list)  #: accepted but not counted exactly once
    double_counted: list[str] = field(default_factory=list)
    rejected_but_counted: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)  #: counted in another round than based
    superseded: int = 0  #: not counted, and their base round closed without them
    pending: int = 0  #: not counted, their base round still open at the end
    older_globals: int = 0  #: global models received older than one received before
    made_from_older: int = 0  #: updates made from such an older global model
    rounds_closed: int = 0
    failed_attempts: int = 0
    round_at_chaos_end: int = 0
    round_at_settle_end: int = 0
    settle_s: float = 0.0
    final_round: int = 0
    mismatches: list[str] = field(default_factory=list)  #: recomputed FedAvg != global model
    aggregator_exit: int | None = None  #: exit code after SIGTERM at the end
    seconds: float = 0.0  #: wall time of the whole run
    workdir: str = ""

    @property
    def advanced(self) -> int:
        """Rounds closed after the chaos stopped, within the settle deadline."""
        return self.round_at_settle_end - self.round_at_chaos_end

    @property
    def stalled(self) -> bool:
        """Fewer than 2 rounds closed after the chaos stopped."""
        return self.advanced < 2

    def problems(self) -> list[str]:
        """Every broken invariant, in words (empty: all held)."""
        out = [f"lost: {x}" for x in self.lost]
        out += [f"double-counted: {x}" for x in self.double_counted]
        out += [f"counted in another round: {x}" for x in self.misplaced]
        out += [f"rejected receipt, yet counted: {x}" for x in self.rejected_but_counted]
        out += [f"recomputation: {x}" for x in self.mismatches]
        out += [f"aggregator crashed: {x}" for x in self.aggregator_crashes]
        if self.stalled:
            out.append(
                f"stalled: {self.advanced} round(s) closed in {self.settle_s:.1f} s after the "
                f"chaos (round {self.round_at_chaos_end} -> {self.round_at_settle_end})"
            )
        if self.aggregator_exit not in (0, None):
            out.append(f"aggregator exited with {self.aggregator_exit} on SIGTERM")
        return out

    def rows(self) -> list[tuple[str, str]]:
        c = self.config
        return [
            ("broker kills", str(self.kills["broker"])),
            ("aggregator kills", str(self.kills["aggregator"])),
            ("aggregator crashes (not ours)", str(len(self.aggregator_crashes))),
            ("uploads (updates made)", str(self.uploads)),
            ("re-sends without a receipt", str(self.resends)),
            ("receipts accepted", str(self.accepted)),
            ("receipts rejected", str(self.rejected)),
            ("lost (accepted, not counted once)", str(len(self.lost))),
            ("double-counted", str(len(self.double_counted))),
            ("counted in another round", str(len(self.misplaced))),
            ("rejected receipt but counted", str(len(self.rejected_but_counted))),
            ("superseded (round closed without)", str(self.superseded)),
            ("pending at the end", str(self.pending)),
            ("older global models received", str(self.older_globals)),
            ("updates made from an older global", str(self.made_from_older)),
            ("updates counted", str(self.counted)),
            ("rounds closed", str(self.rounds_closed)),
            ("failed attempts", str(self.failed_attempts)),
            (
                "rounds closed after the chaos",
                f"{self.advanced} in {self.settle_s:.1f} s (goal {c.settle_rounds})",
            ),
            ("stalled", "yes" if self.stalled else "no"),
            ("recomputation mismatches", str(len(self.mismatches))),
        ]

    def table(self) -> str:
        """The figures, one per line."""
        c = self.config
        head = (
            f"chaos: {c.seconds:g} s of random kills, {c.gateways} gateways, seed {c.seed}, "
            f"--round-timeout {c.round_timeout:g} --min-workers {c.min_workers}, "
            f"resend {c.resend_min:g}..{c.resend_max:g} s; run {self.seconds:.1f} s"
        )
        width = max(len(k) for k, _ in self.rows())
        lines = [head, *(f"  {k:<{width}}  {v}" for k, v in self.rows())]
        if self.rejected_reasons:
            lines.append("  rejection reasons:")
            lines += [f"    {n:4d}  {r}" for r, n in self.rejected_reasons.most_common()]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line of key=value figures (assertion messages, the bench's last line)."""
        return (
            f"broker_kills={self.kills['broker']} aggregator_kills={self.kills['aggregator']} "
            f"uploads={self.uploads} accepted={self.accepted} lost={len(self.lost)} "
            f"double_counted={len(self.double_counted)} rounds_closed={self.rounds_closed} "
            f"failed_attempts={self.failed_attempts} stalled={'yes' if self.stalled else 'no'} "
            f"mismatches={len(self.mismatches)} rejected_but_counted="
            f"{len(self.rejected_but_counted)} workdir={self.workdir}"
        )


def _uniform(rng: random.Random, span: tuple[float, float]) -> float:
    return rng.uniform(*span)


class _Chaos:
    """The processes of one chaos run and the kill loop."""

    def __init__(self, config: ChaosConfig, workdir: Path, say: Callable[[str], None]) -> None:
        self.config = config
        self.workdir = workdir
        self.say = say
        self.rng = random.Random(config.seed)
        self.report = ChaosReport(config, workdir=str(workdir))
        self.broker = Mosquitto(workdir=workdir / "broker", persistence=True)
        self.db = workdir / "aggregator.sqlite3"
        self.aggregator_log = workdir / "aggregator.log"
        self.fleet = f"chaos{config.seed}-{uuid.uuid4().hex[:6]}"
        self.workers = [f"w{i + 1}" for i in range(config.gateways)]
        self.argv = [
            "aggregator",
            "--broker", self.broker.url,
            "--fleet", self.fleet,
            "--db", str(self.db),
            "--expect", ",".join(self.workers),
            "--round-timeout", f"{config.round_timeout:g}",
            "--min-workers", str(config.min_workers),
        ]  # fmt: skip
        self.aggregator: subprocess.Popen[bytes] | None = None
        self.gateways: list[SimulatedGateway] = []
        self.t0 = time.monotonic()

    def note(self, text: str) -> None:
        self.say(f"{time.monotonic() - self.t0:6.1f} s  round {self.db_round():3d}  {text}")

    # -- processes ----------------------------------------------------------------------

    def strategy(self) -> Strategy:
        """The strategy the aggregator subprocess runs (parsed from the same flags)."""
        return from_args(build_parser().parse_args(self.argv), env={}).strategy

    def start_aggregator(self) -> None:
        with self.aggregator_log.open("ab") as out:
            self.aggregator = subprocess.Popen(
                [sys.executable, "-m", "tinyfed.cli", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def end_aggregator(self, sig: signal.Signals, timeout: float = 15.0) -> int | None:
        proc, self.aggregator = self.aggregator, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            return None

    def check_aggregator(self) -> None:
        """Restart an aggregator that exited without being killed by us (and record it)."""
        proc = self.aggregator
        if proc is None or proc.poll() is None:
            return
        crash = f"exit {proc.returncode}: {self.log_tail(5)}"
        self.report.aggregator_crashes.append(crash)
        self.note(f"aggregator exited by itself ({crash}); restarting")
        self.start_aggregator()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.aggregator_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def db_round(self) -> int:
        """The latest global model's round in the aggregator's database (-1 if unreadable)."""
        return db_round(self.db)

    async def wait_round(self, target: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (r := self.db_round()) < target and time.monotonic() < deadline:
            self.check_aggregator()
            await asyncio.sleep(0.2)
        return r

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        c = self.config
        await asyncio.to_thread(self.broker.start)
        self.start_aggregator()
        broker = parse_broker_url(self.broker.url)
        topics = Topics(self.fleet)
        for i, worker in enumerate(self.workers):
            spool = self.workdir / "spool" / worker if c.spool else None
            gw = SimulatedGateway(
                broker,
                topics,
                worker,
                seed=c.seed * 1000 + i,
                spool=spool,
                resend_min=c.resend_min,
                resend_max=c.resend_max,
                train_delay=c.train_delay,
            )
            gw.start()
            self.gateways.append(gw)
        try:
            if await self.wait_round(1, c.warmup_timeout) < 1:
                raise RuntimeError(
                    f"the fleet closed no round within {c.warmup_timeout:g} s before the chaos; "
                    f"aggregator log:\n{self.log_tail()}"
                )
            self.note(f"fleet up; chaos for {c.seconds:g} s")
            await self.chaos()
            self.report.round_at_chaos_end = self.db_round()
            self.note("chaos over; both processes up")
            start = time.monotonic()
            target = self.report.round_at_chaos_end + c.settle_rounds
            self.report.round_at_settle_end = await self.wait_round(target, c.settle_timeout)
            self.report.settle_s = time.monotonic() - start
            self.note(f"settled: {self.report.advanced} round(s) in {self.report.settle_s:.1f} s")
        finally:
            await asyncio.gather(*(gw.stop() for gw in self.gateways))
            self.report.aggregator_exit = await self.end_aggregator(signal.SIGTERM)
            await asyncio.to_thread(self.broker.close)
        self.analyse()
        self.report.seconds = time.monotonic() - self.t0
        return self.report

    async def chaos(self) -> None:
        """Kill a process at random moments; the other may be killed while the first is down."""
        c = self.config
        end = time.monotonic() + c.seconds
        down: dict[Victim, asyncio.Task[None]] = {}
        while True:
            # Draw everything every time, so the schedule depends on the seed only.
            wait = _uniform(self.rng, c.kill_every)
            victim: Victim = "broker" if self.rng.random() < c.broker_share else "aggregator"
            long = self.rng.random() < c.long_outage_share
            short = _uniform(self.rng, c.down_for)
            pause = c.round_timeout * self.rng.uniform(1.0, 1.5) if long else short
            if time.monotonic() + wait >= end:
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                break
            await asyncio.sleep(wait)
            self.check_aggregator()
            down = {v: t for v, t in down.items() if not t.done()}
            if victim in down:
                victim = "aggregator" if victim == "broker" else "broker"
            if victim in down:
                continue  # both are down already
            if victim == "broker":
                await asyncio.to_thread(self.broker.kill)
            else:
                await self.end_aggregator(signal.SIGKILL)
            self.report.kills[victim] += 1
            self.note(f"killed the {victim} (down {pause:.1f} s{', long' if long else ''})")
            down[victim] = asyncio.create_task(self.restart_after(victim, pause))
        await asyncio.gather(*down.values())

    async def restart_after(self, victim: Victim, pause: float) -> None:
        await asyncio.sleep(pause)
        if victim == "broker":
            await asyncio.to_thread(self.broker.start)
        else:
            self.start_aggregator()
        self.note(f"restarted the {victim}")

    # -- the verdict --------------------------------------------------------------------

    def analyse(self) -> None:
        r = self.report
        made: dict[str, Made] = {}
        receipts: list[Receipt] = []
        for gw in self.gateways:
            made.update(gw.made)
            receipts.extend(gw.receipts.values())
            r.resends += gw.outbox.resent
            r.older_globals += gw.older_globals
            r.made_from_older += gw.made_from_older
        r.uploads = len(made)
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            rows = db.execute(
                "SELECT seq, round, worker_id, upload_id, weight FROM participants ORDER BY seq"
            ).fetchall()
            attempts = db.execute("SELECT round, outcome FROM rounds").fetchall()
            per_worker = db.execute(
                "SELECT round, worker_id, COUNT(*) FROM participants "
                "GROUP BY round, worker_id HAVING COUNT(*) > 1"
            ).fetchall()
        r.counted = len(rows)
        by_upload: dict[str, list[tuple[int, int, str, str, float]]] = {}
        for row in rows:
            by_upload.setdefault(row[3], []).append(row)
        closed = {rnd for rnd, outcome in attempts if outcome == "closed"}
        r.rounds_closed = len(closed)
        r.failed_attempts = sum(1 for _, outcome in attempts if outcome == "failed")
        # 0 counted twice: no upload in two rows, no worker twice in a round
        r.double_counted = [
            f"upload {u} counted {len(rs)} times (rounds {[x[1] for x in rs]})"
            for u, rs in by_upload.items()
            if len(rs) > 1
        ]
        r.double_counted += [
            f"worker {w} counted {n} times in round {rnd}" for rnd, w, n in per_worker
        ]
        for u, rs in by_upload.items():
            m = made.get(u)
            if m is not None and any(x[1] != m.base_round for x in rs):
                r.misplaced.append(f"{m.worker_id} upload {u} based on {m.base_round}")
        # accepted receipt => counted exactly once, in its base round
        for rc in receipts:
            m = made.get(rc.upload_id)
            rs = by_upload.get(rc.upload_id, [])
            if rc.outcome == "accepted":
                r.accepted += 1
                if m is None:
                    continue  # restored from a spool of an earlier run
                if rc.round != m.base_round + 1:  # round N starts from global model N - 1
                    r.misplaced.append(
                        f"{rc.worker_id} upload {rc.upload_id} based on {m.base_round} "
                        f"has an accepted receipt of round {rc.round}"
                    )
                if len(rs) != 1 or rs[0][1] != m.base_round:
                    r.lost.append(
                        f"{rc.worker_id} upload {rc.upload_id} (base round {m.base_round}, "
                        f"receipt round {rc.round}) has {len(rs)} participant row(s)"
                    )
            else:
                r.rejected += 1
                r.rejected_reasons[_reason_kind(rc.reason)] += 1
                if rs:
                    r.rejected_but_counted.append(
                        f"{rc.worker_id} upload {rc.upload_id} rejected in round {rc.round} "
                        f"({rc.reason}) but counted in round {rs[0][1]}"
                    )
        for u, m in made.items():
            if u not in by_upload:
                if m.base_round in closed:
                    r.superseded += 1
                else:
                    r.pending += 1
        self._recompute(rows, closed, made)

    def _recompute(
        self,
        rows: list[tuple[int, int, str, str, float]],
        closed: set[int],
        made: dict[str, Made],
    ) -> None:
        """Every global r+1 must be FedAvg (the aggregator's strategy) of round r's updates."""
        r = self.report
        strategy = self.strategy()
        with Store(self.db) as store:
            r.final_round = store.global_model()[0].round
            if closed != set(range(r.final_round)):
                r.mismatches.append(
                    f"closed rounds {sorted(closed)} are not 0..{r.final_round - 1} "
                    f"(the latest global model is {r.final_round})"
                )
            for rnd in sorted(closed):
                base, velocity = store.global_model(rnd)
                new, _ = store.global_model(rnd + 1)
                agg = RoundAggregate(strategy, base.params)
                unknown = []
                for _, row_round, worker, upload, weight in rows:
                    if row_round != rnd:
                        continue
                    m = made.get(upload)
                    if m is None:
                        unknown.append(f"{worker}:{upload}")
                        continue
                    cap = float(min(m.local_steps, base.hyper.local_steps))
                    if weight != cap:
                        r.mismatches.append(f"round {rnd}: {upload} weight {weight}, not {cap}")
                    agg.add(m.params, weight)
                if unknown:
                    r.mismatches.append(f"round {rnd}: uploads no gateway made: {unknown}")
                    continue
                expected = agg.finish(velocity).params
                diff = float(np.max(np.abs(expected.astype(np.float64) - new.params)))
                if not diff <= 1e-6:
                    r.mismatches.append(
                        f"round {rnd}: global {rnd + 1} differs from the recomputed aggregate of "
                        f"{agg.count} update(s) by up to {diff:.3g}"
                    )


def _reason_kind(reason: str) -> str:
    """A rejection reason without its ids and numbers (to count them by kind)."""
    head = reason.split(":", maxsplit=1)[0]
    return head if head else reason[:60]


async def run_chaos(
    config: ChaosConfig, *, say: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    """Run one chaos scenario in the calling loop; ``say`` gets a line per kill and phase."""
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
        return await _Chaos(config, config.workdir, say).run()
    with tempfile.TemporaryDirectory(prefix="tinyfed-chaos-") as tmp:
        return await _Chaos(config, Path(tmp), say).run()
