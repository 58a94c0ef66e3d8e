"""BLE transport: the link's frame stream over the board's GATT service, through bleak.

The board serves one custom service (:data:`~tinyfed.link.spec.BLE_SERVICE_UUID`) with two
characteristics that carry the same COBS byte stream as USB serial:

* RX (:data:`~tinyfed.link.spec.BLE_RX_CHAR_UUID`): the host writes *without response*, in
  pieces of at most ``ATT_MTU - 3`` bytes (:attr:`BleTransport.max_write`);
* TX (:data:`~tinyfed.link.spec.BLE_TX_CHAR_UUID`): the board notifies, in pieces of at most
  ``ATT_MTU - 3`` bytes.

Pieces have no meaning of their own: a frame may span several writes or notifications and one
piece may hold the end of a frame and the start of the next; :class:`~tinyfed.link.frame.
FrameParser` reassembles them. Flow control is the link protocol's: the board acknowledges a
window of transfer chunks (``XFER_ACK``), so the host never has more than one window of bytes
in flight however the OS queues writes without response.

URLs (the part after ``ble://`` is percent-decoded):

* ``ble://AA:BB:CC:DD:EE:FF`` (or a CoreBluetooth UUID on macOS): connect by address;
* ``ble://tinyfed-3fa2``: scan for a board advertising exactly this local name
  (case-insensitive);
* ``ble://3fa2``: the same, for 1 to 8 hex digits: ``tinyfed-`` + the digits;
* ``ble://tinyfed-*`` (any name ending in ``*``): the first board whose local name starts with
  the text before the ``*`` -- convenient with one board in range, ambiguous with several.

This module imports bleak at import time; the gateway imports it only for ``ble://`` URLs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from tinyfed.link.spec import (
    BLE_NAME_PREFIX,
    BLE_RX_CHAR_UUID,
    BLE_SERVICE_UUID,
    BLE_TX_CHAR_UUID,
)
from tinyfed.link.transports.base import Transport, TransportError

log = logging.getLogger(__name__)

SCHEME = "ble://"
ATT_DEFAULT_MTU = 23  #: the ATT MTU before (or without) an MTU exchange, Core spec Vol 3 F 3.2.8
ATT_WRITE_HEADER = 3  #: opcode (1) + attribute handle (2) in front of every written value

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_CB_UUID = re.compile(r"^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
_SHORT_ID = re.compile(r"^[0-9A-Fa-f]{1,8}$")
#: What bleak backends raise when the link fails (OS stacks raise OSError/EOFError too).
_LINK_ERRORS = (BleakError, OSError, EOFError, TimeoutError)


@dataclass(frozen=True)
class Backoff:
    """Retry policy of :meth:`BleTransport.open`: exponential backoff between attempts.

    Defaults: 5 attempts, waiting 0.5, 1, 2 and 4 s between them (factor 2, capped at 8 s), so
    a board that reboots (about 1 s) or walks briefly out of range is reached again, and a board
    that is gone fails within about 7.5 s plus 5 connect timeouts.
    """

    attempts: int = 5
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Backoff.attempts must be >= 1, got {self.attempts}")
        if self.initial < 0 or self.factor < 1 or self.maximum < 0:
            raise ValueError(f"invalid backoff {self}")

    def delays(self) -> Iterator[float]:
        """The waits between consecutive attempts (``attempts - 1`` of them)."""
        delay = self.initial
        for _ in range(self.attempts - 1):
            yield min(delay, self.maximum)
            delay *= self.factor


@dataclass(frozen=True)
class BleTarget:
    """What a ``ble://`` URL names: an address, an exact local name, or a name prefix."""

    address: str | None = None
    name: str | None = None
    prefix: str | None = None

    @classmethod
    def parse(cls, url: str) -> BleTarget:
        """Parse ``ble://ADDRESS``, ``ble://NAME``, ``ble://HEX`` or ``ble://PREFIX*``."""
        if not url.startswith(SCHEME):
            raise TransportError(f"{url!r} is not a {SCHEME} URL")
        rest = unquote(url[len(SCHEME) :]).strip().rstrip("/")
        if not rest:
            raise TransportError(f"{url!r} names no device: use ble://ADDRESS or ble://NAME")
        if _MAC.match(rest) or _CB_UUID.match(rest):
            return cls(address=rest.upper())
        if rest.endswith("*"):
            return cls(prefix=rest[:-1])
        if _SHORT_ID.match(rest):
            return cls(name=BLE_NAME_PREFIX + rest)
        return cls(name=rest)

    def matches(self, local_name: str | None) -> bool:
        """Whether an advertised local name is the board this target names."""
        if local_name is None:
            return False
        if self.name is not None:
            return local_name.lower() == self.name.lower()
        if self.prefix is not None:
            return local_name.lower().startswith(self.prefix.lower())
        return False

    def __str__(self) -> str:
        if self.address is not None:
            return self.address
        return self.name if self.name is not None else f"{self.prefix}*"


