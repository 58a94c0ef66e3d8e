"""One command at a time, each retried: the link client's request/reply layer.

:class:`Requests` runs the host's commands over a :class:`~tinyfed.link.channel.Channel`, one
at a time (:meth:`Requests.exclusive`): a command is sent again after a timeout or an ERROR
saying its frame arrived mangled, ``retries`` times, and while the board answers BUSY (it is
recording or computing) for up to ``busy_timeout`` seconds. It also keeps the record of every
finished transfer (:attr:`Requests.transfers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

from tinyfed.link import messages
from tinyfed.link.channel import Channel
from tinyfed.link.errors import RETRYABLE_ERRORS, BoardError, LinkError, LinkTimeoutError
from tinyfed.link.events import Hello, ModelInfo
from tinyfed.link.spec import ErrorCode
from tinyfed.link.stats import LinkStats, TransferRecord, log
from tinyfed.link.transports.base import TransportError

T = TypeVar("T")


class Requests:
    """Commands over ``channel``, serialised and retried (see the module docstring)."""

    def __init__(self, channel: Channel) -> None:
        self.ch = channel
        self.settings = channel.settings
        self.transfers: deque[TransferRecord] = deque(maxlen=100)
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """The link to oneself: a second command waits until the first is done."""
        async with self._lock:
            self.ch.check_open()
            yield

    def tries(self) -> Iterator[int]:
        """``retries + 1`` attempts of a whole operation; each after the first is a retry."""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self.ch.stats.retries += 1
            yield attempt

    async def command(self, name: str, once: Callable[[], Awaitable[T]]) -> T:
        async with self.exclusive():
            return await self.retrying(name, once)

    async def retrying(self, name: str, once: Callable[[], Awaitable[T]]) -> T:
        """Run ``once`` until it succeeds; retry timeouts and mangled frames ``retries`` times,
        and BUSY answers (the board is recording or computing) for up to ``busy_timeout`` s."""
        delay = 0.01
        failures = 0
        busy_until = time.monotonic() + self.settings.busy_timeout
        while True:
            try:
                return await once()
            except LinkTimeoutError:
                log.debug("%s: %s timed out (try %d)", self.ch.url, name, failures + 1)
            except BoardError as exc:
                if exc.code == ErrorCode.BUSY and time.monotonic() < busy_until:
                    await asyncio.sleep(delay)
                    delay = min(0.2, delay * 2)
                    continue
                if exc.code not in RETRYABLE_ERRORS:
                    raise
                log.debug("%s: %s mangled on the way (%s)", self.ch.url, name, exc)
            failures += 1
            if failures > self.settings.retries:
                raise LinkTimeoutError(
                    f"{name}: no answer from {self.ch.url} after {failures} tries"
                )
            self.ch.stats.retries += 1

    async def send_new(self, command: messages.MessageBase) -> int:
        """Send ``command`` as a new request (earlier replies dropped); return its seq."""
        self.ch.drain(self.ch.replies)
        seq = self.ch.next_seq()
        await self.ch.send(command, seq)
        self.ch.stats.round_trips += 1
        return seq

    async def request(self, command: messages.MessageBase) -> messages.Ack:
        """Send a command and wait for its ACK (or ERROR, raised as :class:`BoardError`)."""
        seq = await self.send_new(command)
        deadline = time.monotonic() + self.settings.timeout
        while True:
            reply = await self.ch.wait_reply(deadline, messages.Ack, seq)
            if isinstance(reply, messages.Error):
                raise BoardError(reply.code, reply.tail, command.TYPE.name)
            if reply.ref_seq == seq:
                return reply

    async def hello_once(self) -> Hello:
        self.ch.drain(self.ch.hellos)
        await self.ch.send(messages.HelloReq(), self.ch.next_seq())
        self.ch.stats.round_trips += 1
        return await self.ch.wait(self.ch.hellos.get(), "HELLO", reset_ok=True)

    async def reset_once(self) -> Hello:
        self.ch.drain(self.ch.hellos)
        await self.request(messages.Reset())
        return await self.ch.wait(self.ch.hellos.get(), "HELLO after RESET", reset_ok=True)

    async def model_info_once(self) -> ModelInfo:
        seq = await self.send_new(messages.GetModel())
        deadline = time.monotonic() + self.settings.timeout
        reply = await self.ch.wait_reply(deadline, messages.ModelInfo, seq)
        if isinstance(reply, messages.Error):
            raise BoardError(reply.code, reply.tail, "GET_MODEL")
        return reply

    async def abort_quietly(self) -> None:
        if self.ch.closed:
            return
        with contextlib.suppress(LinkError, TransportError):
            await self.ch.send(messages.XferAbort(), self.ch.next_seq())

    def record(self, what: str, size: int, start: float, before: LinkStats) -> TransferRecord:
        """Keep and log a finished transfer that began at ``start`` with ``before`` counters."""
        delta = self.ch.stats.since(before)
        record = TransferRecord(
            what=what,
            size=size,
            seconds=time.perf_counter() - start,
            round_trips=delta.round_trips,
            retries=delta.retries,
            frames=delta.frames_in + delta.frames_out,
        )
        self.transfers.append(record)
        log.info("%s: %s", self.ch.url, record)
        return record


class Exchange:
    """A multi-frame operation over :class:`Requests` (a download or an upload)."""

    def __init__(self, requests: Requests) -> None:
        self.rq = requests
        self.ch = requests.ch
        self.settings = requests.settings
        self.url = requests.ch.url
        self.stats = requests.ch.stats
