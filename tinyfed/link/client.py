"""The host side of the link protocol: :class:`BoardLink` drives one board over any transport.

It turns the frames of :mod:`tinyfed.link.spec` into awaitable commands and an event stream:

* commands (:meth:`BoardLink.hello`, :meth:`~BoardLink.set_params`,
  :meth:`~BoardLink.put_model`, :meth:`~BoardLink.get_model`, :meth:`~BoardLink.send_sample`,
  :meth:`~BoardLink.reset`) run one at a time, each retried on a timeout or on a frame the
  board could not read;
* host-to-board transfers are sent in windows of ``window`` chunks (the board's HELLO says
  how many it buffers), acknowledged once per window; a gap acknowledgement or a timeout
  goes back to the first missing byte (go-back-N); ``XFER_END`` makes the board verify the
  end-to-end CRC-32 before it applies anything;
* model uploads read the model in batches of chunks, re-read what is missing, and check the
  CRC-32 of the whole model against ``MODEL_INFO``; a mismatch (the board trained in between)
  starts again;
* a transfer gives up only after ``retries + 1`` tries in a row that moved nothing: any chunk
  newly acknowledged (down) or newly received (up) restores the whole retry budget, so a noisy
  line slows a transfer down but does not fail it while it still makes progress;
* unsolicited frames (LOSS, INFER, STATE, LOG, and a HELLO with a boot id not seen before)
  go to an event queue
  read with :meth:`BoardLink.next_event`. A HELLO with a new boot id while a command runs fails
  that command with :class:`BoardResetError`, so no transfer ever straddles a reboot.

Every command counts its round trips (times the host waited for the board) and the bytes each
way in :attr:`BoardLink.stats`; every transfer is logged with its size and duration and kept in
:attr:`BoardLink.transfers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.errors import TinyfedError
from tinyfed.link import frame, messages, spec
from tinyfed.link.frame import Frame, FrameError
from tinyfed.link.spec import ErrorCode, XferTarget
from tinyfed.link.transports.base import Transport, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")

N_FEATURES = model.N_INPUTS  #: one FEATURES sample: 650 float32
N_AUDIO = 16_000  #: one AUDIO sample: 1 s at 16 kHz, int16
#: ERROR codes that mean "your frame never arrived intact": the same command is sent again.
RETRYABLE_ERRORS = frozenset(
    {ErrorCode.BAD_CRC, ErrorCode.BAD_ENCODING, ErrorCode.OVERFLOW, ErrorCode.BAD_LENGTH}
)
EVENT_QUEUE_LIMIT = 10_000  #: unread events kept before the oldest is dropped (with a warning)


class LinkError(TinyfedError):
    """A command failed after its retries, or the link closed under it."""


class LinkTimeoutError(LinkError):
    """The board did not answer in time, after every retry."""


class BoardError(LinkError):
    """The board answered ERROR; ``code`` is the :class:`~tinyfed.link.spec.ErrorCode`."""

    def __init__(self, code: int, text: str, command: str) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"board refused {command}: {name} ({text})")
        self.code = code
        self.text = text


class BoardResetError(LinkError):
    """The board rebooted (a HELLO with a new boot id) while a command was running."""


class LinkClosedError(LinkError):
    """The transport closed (board unplugged, out of range); reopen and start again."""


# ----------------------------------------------------------------------------- board frames


#: The board's frames as the client hands them on: the generated message classes
#: (tinyfed/link/messages.py), under the names the gateway reads them by.
Hello = messages.Hello  #: who the board is, what it runs, where its model stands
ModelInfo = messages.ModelInfo  #: the board's model at the moment it was asked
LossReport = messages.Loss  #: one training step (loss and outputs before its update)
InferReport = messages.Infer  #: one inference (``prediction`` None: nothing detected)
StateReport = messages.State  #: the board's state or LEDs changed
LogLine = messages.Log  #: a line the board logged (``text``; level 0 debug .. 3 error)

Event = Hello | LossReport | InferReport | StateReport | LogLine
#: Frames that answer a command, queued for the command that waits.
Reply = messages.Ack | messages.Error | messages.XferAck | messages.ModelInfo | messages.ModelChunk
REPLIES = (messages.Ack, messages.Error, messages.XferAck, messages.ModelInfo, messages.ModelChunk)
R = TypeVar("R", bound=Reply)


@dataclass
class LinkStats:
    """Counters of one link: what the bench reports and the gateway logs."""

    round_trips: int = 0  #: times the host waited for the board's answer
    frames_out: int = 0
    frames_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    retries: int = 0  #: commands or windows sent again
    bad_frames: int = 0  #: frames from the board rejected by the codec (CRC, COBS, length)
    lost_frames: int = 0  #: gaps in the board's sequence numbers
    events_dropped: int = 0

    def snapshot(self) -> LinkStats:
        return LinkStats(**self.__dict__)

    def since(self, before: LinkStats) -> LinkStats:
        return LinkStats(**{k: v - getattr(before, k) for k, v in self.__dict__.items()})


@dataclass(frozen=True)
class TransferRecord:
    """One finished transfer, for logs and the bench."""

    what: str  #: "model down", "model up", "features down", ...
    size: int
    seconds: float
    round_trips: int
    retries: int
    frames: int  #: frames sent and received for it

    def __str__(self) -> str:
        rate = self.size / self.seconds / 1000 if self.seconds > 0 else float("inf")
        return (
            f"{self.what}: {self.size} B in {self.seconds * 1000:.1f} ms ({rate:.0f} kB/s, "
            f"{self.round_trips} round trips, {self.frames} frames, {self.retries} retries)"
        )


@dataclass
class _Inbox:
    """Replies waiting to be picked up by the command that runs (one at a time)."""

    replies: asyncio.Queue[Reply] = field(default_factory=asyncio.Queue)
    hello: asyncio.Queue[Hello] = field(default_factory=asyncio.Queue)


# ----------------------------------------------------------------------------- the link


class BoardLink:
    """Async client of one board over a :class:`~tinyfed.link.transports.base.Transport`.

    Use as ``async with BoardLink(transport) as link:``; that opens the transport and starts the
    reader. Commands are serialised: a second caller waits for the first.

    Args:
        transport: the byte stream to the board (not yet open).
        timeout: seconds to wait for one answer (or for the next chunk of an upload).
        retries: times a command, window or read is sent again before :class:`LinkTimeoutError`;
            in a transfer, tries in a row without progress (a newly acknowledged or received
            chunk restores the budget).
        read_batch: chunks asked for in one READ (at most 255).
        busy_timeout: seconds a command keeps being retried while the board answers BUSY.
        open_transport: whether entering the context opens the transport (and leaving closes).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = 1.0,
        retries: int = 5,
        read_batch: int = 64,
        busy_timeout: float = 15.0,
        open_transport: bool = True,
    ) -> None:
        if not 1 <= read_batch <= 255:
            raise ValueError(f"read_batch must be 1..255, got {read_batch}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.read_batch = read_batch
        self.busy_timeout = busy_timeout
        self.stats = LinkStats()
        self.transfers: deque[TransferRecord] = deque(maxlen=100)
        self.board: Hello | None = None  #: the last HELLO seen
        self._open_transport = open_transport
        self._parser = frame.FrameParser()
        self._seq = 0
        self._board_seq: int | None = None
        self._lock = asyncio.Lock()
        self._inbox = _Inbox()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None
        self._reset_seen = asyncio.Event()
        self._busy = False
        #: What to do with each board-to-host message: the dispatch table (commands the board
        #: should never send are absent, and logged as unexpected).
        self._handlers: dict[type[messages.Message], Callable[[Any], None]] = {
            **dict.fromkeys(REPLIES, self._on_reply),
            Hello: self._on_hello,
            **dict.fromkeys((LossReport, InferReport, StateReport, LogLine), self._post),
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> BoardLink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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

    # -- events ---------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next unsolicited frame (LOSS, INFER, STATE, LOG, HELLO after a reboot).

        Raises :class:`LinkClosedError` once the link is closed and every event was read, and
        :class:`TimeoutError` after ``timeout`` seconds without one.
        """
        while True:
            if not self._events.empty():
                return self._events.get_nowait()
            if self._closed is not None:
                raise LinkClosedError(str(self._closed)) from self._closed
            getter = asyncio.ensure_future(self._events.get())
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

    # -- commands -------------------------------------------------------------------------

    async def hello(self) -> Hello:
        """Ask for a HELLO (also a liveness check)."""
        return await self._command("HELLO_REQ", self._hello_once)

    async def set_params(self, lr: float, momentum: float, local_steps: int) -> None:
        """Set the board's learning rate, momentum and local steps per round."""

        async def once() -> None:
            await self._request(
                messages.SetParams(lr=lr, momentum=momentum, local_steps=local_steps)
            )

        await self._command("SET_PARAMS", once)

    async def reset(self) -> Hello:
        """Reboot the board; return its new HELLO (a new boot id, a fresh model)."""

        async def once() -> Hello:
            self._drain(self._inbox.hello)
            await self._request(messages.Reset())
            return await self._wait(self._inbox.hello.get(), "HELLO after RESET", reset_ok=True)

        hello = await self._command("RESET", once)
        return hello

    async def put_model(self, params: model.F32, round: int) -> TransferRecord:
        """Download a model to the board; it applies it atomically after the CRC-32 verifies."""
        data = model.to_bytes(params)
        return await self._transfer(XferTarget.MODEL, data, round, "model down")

    async def send_sample(
        self,
        *,
        features: npt.ArrayLike | None = None,
        audio: npt.ArrayLike | None = None,
        label: int | None = None,
    ) -> TransferRecord:
        """Send one sample to train on (``label`` 0..2) or to infer (``label`` None).

        Exactly one of ``features`` (650 float32 MFCC values) or ``audio`` (16,000 int16
        samples) is given. The board answers with a LOSS or an INFER event.
        """
        if (features is None) == (audio is None):
            raise ValueError("give exactly one of features= or audio=")
        meta = spec.NO_CLASS if label is None else label
        if not 0 <= meta <= 255:
            raise ValueError(f"label must be 0..254 or None, got {label}")
        if features is not None:
            arr = np.asarray(features, dtype="<f4").ravel()
            if arr.size != N_FEATURES:
                raise ValueError(f"features must have {N_FEATURES} values, got {arr.size}")
            return await self._transfer(XferTarget.FEATURES, arr.tobytes(), meta, "features down")
        raw = np.asarray(audio)
        if raw.size != N_AUDIO:
            raise ValueError(f"audio must have {N_AUDIO} samples, got {raw.size}")
        pcm = raw.astype("<i2").ravel().tobytes()
        return await self._transfer(XferTarget.AUDIO, pcm, meta, "audio down")

    async def model_info(self) -> ModelInfo:
        """Describe the board's model now (MODEL_INFO): round, steps, CRC-32; no upload."""
        return await self._command("GET_MODEL", self._model_info_once)

    async def get_model(self) -> tuple[model.F32, ModelInfo]:
        """Upload the board's model: its parameters and the MODEL_INFO they match (CRC-32)."""
        async with self._lock:
            self._check_open()
            start, before = time.perf_counter(), self.stats.snapshot()
            last: Exception | None = None
            for attempt in range(self.retries + 1):
                if attempt:
                    self.stats.retries += 1
                info = await self._retrying("GET_MODEL", self._model_info_once)
                data = await self._read_all(info.total_len)
                crc = zlib.crc32(data) & 0xFFFFFFFF
                if crc == info.crc32:
                    try:
                        params = model.from_bytes(data)
                    except TinyfedError as exc:
                        raise LinkError(f"board sent an invalid model: {exc}") from exc
                    self._record("model up", len(data), start, before)
                    return params, info
                last = LinkError(
                    f"model CRC-32 {crc:08x} != {info.crc32:08x} (the board trained meanwhile?)"
                )
                log.info("%s: %s; reading again", self.url, last)
            raise LinkError(f"model upload from {self.url} failed: {last}")

    # -- transfers ------------------------------------------------------------------------

    async def _transfer(
        self, target: XferTarget, data: bytes, meta: int, what: str
    ) -> TransferRecord:
        async with self._lock:
            self._check_open()
            start, before = time.perf_counter(), self.stats.snapshot()
            crc = zlib.crc32(data) & 0xFFFFFFFF
            last: Exception | None = None
            for attempt in range(self.retries + 1):
                if attempt:
                    self.stats.retries += 1
                try:
                    await self._retrying(
                        "XFER_BEGIN",
                        lambda: self._begin_once(target, len(data), crc, meta),
                    )
                    await self._send_chunks(data)
                    await self._end(target, crc, meta)
                    return self._record(what, len(data), start, before)
                except BoardError as exc:
                    if exc.code != ErrorCode.CHECKSUM:
                        await self._abort_quietly()
                        raise
                    last = exc  # corrupted on the way despite the frame CRCs: send it again
                    log.warning("%s: %s; sending again", self.url, exc)
                except LinkTimeoutError as exc:
                    await self._abort_quietly()
                    raise LinkTimeoutError(f"{what} to {self.url} failed: {exc}") from exc
            raise LinkError(f"{what} to {self.url} failed after {self.retries + 1} tries: {last}")

    async def _end(self, target: XferTarget, crc: int, meta: int) -> None:
        """XFER_END; if only its ACK was lost, a re-sent END finds no transfer open (BAD_STATE),
        and for a model MODEL_INFO then tells whether ours was applied."""
        try:
            await self._retrying("XFER_END", lambda: self._request_once(messages.XferEnd()))
        except BoardError as exc:
            if exc.code != ErrorCode.BAD_STATE or target != XferTarget.MODEL:
                raise
            info = await self._retrying("GET_MODEL", self._model_info_once)
            if (info.crc32, info.model_round) != (crc, meta):
                raise
            log.debug("%s: XFER_END's ACK was lost; the model was applied", self.url)

    async def _begin_once(self, target: XferTarget, total: int, crc: int, meta: int) -> None:
        begin = messages.XferBegin(target=int(target), total_len=total, crc32=crc, meta=meta)
        try:
            await self._request(begin)
        except BoardError as exc:
            if exc.code != ErrorCode.BAD_STATE:
                raise
            # A transfer is still open (our earlier BEGIN arrived, its ACK did not): abandon
            # it and open ours.
            await self._abort_quietly()
            await self._request(begin)

    async def _send_chunks(self, data: bytes) -> None:
        """Go-back-N in windows of ``window`` chunks, each starting at the last acknowledgement.

        The board acknowledges after ``window`` in-order chunks since its last XFER_ACK and at
        the last byte, so the only acknowledgement a window can get before its end is a gap
        acknowledgement: the board lost a chunk, dropped the rest, and wants that offset again.
        After a timeout the window is sent again; chunks the board already holds are ignored,
        and the one that ends its last acknowledged window makes it acknowledge again.

        The retry budget counts timeouts since the board last acknowledged a byte it had not
        acknowledged before: any progress (a gap acknowledgement past ``base`` included)
        restores it. A budget per whole window would fail a noisy line whose every retry moves
        the transfer on, because with a chunk lost in most windows a whole window is rarely
        acknowledged without a gap first.
        """
        window = max(1, self.board.window if self.board else spec.DEFAULT_WINDOW)
        chunk = min(spec.CHUNK_BYTES, self.board.chunk_bytes if self.board else spec.CHUNK_BYTES)
        span = window * chunk
        total = len(data)
        base = 0  # the board's last acknowledged offset: everything before it arrived
        failures = 0  # timeouts since the board last acknowledged something new
        while base < total:
            end = min(total, base + span)
            await self._send_range(data, base, end, chunk)
            self.stats.round_trips += 1
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    reply = await self._wait_reply(deadline, messages.XferAck, None)
                except LinkTimeoutError:
                    failures += 1
                    if failures > self.retries:
                        raise LinkTimeoutError(
                            f"no XFER_ACK for bytes {base}..{end} after {failures} tries "
                            "without progress"
                        ) from None
                    self.stats.retries += 1
                    log.debug("%s: XFER_ACK timeout at %d; going back", self.url, base)
                    break  # send the window again from base
                if isinstance(reply, messages.Error):
                    if reply.code in RETRYABLE_ERRORS:
                        continue  # a chunk was mangled; its gap acknowledgement follows
                    raise BoardError(reply.code, reply.tail, "XFER_CHUNK")
                next_offset = reply.next_offset
                if next_offset < base:
                    continue  # stale acknowledgement of an earlier window
                if next_offset > base:
                    failures = 0  # progress: the board holds bytes it had not acknowledged
                if next_offset >= end:
                    base = end
                    break
                # A gap: the board wants next_offset again and dropped what followed.
                self.stats.retries += 1
                log.debug("%s: gap at %d; going back", self.url, next_offset)
                base = next_offset
                break

    async def _send_range(self, data: bytes, start: int, end: int, chunk: int) -> None:
        out = bytearray()
        for offset in range(start, end, chunk):
            piece = data[offset : min(end, offset + chunk)]
            out += frame.pack(messages.XferChunk(offset=offset, tail=piece), self._next_seq())
            self.stats.frames_out += 1
        await self._write(bytes(out))

    async def _read_all(self, total: int) -> bytes:
        chunk = min(spec.CHUNK_BYTES, self.board.chunk_bytes if self.board else spec.CHUNK_BYTES)
        pieces: dict[int, bytes] = {}
        n_chunks = (total + chunk - 1) // chunk
        failures = 0  # READs in a row that brought no new chunk; any new chunk resets it
        while len(pieces) < n_chunks:
            missing = [i for i in range(n_chunks) if i not in pieces]
            first = missing[0]
            count = 1
            while (
                count < self.read_batch and first + count < n_chunks and first + count not in pieces
            ):
                count += 1
            got = await self._read_once(first * chunk, count, chunk, total, pieces)
            if got == 0:
                failures += 1
                if failures > self.retries:
                    raise LinkTimeoutError(
                        f"no MODEL_CHUNK at offset {first * chunk} after {failures} READs "
                        "without progress"
                    )
            else:
                failures = 0
        return b"".join(pieces[i] for i in range(n_chunks))

    async def _read_once(
        self, offset: int, count: int, chunk: int, total: int, pieces: dict[int, bytes]
    ) -> int:
        """Send one READ and collect its chunks until they stop coming; return how many."""
        self._drain(self._inbox.replies)
        seq = self._next_seq()
        await self._send(messages.Read(offset=offset, count=count), seq)
        self.stats.round_trips += 1
        got = 0
        wanted = set(range(offset // chunk, offset // chunk + count))
        while wanted:
            try:
                reply = await self._wait_reply(
                    time.monotonic() + self.timeout, messages.ModelChunk, seq
                )
            except LinkTimeoutError:
                self.stats.retries += 1
                break
            if isinstance(reply, messages.Error):
                if reply.code in RETRYABLE_ERRORS or reply.code == ErrorCode.BUSY:
                    self.stats.retries += 1
                    await asyncio.sleep(0.01)
                    break
                raise BoardError(reply.code, reply.tail, "READ")
            index, rem = divmod(reply.offset, chunk)
            tail = reply.tail
            expected = min(chunk, total - reply.offset) if reply.offset < total else -1
            if rem or len(tail) != expected:
                log.debug(
                    "%s: MODEL_CHUNK at %d of %d B ignored", self.url, reply.offset, len(tail)
                )
                continue
            if index not in pieces:
                pieces[index] = tail
                got += 1
            wanted.discard(index)
        return got

    # -- one request, its retries ---------------------------------------------------------

    async def _command(self, name: str, once: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            self._check_open()
            return await self._retrying(name, once)

    async def _retrying(self, name: str, once: Callable[[], Awaitable[T]]) -> T:
        """Run ``once`` until it succeeds; retry timeouts and mangled frames ``retries`` times,
        and BUSY answers (the board is recording or computing) for up to ``busy_timeout`` s."""
        delay = 0.01
        failures = 0
        busy_until = time.monotonic() + self.busy_timeout
        while True:
            try:
                return await once()
            except LinkTimeoutError:
                log.debug("%s: %s timed out (try %d)", self.url, name, failures + 1)
            except BoardError as exc:
                if exc.code == ErrorCode.BUSY and time.monotonic() < busy_until:
                    await asyncio.sleep(delay)
                    delay = min(0.2, delay * 2)
                    continue
                if exc.code not in RETRYABLE_ERRORS:
                    raise
                log.debug("%s: %s mangled on the way (%s)", self.url, name, exc)
            failures += 1
            if failures > self.retries:
                raise LinkTimeoutError(f"{name}: no answer from {self.url} after {failures} tries")
            self.stats.retries += 1

    async def _request_once(self, command: messages.MessageBase) -> messages.Ack:
        return await self._request(command)

    async def _request(self, command: messages.MessageBase) -> messages.Ack:
        """Send a command and wait for its ACK (or ERROR, raised as :class:`BoardError`)."""
        self._drain(self._inbox.replies)
        seq = self._next_seq()
        await self._send(command, seq)
        self.stats.round_trips += 1
        deadline = time.monotonic() + self.timeout
        while True:
            reply = await self._wait_reply(deadline, messages.Ack, seq)
            if isinstance(reply, messages.Error):
                raise BoardError(reply.code, reply.tail, command.TYPE.name)
            if reply.ref_seq == seq:
                return reply

    async def _hello_once(self) -> Hello:
        self._drain(self._inbox.hello)
        await self._send(messages.HelloReq(), self._next_seq())
        self.stats.round_trips += 1
        return await self._wait(self._inbox.hello.get(), "HELLO", reset_ok=True)

    async def _model_info_once(self) -> ModelInfo:
        self._drain(self._inbox.replies)
        seq = self._next_seq()
        await self._send(messages.GetModel(), seq)
        self.stats.round_trips += 1
        reply = await self._wait_reply(time.monotonic() + self.timeout, messages.ModelInfo, seq)
        if isinstance(reply, messages.Error):
            raise BoardError(reply.code, reply.tail, "GET_MODEL")
        return reply

    async def _wait_reply(
        self, deadline: float, kind: type[R], seq: int | None
    ) -> R | messages.Error:
        """The next reply of class ``kind``, or an ERROR naming ``seq`` (or any seq)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeoutError(f"no {kind.TYPE.name} from {self.url}")
            reply = await self._wait(
                self._inbox.replies.get(), "reply", timeout=remaining, reset_ok=False
            )
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

    async def _wait(
        self,
        awaitable: Awaitable[T],
        what: str,
        *,
        timeout: float | None = None,
        reset_ok: bool,
    ) -> T:
        """Await ``awaitable`` unless the link closes, the board reboots, or time runs out."""
        self._check_open()
        task = asyncio.ensure_future(awaitable)
        closer = asyncio.ensure_future(self.wait_closed())
        reset = asyncio.ensure_future(self._reset_seen.wait())
        waiters: set[asyncio.Future[Any]] = {task, closer}
        if not reset_ok:
            waiters.add(reset)
        try:
            done, _ = await asyncio.wait(
                waiters,
                timeout=self.timeout if timeout is None else timeout,
                return_when=asyncio.FIRST_COMPLETED,
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
        raise LinkTimeoutError(f"no {what} from {self.url} within {self.timeout} s")

    async def _abort_quietly(self) -> None:
        if self._closed is not None:
            return
        with contextlib.suppress(LinkError, TransportError):
            await self._send(messages.XferAbort(), self._next_seq())

    # -- frames in and out ----------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    async def _send(self, command: messages.MessageBase, seq: int) -> None:
        self._reset_seen.clear()
        self.stats.frames_out += 1
        await self._write(frame.pack(command, seq))

    async def _write(self, wire: bytes) -> None:
        self._check_open()
        self.stats.bytes_out += len(wire)
        try:
            await self.transport.write(wire)
        except TransportError as exc:
            self._closed = exc
            raise LinkClosedError(f"link to {self.url} failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed is not None:
            raise LinkClosedError(f"link to {self.url} is closed: {self._closed}")
        if self._reader is None:
            raise LinkError("BoardLink not started: use `async with BoardLink(transport)`")

    @staticmethod
    def _drain(queue: asyncio.Queue[Any]) -> None:
        while not queue.empty():
            queue.get_nowait()

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

    def _on_reply(self, reply: Reply) -> None:
        if isinstance(reply, messages.Error):
            log.debug(
                "%s: ERROR %s for seq %d: %s", self.url, reply.code, reply.ref_seq, reply.tail
            )
        self._inbox.replies.put_nowait(reply)

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
        self._inbox.hello.put_nowait(hello)
        if previous is None or previous.boot_id != hello.boot_id:
            self._post(hello)  # a board seen for the first time, or rebooted

    def _post(self, event: Event) -> None:
        if self._events.qsize() >= EVENT_QUEUE_LIMIT:
            self._events.get_nowait()
            self.stats.events_dropped += 1
            if self.stats.events_dropped in (1, 10, 100) or self.stats.events_dropped % 1000 == 0:
                log.warning(
                    "%s: %d board events dropped: nobody reads them",
                    self.url,
                    self.stats.events_dropped,
                )
        self._events.put_nowait(event)

    def _record(self, what: str, size: int, start: float, before: LinkStats) -> TransferRecord:
        delta = self.stats.since(before)
        record = TransferRecord(
            what=what,
            size=size,
            seconds=time.perf_counter() - start,
            round_trips=delta.round_trips,
            retries=delta.retries,
            frames=delta.frames_in + delta.frames_out,
        )
        self.transfers.append(record)
        log.info("%s: %s", self.url, record)
        return record
