"""BleTransport through bleak's public API, against a bumble-emulated tinyfed peripheral.

The path under test: BleTransport -> BleakClient/BleakScanner -> bleak custom backend ->
bumble central (HCI host, L2CAP, ATT/GATT client) -> emulated controller -> LocalLink ->
emulated controller -> bumble peripheral (GATT server with the firmware's service) -> a
byte-level responder or the real virtual board process. Only the radio is emulated.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest

from tests.ble_support import (
    EmulatedCentral,
    HelloResponder,
    TinyfedPeripheral,
    VirtualBoardBridge,
    frames_of,
)
from tests.link_support import pack, unpack
from tinyfed import model as nn
from tinyfed.link.client import BoardLink
from tinyfed.link.frame import Frame, FrameParser
from tinyfed.link.spec import (
    BLE_RX_CHAR_UUID,
    BLE_SERVICE_UUID,
    BLE_TX_CHAR_UUID,
    CHUNK_BYTES,
    MsgType,
    XferTarget,
)
from tinyfed.link.transports.base import TransportError
from tinyfed.link.transports.ble import Backoff, BleTarget, BleTransport

T = TypeVar("T")
MODEL_BYTES = 41_868
ADDRESS = "F1:22:33:44:55:66"
FAST = Backoff(attempts=2, initial=0.01)

log = logging.getLogger(__name__)


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test scenario in a fresh event loop (no pytest-asyncio here)."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@dataclass
class Rig:
    """One emulated air: the gateway's central, a peripheral and what sits behind it."""

    central: EmulatedCentral
    peripheral: TinyfedPeripheral
    responder: HelloResponder
    transports: list[BleTransport] = field(default_factory=list)

    def transport(self, url: str = f"ble://{ADDRESS}", **kwargs: Any) -> BleTransport:
        kwargs.setdefault("connect_timeout", 2.0)
        transport = BleTransport(
            url,
            backend=self.central.client_backend,
            scanner_backend=self.central.scanner_backend,
            **kwargs,
        )
        self.transports.append(transport)
        return transport


@asynccontextmanager
async def rig(*, mtu: int = 247, board: bool = False, **peripheral: Any) -> AsyncIterator[Rig]:
    """An emulated central and peripheral; behind the peripheral the byte-level responder, or
    the real virtual board process if ``board``."""
    central = EmulatedCentral(mtu=mtu)
    await central.start()
    responder = HelloResponder()
    bridge = VirtualBoardBridge() if board else None
    sink = bridge.feed if bridge is not None else responder.feed
    device = TinyfedPeripheral(central, sink, address=ADDRESS, **peripheral)
    responder.peripheral = device
    if bridge is not None:
        bridge.peripheral = device
        await bridge.start()
    await device.start()
    setup = Rig(central, device, responder)
    try:
        yield setup
    finally:
        for transport in setup.transports:
            await transport.close()
        await device.stop()
        if bridge is not None:
            await bridge.stop()
        await asyncio.sleep(0.05)  # let the emulated controllers finish their HCI exchanges


class Inbox:
    """The frames a transport delivers, in order, across calls (LOG and STATE skipped)."""

    def __init__(self, transport: BleTransport) -> None:
        self.transport = transport
        self.parser = FrameParser()
        self.backlog: list[Frame] = []

    async def next(self) -> Frame:
        while True:
            while self.backlog:
                frame = self.backlog.pop(0)
                if frame.type not in (MsgType.LOG, MsgType.STATE):
                    return frame
            self.backlog += frames_of(self.parser, await self.transport.read())

    async def until(self, count: int) -> list[Frame]:
        """The next ``count`` frames."""
        return [await self.next() for _ in range(count)]


async def hello(transport: BleTransport, seq: int = 1) -> dict[str, Any]:
    await transport.write(pack(MsgType.HELLO_REQ, seq))
    frame = await Inbox(transport).next()
    assert frame.type == MsgType.HELLO
    return unpack(frame)


# --------------------------------------------------------------------------- connecting


def test_open_by_address_answers_hello_request() -> None:
    async def scenario() -> dict[str, Any]:
        async with rig() as r:
            transport = r.transport(f"ble://{ADDRESS.lower()}")
            await transport.open()
            return await hello(transport)

    fields = run(scenario())

    assert fields["board_id"] == bytes.fromhex("0000000000003fa2")
    assert fields["chunk_bytes"] == CHUNK_BYTES


