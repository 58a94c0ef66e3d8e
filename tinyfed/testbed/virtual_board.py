"""Build and launch virtual boards: the firmware's core on the host, behind a pseudo-terminal.

A virtual board (``firmware/build/host/tinyfed-virtual-board``) speaks the link protocol on a
pseudo-terminal exactly as an Arduino Nano 33 BLE Sense does on USB serial, hears WAV clips
instead of its microphone and is pressed by a script instead of a person (firmware/README.md,
"Virtual board"). Gateways open it with pyserial like any serial port::

    path = build_virtual_board()
    with VirtualBoard(script="presses.txt") as board:
        gateway_url = f"serial://{board.port}"
        ...

Each board gets a private folder holding its log, its stderr and a stable symlink to its
pty (:attr:`VirtualBoard.port`), which survives :meth:`VirtualBoard.restart` even though the
pty itself (:attr:`VirtualBoard.pty`) changes, as ``/dev/ttyACM0`` does when a board is
power-cycled. Model and momentum live in the process's RAM only: a restart is a new boot id
and a fresh seeded model.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tinyfed.errors import TinyfedError

log = logging.getLogger(__name__)

#: The firmware sources the package carries: in a source checkout a symlink to the repository's
#: firmware/ (built in place), in an installed wheel a copy of what ``make host`` needs (the
#: Makefile, core/, hal/host/), built in a user cache: site-packages is not ours to write to.
PACKAGED = Path(__file__).parent / "firmware"
BINARY_IN_TREE = Path("build") / "host" / "tinyfed-virtual-board"  #: what ``make host`` builds
PIPELINES = ("paper", "centroid")  #: the feature pipelines the firmware implements (ids 1, 2)
FAMILIES = ("paper", "dscnn")  #: the model families the firmware implements (docs/learning.md)
START_TIMEOUT = 10.0  #: seconds to wait for the ``PTY <path>`` line
STOP_TIMEOUT = 5.0  #: seconds to wait after SIGTERM before SIGKILL


class VirtualBoardError(TinyfedError):
    """The virtual board cannot be built, started or stopped; the message says why."""


def cache_dir() -> Path:
    """Where an installed tinyfed builds its virtual board (``$XDG_CACHE_HOME/tinyfed``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tinyfed"


def default_firmware_dir() -> Path:
    """The firmware tree to build: the checkout's own, or the shipped sources copied to the
    user cache (one folder per version of the sources, made atomically)."""
    if PACKAGED.is_symlink() or not PACKAGED.is_dir():
        return PACKAGED.resolve()  # a source checkout (or a broken install: make will say)
    files = sorted(p for p in PACKAGED.rglob("*") if p.is_file() and "build" not in p.parts)
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(PACKAGED)).encode() + b"\0" + f.read_bytes())
    target = cache_dir() / f"firmware-{digest.hexdigest()[:12]}"
    if not (target / "Makefile").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="firmware-", dir=target.parent))
        for f in files:
            dest = staging / f.relative_to(PACKAGED)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        try:
            staging.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


def binary_path(firmware_dir: Path | None = None) -> Path:
    """The virtual board's binary in ``firmware_dir`` (default: :func:`default_firmware_dir`)."""
    return (firmware_dir or default_firmware_dir()) / BINARY_IN_TREE


def build_virtual_board(firmware_dir: Path | None = None) -> Path:
    """Run ``make host`` quietly in the firmware tree and return the virtual board's binary.

    ``firmware_dir`` defaults to :func:`default_firmware_dir`. Concurrent callers (parallel test
    sessions) are serialised with a lock file, so ``make`` never runs twice on the same tree at
    once. Raises :class:`VirtualBoardError` naming what is missing (make, a C++ compiler) or
    with the compiler's output if the build fails.
    """
    firmware_dir = firmware_dir or default_firmware_dir()
    make = shutil.which("make")
    compiler = os.environ.get("CXX") or "g++"
    if make is None or shutil.which(compiler) is None:
        missing = "`make`" if make is None else f"a C++ compiler ({compiler})"
        raise VirtualBoardError(
            f"{missing} is not installed: the virtual board is built from the firmware's C++ "
            "sources on first use; on Debian/Ubuntu run `sudo apt-get install g++ make`"
        )
    build_dir = firmware_dir / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [make, "-C", str(firmware_dir), "host"],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise VirtualBoardError(
            f"building the virtual board failed (make exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    binary = binary_path(firmware_dir)
    if not binary.exists():
        raise VirtualBoardError(f"make succeeded but {binary} does not exist")
    return binary


def _board_id_hex(board_id: str | bytes | None) -> str:
    if board_id is None:
        return secrets.token_hex(8)
    if isinstance(board_id, bytes):
        if len(board_id) != 8:
            raise ValueError(f"board id must be 8 bytes, got {len(board_id)}")
        return board_id.hex()
    text = board_id.lower()
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"board id must be 16 hex digits, got {board_id!r}")
    return text


