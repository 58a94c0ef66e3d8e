"""``serial:///dev/ttyACM0`` and ``serial://auto``: a board on USB serial (or a pseudo-terminal).

pyserial opens and configures the port (raw mode, 115,200 baud, DTR asserted, an exclusive lock
so two gateways never share a board); reads and writes then go through the event loop on the
port's file descriptor, so no thread is needed (POSIX only). ``serial://auto`` picks the one
Arduino Nano 33 BLE found by USB VID/PID, and names every port it saw if there is none or more
than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from urllib.parse import unquote

import serial
from serial.tools import list_ports

from tinyfed.link import spec
from tinyfed.link.transports.base import Transport, TransportError

READ_SIZE = 4096
AUTO = "auto"


def find_boards() -> tuple[list[str], list[str]]:
    """Ports of Nano 33 BLE boards by USB VID/PID, and a description of every port seen."""
    found: list[str] = []
    seen: list[str] = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        ids = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else "no USB id"
        seen.append(f"{port.device} ({ids}, {port.description})")
        if (port.vid, port.pid) in spec.USB_VID_PID:
            found.append(port.device)
    return found, seen


def resolve_auto() -> str:
    """The device path of the single Nano 33 BLE attached; :class:`TransportError` otherwise."""
    found, seen = find_boards()
    wanted = ", ".join(f"{v:04x}:{p:04x}" for v, p in spec.USB_VID_PID)
    ports = "; ".join(seen) or "none"
    if not found:
        raise TransportError(
            f"serial://auto found no Arduino Nano 33 BLE (USB {wanted}); serial ports: {ports}"
        )
    if len(found) > 1:
        raise TransportError(
            f"serial://auto found {len(found)} boards ({', '.join(found)}); run one gateway "
            f"per board with --device serial://PATH"
        )
    return found[0]


class SerialTransport(Transport):
    """A serial port or pseudo-terminal, read and written through the event loop."""

    def __init__(self, url: str, *, baudrate: int = spec.BAUD_RATE) -> None:
        scheme, sep, rest = url.partition("://")
        if scheme != "serial" or not sep or not rest:
            raise ValueError(f"not a serial:// URL: {url!r}")
        self.url = url
        self.path = unquote(rest)
        self.baudrate = baudrate
        self.device = ""  #: the path actually opened (resolved for serial://auto)
        self._port: serial.Serial | None = None
        self._fd = -1

    @property
    def kind(self) -> str:
        return "serial"

    async def open(self) -> None:
        path = resolve_auto() if self.path == AUTO else self.path
        try:
            port = serial.Serial(path, self.baudrate, timeout=0, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open {path}: {exc}") from exc
        self._port = port
        self._fd = port.fileno()
        # pyserial's timeout=0 means VMIN=0, where an empty read returns b"" instead of
        # EAGAIN; VMIN=1 with O_NONBLOCK makes b"" mean only "the device went away".
        attrs = termios.tcgetattr(self._fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        os.set_blocking(self._fd, False)
        self.device = path

    async def read(self) -> bytes:
        while True:
            fd = self._check()
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                await self._ready(fd, write=False)
                continue
            except OSError as exc:
                raise TransportError(f"{self.device}: {_why(exc)}") from exc
            if not data:
                raise TransportError(f"{self.device}: the device closed (unplugged?)")
            return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            fd = self._check()
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await self._ready(fd, write=True)
                continue
            except OSError as exc:
                raise TransportError(f"{self.device}: {_why(exc)}") from exc
            view = view[sent:]

    async def close(self) -> None:
        port, self._port, self._fd = self._port, None, -1
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()

    def _check(self) -> int:
        if self._port is None:
            raise TransportError(f"{self.url} is not open")
        return self._fd

    async def _ready(self, fd: int, *, write: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if write:
            loop.add_writer(fd, wake)
        else:
            loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)


def _why(exc: OSError) -> str:
    if exc.errno == errno.EIO:
        return "input/output error (the board was unplugged or reset)"
    return exc.strerror or str(exc)
