"""Start a whole fleet on one machine, and stop every process of it, whatever happens.

:class:`ProcessRegistry` owns every child process: each runs in its own session (so a Ctrl-C
at the terminal reaches only the parent, which then stops the children in order), and
:meth:`ProcessRegistry.stop_all` stops them in stages, last started first: SIGTERM to the
child's whole process group, a grace period, then SIGKILL. :class:`Fleet` starts, in order,
a private Mosquitto (unless a broker is given), the :class:`~tinyfed.fleet.recorder.Recorder`,
the aggregator, one virtual board per scripted user and one gateway per board, each the real
program (``tinyfed aggregator``, ``tinyfed gateway``, ``tinyfed-virtual-board``) with its log
in ``WORKDIR/logs/``. Any failure while starting or running stops everything already started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tinyfed.errors import TinyfedError
from tinyfed.fleet import scenario as sc
from tinyfed.fleet.corpus import HeldOut
from tinyfed.fleet.recorder import Recorder
from tinyfed.mqtt.contract import Topics
from tinyfed.mqtt.session import connect, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto, find_mosquitto
from tinyfed.testbed.virtual_board import VirtualBoard, build_virtual_board

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 5.0  #: seconds between SIGTERM and SIGKILL
STAGE_BROKER, STAGE_AGGREGATOR, STAGE_BOARD, STAGE_GATEWAY = 1, 2, 3, 4


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Ctrl-C or SIGTERM asked the fleet to stop (see :meth:`Fleet.wait_rounds`)."""


class FleetError(TinyfedError):
    """A process of the fleet failed to start or died; the message names it and its log."""


def log_tail(path: Path | None, lines: int = 12) -> str:
    """The last lines of a log file, indented, for error messages."""
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + ln for ln in text)


@dataclass
class Child:
    """One child process: a :class:`subprocess.Popen` or a :class:`VirtualBoard`."""

    name: str
    stage: int
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    board: VirtualBoard | None = None
    pid: int = 0
    expected_exit: bool = False  #: True once we asked it to stop

    def returncode(self) -> int | None:
        """None while running."""
        if self.proc is not None:
            return self.proc.poll()
        assert self.board is not None
        return None if self.board.running else -1

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.5)
        elif self.board is not None:
            self.board.stop(timeout=0.5)


@dataclass
class ProcessRegistry:
    """Every process a fleet started, stopped in stages (highest stage first).

    Args:
        grace: seconds a stage gets after SIGTERM before SIGKILL.
    """

    grace: float = DEFAULT_GRACE_S
    children: list[Child] = field(default_factory=list)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def _watch(self, pgid: int) -> None:
        """Tell the watchdog (started on first use) about a group: +PGID watch, -PGID forget.

        The watchdog (:mod:`tinyfed.fleet.watchdog`) stops every watched group if this
        process dies without stopping them itself, even by SIGKILL.
        """
        if self._watchdog is None:
            if pgid < 0:
                return
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "tinyfed.fleet.watchdog"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        assert self._watchdog.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._watchdog.stdin.write(f"{pgid}\n".encode())
            self._watchdog.stdin.flush()

    def close_watchdog(self) -> None:
        """Let the watchdog exit (after :meth:`stop_all`, nothing is left for it to stop)."""
        dog, self._watchdog = self._watchdog, None
        if dog is None:
            return
        if dog.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                dog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            dog.wait(timeout=5)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stage: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Start ``argv`` in its own session, stdout and stderr to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        child = Child(name, stage, log_path, proc=proc, pid=proc.pid)
        self.children.append(child)
        self._watch(proc.pid)
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return child

    def adopt_board(self, name: str, board: VirtualBoard, *, stage: int = STAGE_BOARD) -> Child:
        """Register a started :class:`VirtualBoard` (it runs in its own session already)."""
        assert board.pid is not None
        child = Child(name, stage, board.stderr_path, board=board, pid=board.pid)
        self.children.append(child)
        self._watch(board.pid)
        return child

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    def check(self) -> None:
        """Raise :class:`FleetError` if a child exited without being asked to."""
        for c in self.children:
            code = c.returncode()
            if code is not None and not c.expected_exit:
                raise FleetError(
                    f"{c.name} (pid {c.pid}) exited with status {code}; "
                    f"its log ({c.log_path}):\n{log_tail(c.log_path)}"
                )

    def stop_all(self) -> None:
        """Stop every child, stage by stage: SIGTERM, ``grace`` seconds, SIGKILL; reap all."""
        for stage in sorted({c.stage for c in self.children}, reverse=True):
            group = [c for c in self.children if c.stage == stage]
            for c in group:
                c.expected_exit = True
                if c.returncode() is None:
                    c.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline and any(c.returncode() is None for c in group):
                time.sleep(0.02)
            for c in group:
                if c.returncode() is None:
                    log.warning(
                        "%s (pid %d) ignored SIGTERM for %.0f s: killed", c.name, c.pid, self.grace
                    )
                # the group too: a child's own children must not outlive it
                c.signal_group(signal.SIGKILL)
                c.reap()
                self._watch(-c.pid)
        self.children.clear()


