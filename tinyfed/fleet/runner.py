"""One fleet run from a plan to a report: used by ``tinyfed demo`` and the full-stack experiments.

:func:`plan` makes the corpus, the scenario and the held-out set; :func:`execute` starts the
fleet, shows the dashboard until the planned rounds are closed (or Ctrl-C, SIGTERM, an error),
stops every process, and writes the report folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tinyfed.data import dataset as ds
from tinyfed.fleet import report, scenario as sc
from tinyfed.fleet.corpus import HeldOut, classes_of, ensure_corpus
from tinyfed.fleet.dashboard import Dashboard, DashboardInfo
from tinyfed.fleet.orchestrator import Fleet, FleetConfig, StopRequested
from tinyfed.fleet.recorder import FleetSnapshot
from tinyfed.fleet.web import WebServer

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  #: allowance for starting the fleet, on top of the rounds' time
ROUND_TIMEOUT_S = 60.0  #: allowance per round (a round takes a few seconds here)


@dataclass(frozen=True)
class RunPlan:
    """What a fleet run does, before anything starts."""

    title: str
    words: tuple[str, ...]
    silence: bool
    boards: int
    rounds: int
    local_steps: int
    non_iid: bool = False
    strategy: str = "fedavg"
    aggregator_args: tuple[str, ...] = ()
    model: str = "paper"  #: the model family (docs/learning.md)
    pipeline: str = "centroid"
    lr: float = 0.3
    momentum: float = 0.9
    broker: str | None = None
    corpus_dir: Path = Path("runs/corpus")
    corpus_name: str | None = None
    per_word: int = 100
    seed: int = 0
    record_ms: int = 100
    worker_ids: bool = True  #: gateways get --worker-id boardN (else board-<board id>)
    fleet: str = field(default_factory=lambda: f"demo-{secrets.token_hex(3)}")


@dataclass(frozen=True)
class Prepared:
    """A plan with its corpus, scenario and held-out set ready."""

    plan: RunPlan
    corpus: Path
    scenario: sc.Scenario
    held_out: HeldOut

    def info(self) -> report.RunInfo:
        s = self.scenario
        return report.RunInfo(
            title=self.plan.title,
            strategy=self.plan.strategy,
            pipeline=self.plan.pipeline,
            classes=s.classes,
            non_iid=s.non_iid,
            rounds=s.rounds,
            local_steps=s.local_steps,
            lr=self.plan.lr,
            momentum=self.plan.momentum,
            boards=tuple(
                {
                    "worker": self.worker_id(b),
                    "name": b.name,
                    "board_id": b.board_id,
                    "words": list(s.words_of(b)),
                    "voices": len(b.voices),
                }
                for b in s.boards
            ),
            held_out_clips=len(self.held_out),
            extra={
                "corpus": str(self.corpus),
                "model": self.plan.model,
                "aggregator_args": list(self.plan.aggregator_args),
            },
        )

    def worker_id(self, b: sc.BoardPlan) -> str:
        return f"board{b.index}" if self.plan.worker_ids else b.worker_id

    def dashboard_info(self, broker: str) -> DashboardInfo:
        s = self.scenario
        return DashboardInfo(
            title=self.plan.title,
            broker=broker,
            strategy=self.plan.strategy,
            pipeline=self.plan.pipeline,
            rounds=s.rounds,
            local_steps=s.local_steps,
            words={self.worker_id(b): ", ".join(s.words_of(b)) for b in s.boards},
            held_out=len(self.held_out),
        )


def prepare(plan: RunPlan) -> Prepared:
    """Synthesize (or reuse) the corpus, build the scenario, compute the held-out features."""
    corpus = ensure_corpus(
        plan.words,
        plan.silence,
        plan.corpus_dir,
        per_word=plan.per_word,
        seed=plan.seed,
        name=plan.corpus_name,
    )
    data = ds.load(corpus, classes=classes_of(plan.words, plan.silence), splits=("train", "test"))
    scenario = sc.build(
        data.select("train"),
        boards=plan.boards,
        rounds=plan.rounds,
        local_steps=plan.local_steps,
        non_iid=plan.non_iid,
        seed=plan.seed,
    )
    held_out = HeldOut(data.select("test")).prepare(plan.pipeline)
    return Prepared(plan, corpus, scenario, held_out)


@dataclass(frozen=True)
class FleetRunResult:
    """What :func:`execute` returns."""

    snapshot: FleetSnapshot
    metrics: dict[str, Any]
    wall_time_s: float
    completed: bool  #: every planned round closed
    processes: list[dict[str, object]]


class Interrupted(Exception):  # noqa: N818 - it is a signal, not an error of ours
    """SIGTERM arrived: stop like a Ctrl-C."""


@contextlib.contextmanager
def _handling(
    signals: tuple[signal.Signals, ...], handler: Callable[[int, FrameType | None], None]
) -> Iterator[None]:
    """Install ``handler`` for ``signals`` while the block runs (a no-op off the main thread)."""
    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def _sigterm_interrupts() -> contextlib.AbstractContextManager[None]:
    """SIGTERM raises :class:`Interrupted` (while the fleet starts: stop like a Ctrl-C)."""
    return _handling((signal.SIGTERM,), _raise_interrupted)


def _signals_request_stop(stop: threading.Event) -> contextlib.AbstractContextManager[None]:
    """While the fleet runs, Ctrl-C and SIGTERM only set ``stop``.

    An exception raised by a signal lands wherever the main thread happens to be (inside the
    recorder's lock, a logging call...), which can hang the teardown; a flag is checked by
    :meth:`Fleet.wait_rounds` at a known point instead.
    """
    return _handling((signal.SIGINT, signal.SIGTERM), lambda signum, frame: stop.set())


@contextlib.contextmanager
def _logs_to(path: Path | None) -> Iterator[None]:
    """Send the root logger's output to ``path`` while the live dashboard owns the terminal."""
    if path is None:
        yield
        return
    root = logging.getLogger()
    saved = root.handlers[:]
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()


def execute(
    prepared: Prepared,
    out: Path,
    *,
    dashboard: bool | None = None,
    stream: TextIO | None = None,
    timeout: float | None = None,
    plots: bool = True,
    web: tuple[str, int] | None = None,
) -> FleetRunResult:
    """Run the fleet to the end of its rounds and write the report folder ``out``.

    Args:
        prepared: from :func:`prepare`.
        out: the report folder (``work/`` inside it holds logs, scripts, the database).
        dashboard: True: live ANSI view; False: log lines; None: live if ``stream`` is a TTY.
        stream: where the dashboard writes (default stdout).
        timeout: seconds for the whole run (default: 60 s + 60 s per round).
        plots: draw the PNG figures.
        web: also serve the web dashboard and metrics on this (host, port) while it runs.

    Ctrl-C or SIGTERM stops the run early: every process is stopped and the report of what
    was recorded is written before :class:`KeyboardInterrupt` propagates.
    """
    plan, s = prepared.plan, prepared.scenario
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    config = FleetConfig(
        fleet=plan.fleet,
        workdir=out / "work",
        scenario=s,
        corpus=prepared.corpus,
        pipeline=plan.pipeline,
        model=plan.model,
        lr=plan.lr,
        momentum=plan.momentum,
        strategy=plan.strategy,
        aggregator_args=plan.aggregator_args,
        broker=plan.broker,
        record_ms=plan.record_ms,
        worker_ids=plan.worker_ids,
    )
    fleet = Fleet(config, prepared.held_out)
    out_stream = stream or sys.stdout
    live = out_stream.isatty() if dashboard is None else dashboard
    limit = timeout if timeout is not None else START_TIMEOUT_S + ROUND_TIMEOUT_S * s.rounds
    completed = False
    interrupted: BaseException | None = None
    processes: list[dict[str, object]] = []
    dash: Dashboard | None = None
    server: WebServer | None = None
    if web is not None:  # first: a port in use is refused before anything starts

        def snapshot() -> FleetSnapshot:
            rec = fleet.recorder
            if rec is None:  # still starting
                return FleetSnapshot(plan.fleet, time.time(), (), (), (), (), None, 0, False)
            return rec.snapshot()

        server = WebServer(snapshot, web)
        out_stream.write(f"web dashboard: {server.url} (metrics: {server.url}metrics)\n")
        out_stream.flush()
    with _sigterm_interrupts(), _logs_to(out / "run.log" if live else None):
        try:
            fleet.start()
            processes = fleet.processes()
            (config.workdir / "processes.json").write_text(json.dumps(processes, indent=1))
            assert fleet.recorder is not None
            recorder = fleet.recorder
            dash = Dashboard(prepared.dashboard_info(fleet.broker_url), out_stream, live=live)
            if not live:
                out_stream.write(
                    f"{plan.title}: fleet {plan.fleet} on {fleet.broker_url}, "
                    f"{len(s.boards)} boards, {s.rounds} rounds of {s.local_steps} steps; "
                    f"logs in {fleet.logs}\n"
                )
            stop = threading.Event()
            with _signals_request_stop(stop):
                fleet.wait_rounds(
                    s.rounds,
                    timeout=limit,
                    tick=lambda: dash.update(recorder.snapshot()) if dash else None,
                    stop=stop,
                )
            completed = True
            if live:  # the last frame while everything is still online
                dash.update(recorder.snapshot(), force=True)
        except (KeyboardInterrupt, Interrupted, StopRequested) as exc:
            interrupted = exc
        finally:
            if server is not None:
                server.close()
            fleet.stop()
            if dash is not None and fleet.recorder is not None:
                dash.close(None if completed and live else fleet.recorder.snapshot())
    wall = time.monotonic() - t0
    snap = fleet.recorder.snapshot() if fleet.recorder is not None else None
    metrics: dict[str, Any] = {}
    if snap is not None:
        metrics = report.write(out, snap, prepared.info(), wall_time_s=round(wall, 2), plots=plots)
    if interrupted is not None:
        raise KeyboardInterrupt from interrupted
    assert snap is not None
    return FleetRunResult(snap, metrics, wall, completed, processes)
