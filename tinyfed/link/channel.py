"""Frames in and out of one board: the reader, the dispatch table, and waiting for answers.

:class:`Channel` owns the transport and everything that happens per frame: it numbers and
writes the host's frames, reads the board's in a task of its own, and dispatches each by its
message class (the generated :data:`tinyfed.link.messages.BY_TYPE` decodes it): replies to the
command that waits, a HELLO to whoever asked and, with a new boot id, to the events (a reboot
also fails the command that runs, :class:`~tinyfed.link.errors.BoardResetError`), LOSS, INFER,
STATE and LOG to the :class:`~tinyfed.link.events.EventQueue`. It counts frames, bytes, bad
frames and gaps in the board's sequence numbers in :attr:`Channel.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tinyfed.link import frame, messages
from tinyfed.link.errors import (
    RETRYABLE_ERRORS,
    BoardResetError,
    LinkClosedError,
    LinkError,
    LinkTimeoutError,
)
from tinyfed.link.events import EVENTS, REPLIES, Event, EventQueue, Hello, Reply
from tinyfed.link.frame import Frame, FrameError
from tinyfed.link.stats import LinkStats, log
from tinyfed.link.transports.base import Transport, TransportError

T = TypeVar("T")
R = TypeVar("R", bound=Reply)


@dataclass(frozen=True)
class LinkSettings:
    """How patient a link is; see :class:`~tinyfed.link.client.BoardLink` for each."""

    timeout: float = 1.0
    retries: int = 5
    read_batch: int = 64
    busy_timeout: float = 15.0


class Channel:
    """The frame layer of one link (see the module docstring)."""

    def __init__(
        self, transport: Transport, settings: LinkSettings, *, open_transport: bool = True
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.stats = LinkStats()
        self.board: Hello | None = None  #: the last HELLO seen
        self.replies: asyncio.Queue[Reply] = asyncio.Queue()  #: for the command that runs
        self.hellos: asyncio.Queue[Hello] = asyncio.Queue()  #: for HELLO_REQ and RESET
        self.events = EventQueue(self.stats, self.url)
        self._open_transport = open_transport
        self._parser = frame.FrameParser()
        self._seq = 0
        self._board_seq: int | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None
        self._reset_seen = asyncio.Event()
        #: What to do with each board-to-host message: the dispatch table (commands the board
        #: should never send are absent, and logged as unexpected).
        self._handlers: dict[type[messages.Message], Callable[[Any], None]] = {
            **dict.fromkeys(REPLIES, self.replies.put_nowait),
            **dict.fromkeys(EVENTS, self.events.post),
            messages.Error: self._on_error,
            Hello: self._on_hello,
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport (unless told not to) and start reading frames."""
        if self._open_transport:
            await self.transport.open()
        self._closed = None
        self._reader = asyncio.create_task(self._read_loop(), name=f"link-reader {self.url}")

    async def close(self) -> None:
        """Stop reading and close the transport; safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if self._closed is None:
            self._closed = LinkClosedError(f"link to {self.url} closed")
        if self._open_transport:
            await self.transport.close()

    @property
    def url(self) -> str:
        return getattr(self.transport, "url", self.transport.kind)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def wait_closed(self) -> BaseException:
        """Wait until the link fails or closes; return why."""
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._reader)
        return self._closed or LinkClosedError(f"link to {self.url} closed")

    def check_open(self) -> None:
        if self._closed is not None:
            raise LinkClosedError(f"link to {self.url} is closed: {self._closed}")
        if self._reader is None:
            raise LinkError("BoardLink not started: use `async with BoardLink(transport)`")

    # -- events ---------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next unsolicited frame; see :meth:`~tinyfed.link.client.BoardLink.next_event`."""
        queue = self.events.queue
        while True:
            if not queue.empty():
                return queue.get_nowait()
            if self._closed is not None:
                raise LinkClosedError(str(self._closed)) from self._closed
            getter = asyncio.ensure_future(queue.get())
            closer = asyncio.ensure_future(self.wait_closed())
            try:
                done, _ = await asyncio.wait(
                    {getter, closer}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                closer.cancel()
                if not getter.done():
                    getter.cancel()
            if getter in done:
                return getter.result()
            if not done:
                raise TimeoutError(f"no event from {self.url} within {timeout} s")

    # -- frames out -----------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    async def send(self, command: messages.MessageBase, seq: int) -> None:
        self._reset_seen.clear()
        self.stats.frames_out += 1
        await self.write(frame.pack(command, seq))

    async def write(self, wire: bytes) -> None:
        self.check_open()
        self.stats.bytes_out += len(wire)
        try:
            await self.transport.write(wire)
        except TransportError as exc:
            self._closed = exc
            raise LinkClosedError(f"link to {self.url} failed: {exc}") from exc

    # -- waiting for the board ------------------------------------------------------------

    @staticmethod
    def drain(queue: asyncio.Queue[Any]) -> None:
        while not queue.empty():
            queue.get_nowait()

    async def wait_reply(
        self, deadline: float, kind: type[R], seq: int | None
    ) -> R | messages.Error:
        """The next reply of class ``kind``, or an ERROR naming ``seq`` (or any seq)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeoutError(f"no {kind.TYPE.name} from {self.url}")
            reply = await self.wait(self.replies.get(), "reply", timeout=remaining, reset_ok=False)
            if isinstance(reply, kind):
                if (
                    seq is not None
                    and isinstance(reply, messages.Ack | messages.ModelInfo)
                    and reply.ref_seq != seq
                ):
                    continue  # the answer to an earlier try
                return reply
            if isinstance(reply, messages.Error) and (
                seq is None or reply.ref_seq == seq or reply.code in RETRYABLE_ERRORS
            ):
                return reply

    async def wait(
        self,
        awaitable: Awaitable[T],
        what: str,
        *,
        timeout: float | None = None,
        reset_ok: bool,
    ) -> T:
        """Await ``awaitable`` unless the link closes, the board reboots, or time runs out."""
        self.check_open()
        timeout = self.settings.timeout if timeout is None else timeout
        task = asyncio.ensure_future(awaitable)
        closer = asyncio.ensure_future(self.wait_closed())
        reset = asyncio.ensure_future(self._reset_seen.wait())
        waiters: set[asyncio.Future[Any]] = {task, closer}
        if not reset_ok:
            waiters.add(reset)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closer.cancel()
            reset.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        if closer in done:
            raise LinkClosedError(f"link to {self.url} closed: {self._closed}") from self._closed
        if reset in done:
            raise BoardResetError(f"board on {self.url} rebooted while waiting for {what}")
        raise LinkTimeoutError(f"no {what} from {self.url} within {self.settings.timeout} s")

    # -- frames in ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.transport.read()
                self.stats.bytes_in += len(data)
                for item in self._parser.feed(data):
                    if isinstance(item, FrameError):
                        self.stats.bad_frames += 1
                        log.debug("%s: bad frame from the board: %s", self.url, item)
                    else:
                        self._dispatch(item)
        except asyncio.CancelledError:
            raise
        except TransportError as exc:
            log.info("%s: link lost: %s", self.url, exc)
            self._closed = exc
        except Exception as exc:
            log.exception("%s: link reader failed", self.url)
            self._closed = exc

    def _dispatch(self, f: Frame) -> None:
        self.stats.frames_in += 1
        if self._board_seq is not None and f.seq != (self._board_seq + 1) & 0xFFFF:
            self.stats.lost_frames += 1
        self._board_seq = f.seq
        try:
            message = frame.unpack(f)
        except FrameError as exc:
            self.stats.bad_frames += 1
            log.warning("%s: malformed %s frame: %s", self.url, f.name, exc)
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            log.warning("%s: unexpected %s frame from the board", self.url, f.name)
        else:
            handler(message)

    def _on_error(self, error: messages.Error) -> None:
        log.debug("%s: ERROR %s for seq %d: %s", self.url, error.code, error.ref_seq, error.tail)
        self.replies.put_nowait(error)

    def _on_hello(self, hello: Hello) -> None:
        previous, self.board = self.board, hello
        if previous is not None and previous.boot_id != hello.boot_id:
            log.info(
                "%s: board %s rebooted (boot id %s -> %s)",
                self.url,
                hello.board_hex,
                previous.boot_hex,
                hello.boot_hex,
            )
            self._reset_seen.set()
        self.hellos.put_nowait(hello)
        if previous is None or previous.boot_id != hello.boot_id:
            self.events.post(hello)  # a board seen for the first time, or rebooted