@dataclass(frozen=True)
class FleetConfig:
    """Everything :class:`Fleet` needs to start a fleet run.

    Attributes:
        fleet: the fleet name (topics under ``tinyfed/FLEET/``).
        workdir: logs, scripts, the aggregator's database and the boards' folders.
        scenario: who says what (see :mod:`tinyfed.fleet.scenario`).
        corpus: the corpus folder the scenario's clips are relative to.
        pipeline: the feature pipeline of the boards and of the aggregator.
        model: the model family (``paper`` or ``dscnn``; docs/learning.md) of the boards and
            of the aggregator.
        lr, momentum: the boards' SGD hyper-parameters (sent with every global model).
        strategy: the aggregator's ``--strategy``; ``aggregator_args`` adds flags.
        broker: an existing broker's URL; None starts a private Mosquitto.
        record_ms, hold_ms, pace_ms: the scripted users' timing.
        worker_ids: give gateways ``--worker-id boardN`` (default: ``board-<board id>``).
        round_timeout: the aggregator's ``--round-timeout``.
        grace: seconds between SIGTERM and SIGKILL when stopping.
    """

    fleet: str
    workdir: Path
    scenario: sc.Scenario
    corpus: Path
    pipeline: str
    lr: float
    momentum: float
    strategy: str = "fedavg"
    aggregator_args: tuple[str, ...] = ()
    broker: str | None = None
    model: str = "paper"
    record_ms: int = 100
    hold_ms: int = sc.DEFAULT_HOLD_MS
    pace_ms: int = sc.DEFAULT_PACE_MS
    worker_ids: bool = False
    round_timeout: float = 300.0
    grace: float = DEFAULT_GRACE_S

    def worker_id(self, plan: sc.BoardPlan) -> str:
        return f"board{plan.index}" if self.worker_ids else plan.worker_id

    @property
    def topics(self) -> Topics:
        return Topics(self.fleet)


def _python_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinyfed.cli", *args]


