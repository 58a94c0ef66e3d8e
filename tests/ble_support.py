"""BLE without a radio, for tests: bumble's emulated controllers joined by a LocalLink.

Everything above the radio is real code:

* :class:`EmulatedCentral` is a bumble ``Device`` (host stack + emulated controller) acting as
  the gateway's Bluetooth adapter. :meth:`EmulatedCentral.client_backend` and
  :meth:`EmulatedCentral.scanner_backend` return bleak *custom backends* (subclasses of
  ``BaseBleakClient`` / ``BaseBleakScanner``) driving it, which ``BleakClient(..., backend=)``
  and ``BleakScanner(backend=)`` accept; so ``BleTransport`` runs through bleak's public API.
* :class:`TinyfedPeripheral` is a second bumble ``Device`` on the same link serving the
  firmware's GATT service from :mod:`tinyfed.link.spec` and advertising ``tinyfed-XXXX``. RX
  writes go to a byte sink; :meth:`TinyfedPeripheral.send` notifies bytes in ``ATT_MTU - 3``
  pieces, as the firmware does. It counts every GATT write and notification.
* Sinks: :class:`HelloResponder` (a byte-level stand-in answering HELLO_REQ with a HELLO,
  everything else echoed back) and :class:`VirtualBoardBridge` (the real virtual board process
  in ``--stdio`` mode: RX writes to its stdin, its stdout notified back).

What is emulated: the radio, the two controllers' link layer (bumble ``Controller``), and the
OS Bluetooth stack under bleak (this backend instead of BlueZ/CoreBluetooth/WinRT). The HCI
host, L2CAP, ATT/GATT client and server are bumble's real protocol code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak.uuids import normalize_uuid_str
from bumble import core, gatt, gatt_client
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from tests.link_support import pack
from tinyfed.link.frame import Frame, FrameError, FrameParser, encode_frame
from tinyfed.link.spec import (
    BLE_NAME_PREFIX,
    BLE_RX_CHAR_UUID,
    BLE_SERVICE_UUID,
    BLE_TX_CHAR_UUID,
    CHUNK_BYTES,
    DEFAULT_WINDOW,
    PROTOCOL_VERSION,
    ArchId,
    MsgType,
    PipelineId,
    State,
)

ATT_DEFAULT_MTU = 23
ROOT = Path(__file__).resolve().parents[1]
VIRTUAL_BOARD = ROOT / "firmware" / "build" / "host" / "tinyfed-virtual-board"

_PROPERTY_NAMES = {
    gatt.Characteristic.Properties.BROADCAST: "broadcast",
    gatt.Characteristic.Properties.READ: "read",
    gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    gatt.Characteristic.Properties.WRITE: "write",
    gatt.Characteristic.Properties.NOTIFY: "notify",
    gatt.Characteristic.Properties.INDICATE: "indicate",
    gatt.Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES: "authenticated-signed-writes",
    gatt.Characteristic.Properties.EXTENDED_PROPERTIES: "extended-properties",
}


def _device(link: LocalLink, name: str, address: str) -> Device:
    controller = Controller(name, link=link)
    return Device(
        name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller))
    )


def _bleak_uuid(uuid: core.UUID) -> str:
    return normalize_uuid_str(uuid.to_hex_str("-"))


def _plain_address(address: Address) -> str:
    return str(address).split("/")[0].upper()


def _advertisement_data(adv: Advertisement) -> AdvertisementData:
    data = adv.data
    name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
        AdvertisingData.SHORTENED_LOCAL_NAME
    )
    uuids: list[str] = []
    for kind in (
        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    ):
        for group in data.get_all(kind):
            uuids.extend(_bleak_uuid(u) for u in group)
    return AdvertisementData(
        local_name=name if isinstance(name, str) else None,
        manufacturer_data={},
        service_data={},
        service_uuids=uuids,
        tx_power=None,
        rssi=adv.rssi,
        platform_data=(adv,),
    )


# ------------------------------------------------------------------------------------ central


class EmulatedCentral:
    """A LocalLink (the "air") and a bumble central on it, with bleak backends that drive it.

    ``mtu`` is the ATT MTU the central asks for right after connecting, as BlueZ,
    CoreBluetooth and WinRT do by themselves; 23 means no MTU exchange at all.
    """

    def __init__(self, *, mtu: int = 247, address: str = "F0:F0:F0:F0:F0:F0") -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self.device = _device(self.link, "gateway-central", address)
        self.mtu = mtu

    async def start(self) -> None:
        await self.device.power_on()

    @property
    def client_backend(self) -> type[BaseBleakClient]:
        """A ``BaseBleakClient`` subclass bound to this central (for ``BleakClient(backend=)``)."""
        return type(
            "BumbleBleakClient",
            (BumbleBleakClient,),
            {"central": self.device, "requested_mtu": self.mtu},
        )

    @property
    def scanner_backend(self) -> type[BaseBleakScanner]:
        """A ``BaseBleakScanner`` subclass bound to this central (``BleakScanner(backend=)``)."""
        return type("BumbleBleakScanner", (BumbleBleakScanner,), {"central": self.device})


class BumbleBleakScanner(BaseBleakScanner):
    """bleak scanner backend: the bumble central's scan, advertisements as bleak reports them."""

    central: ClassVar[Device]

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **_kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode != "passive"

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = _advertisement_data(adv)
        address = _plain_address(adv.address)
        device = self.create_or_update_device(address, address, data.local_name, adv, data)
        if self.is_allowed_uuid(data.service_uuids):
            self.call_detection_callbacks(device, data)

    async def start(self) -> None:
        self.seen_devices = {}
        self.central.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self.central.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        self.central.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        if self.central.is_scanning:
            await self.central.stop_scanning()


