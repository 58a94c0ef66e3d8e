"""The byte-stream transport under the link protocol, one interface for every medium.

A transport moves raw bytes (a stream of COBS frames) between the gateway and one board. It
knows nothing of frames. Concrete transports are chosen by URL in :func:`open_transport`:

* ``serial:///dev/ttyACM0`` or ``serial://auto`` (pyserial; auto finds Nano 33 BLE boards by
  USB VID/PID),
* ``tcp://HOST:PORT`` (a board behind a serial-to-network bridge, e.g. ser2net),
* ``ble://AA:BB:CC:DD:EE:FF`` or ``ble://NAME`` (bleak; imported only when used).
"""

from __future__ import annotations

import abc


class TransportError(Exception):
    """The link to the board failed or closed (unplugged, out of range, reset)."""


class Transport(abc.ABC):
    """An open-able, reconnect-able byte stream to one board (asyncio)."""

    #: The URL this transport was made from, for logs and status messages.
    url: str

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """``serial``, ``tcp`` or ``ble``."""

    @property
    def max_write(self) -> int:
        """Largest single write the medium takes in one piece (BLE: negotiated MTU - 3)."""
        return 1 << 16

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; raise :class:`TransportError` naming the device if it cannot."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """Wait for and return the next bytes (non-empty); :class:`TransportError` on loss."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send bytes, split into pieces of at most :attr:`max_write`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; safe to call twice."""


class PassThroughTransport(Transport):
    """A transport that wraps another and passes everything through.

    Subclasses override :meth:`read` or :meth:`write` to observe or alter the bytes (the link
    bench records exchanges, the line-noise bench corrupts bytes).
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.url = inner.url

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def max_write(self) -> int:
        return self.inner.max_write

    async def open(self) -> None:
        await self.inner.open()

    async def read(self) -> bytes:
        return await self.inner.read()

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def close(self) -> None:
        await self.inner.close()
