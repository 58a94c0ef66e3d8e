"""Start a private Mosquitto broker on a free loopback port (tests and the demo fleet).

The configuration is generated into a temporary folder; the broker can be stopped, killed and
restarted on the *same* port, which the fault tests need. Persistence is on by default so a
restart keeps retained messages, as a deployed broker would. The broker has the deployed
broker's limits (:data:`LIMITS`, the same figures as ``deploy/mosquitto/mosquitto.conf``; see
docs/deploy.md, "Limits") and, on request, a TLS listener beside its plain one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tinyfed.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerLimits:
    """Mosquitto's packet and per-client queue limits (docs/deploy.md, "Limits").

    Sized for a 10,000-board fleet whose updates (~42 KB each) queue for the aggregator while it
    is down: up to 12,782 updates of 42 KB (512 MiB) or 50,000 messages, whichever comes first.
    Beyond either, Mosquitto drops further QoS 1 messages for that client silently (the publisher
    still gets a successful PUBACK); a gateway re-sends an update that got no receipt.
    """

    #: Largest MQTT packet a client may send (it is disconnected otherwise): twice the
    #: contract's 64 KiB payload limit, room for the topic and the properties.
    max_packet_size: int = 128 * 1024
    #: Unacknowledged QoS 1 messages the broker sends a client that announces no Receive
    #: Maximum, and the Receive Maximum it announces to clients (Mosquitto's default, written out).
    max_inflight_messages: int = 20
    #: QoS 1 messages queued per client beyond those in flight.
    max_queued_messages: int = 50_000
    #: Payload bytes queued per client beyond those in flight.
    max_queued_bytes: int = 512 * 1024 * 1024

    def config_lines(self) -> list[str]:
        """The limits as mosquitto.conf lines."""
        return [
            f"max_packet_size {self.max_packet_size}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
        ]


#: The limits of the deployed broker (``deploy/mosquitto/mosquitto.conf``), and the default here.
LIMITS = BrokerLimits()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS listener: the CA bundle, the server certificate (chain) and its key."""

    cafile: Path
    certfile: Path
    keyfile: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or :class:`UsageError` saying how to install it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise UsageError("mosquitto is not installed: run `sudo apt-get install mosquitto`")


class Mosquitto:
    """A Mosquitto process with a generated configuration.

    Args:
        port: TCP port on 127.0.0.1 of the plain MQTT listener; a free one if None.
        workdir: folder for config, persistence and log; a temporary one if None.
        persistence: keep retained messages and sessions across restarts.
        extra_config: more configuration lines (e.g. ``password_file``, ``acl_file``). They come
            after the plain listener, so listener options among them apply to that listener,
            and a global option among them overrides the generated one.
        allow_anonymous: accept clients without credentials.
        limits: packet and queue limits; the deployed broker's by default.
        autosave_interval: seconds between saves of the persistence file. 1 (not the deployed
            broker's 10) because this broker's database is a few KB and the fault tests kill
            it right after publishing.
        tls: add a TLS listener with these files on :attr:`tls_port` (127.0.0.1).
        tls_port: TCP port of the TLS listener; a free one if None.
    """

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        *,
        persistence: bool = True,
        extra_config: str = "",
        allow_anonymous: bool = True,
        limits: BrokerLimits = LIMITS,
        autosave_interval: int = 1,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = (tls_port or free_port()) if tls else None
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="tinyfed-mosquitto-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        lines = []
        if tls is not None:
            # First, so that listener options in extra_config apply to the plain listener.
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {tls.cafile}",
                f"certfile {tls.certfile}",
                f"keyfile {tls.keyfile}",
                "require_certificate false",
            ]
        lines += [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"autosave_interval {autosave_interval}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            *limits.config_lines(),
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # mosquitto drops to 'mosquitto' otherwise
        self.config_path.write_text("\n".join(lines) + "\n" + extra_config)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The plain listener: ``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """The TLS listener as ``mqtts://localhost:PORT`` (name the server certificate for)."""
        if self.tls_port is None:
            raise ValueError("this broker has no TLS listener (Mosquitto(tls=...))")
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until its listeners accept TCP connections."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        waiting = [p for p in (self.port, self.tls_port) if p is not None]
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.05)
            if not waiting:
                return
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on port {waiting[0]} within {timeout} s")

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its configuration again (password and ACL files included)."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("mosquitto is not running")
        self._proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM; the broker saves its persistence file)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill abruptly (SIGKILL), like a crash or a power cut."""
        self._end(signal.SIGKILL)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the broker and delete its temporary folder."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
