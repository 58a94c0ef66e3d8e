"""Test helpers for the link client and the gateway: WAV clips, press scripts, a faulty wire.

:class:`Relay` sits between a host and a virtual board's pseudo-terminal and forwards bytes
both ways, frame by frame, through a real pseudo-terminal (or a TCP socket) of its own. A
``fault`` callback sees every frame and may change its bytes (flip a bit, drop it) or act at
that moment (kill the board mid-transfer): faults are injected on the wire, never by replacing
any of our code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
import uuid
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tinyfed import model
from tinyfed.link import frame, messages
from tinyfed.link.frame import Frame, FrameError
from tinyfed.link.spec import MsgType
from tinyfed.mqtt import contract, session as mqtt_session
from tinyfed.testbed import fake_board


def pack(msg_type: MsgType, seq: int, tail: bytes | str = b"", **fields: Any) -> bytes:
    """Wire bytes of a message given by its type and field names (the generated class's)."""
    if tail:
        fields["tail"] = tail
    return frame.pack(messages.BY_TYPE[msg_type](**fields), seq)


def unpack(f: Frame) -> dict[str, Any]:
    """The fields of a frame by name (``tail`` for its tail), for tests that compare many."""
    return dataclasses.asdict(frame.unpack(f))


SAMPLE_RATE = 16_000

#: ``fault(direction, frame_type, index_of_that_type, wire) -> wire`` where direction is
#: ``"to_board"`` or ``"to_host"``, wire is the frame with its delimiter, and the index counts
#: frames of that type and direction from 1. Return the bytes to forward (b"" drops it). The
#: same faults work on the relay below and on the in-process fake board.
Fault = fake_board.Fault


def write_clip(path: Path, seed: int) -> Path:
    """A one-second 16 kHz int16 clip: a tone whose pitch depends on ``seed``, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    audio = 8000 * np.sin(2 * np.pi * (300 + 150 * seed) * t) + rng.normal(0, 500, SAMPLE_RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(audio.astype("<i2").tobytes())
    return path


def write_script(
    folder: Path, presses: int, *, pace_ms: int = 50, wait_ms: int = 0, wait_model: bool = False
) -> Path:
    """A script pressing D2/D3/D4 in turn ``presses`` times, after ``wait_ms``.

    With ``wait_model`` the scripted user first waits until the board has applied a model
    downloaded in this boot (``wait model``, again after every reboot): steps trained before
    the gateway's model arrives are thrown away by design, so a test that needs its steps
    uploaded waits for the model instead of guessing how long a gateway takes to start.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"pace {pace_ms}", "hold 30"]
    if wait_model:
        lines.append("wait model")
    if wait_ms:
        lines.append(f"wait {wait_ms}")
    for i in range(presses):
        button = ("D2", "D3", "D4")[i % 3]
        clip = write_clip(folder / f"clip{i % 3}.wav", i % 3)
        lines.append(f"press {button} {clip.name}")
    path = folder / "script.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def flip_byte(wire: bytes) -> bytes:
    """The frame with one byte in its middle changed (never into a delimiter)."""
    i = len(wire) // 2
    new = wire[i] ^ 0x55 or wire[i] ^ 0xAA
    return wire[:i] + bytes([new]) + wire[i + 1 :]


def corrupt_nth(direction: str, msg_type: int, n: int) -> Fault:
    """A fault that flips a byte of the ``n``-th frame of ``msg_type`` going ``direction``."""

    def fault(d: str, t: int, index: int, wire: bytes) -> bytes:
        return flip_byte(wire) if (d, t, index) == (direction, msg_type, n) else wire

    return fault


