"""``python bench/link_noise.py [--downloads N] [--uploads N] [--ber X] [--seed N]``.

Model transfers over a noisy line: the compiled virtual board on a pseudo-terminal, driven by
the real link client (:class:`~tinyfed.link.client.BoardLink` with its default settings: 1 s
answer timeout, 5 retries) through a byte-level noise injector. Every byte on the line, in
either direction, is replaced by a different random byte with probability ``--ber`` (the
positions are drawn per direction from a geometric distribution, so they depend on the byte
stream and ``--seed`` only, not on how the reads happen to be split).

Each download puts a different model (round ``i``) on the board; then, with the noise switched
off, the board's own MODEL_INFO (its CRC-32 of the weights it runs, and the round) says what it
applied. A download counts as *corrupt* when the board runs anything other than the model just
sent or, after a failed download, the model it had before: the end-to-end CRC-32 must keep every
damaged model off the board. Uploads (``--uploads``) read the board's model back through the
same noise and compare it with the model the board is known to hold.

It prints the counts, the retries and the time per transfer, and ends with one line
``downloads=N failed=F corrupt=C retries=R mean_s=S``. Exit status 1 if a corrupt model was
applied or a wrong upload accepted. Target at ``--ber 1e-3``: at most 1 failed download in 100,
0 corrupt.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tinyfed import model
from tinyfed.link.client import BoardLink, LinkError
from tinyfed.link.transports import open_transport
from tinyfed.link.transports.base import PassThroughTransport, Transport

TO_BOARD = "to board"
TO_HOST = "to host"


class NoisyTransport(PassThroughTransport):
    """A transport that replaces each byte, both ways, by another with probability ``ber``."""

    def __init__(self, inner: Transport, ber: float, seed: int) -> None:
        if not 0 <= ber < 1:
            raise ValueError(f"the byte error rate must be in [0, 1), got {ber}")
        super().__init__(inner)
        self.ber = ber
        self.enabled = False  #: off while the board is checked
        self.corrupted: Counter[str] = Counter()  #: bytes replaced, per direction
        self.bytes: Counter[str] = Counter()  #: bytes carried with the noise on, per direction
        seeds = np.random.SeedSequence(seed).spawn(2)
        self._rng = {
            TO_BOARD: np.random.default_rng(seeds[0]),
            TO_HOST: np.random.default_rng(seeds[1]),
        }
        self._next = {d: self._gap(d) - 1 for d in self._rng}  # index of the next bad byte

    async def read(self) -> bytes:
        return self._corrupt(TO_HOST, await self.inner.read())

    async def write(self, data: bytes) -> None:
        await self.inner.write(self._corrupt(TO_BOARD, data))

    def _gap(self, direction: str) -> int:
        if self.ber <= 0:
            return 1 << 62
        return int(self._rng[direction].geometric(self.ber))

    def _corrupt(self, direction: str, data: bytes) -> bytes:
        if not self.enabled:
            return data
        self.bytes[direction] += len(data)
        pos = self._next[direction]
        if pos >= len(data):
            self._next[direction] = pos - len(data)
            return data
        out = bytearray(data)
        while pos < len(out):
            out[pos] = (out[pos] + int(self._rng[direction].integers(1, 256))) % 256
            self.corrupted[direction] += 1
            pos += self._gap(direction)
        self._next[direction] = pos - len(out)
        return bytes(out)


class Timeouts(logging.Handler):
    """Counts the link client's "XFER_ACK timeout" debug lines: the seconds a download waits."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "XFER_ACK timeout" in str(record.msg):
            self.count += 1


@dataclass
class Tally:
    """What one kind of transfer did."""

    done: int = 0
    failed: int = 0
    wrong: int = 0  #: corrupt models applied (down) or accepted (up)
    retries: int = 0
    timeouts: int = 0  #: downloads only: windows that waited the whole answer timeout
    seconds: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def line(self, what: str) -> str:
        n = len(self.seconds)
        mean = statistics.fmean(self.seconds) if n else 0.0
        median = statistics.median(self.seconds) if n else 0.0
        slowest = max(self.seconds, default=0.0)
        timeouts = f"{self.timeouts / max(n, 1):>10.1f}" if what == "download" else f"{'-':>10}"
        return (
            f"{what:<10}{n:>6}{self.failed:>8}{self.wrong:>9}{self.retries:>9}"
            f"{self.retries / max(n, 1):>9.1f}{timeouts}{mean:>9.2f}{median:>9.2f}{slowest:>8.2f}"
        )


def crc(params: model.F32) -> int:
    return zlib.crc32(model.to_bytes(params)) & 0xFFFFFFFF


def short_reason(exc: Exception) -> str:
    """The kind of failure, without the offsets and counts that make every message unique."""
    text = str(exc)
    for key in ("no XFER_ACK", "no MODEL_CHUNK", "no answer", "CRC-32", "board refused"):
        if key in text:
            return f"{type(exc).__name__}: {key}"
    return f"{type(exc).__name__}: {text[:80]}"


