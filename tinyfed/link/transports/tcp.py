"""``tcp://HOST:PORT``: a board behind a serial-to-network bridge (ser2net, socat, ESP-Link)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from tinyfed.link.transports.base import Transport, TransportError

READ_SIZE = 4096
CONNECT_TIMEOUT = 5.0


class TcpTransport(Transport):
    """A raw TCP byte stream (no telnet negotiation: configure the bridge in raw mode)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            raise ValueError(f"not a tcp://HOST:PORT URL: {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def kind(self) -> str:
        return "tcp"

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {self.url}: {exc}") from exc

    async def read(self) -> bytes:
        if self._reader is None:
            raise TransportError(f"{self.url} is not open")
        try:
            data = await self._reader.read(READ_SIZE)
        except OSError as exc:
            raise TransportError(f"{self.url}: {exc}") from exc
        if not data:
            raise TransportError(f"{self.url}: the bridge closed the connection")
        return data

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise TransportError(f"{self.url} is not open")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise TransportError(f"{self.url}: {exc}") from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
