"""Host-to-board transfers: XFER_BEGIN, the go-back-N sender, XFER_END.

Chunks go in windows of ``window`` (the board's HELLO says how many it buffers), acknowledged
once per window; a gap acknowledgement or a timeout goes back to the first missing byte
(go-back-N); ``XFER_END`` makes the board verify the end-to-end CRC-32 before it applies
anything, and a CHECKSUM answer sends the whole transfer again. A transfer gives up only after
``retries + 1`` tries in a row that moved nothing: any chunk newly acknowledged restores the
whole budget, so a noisy line slows a transfer down but does not fail it.
"""

from __future__ import annotations

import time
import zlib

from tinyfed.errors import ModelError
from tinyfed.link import frame, messages, spec
from tinyfed.link.errors import RETRYABLE_ERRORS, BoardError, LinkError, LinkTimeoutError
from tinyfed.link.requests import Exchange
from tinyfed.link.spec import ErrorCode, XferTarget
from tinyfed.link.stats import TransferRecord, log
from tinyfed.model import families


class Download(Exchange):
    """Sends one payload to a board's transfer ``target`` over ``requests``."""

    async def run(self, target: XferTarget, data: bytes, meta: int, what: str) -> TransferRecord:
        rq = self.rq
        async with rq.exclusive():
            start, before = time.perf_counter(), self.stats.snapshot()
            crc = zlib.crc32(data) & 0xFFFFFFFF
            last: Exception | None = None
            for _ in rq.tries():
                try:
                    await rq.retrying(
                        "XFER_BEGIN",
                        lambda: self._begin_once(target, len(data), crc, meta),
                    )
                    await self._send_chunks(data)
                    await self._end(target, crc, meta)
                    return rq.record(what, len(data), start, before)
                except BoardError as exc:
                    if exc.code != ErrorCode.CHECKSUM:
                        await rq.abort_quietly()
                        raise
                    last = exc  # corrupted on the way despite the frame CRCs: send it again
                    log.warning("%s: %s; sending again", self.url, exc)
                except LinkTimeoutError as exc:
                    await rq.abort_quietly()
                    raise LinkTimeoutError(f"{what} to {self.url} failed: {exc}") from exc
            tries = self.settings.retries + 1
            raise LinkError(f"{what} to {self.url} failed after {tries} tries: {last}")

    async def _end(self, target: XferTarget, crc: int, meta: int) -> None:
        """XFER_END; if only its ACK was lost, a re-sent END finds no transfer open (BAD_STATE),
        and for a model MODEL_INFO then tells whether ours was applied."""
        rq = self.rq
        try:
            await rq.retrying("XFER_END", lambda: rq.request(messages.XferEnd()))
        except BoardError as exc:
            if exc.code != ErrorCode.BAD_STATE or target != XferTarget.MODEL:
                raise
            info = await rq.retrying("GET_MODEL", rq.model_info_once)
            if (info.crc32, info.model_round) != (crc, meta):
                raise
            log.debug("%s: XFER_END's ACK was lost; the model was applied", self.url)

    async def _begin_once(self, target: XferTarget, total: int, crc: int, meta: int) -> None:
        begin = messages.XferBegin(target=int(target), total_len=total, crc32=crc, meta=meta)
        try:
            await self.rq.request(begin)
        except BoardError as exc:
            if exc.code != ErrorCode.BAD_STATE:
                raise
            # A transfer is still open (our earlier BEGIN arrived, its ACK did not): abandon
            # it and open ours.
            await self.rq.abort_quietly()
            await self.rq.request(begin)

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
        board = self.ch.board
        window = max(1, board.window if board else spec.DEFAULT_WINDOW)
        chunk = chunk_bytes(board)
        span = window * chunk
        total = len(data)
        base = 0  # the board's last acknowledged offset: everything before it arrived
        failures = 0  # timeouts since the board last acknowledged something new
        while base < total:
            end = min(total, base + span)
            await self._send_range(data, base, end, chunk)
            self.stats.round_trips += 1
            deadline = time.monotonic() + self.settings.timeout
            while True:
                try:
                    reply = await self.ch.wait_reply(deadline, messages.XferAck, None)
                except LinkTimeoutError:
                    failures += 1
                    if failures > self.settings.retries:
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
            out += frame.pack(messages.XferChunk(offset=offset, tail=piece), self.ch.next_seq())
            self.stats.frames_out += 1
        await self.ch.write(bytes(out))


def chunk_bytes(board: messages.Hello | None) -> int:
    """Data bytes per chunk: what the board's HELLO says, at most the spec's CHUNK_BYTES."""
    return min(spec.CHUNK_BYTES, board.chunk_bytes if board else spec.CHUNK_BYTES)


def board_family(board: messages.Hello, url: str) -> families.Family:
    """The model family a board's HELLO names (its ``arch``): what size its model is.

    Raises :class:`LinkError` naming the board and the architecture id this host does not know.
    """
    try:
        return families.by_arch_id(board.arch)
    except ModelError as exc:
        raise LinkError(f"board {board.board_id.hex()} on {url} reports {exc}") from None