class _GattLayoutError(TransportError):
    """The device answers but does not serve the tinyfed service: retrying cannot help."""


class BleTransport(Transport):
    """The link byte stream over BLE GATT (write without response + notifications).

    Args:
        url: ``ble://ADDRESS`` or ``ble://NAME`` (see the module docstring).
        backend: bleak client backend class; ``None`` uses bleak's backend for the platform
            (tests pass an emulated one).
        scanner_backend: bleak scanner backend class for ``ble://NAME``; ``None`` = platform.
        connect_timeout: seconds for one attempt: the scan (by name) or the connection and
            service discovery.
        backoff: retry policy of :meth:`open`.
    """

    def __init__(
        self,
        url: str,
        *,
        backend: type[BaseBleakClient] | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0, got {connect_timeout}")
        self.url = url
        self.target = BleTarget.parse(url)
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self._backend = backend
        self._scanner_backend = scanner_backend
        self._client: BleakClient | None = None
        self._rx: BleakGATTCharacteristic | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._lost: str | None = "not open"
        #: Attempts the last :meth:`open` needed (for logs and status).
        self.last_open_attempts = 0
        #: GATT operations since construction: writes without response sent, notifications
        #: received.
        self.gatt_writes = 0
        self.gatt_notifications = 0

    # ------------------------------------------------------------------ Transport interface

    @property
    def kind(self) -> str:
        return "ble"

    @property
    def mtu(self) -> int:
        """The negotiated ATT MTU of the open connection (23 when not connected)."""
        if self._client is None:
            return ATT_DEFAULT_MTU
        try:
            return int(self._client.mtu_size)
        except (BleakError, NotImplementedError):
            return ATT_DEFAULT_MTU

    @property
    def max_write(self) -> int:
        """Largest write without response: the RX characteristic's limit, else ``MTU - 3``.

        bleak's ``max_write_without_response_size`` is preferred where the backend knows it
        (BlueZ >= 5.62 reports a correct size there but a fixed 23 as ``mtu_size``).
        """
        size = 0
        if self._rx is not None:
            try:
                size = int(self._rx.max_write_without_response_size)
            except (BleakError, NotImplementedError, AttributeError):
                size = 0
        if size <= 0:
            size = self.mtu - ATT_WRITE_HEADER
        return max(size, ATT_DEFAULT_MTU - ATT_WRITE_HEADER)

    async def open(self) -> None:
        """Connect, retrying with :attr:`backoff`; :class:`TransportError` if all attempts fail.

        A device that is reached but lacks the tinyfed service or a characteristic fails at
        once, naming what is missing.
        """
        await self._drop_client()
        delays = self.backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            self.last_open_attempts = attempt
            try:
                await self._connect_once()
            except _GattLayoutError:
                raise
            except TransportError as exc:
                delay = next(delays, None)
                if delay is None:
                    plural = "s" if attempt > 1 else ""
                    raise TransportError(
                        f"{exc} (gave up after {attempt} attempt{plural})"
                    ) from exc
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.2f s", self.url, attempt, exc, delay
                )
                await asyncio.sleep(delay)
            else:
                log.info(
                    "%s: connected to %s (MTU %d, writes of <= %d bytes, attempt %d)",
                    self.url,
                    self._client.address if self._client else "?",
                    self.mtu,
                    self.max_write,
                    attempt,
                )
                return

    async def read(self) -> bytes:
        """The next notified bytes; :class:`TransportError` once the link is lost or closed.

        Bytes notified before a disconnection are still returned first.
        """
        if self._client is None and self._queue.empty():
            raise TransportError(f"{self.url}: {self._lost or 'not connected'}")
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later read fails too
            raise TransportError(f"{self.url}: {self._lost or 'disconnected'}")
        return item

    async def write(self, data: bytes) -> None:
        """Send ``data`` as consecutive writes without response of at most :attr:`max_write`."""
        async with self._write_lock:  # the pieces of one write() stay contiguous
            client, rx = self._require_open()
            size = self.max_write
            view = memoryview(data)
            for start in range(0, len(data), size):
                try:
                    await client.write_gatt_char(rx, view[start : start + size], response=False)
                except _LINK_ERRORS as exc:
                    raise TransportError(f"{self.url}: write failed: {exc}") from exc
                self.gatt_writes += 1

    async def close(self) -> None:
        """Disconnect; pending and later reads raise :class:`TransportError`. Idempotent."""
        if self._client is not None:
            self._lost = "closed"
        await self._drop_client()

    # ------------------------------------------------------------------ internals

    def _require_open(self) -> tuple[BleakClient, BleakGATTCharacteristic]:
        if self._client is None or self._rx is None or not self._client.is_connected:
            raise TransportError(f"{self.url}: {self._lost or 'not connected'}")
        return self._client, self._rx

    async def _find_device(self) -> BLEDevice:
        """Scan for the advertised local name the URL names."""
        target = self.target

        def wanted(_device: BLEDevice, adv: AdvertisementData) -> bool:
            return target.matches(adv.local_name)

        try:
            if self._scanner_backend is None:
                device = await BleakScanner.find_device_by_filter(
                    wanted, timeout=self.connect_timeout
                )
            else:
                device = await BleakScanner.find_device_by_filter(
                    wanted, timeout=self.connect_timeout, backend=self._scanner_backend
                )
        except (BleakError, OSError) as exc:
            raise TransportError(f"{self.url}: scan failed: {exc}") from exc
        if device is None:
            raise TransportError(
                f"{self.url}: no board advertising {target} within {self.connect_timeout:g} s"
            )
        return device

    async def _connect_once(self) -> None:
        where: BLEDevice | str
        if self.target.address is not None:
            where = self.target.address
        else:
            where = await self._find_device()
        client = BleakClient(
            where,
            disconnected_callback=self._on_disconnected,
            timeout=self.connect_timeout,
            backend=self._backend,
        )
        self._queue = asyncio.Queue()
        self._lost = None
        try:
            # bleak applies connect_timeout itself (to its implicit scan for an address);
            # this outer guard only catches a backend that hangs beyond it.
            async with asyncio.timeout(2 * self.connect_timeout):
                await client.connect()
        except _LINK_ERRORS as exc:
            await _quietly_disconnect(client)
            reason = str(exc) or f"timed out after {2 * self.connect_timeout:g} s"
            raise TransportError(f"{self.url}: connection failed: {reason}") from exc
        try:
            rx, tx = self._check_layout(client)
            await client.start_notify(tx, self._on_notify)
        except _GattLayoutError:
            await _quietly_disconnect(client)
            raise
        except _LINK_ERRORS as exc:
            await _quietly_disconnect(client)
            raise TransportError(f"{self.url}: subscribing to TX failed: {exc}") from exc
        if not client.is_connected:  # lost during the subscription
            raise TransportError(f"{self.url}: disconnected during setup")
        self._client, self._rx = client, rx

    def _check_layout(
        self, client: BleakClient
    ) -> tuple[BleakGATTCharacteristic, BleakGATTCharacteristic]:
        """The RX and TX characteristics, or a :class:`_GattLayoutError` naming what lacks."""
        service = client.services.get_service(BLE_SERVICE_UUID)
        if service is None:
            found = ", ".join(s.uuid for s in client.services) or "none"
            raise _GattLayoutError(
                f"{self.url}: device {client.address} has no tinyfed GATT service "
                f"{BLE_SERVICE_UUID} (services found: {found})"
            )
        rx = service.get_characteristic(BLE_RX_CHAR_UUID)
        tx = service.get_characteristic(BLE_TX_CHAR_UUID)
        missing = []
        if rx is None:
            missing.append(f"RX characteristic {BLE_RX_CHAR_UUID} (host writes)")
        elif "write-without-response" not in rx.properties:
            missing.append(f"write-without-response on RX {BLE_RX_CHAR_UUID}")
        if tx is None:
            missing.append(f"TX characteristic {BLE_TX_CHAR_UUID} (board notifies)")
        elif "notify" not in tx.properties:
            missing.append(f"notify on TX {BLE_TX_CHAR_UUID}")
        if missing or rx is None or tx is None:
            raise _GattLayoutError(
                f"{self.url}: tinyfed service on {client.address} lacks " + " and ".join(missing)
            )
        return rx, tx

    def _on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        if data:
            self.gatt_notifications += 1
            self._queue.put_nowait(bytes(data))

    def _on_disconnected(self, client: BleakClient) -> None:
        if client is not self._client:
            return  # a client being set up or already dropped
        if self._lost is None:
            self._lost = "board disconnected"
            log.warning("%s: %s", self.url, self._lost)
        self._queue.put_nowait(None)

    async def _drop_client(self) -> None:
        client, self._client, self._rx = self._client, None, None
        if client is not None:
            self._queue.put_nowait(None)
            await _quietly_disconnect(client)


async def _quietly_disconnect(client: BleakClient) -> None:
    try:
        await client.disconnect()
    except _LINK_ERRORS as exc:
        log.debug("disconnect of %s failed: %s", client.address, exc)