class BumbleBleakClient(BaseBleakClient):
    """bleak client backend: a bumble central's GATT client over the emulated link.

    Like bleak's OS backends it connects to a ``BLEDevice`` from a scan directly, and to an
    address string after scanning for it (``BleakDeviceNotFoundError`` if it is not seen within
    ``timeout``); it negotiates the MTU after connecting and discovers every service,
    characteristic and descriptor before ``connect()`` returns.
    """

    central: ClassVar[Device]
    requested_mtu: ClassVar[int] = 247

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **_kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._ble_device = (
            address_or_ble_device if isinstance(address_or_ble_device, BLEDevice) else None
        )
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    # ---------------------------------------------------------------- connectivity

    @property
    def name(self) -> str:
        if self._ble_device is not None and self._ble_device.name:
            return str(self._ble_device.name)
        return self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def _find(self, address: str) -> Address:
        found: asyncio.Future[Address] = asyncio.get_running_loop().create_future()

        def on_advertisement(adv: Advertisement) -> None:
            if _plain_address(adv.address) == address.upper() and not found.done():
                found.set_result(adv.address)

        self.central.on(Device.EVENT_ADVERTISEMENT, on_advertisement)
        try:
            await self.central.start_scanning(filter_duplicates=False)
            return await asyncio.wait_for(found, self._timeout)
        except TimeoutError as exc:
            raise BleakDeviceNotFoundError(address, f"Device {address} was not found") from exc
        finally:
            self.central.remove_listener(Device.EVENT_ADVERTISEMENT, on_advertisement)
            if self.central.is_scanning:
                await self.central.stop_scanning()

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        details = self._ble_device.details if self._ble_device is not None else None
        if isinstance(details, Advertisement):
            address = details.address
        else:
            address = await self._find(self.address)
        try:
            connection = await self.central.connect(address, timeout=self._timeout)
        except (core.BaseBumbleError, TimeoutError) as exc:
            raise BleakError(f"connection to {self.address} failed: {exc}") from exc
        self._connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        peer = Peer(connection)
        self._peer = peer
        try:
            if self.requested_mtu > ATT_DEFAULT_MTU:
                await peer.request_mtu(self.requested_mtu)
            self.services = await self._discover(peer)
        except (core.BaseBumbleError, asyncio.CancelledError) as exc:
            raise BleakError(f"service discovery on {self.address} failed: {exc}") from exc

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in await peer.discover_services():
            bleak_service = BleakGATTService(service, service.handle, _bleak_uuid(service.uuid))
            collection.add_service(bleak_service)
            for char in await service.discover_characteristics():
                props = [n for flag, n in _PROPERTY_NAMES.items() if char.properties & flag]
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    _bleak_uuid(char.uuid),
                    props,  # type: ignore[arg-type]
                    lambda: self.mtu_size - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for desc in await peer.discover_descriptors(char):
                    collection.add_descriptor(
                        BleakGATTDescriptor(desc, desc.handle, _bleak_uuid(desc.type), bleak_char)
                    )
        return collection

    def _on_disconnection(self, _reason: int) -> None:
        self._connection = None
        self._peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(core.BaseBumbleError):
            await connection.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not emulated")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not emulated")

    # ---------------------------------------------------------------- GATT I/O

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._require_peer().read_value(characteristic.handle))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._require_peer().read_value(descriptor.handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        value = bytes(data)
        if not response and len(value) > self.mtu_size - 3:
            # An ATT Write Command cannot exceed the MTU; OS stacks reject such writes.
            raise BleakError(
                f"write of {len(value)} bytes exceeds ATT_MTU - 3 = {self.mtu_size - 3}"
            )
        await self._require_peer().write_value(characteristic.handle, value, with_response=response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        value = bytes(data)
        await self._require_peer().write_value(descriptor.handle, value, with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        proxy: gatt_client.CharacteristicProxy[bytes] = characteristic.obj
        self._subscribers[characteristic.handle] = subscriber
        await self._require_peer().subscribe(proxy, subscriber)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._require_peer().unsubscribe(characteristic.obj, subscriber)


# --------------------------------------------------------------------------------- peripheral


class TinyfedPeripheral:
    """A bumble peripheral serving the firmware's GATT service, advertising ``tinyfed-XXXX``.

    ``sink`` receives every RX write (bytes, in order). :meth:`send` notifies bytes on TX in
    ``ATT_MTU - 3`` pieces, dropping them when nobody is subscribed (as the firmware's BLE
    stack does). ``with_rx`` / ``with_tx`` / ``service_uuid`` let a test serve a broken
    layout. ``max_mtu`` is the largest ATT MTU the peripheral accepts in an MTU exchange.
    """

    def __init__(
        self,
        central: EmulatedCentral,
        sink: Callable[[bytes], None],
        *,
        board_hex: str = "3fa2",
        address: str = "F1:22:33:44:55:66",
        max_mtu: int = 247,
        with_rx: bool = True,
        with_tx: bool = True,
        service_uuid: str = BLE_SERVICE_UUID,
    ) -> None:
        self.name = BLE_NAME_PREFIX + board_hex
        self.address = address
        self.device = _device(central.link, self.name, address)
        self.device.gatt_server.max_mtu = max_mtu
        self.sink = sink
        #: sizes of every RX write received and every TX notification sent
        self.write_sizes: list[int] = []
        self.notify_sizes: list[int] = []
        #: MTU of the connection when each write arrived (to check write size <= MTU - 3)
        self.write_mtus: list[int] = []
        self.connected = asyncio.Event()
        self._subscribed: set[Connection] = set()
        self._send_lock = asyncio.Lock()
        chars: list[gatt.Characteristic[bytes]] = []
        if with_rx:
            chars.append(
                gatt.Characteristic(
                    BLE_RX_CHAR_UUID,
                    gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
                    gatt.Characteristic.WRITEABLE,
                    gatt.CharacteristicValue(write=self._on_write),
                )
            )
        self.tx = gatt.Characteristic(
            BLE_TX_CHAR_UUID,
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            b"",
        )
        if with_tx:
            chars.append(self.tx)
            self.tx.on(gatt.Characteristic.EVENT_SUBSCRIPTION, self._on_subscription)
        self.device.add_service(gatt.Service(service_uuid, chars))
        self.device.on(Device.EVENT_CONNECTION, self._on_connection)

    async def start(self) -> None:
        await self.device.power_on()
        await self.advertise()

    async def advertise(self) -> None:
        """Advertise (connectable, every 20 ms): name in the data, service in the scan response."""
        self.device.advertising_data = bytes(
            AdvertisingData(
                [
                    (AdvertisingData.FLAGS, bytes([0x06])),
                    (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                ]
            )
        )
        self.device.scan_response_data = bytes(
            AdvertisingData(
                [
                    (
                        AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                        core.UUID(BLE_SERVICE_UUID).to_bytes(force_128=True),
                    )
                ]
            )
        )
        await self.device.start_advertising(
            advertising_interval_min=20, advertising_interval_max=20
        )

    async def stop_advertising(self) -> None:
        await self.device.stop_advertising()

    @property
    def connection(self) -> Connection | None:
        return next(iter(self.device.connections.values()), None)

    def _on_connection(self, connection: Connection) -> None:
        self.connected.set()

        def on_disconnection(_reason: int) -> None:
            self._subscribed.discard(connection)
            self.connected.clear()

        connection.on(Connection.EVENT_DISCONNECTION, on_disconnection)

    def _on_subscription(self, bearer: Any, notify: bool, _indicate: bool) -> None:
        connection = bearer if isinstance(bearer, Connection) else bearer.connection
        if notify:
            self._subscribed.add(connection)
        else:
            self._subscribed.discard(connection)

    def _on_write(self, connection: Connection, value: bytes) -> None:
        self.write_sizes.append(len(value))
        self.write_mtus.append(connection.att_mtu)
        self.sink(bytes(value))

    async def send(self, data: bytes) -> None:
        """Notify ``data`` to the subscribed central in ``ATT_MTU - 3`` pieces (order kept)."""
        async with self._send_lock:
            for connection in list(self._subscribed):
                size = connection.att_mtu - 3
                for start in range(0, len(data), size):
                    piece = data[start : start + size]
                    await self.device.notify_subscriber(connection, self.tx, piece)
                    self.notify_sizes.append(len(piece))

    async def disconnect(self) -> None:
        """Drop the connection from the board's side (a reset or going out of range)."""
        connection = self.connection
        if connection is not None:
            await connection.disconnect()

    async def stop(self) -> None:
        with contextlib.suppress(core.BaseBumbleError):
            await self.stop_advertising()
        await self.disconnect()


# ------------------------------------------------------------------------------------ sinks


def hello_frame(seq: int, board_hex: str = "3fa2", *, virtual: bool = True) -> bytes:
    """A HELLO as a board of id ``board_hex`` sends it (the byte-level stand-in's answer)."""
    return pack(
        MsgType.HELLO,
        seq,
        protocol=PROTOCOL_VERSION,
        boot_id=0x1234ABCD,
        board_id=bytes.fromhex(board_hex.rjust(16, "0")),
        fw_version=(0, 1, 0),
        arch=ArchId.FC650_16_3,
        pipeline=PipelineId.PAPER,
        lr=0.3,
        momentum=0.9,
        local_steps=10,
        model_round=0,
        steps_since_global=0,
        total_steps=0,
        state=State.IDLE,
        window=DEFAULT_WINDOW,
        chunk_bytes=CHUNK_BYTES,
        flags=1 if virtual else 0,
    )


class HelloResponder:
    """Byte-level stand-in for a board: answers HELLO_REQ with HELLO and echoes other frames.

    Every byte written is kept in :attr:`received`; every other complete frame is sent back
    unchanged, so a test can check both directions byte for byte. Attach with
    ``responder.peripheral = peripheral`` and pass ``responder.feed`` as the sink.
    """

    def __init__(self) -> None:
        self.peripheral: TinyfedPeripheral | None = None
        self.parser = FrameParser()
        self.received = bytearray()
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def feed(self, data: bytes) -> None:
        self.received += data
        reply = bytearray()
        for frame in frames_of(self.parser, data):
            if frame.type == MsgType.HELLO_REQ:
                self._seq += 1
                reply += hello_frame(self._seq)
            else:
                reply += encode_frame(frame.type, frame.seq, frame.payload)
        if reply and self.peripheral is not None:
            task = asyncio.get_running_loop().create_task(self.peripheral.send(bytes(reply)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class VirtualBoardBridge:
    """The real virtual board (``--stdio``) behind the emulated peripheral.

    RX writes go to the process's stdin; whatever it writes to stdout is notified on TX.
    """

    def __init__(
        self, *, board_id: str | None = "0000000000003fa2", binary: Path = VIRTUAL_BOARD
    ) -> None:
        self.binary = binary
        self.board_id = board_id
        self.peripheral: TinyfedPeripheral | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.stdout_bytes = 0

    @staticmethod
    def available() -> bool:
        return VIRTUAL_BOARD.is_file() and os.access(VIRTUAL_BOARD, os.X_OK)

    async def start(self) -> None:
        args = [str(self.binary), "--stdio"]
        if self.board_id is not None:
            args += ["--board-id", self.board_id]
        self.process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._pump = asyncio.get_running_loop().create_task(self._pump_stdout())

    async def _pump_stdout(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while data := await self.process.stdout.read(4096):
            self.stdout_bytes += len(data)
            if self.peripheral is not None:
                await self.peripheral.send(data)

    def feed(self, data: bytes) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.write(data)

    async def stop(self) -> None:
        if self.process is not None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


def frames_of(parser: FrameParser, data: bytes) -> list[Frame]:
    """The complete frames in ``data``; raises on any frame error (none are expected)."""
    out: list[Frame] = []
    for item in parser.feed(data):
        if isinstance(item, FrameError):
            raise item
        out.append(item)
    return out
