"""Board-to-host model transfers: MODEL_INFO, then the model read in batches of chunks.

Each READ asks for up to ``read_batch`` chunks; what is missing afterwards is asked for again.
The CRC-32 of the whole model is checked against MODEL_INFO's, and a mismatch (the board
trained in between) starts again. Like a download, an upload gives up only after ``retries +
1`` READs in a row that brought no new chunk.
"""

from __future__ import annotations

import asyncio
import time
import zlib

from tinyfed import model
from tinyfed.errors import TinyfedError
from tinyfed.link import messages
from tinyfed.link.download import board_family, chunk_bytes
from tinyfed.link.errors import RETRYABLE_ERRORS, BoardError, LinkError, LinkTimeoutError
from tinyfed.link.events import ModelInfo
from tinyfed.link.requests import Exchange
from tinyfed.link.spec import ErrorCode
from tinyfed.link.stats import log


class Upload(Exchange):
    """Reads a board's model over ``requests`` (its size: the family of the board's HELLO)."""

    async def run(self, board: messages.Hello) -> tuple[model.F32, ModelInfo]:
        rq = self.rq
        family = board_family(board, self.url)
        async with rq.exclusive():
            start, before = time.perf_counter(), self.stats.snapshot()
            last: Exception | None = None
            for _ in rq.tries():
                info = await rq.retrying("GET_MODEL", rq.model_info_once)
                if info.total_len != family.model_bytes:
                    raise LinkError(
                        f"board on {self.url} describes a model of {info.total_len} bytes, but "
                        f"it runs the {family.name} family ({family.model_bytes} bytes)"
                    )
                data = await self._read_all(info.total_len)
                crc = zlib.crc32(data) & 0xFFFFFFFF
                if crc == info.crc32:
                    try:
                        params = family.from_bytes(data)
                    except TinyfedError as exc:
                        raise LinkError(f"board sent an invalid model: {exc}") from exc
                    rq.record("model up", len(data), start, before)
                    return params, info
                last = LinkError(
                    f"model CRC-32 {crc:08x} != {info.crc32:08x} (the board trained meanwhile?)"
                )
                log.info("%s: %s; reading again", self.url, last)
            raise LinkError(f"model upload from {self.url} failed: {last}")

    async def _read_all(self, total: int) -> bytes:
        chunk = chunk_bytes(self.ch.board)
        batch = self.settings.read_batch
        pieces: dict[int, bytes] = {}
        n_chunks = (total + chunk - 1) // chunk
        failures = 0  # READs in a row that brought no new chunk; any new chunk resets it
        while len(pieces) < n_chunks:
            missing = [i for i in range(n_chunks) if i not in pieces]
            first = missing[0]
            count = 1
            while count < batch and first + count < n_chunks and first + count not in pieces:
                count += 1
            got = await self._read_once(first * chunk, count, chunk, total, pieces)
            if got == 0:
                failures += 1
                if failures > self.settings.retries:
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
        seq = await self.rq.send_new(messages.Read(offset=offset, count=count))
        got = 0
        wanted = set(range(offset // chunk, offset // chunk + count))
        while wanted:
            try:
                reply = await self.ch.wait_reply(
                    time.monotonic() + self.settings.timeout, messages.ModelChunk, seq
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
