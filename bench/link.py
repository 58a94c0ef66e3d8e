"""``tinyfed bench link``: model download and upload over a board's link, against the paper's.

By default a virtual board is started on a pseudo-terminal; ``--device URL`` measures a real
board (its cable, its hub, its BLE connection). On the same link, in the same run, it measures

* tinyfed's protocol: a model download (windowed chunks, go-back-N, end-to-end CRC-32) and an
  upload (batched READs), each the median of ``--repeats`` runs, checked by reading back;
* the paper's protocol, emulated: one small request and one small answer per float, 10,467
  round trips each way, each a frame carrying a few bytes (down: SET_PARAMS with the board's
  own values, 10 bytes answered by a 3-byte ACK; up: HELLO_REQ answered by a 46-byte HELLO).
  It moves no weights: its time is the latency of 10,467 round trips, which is what made the
  paper's transfer slow (neither exchange makes the board compute anything).

It also turns the byte counts of tinyfed's exchanges into what they would take on USB full
speed (1 ms frames of at most 19 packets of 64 bytes, each exchange starting on a new frame)
and into GATT operations over BLE at MTU 247 (244 bytes per write or notification). The last
line is ``round_trips_ratio=<R> speedup_down=<D> speedup_up=<U>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from tinyfed import model
from tinyfed.link.client import BoardLink, Hello
from tinyfed.link.transports import check_url, open_transport
from tinyfed.link.transports.base import PassThroughTransport, Transport

PAPER_ROUND_TRIPS = model.N_PARAMS  #: the paper: 4 bytes and one acknowledgement per float
USB_PACKET = 64  #: bytes per full-speed bulk packet
USB_PACKETS_PER_FRAME = 19  #: bulk packets that fit one 1 ms full-speed frame
BLE_PAYLOAD = 244  #: ATT payload of one write or notification at MTU 247


@dataclass
class Exchange:
    """Bytes the host wrote, then the bytes it read before writing again."""

    out: int = 0
    into: int = 0


class RecordingTransport(PassThroughTransport):
    """A transport that passes everything through and records the size of each exchange."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.exchanges: list[Exchange] = []
        self.recording = False

    async def write(self, data: bytes) -> None:
        if self.recording:
            if not self.exchanges or self.exchanges[-1].into:
                self.exchanges.append(Exchange())
            self.exchanges[-1].out += len(data)
        await self.inner.write(data)

    async def read(self) -> bytes:
        data = await self.inner.read()
        if self.recording and self.exchanges:
            self.exchanges[-1].into += len(data)
        return data

    @contextlib.contextmanager
    def record(self) -> Iterator[list[Exchange]]:
        self.exchanges = []
        self.recording = True
        try:
            yield self.exchanges
        finally:
            self.recording = False


def usb_ms(exchanges: list[Exchange]) -> int:
    """1 ms USB full-speed frames the exchanges need, each starting on a new frame."""
    total = 0
    for e in exchanges:
        packets = math.ceil(e.out / USB_PACKET) + math.ceil(e.into / USB_PACKET)
        total += max(1, math.ceil(packets / USB_PACKETS_PER_FRAME))
    return total


def gatt_ops(exchanges: list[Exchange]) -> tuple[int, int]:
    """(writes, notifications) the exchanges need over BLE at MTU 247."""
    writes = sum(math.ceil(e.out / BLE_PAYLOAD) for e in exchanges)
    notes = sum(math.ceil(e.into / BLE_PAYLOAD) for e in exchanges)
    return writes, notes


@dataclass
class Measure:
    """Round trips and seconds of repeated runs of one transfer."""

    round_trips: int = 0
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


async def _timed(link: BoardLink, run: Callable[[], Awaitable[object]]) -> tuple[int, float]:
    before = link.stats.round_trips
    start = time.perf_counter()
    await run()
    return link.stats.round_trips - before, time.perf_counter() - start