async def run(downloads: int, uploads: int, ber: float, seed: int, url: str) -> tuple[Tally, Tally]:
    noise = NoisyTransport(open_transport(url), ber, seed)
    down, up = Tally(), Tally()
    timeouts = Timeouts()
    client_log = logging.getLogger("tinyfed.link.client")
    client_log.setLevel(logging.DEBUG)
    client_log.propagate = False
    client_log.addHandler(timeouts)
    async with BoardLink(noise) as link:
        hello = await link.hello()
        print(
            f"link noise bench on {url}: virtual board {hello.board_hex}, firmware "
            f"{hello.firmware}, window {hello.window} x {hello.chunk_bytes} B; model "
            f"{model.N_PARAMS * 4:,} B; byte error rate {ber:g} both ways, seed {seed}; link "
            f"timeout {link.timeout:g} s, {link.retries} retries (the defaults)",
            flush=True,
        )
        held, held_round = model.init_params(), 0  # the board's fresh model
        for i in range(1, downloads + 1):
            params = model.init_params(seed=seed * 100_003 + i)
            before, waited = link.stats.retries, timeouts.count
            noise.enabled = True
            start = time.perf_counter()
            try:
                await link.put_model(params, i)
                down.done += 1
            except LinkError as exc:
                down.failed += 1
                down.reasons[short_reason(exc)] += 1
            finally:
                down.seconds.append(time.perf_counter() - start)
                noise.enabled = False
                down.retries += link.stats.retries - before
                down.timeouts += timeouts.count - waited
            # What does the board run now? Asked on a clean line.
            info = await link.model_info()
            if (info.crc32, info.model_round) == (crc(params), i):
                held, held_round = params, i
            elif (info.crc32, info.model_round) != (crc(held), held_round):
                down.wrong += 1
                print(f"download {i}: the board runs a model nobody sent ({info})", flush=True)
            if i % 10 == 0 or i == downloads:
                print(f"  {i} downloads, {down.failed} failed, {down.wrong} corrupt", flush=True)
        for _ in range(uploads):
            before = link.stats.retries
            noise.enabled = True
            start = time.perf_counter()
            try:
                got, info = await link.get_model()
                up.done += 1
                if not np.array_equal(got, held) or info.model_round != held_round:
                    up.wrong += 1
            except LinkError as exc:
                up.failed += 1
                up.reasons[short_reason(exc)] += 1
            finally:
                up.seconds.append(time.perf_counter() - start)
                noise.enabled = False
                up.retries += link.stats.retries - before
        for direction in (TO_BOARD, TO_HOST):
            n, bad = noise.bytes[direction], noise.corrupted[direction]
            print(
                f"noise {direction}: {bad:,} of {n:,} bytes replaced "
                f"({bad / max(n, 1):.2e}); frames the host could not read: "
                f"{link.stats.bad_frames:,}"
                if direction == TO_HOST
                else f"noise {direction}: {bad:,} of {n:,} bytes replaced ({bad / max(n, 1):.2e})"
            )
    return down, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/link_noise.py",
        description="Model downloads (and uploads) to a virtual board through a noisy line.",
    )
    parser.add_argument("--downloads", type=int, default=100, help="model downloads (100)")
    parser.add_argument("--uploads", type=int, default=0, help="model uploads after them (0)")
    parser.add_argument("--ber", type=float, default=1e-3, help="byte error rate (1e-3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the noise and models (1)")
    args = parser.parse_args(argv)

    from tinyfed.testbed.virtual_board import VirtualBoard, build_virtual_board  # noqa: PLC0415

    with VirtualBoard(binary=build_virtual_board()) as board:
        down, up = asyncio.run(
            run(args.downloads, args.uploads, args.ber, args.seed, f"serial://{board.port}")
        )
    print(
        f"{'transfer':<10}{'count':>6}{'failed':>8}{'corrupt':>9}{'retries':>9}"
        f"{'/ xfer':>9}{'timeouts':>10}{'mean s':>9}{'median':>9}{'max':>8}"
    )
    print(down.line("download"))
    if args.uploads:
        print(up.line("upload"))
    for what, tally in (("download", down), ("upload", up)):
        for reason, n in tally.reasons.most_common():
            print(f"{what} failures: {n} x {reason}")
    mean = statistics.fmean(down.seconds) if down.seconds else 0.0
    tail = f" uploads={len(up.seconds)} up_failed={up.failed} up_wrong={up.wrong}"
    print(
        f"downloads={len(down.seconds)} failed={down.failed} corrupt={down.wrong} "
        f"retries={down.retries} mean_s={mean:.2f}" + (tail if args.uploads else "")
    )
    return 1 if down.wrong or up.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