@pytest.mark.parametrize("url", ["ble://tinyfed-3fa2", "ble://TINYFED-3FA2", "ble://3fa2"])
def test_open_by_advertised_name(url: str) -> None:
    async def scenario() -> tuple[str, int]:
        async with rig() as r:
            transport = r.transport(url)
            await transport.open()
            fields = await hello(transport)
            return fields["board_id"].hex(), transport.last_open_attempts

    board_id, attempts = run(scenario())

    assert board_id.endswith("3fa2")
    assert attempts == 1


def test_open_by_name_prefix_takes_the_advertising_board() -> None:
    async def scenario() -> int:
        async with rig(board_hex="beef") as r:
            transport = r.transport("ble://tinyfed-*")
            await transport.open()
            return transport.mtu

    assert run(scenario()) == 247


def test_open_fails_clearly_when_no_board_advertises_the_name() -> None:
    async def scenario() -> None:
        async with rig() as r:
            await r.transport("ble://tinyfed-0000", connect_timeout=0.3, backoff=FAST).open()

    with pytest.raises(
        TransportError, match=r"no board advertising tinyfed-0000.*gave up after 2 attempts"
    ):
        run(scenario())


@pytest.mark.parametrize(
    ("layout", "named"),
    [
        ({"with_rx": False}, BLE_RX_CHAR_UUID),
        ({"with_tx": False}, BLE_TX_CHAR_UUID),
        ({"service_uuid": "7a1f0009-5c4e-4b9a-9d1e-7f1ed0b0a001"}, BLE_SERVICE_UUID),
    ],
)
def test_missing_service_or_characteristic_fails_at_once_naming_it(
    layout: dict[str, Any], named: str
) -> None:
    async def scenario() -> BleTransport:
        async with rig(**layout) as r:
            transport = r.transport(backoff=Backoff(attempts=3, initial=0.01))
            with pytest.raises(TransportError) as caught:
                await transport.open()
            assert named in str(caught.value)
            return transport

    transport = run(scenario())

    assert transport.last_open_attempts == 1  # a wrong GATT layout is not retried


def test_default_platform_backend_without_a_reachable_board_raises_transport_error() -> None:
    # No backend given: bleak's own for this OS (BlueZ over D-Bus on Linux), which either is
    # absent here or finds no such board; either way the gateway sees a TransportError.
    transport = BleTransport("ble://AA:BB:CC:DD:EE:01", connect_timeout=0.5, backoff=Backoff(1))

    with pytest.raises(TransportError, match="AA:BB:CC:DD:EE:01"):
        run(transport.open())


# ------------------------------------------------------------------------ MTU and writes