async def measure(
    url: str, repeats: int, baseline_round_trips: int, out: Callable[[str], None]
) -> tuple[float, float, float]:
    """Run the benchmark on ``url``; print with ``out``; return (R, D, U)."""
    recorder = RecordingTransport(open_transport(url))
    params = model.init_params(seed=2021)
    async with BoardLink(recorder) as link:
        hello = await link.hello()
        out(_describe(url, hello, repeats))
        down, up = Measure(), Measure()
        with recorder.record() as down_ex:
            down.round_trips, t = await _timed(link, lambda: link.put_model(params, 1))
        down.seconds.append(t)
        with recorder.record() as up_ex:
            up.round_trips, t = await _timed(link, link.get_model)
        up.seconds.append(t)
        for _ in range(repeats - 1):
            down.seconds.append((await _timed(link, lambda: link.put_model(params, 1)))[1])
            up.seconds.append((await _timed(link, link.get_model))[1])
        got, info = await link.get_model()
        same = bool(np.array_equal(got, params))

        async def paper_down() -> None:
            for _ in range(baseline_round_trips):
                await link.set_params(hello.lr, hello.momentum, hello.local_steps)

        async def paper_up() -> None:
            for _ in range(baseline_round_trips):
                await link.hello()

        scale = PAPER_ROUND_TRIPS / baseline_round_trips
        _, base_down = await _timed(link, paper_down)
        _, base_up = await _timed(link, paper_up)
        base_down *= scale
        base_up *= scale

    size = model.MODEL_BYTES
    rows = [
        ("tinyfed windowed", "down", down.round_trips, down.median),
        ("tinyfed windowed", "up", up.round_trips, up.median),
        ("paper, 4 B per ack", "down", PAPER_ROUND_TRIPS, base_down),
        ("paper, 4 B per ack", "up", PAPER_ROUND_TRIPS, base_up),
    ]
    out(f"{'protocol':<20}{'direction':<11}{'round trips':>12}{'time':>12}{'throughput':>14}")
    for name, direction, trips, seconds in rows:
        out(
            f"{name:<20}{direction:<11}{trips:>12,}{seconds * 1000:>9.1f} ms"
            f"{size / seconds / 1000:>9.1f} kB/s"
        )
    if baseline_round_trips != PAPER_ROUND_TRIPS:
        out(f"(paper times extrapolated from {baseline_round_trips:,} round trips each way)")
    out(
        f"read back: {'identical' if same else 'DIFFERENT'} to the model sent "
        f"(CRC-32 {info.crc32:08x}); retries {link.stats.retries}, "
        f"bad frames {link.stats.bad_frames}"
    )
    floor_ms = math.ceil(math.ceil(size / USB_PACKET) / USB_PACKETS_PER_FRAME)
    out(
        f"USB full speed, tinyfed's frame sequence: down {usb_ms(down_ex)} ms "
        f"({len(down_ex)} exchanges), up {usb_ms(up_ex)} ms ({len(up_ex)} exchanges); "
        f"physical floor ~{floor_ms} ms for {size:,} B"
    )
    dw, dn = gatt_ops(down_ex)
    uw, un = gatt_ops(up_ex)
    floor_ops = math.ceil(size / BLE_PAYLOAD)
    out(
        f"BLE at MTU 247, GATT operations per model: down {dw + dn} ({dw} writes + {dn} "
        f"notifications), up {uw + un} ({uw} writes + {un} notifications); floor ~{floor_ops}"
    )
    ratio = PAPER_ROUND_TRIPS / max(down.round_trips, up.round_trips)
    return ratio, base_down / down.median, base_up / up.median


def _describe(url: str, hello: Hello, repeats: int) -> str:
    kind = "virtual board" if hello.virtual else "board"
    return (
        f"link bench on {url}: {kind} {hello.board_hex}, firmware {hello.firmware}, window "
        f"{hello.window} x {hello.chunk_bytes} B; model {model.N_PARAMS:,} float32 = "
        f"{model.MODEL_BYTES:,} B; median of {repeats} runs each way"
    )


def run(args: argparse.Namespace) -> int:
    """``tinyfed bench link``."""
    if not getattr(args, "verbose", 0):
        logging.getLogger("tinyfed.link.client").setLevel(logging.WARNING)
        logging.getLogger("tinyfed.testbed.virtual_board").setLevel(logging.WARNING)
    if args.device:
        url = check_url(args.device)
        return _report(asyncio.run(measure(url, args.repeats, args.baseline_round_trips, print)))
    from tinyfed.testbed.virtual_board import VirtualBoard, build_virtual_board  # noqa: PLC0415

    binary = build_virtual_board()
    with VirtualBoard(binary=binary) as board:
        url = f"serial://{board.port}"
        result = asyncio.run(measure(url, args.repeats, args.baseline_round_trips, print))
    return _report(result)


def _report(result: tuple[float, float, float]) -> int:
    ratio, down, up = result
    print(f"round_trips_ratio={ratio:.1f} speedup_down={down:.1f} speedup_up={up:.1f}")
    return 0


def register_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tinyfed bench link``."""
    p = subparsers.add_parser(
        "link",
        help="model download/upload over a board's link vs the paper's protocol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  tinyfed bench link                                  # a virtual board on a pty\n"
            "  tinyfed bench link --device serial:///dev/ttyACM0   # a real board, its cable\n"
            "  tinyfed bench link --device ble://tinyfed-3f2a --baseline-round-trips 500\n"
        ),
    )
    p.add_argument(
        "--device", metavar="URL", help="a real board (default: a virtual board on a pty)"
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="runs of each transfer (default: %(default)s)"
    )
    p.add_argument(
        "--baseline-round-trips",
        type=int,
        default=PAPER_ROUND_TRIPS,
        metavar="N",
        help="round trips of the paper's protocol actually made, then scaled to 10,467 "
        "(default: all of them)",
    )
    p.set_defaults(func=run)


if __name__ == "__main__":  # ``python bench/link.py ARGS`` is ``tinyfed bench link ARGS``
    import sys

    from tinyfed import cli

    sys.exit(cli.main(["bench", "link", *sys.argv[1:]]))