class Relay:
    """Forward a byte stream between a host-side endpoint and a board's pty, frame by frame.

    Args:
        board_port: the board's pty (or its stable symlink).
        fault: see :data:`Fault`; None forwards everything unchanged.
        tcp: serve the host on a TCP port of 127.0.0.1 instead of a pseudo-terminal.
    """

    def __init__(
        self,
        board_port: str,
        fault: Fault | None = None,
        *,
        tcp: bool = False,
        link: Path | None = None,
    ) -> None:
        self.board_port = board_port
        self.fault = fault
        self.link = link
        self.counts: dict[tuple[str, int], int] = {}
        self.changed = 0  #: frames the fault changed or dropped
        self._board = os.open(board_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._bufs = {"to_board": bytearray(), "to_host": bytearray()}
        self._stop = threading.Event()
        self._host: int = -1
        self._keep: int = -1
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        if tcp:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.url = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        else:
            self._new_pty()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    def _new_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._host, self._keep = master, slave  # keep the slave open: no EIO between opens
        name = os.ttyname(slave)
        if self.link is None:
            self.url = f"serial://{name}"
            return
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, self.link)  # like a USB board re-enumerating under a stable name
        self.url = f"serial://{self.link}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._hang_up()
        with contextlib.suppress(OSError):
            os.close(self._board)
        for sock in (self._conn, self._listener):
            if sock is not None:
                sock.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the relay thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._listener is not None and self._conn is None:
                waiting, _, _ = select.select([self._listener], [], [], 0.05)
                if waiting:
                    self._conn, _ = self._listener.accept()
                    self._host = self._conn.fileno()
                continue
            ready, _, _ = select.select([self._host, self._board], [], [], 0.05)
            try:
                if self._host in ready:
                    self._pump(self._host, self._board, "to_board")
                if self._board in ready:
                    self._pump(self._board, self._host, "to_host")
            except OSError:
                self._hang_up()  # the board went away (killed): so does the host's device
                if self.link is None or not self._replug():
                    return

    def _replug(self) -> bool:
        """Wait for the board to come back, then offer the host a new device; False: stopped."""
        with contextlib.suppress(OSError):
            os.close(self._board)
        while not self._stop.wait(0.05):
            try:
                self._board = os.open(self.board_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError:
                continue
            for buf in self._bufs.values():
                buf.clear()
            self._new_pty()
            return True
        return False

    def _hang_up(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for fd in (self._host, self._keep):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._host = self._keep = -1

    def _pump(self, src: int, dst: int, direction: str) -> None:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return
        if not data:
            raise OSError("closed")
        buf = self._bufs[direction]
        buf += data
        out = bytearray()
        while (end := buf.find(b"\x00")) >= 0:
            wire = bytes(buf[: end + 1])
            del buf[: end + 1]
            out += self._apply(direction, wire)
        if out:
            _write_all(dst, bytes(out))

    def _apply(self, direction: str, wire: bytes) -> bytes:
        if self.fault is None or len(wire) < 2:
            return wire
        try:
            msg_type = frame.decode_frame(wire[:-1]).type
        except FrameError:
            return wire
        key = (direction, msg_type)
        self.counts[key] = self.counts.get(key, 0) + 1
        out = self.fault(direction, msg_type, self.counts[key], wire)
        if out != wire:
            self.changed += 1
        return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 0.05)


# ----------------------------------------------------------------------------- gateways


class Gateway:
    """``tinyfed gateway`` as a real process; its log goes to a file the test can search."""

    def __init__(self, workdir: Path, *args: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"gateway-{len(list(workdir.glob('gateway-*.log')))}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tinyfed.cli", "gateway", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until ``needle`` appears ``count`` times in the log; return the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text
            if text.count(needle) >= count:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the gateway log after {timeout} s:\n{self.text}")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()


class Peer:
    """A scripted MQTT peer of a fleet: publishes global models, records what it receives.

    With ``session=True`` it keeps a persistent session on the broker, so QoS 1 messages
    published while it is disconnected (a broker restart) wait for it.
    """

    def __init__(self, broker_url: str, fleet: str, *, session: bool = False) -> None:
        self.topics = contract.Topics(fleet)
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._broker = mqtt_session.parse_broker_url(broker_url)
        self.client = mqtt_session.make_client(self._broker, f"peer-{fleet}-{uuid.uuid4().hex[:6]}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if session else 0
        self.client.connect(
            self._broker.host, self._broker.port, clean_start=not session, properties=props
        )
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("the test's MQTT peer could not connect")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topics.base + "workers/#", qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_global(
        self,
        round: int,
        params: model.F32,
        local_steps: int = 3,
        pipeline: str = "centroid",
        lr: float = 0.1,
        *,
        classes: tuple[str, ...] = (),
    ) -> contract.GlobalModel:
        g = contract.GlobalModel(
            round=round,
            params=params,
            hyper=contract.HyperParams(lr=lr, momentum=0.9, local_steps=local_steps),
            pipeline=pipeline,
            created=time.time(),
            classes=classes,
        )
        self.publish_raw(contract.encode_global(g))
        return g

    def publish_raw(self, payload: bytes) -> None:
        info = self.client.publish(self.topics.global_model, payload, qos=1, retain=True)
        info.wait_for_publish(10)

    def of_kind(self, kind: str) -> list[bytes]:
        with self._cond:
            return [p for t, p in self.messages if t.endswith("/" + kind)]

    def updates(self) -> list[contract.ModelUpdate]:
        return [contract.decode_update(p) for p in self.of_kind("update")]

    def losses(self) -> list[contract.LossEvent]:
        return [contract.decode_loss(p) for p in self.of_kind("loss")]

    def statuses(self) -> list[contract.WorkerStatus]:
        return [contract.decode_worker_status(p) for p in self.of_kind("status")]

    def wait(self, what: str, check: Callable[[Peer], bool], timeout: float = 15.0) -> None:
        """Wait until ``check(self)`` holds; ``what`` says what was awaited if it never does."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; got {self.summary()}")
                self._cond.wait(min(remaining, 0.1))

    def summary(self) -> str:
        return ", ".join(t.rsplit("/", 1)[-1] for t, _ in self.messages[-30:]) or "nothing"