class VirtualBoard:
    """One virtual board process.

    Args:
        script: a script of button presses (``press D2 clip.wav``, ``wait MS``, ``pace MS``,
            ``hold MS``); None for a board nobody presses.
        board_id: 8 bytes or 16 hex digits; random if None. Kept across :meth:`restart`.
        pipeline: feature pipeline, ``"paper"`` or ``"centroid"`` (the paper's family); the
            ``dscnn`` family computes ``"logmel40"`` only, whatever is given here.
        family: ``"paper"`` (the 650-16-3 network) or ``"dscnn"`` (the frozen extractor in
            the board's flash and a head trained on the board; docs/learning.md).
        extra_args: more command-line options (``--seed``, ``--lr``, ``--record-ms``...).
        binary: the executable; :func:`build_virtual_board`'s output if None (not rebuilt).
        workdir: folder for the log, stderr and the port symlink; a temporary one if None
            (removed by :meth:`close`).
    """

    def __init__(
        self,
        script: str | Path | None = None,
        board_id: str | bytes | None = None,
        pipeline: str = "centroid",
        extra_args: Sequence[str] = (),
        *,
        binary: Path | None = None,
        workdir: Path | None = None,
        family: str = "paper",
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
        if family == "dscnn":
            pipeline = "logmel40"
        elif pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
        self.family = family
        self.script = Path(script) if script is not None else None
        self.board_id = _board_id_hex(board_id)
        self.pipeline = pipeline
        self.extra_args = tuple(extra_args)
        self.binary = binary if binary is not None else binary_path()
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"tinyfed-vb-{self.board_id[-4:]}-"))
            if workdir is None
            else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "board.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pty: str | None = None

    # ------------------------------------------------------------------ properties

    @property
    def pty(self) -> str:
        """The pseudo-terminal of the running process (changes at every start)."""
        if self._pty is None:
            raise VirtualBoardError("the virtual board is not running")
        return self._pty

    @property
    def port(self) -> str:
        """A stable path to the board's pty (a symlink), valid across restarts."""
        return str(self.workdir / "tty")

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, or None when not started."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        cmd = [
            str(self.binary),
            "--pty",
            "--symlink",
            self.port,
            "--board-id",
            self.board_id,
            "--family",
            self.family,
            "--pipeline",
            self.pipeline,
            "--log",
            str(self.log_path),
        ]
        if self.script is not None:
            cmd += ["--script", str(self.script)]
        return cmd + list(self.extra_args)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the process and return its pty path once it is serving the link."""
        if self.running:
            raise VirtualBoardError(f"virtual board {self.board_id} is already running")
        if not self.binary.exists():
            raise VirtualBoardError(
                f"{self.binary} does not exist: call build_virtual_board() (make -C firmware host)"
            )
        with self.stderr_path.open("ab") as err:
            proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # a Ctrl-C at the terminal goes to the parent only
            )
        self._proc = proc
        assert proc.stdout is not None
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                self._reap(kill=True)
                raise VirtualBoardError(
                    f"virtual board did not start ({'timeout' if remaining <= 0 else 'exited'}):"
                    f" {self._stderr_tail()}"
                )
            ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith("PTY "):
            self._reap(kill=True)
            raise VirtualBoardError(f"unexpected first line from the virtual board: {text!r}")
        self._pty = text[4:]
        log.info("virtual board %s on %s (pid %d)", self.board_id, self._pty, proc.pid)
        return self._pty

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code, if any."""
        return self._reap(kill=False, timeout=timeout)

    def kill(self) -> int | None:
        """SIGKILL: the board loses power mid-sentence."""
        return self._reap(kill=True)

    def restart(self) -> str:
        """Stop and start again: a power cycle (new boot id, fresh model); returns the pty."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and remove the temporary folder (if this object made it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> VirtualBoard:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _reap(self, kill: bool, timeout: float = STOP_TIMEOUT) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("virtual board %s ignored SIGTERM; killing it", self.board_id)
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None
        self._pty = None
        return proc.returncode

    # ------------------------------------------------------------------ inspection

    def log_lines(self) -> list[str]:
        """The board's log so far (LED, state and event lines, all runs), without newlines."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def _stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(no stderr)"