@pytest.mark.parametrize(
    ("central_mtu", "board_max_mtu", "negotiated"),
    [(247, 247, 247), (23, 247, 23), (517, 185, 185)],
)
def test_write_sizes_follow_the_negotiated_mtu(
    central_mtu: int, board_max_mtu: int, negotiated: int
) -> None:
    # Prepare: 30 XFER_CHUNK frames (about 7 KB) written in one call, so pieces span frames.
    payload = bytes(range(256)) * 30
    frames = [
        pack(MsgType.XFER_CHUNK, i, offset=off, tail=payload[off : off + CHUNK_BYTES])
        for i, off in enumerate(range(0, len(payload), CHUNK_BYTES))
    ]
    stream = b"".join(frames)

    async def scenario() -> tuple[int, int, bytes, list[Frame], TinyfedPeripheral]:
        async with rig(mtu=central_mtu, max_mtu=board_max_mtu) as r:
            transport = r.transport()
            await transport.open()
            # Execute
            await transport.write(stream)
            echoed = await Inbox(transport).until(len(frames))
            return (
                transport.mtu,
                transport.max_write,
                bytes(r.responder.received),
                echoed,
                (r.peripheral),
            )

    mtu, max_write, received, echoed, peripheral = run(scenario())

    # Assert: every write and notification fits one ATT PDU; the stream arrives intact.
    assert mtu == negotiated
    assert max_write == negotiated - 3
    assert received == stream
    assert [f.payload for f in echoed] == [f.payload for f in frames_of(FrameParser(), stream)]
    assert all(m == negotiated for m in peripheral.write_mtus)
    assert max(peripheral.write_sizes) == negotiated - 3
    assert max(peripheral.notify_sizes) <= negotiated - 3
    assert len(peripheral.write_sizes) == -(-len(stream) // (negotiated - 3))


def model_frames(model: bytes, window_start: int = 0) -> list[bytes]:
    """XFER_CHUNK frames of ``model``, one per :data:`CHUNK_BYTES`."""
    return [
        pack(MsgType.XFER_CHUNK, 2 + i, offset=off, tail=model[off : off + CHUNK_BYTES])
        for i, off in enumerate(range(window_start, len(model), CHUNK_BYTES))
    ]


def test_model_sized_stream_is_one_write_per_frame_at_mtu_247() -> None:
    # Prepare: the frames of a model download, written frame by frame as a gateway does.
    model = np.random.default_rng(1).uniform(-0.5, 0.5, MODEL_BYTES // 4).astype("<f4").tobytes()
    frames = [
        pack(MsgType.XFER_BEGIN, 1, target=XferTarget.MODEL, total_len=len(model),
             crc32=zlib.crc32(model), meta=7),
        *model_frames(model),
        pack(MsgType.XFER_END, 2 + -(-len(model) // CHUNK_BYTES)),
    ]  # fmt: skip

    async def scenario() -> tuple[bytes, int, int]:
        async with rig() as r:
            transport = r.transport()
            await transport.open()
            # Execute
            for frame in frames:
                await transport.write(frame)
            await Inbox(transport).until(len(frames))
            return bytes(r.responder.received), transport.gatt_writes, transport.gatt_notifications

    received, writes, notifications = run(scenario())

    # Assert: every frame of a model download fits one ATT write at MTU 247.
    assert received == b"".join(frames)
    assert writes == len(frames) == 186
    log.info("byte-level model stream: %d writes, %d notifications", writes, notifications)


needs_board = pytest.mark.skipif(
    not VirtualBoardBridge.available(),
    reason="virtual board not built (make -C firmware host)",
)


@dataclass
class GattOps:
    """GATT operations the peripheral saw: writes received and notifications sent."""

    writes: int
    notifications: int


def ops_since(peripheral: TinyfedPeripheral, before: GattOps) -> GattOps:
    return GattOps(
        len(peripheral.write_sizes) - before.writes,
        len(peripheral.notify_sizes) - before.notifications,
    )


async def download(transport: BleTransport, inbox: Inbox, model: bytes, window: int) -> int:
    """XFER_BEGIN, XFER_CHUNK in windows (each acknowledged), XFER_END; returns frames sent."""
    await transport.write(
        pack(MsgType.XFER_BEGIN, 10, target=XferTarget.MODEL, total_len=len(model),
             crc32=zlib.crc32(model), meta=7)
    )  # fmt: skip
    reply = await inbox.next()
    assert reply.type == MsgType.ACK, unpack(reply)
    chunks = model_frames(model)
    for start in range(0, len(chunks), window):
        for wire in chunks[start : start + window]:
            await transport.write(wire)
        end = min((start + window) * CHUNK_BYTES, len(model))
        ack = await inbox.next()
        assert ack.type == MsgType.XFER_ACK, unpack(ack)
        assert unpack(ack)["next_offset"] == end
    await transport.write(pack(MsgType.XFER_END, 500))
    done = await inbox.next()
    assert done.type == MsgType.ACK, unpack(done)
    return len(chunks) + 2


async def upload(transport: BleTransport, inbox: Inbox, batch: int) -> bytes:
    """GET_MODEL, then READ in batches of MODEL_CHUNK frames; the model bytes, CRC checked."""
    await transport.write(pack(MsgType.GET_MODEL, 600))
    info = unpack(await inbox.next())
    data = bytearray()
    seq = 601
    while len(data) < info["total_len"]:
        count = min(batch, -(-(info["total_len"] - len(data)) // CHUNK_BYTES))
        await transport.write(pack(MsgType.READ, seq, offset=len(data), count=count))
        seq += 1
        for _ in range(count):
            chunk = await inbox.next()
            assert chunk.type == MsgType.MODEL_CHUNK, unpack(chunk)
            fields = unpack(chunk)
            assert fields["offset"] == len(data)
            data += fields["tail"]
    assert zlib.crc32(data) == info["crc32"]
    assert info["model_round"] == 7
    return bytes(data)


@needs_board
def test_hello_and_model_round_trip_through_the_virtual_board() -> None:
    # Prepare: a model of finite float32 parameters, 41,868 bytes.
    model = np.random.default_rng(2).uniform(-0.5, 0.5, MODEL_BYTES // 4).astype("<f4").tobytes()

    async def scenario() -> tuple[dict[str, Any], bytes, GattOps, GattOps, int]:
        async with rig(board=True) as r:
            transport = r.transport()
            await transport.open()
            inbox = Inbox(transport)
            # Execute: HELLO, model download to the board, model upload back.
            await transport.write(pack(MsgType.HELLO_REQ, 1))
            fields = unpack(await inbox.next())
            before = GattOps(len(r.peripheral.write_sizes), len(r.peripheral.notify_sizes))
            frames_sent = await download(transport, inbox, model, fields["window"])
            down = ops_since(r.peripheral, before)
            before = GattOps(len(r.peripheral.write_sizes), len(r.peripheral.notify_sizes))
            back = await upload(transport, inbox, fields["window"])
            up = ops_since(r.peripheral, before)
            return fields, back, down, up, frames_sent

    hello_fields, back, down, up, frames_sent = run(scenario(), timeout=30)

    # Assert: the board's HELLO, the model bytes back unchanged, one write per frame.
    assert hello_fields["flags"] & 1  # virtual board
    assert hello_fields["chunk_bytes"] == CHUNK_BYTES
    assert back == model
    assert down.writes == frames_sent == 186
    log.info("model over BLE at MTU 247: down %s, up %s", down, up)
    print(f"\nGATT operations per 41,868-byte model at MTU 247: down {down}, up {up}")


@needs_board
def test_board_link_puts_and_gets_a_model_over_ble() -> None:
    params = nn.init_params(seed=5)

    async def scenario() -> tuple[np.ndarray[Any, Any], int]:
        # READ batches of one window: the virtual board (as of this writing) answers a READ of
        # more than 8 chunks with only 8, which BoardLink recovers from by timeouts (slowly).
        async with rig(board=True) as r, BoardLink(r.transport(), read_batch=8) as link:
            await link.hello()
            await link.put_model(params, round=3)
            back, info = await link.get_model()
            return back, info.model_round

    back, model_round = run(scenario(), timeout=30)

    assert np.array_equal(back, params)
    assert model_round == 3


# ------------------------------------------------------------------- disconnect, reconnect


def test_board_disconnect_fails_reads_and_writes_then_reopen_backs_off() -> None:
    async def scenario() -> tuple[list[str], int, dict[str, Any]]:
        async with rig() as r:
            transport = r.transport(connect_timeout=0.25, backoff=Backoff(8, 0.1, 2.0, 0.4))
            await transport.open()
            errors = []
            # Execute: the board drops the link and stays silent for a while (a reset).
            reader = asyncio.create_task(transport.read())
            await asyncio.sleep(0.05)
            await r.peripheral.disconnect()
            for op in (reader, transport.read(), transport.write(b"\x00")):
                with pytest.raises(TransportError) as caught:
                    await op
                errors.append(str(caught.value))

            async def come_back() -> None:
                await asyncio.sleep(0.6)
                await r.peripheral.advertise()

            back = asyncio.create_task(come_back())
            await transport.open()
            await back
            return errors, transport.last_open_attempts, await hello(transport, seq=2)

    errors, attempts, fields = run(scenario())

    assert all("disconnected" in e for e in errors)
    assert attempts >= 2
    assert fields["board_id"].hex().endswith("3fa2")


def test_close_is_idempotent_and_fails_pending_reads() -> None:
    async def scenario() -> str:
        async with rig() as r:
            transport = r.transport()
            await transport.open()
            reader = asyncio.create_task(transport.read())
            await asyncio.sleep(0.01)
            await transport.close()
            await transport.close()
            with pytest.raises(TransportError) as caught:
                await reader
            with pytest.raises(TransportError):
                await transport.write(b"x")
            return str(caught.value)

    assert "closed" in run(scenario())


# ----------------------------------------------------------------------- URL and backoff


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("ble://aa:bb:cc:dd:ee:ff", BleTarget(address="AA:BB:CC:DD:EE:FF")),
        ("ble://tinyfed-3FA2", BleTarget(name="tinyfed-3FA2")),
        ("ble://3fa2", BleTarget(name="tinyfed-3fa2")),
        ("ble://tinyfed-*", BleTarget(prefix="tinyfed-")),
        ("ble://my%20board", BleTarget(name="my board")),
    ],
)
def test_url_names_an_address_a_name_or_a_prefix(url: str, target: BleTarget) -> None:
    assert BleTarget.parse(url) == target


@pytest.mark.parametrize("url", ["ble://", "serial:///dev/ttyACM0"])
def test_bad_url_is_rejected(url: str) -> None:
    with pytest.raises(TransportError):
        BleTransport(url)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(Backoff().delays()) == [0.5, 1.0, 2.0, 4.0]
    assert list(Backoff(6, 1.0, 3.0, 5.0).delays()) == [1.0, 3.0, 5.0, 5.0, 5.0]