def _wait_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise FleetError(f"the broker exited before listening on port {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise FleetError(f"the broker did not listen on {host}:{port} within {timeout:.0f} s")


class Fleet:
    """A running fleet: use as a context manager, or :meth:`start` and :meth:`stop`.

    Args:
        config: what to run.
        held_out: scores every global model the recorder sees (None: no accuracy).
        binary: the virtual board executable (default: build it with ``make -C firmware host``).
    """

    def __init__(
        self, config: FleetConfig, held_out: HeldOut | None = None, binary: Path | None = None
    ) -> None:
        self.config = config
        self.held_out = held_out
        self.binary = binary
        self.registry = ProcessRegistry(grace=config.grace)
        self.broker_url = config.broker or ""
        self.recorder: Recorder | None = None
        self.started_at = 0.0
        self.logs = config.workdir / "logs"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start everything; on any error stop what was started and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.config
        self.started_at = time.time()
        work = cfg.workdir
        if work.exists():
            shutil.rmtree(work)  # a previous run's database would resume its rounds
        self.logs.mkdir(parents=True)
        binary = self.binary or build_virtual_board()
        if cfg.broker is None:
            self._start_broker(work / "broker")
        broker = parse_broker_url(self.broker_url)
        self.recorder = Recorder(broker, cfg.topics, held_out=self.held_out)
        self.recorder.start()
        plans = cfg.scenario.boards
        names = {cfg.worker_id(p): p.name for p in plans}
        self.recorder.set_names(names)
        self._start_aggregator(plans)
        scripts = work / "scripts"
        scripts.mkdir()
        (scripts / "corpus").symlink_to(cfg.corpus.resolve(), target_is_directory=True)
        ptys = []
        for plan in plans:
            script = scripts / f"board{plan.index}.txt"
            script.write_text(
                sc.script_text(
                    cfg.scenario, plan, "corpus", hold_ms=cfg.hold_ms, pace_ms=cfg.pace_ms
                )
            )
            board = VirtualBoard(
                script=script,
                board_id=plan.board_id,
                pipeline=cfg.pipeline,
                family=cfg.model,
                extra_args=[
                    "--lr",
                    repr(cfg.lr),
                    "--momentum",
                    repr(cfg.momentum),
                    "--local-steps",
                    str(cfg.scenario.local_steps),
                    "--record-ms",
                    str(cfg.record_ms),
                ],
                binary=binary,
                workdir=work / f"board{plan.index}",
            )
            ptys.append(board.start())
            self.registry.adopt_board(plan.name, board)
        for plan, pty in zip(plans, ptys, strict=True):
            args = ["gateway", "--device", f"serial://{pty}", "--broker", self.broker_url]
            args += ["--fleet", cfg.fleet]
            if cfg.worker_ids:
                args += ["--worker-id", cfg.worker_id(plan)]
            self.registry.spawn(
                f"gateway {plan.index}",
                _python_cli(*args),
                stage=STAGE_GATEWAY,
                log_path=self.logs / f"gateway{plan.index}.log",
                env=self._env(),
            )

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def _start_broker(self, folder: Path) -> None:
        broker = Mosquitto(workdir=folder, persistence=False)
        child = self.registry.spawn(
            "mosquitto",
            [find_mosquitto(), "-c", str(broker.config_path)],
            stage=STAGE_BROKER,
            log_path=self.logs / "mosquitto.out",
        )
        _wait_port("127.0.0.1", broker.port, 10.0, lambda: child.returncode() is None)
        self.broker_url = broker.url

    def _start_aggregator(self, plans: Sequence[sc.BoardPlan]) -> None:
        cfg = self.config
        ids = ",".join(cfg.worker_id(p) for p in plans)
        args = [
            "aggregator",
            "--broker",
            self.broker_url,
            "--fleet",
            cfg.fleet,
            "--expect",
            ids,
            "--min-workers",
            str(len(plans)),
            "--round-timeout",
            str(cfg.round_timeout),
            "--local-steps",
            str(cfg.scenario.local_steps),
            "--lr",
            repr(cfg.lr),
            "--momentum",
            repr(cfg.momentum),
            "--model",
            cfg.model,
            "--pipeline",
            cfg.pipeline,
            "--strategy",
            cfg.strategy,
            "--classes",
            ",".join(cfg.scenario.classes),
            "--db",
            str(cfg.workdir / "aggregator.sqlite3"),
            *cfg.aggregator_args,
        ]
        self.registry.spawn(
            "aggregator",
            _python_cli(*args),
            stage=STAGE_AGGREGATOR,
            log_path=self.logs / "aggregator.log",
            env=self._env(),
        )

    def stop(self) -> None:
        """Stop every process (gateways, boards, aggregator, broker) and the recorder.

        Safe to call twice; a Ctrl-C meanwhile is ignored so the teardown always finishes.
        """
        previous = None
        with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # The recorder last but one: it sees the gateways' and the aggregator's goodbyes.
            brokerless = [c for c in self.registry.children if c.stage != STAGE_BROKER]
            broker = [c for c in self.registry.children if c.stage == STAGE_BROKER]
            self.registry.children = brokerless
            self.registry.stop_all()
            if self.recorder is not None:
                self.recorder.stop()
            if self.config.broker is not None and self.broker_url:
                self._clear_retained()
            self.registry.children = broker
            self.registry.stop_all()
            self.registry.close_watchdog()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _clear_retained(self) -> None:
        """On someone else's broker, remove the run's retained messages (best effort)."""
        t = self.config.topics
        topics = [t.global_model, t.aggregator_status]
        topics += [t.worker_status(self.config.worker_id(p)) for p in self.config.scenario.boards]
        try:
            broker = parse_broker_url(self.broker_url)
            client = make_client(broker, f"tinyfed-demo-cleanup-{self.config.fleet}"[:64])
            connect(client, broker)
            client.loop_start()
            try:
                infos = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
                for info in infos:
                    info.wait_for_publish(timeout=2.0)
            finally:
                client.disconnect()
                client.loop_stop()
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("could not clear the retained messages of fleet %s: %s", t.fleet, exc)

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ running

    def wait_rounds(
        self,
        rounds: int,
        *,
        timeout: float,
        tick: Callable[[], None] | None = None,
        interval: float = 0.25,
        stop: threading.Event | None = None,
    ) -> None:
        """Wait until the global model of round ``rounds`` is out (``rounds`` rounds closed).

        Calls ``tick`` every ``interval`` seconds (the dashboard). Raises :class:`FleetError`
        if a process dies or the time runs out, and :class:`StopRequested` once ``stop`` is
        set (by a signal handler: the wait ends at a known point, never inside a lock).
        """
        assert self.recorder is not None
        deadline = time.monotonic() + timeout
        while True:
            if stop is not None and stop.is_set():
                raise StopRequested("stop requested")
            if tick is not None:
                tick()
            self.registry.check()
            latest = self.recorder.latest_global_round()
            if latest is not None and latest >= rounds:
                return
            if time.monotonic() > deadline:
                raise FleetError(
                    f"only {latest or 0} of {rounds} rounds closed within {timeout:.0f} s; "
                    f"logs in {self.logs}:\n"
                    + "\n".join(
                        f"  {c.name}:\n{log_tail(c.log_path, 6)}" for c in self.registry.children
                    )
                )
            if stop is not None:
                stop.wait(interval)
            else:
                time.sleep(interval)

    def processes(self) -> list[dict[str, object]]:
        """Name, pid and log of every running child (for the run's record)."""
        return [
            {"name": c.name, "pid": c.pid, "log": str(c.log_path)} for c in self.registry.children
        ]
