"""Concrete transports, chosen by URL; the BLE one is imported only when a ``ble://`` URL is used.

=====================================  ================================================
URL                                    transport
=====================================  ================================================
``serial:///dev/ttyACM0``              :class:`tinyfed.link.transports.serial.SerialTransport`
``serial://auto``                      the one Nano 33 BLE found by USB VID/PID
``tcp://HOST:PORT``                    :class:`tinyfed.link.transports.tcp.TcpTransport`
``ble://AA:BB:CC:DD:EE:FF``            ``tinyfed.link.transports.ble.BleTransport`` (bleak)
``ble://NAME``                         the same, found by its advertised name
=====================================  ================================================
"""

from __future__ import annotations

import importlib
import importlib.util
from urllib.parse import urlsplit

from tinyfed.errors import UsageError
from tinyfed.link.transports.base import Transport

SCHEMES = ("serial", "tcp", "ble")

EXAMPLES = "serial:///dev/ttyACM0, serial://auto, tcp://HOST:PORT, ble://AA:BB:CC:DD:EE:FF"


def check_url(url: str) -> str:
    """Return ``url`` if it names a transport; :class:`UsageError` naming the problem if not."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise UsageError(f"device URL {url!r}: use one of {EXAMPLES}")
    if not rest:
        raise UsageError(f"device URL {url!r} names no device, e.g. {scheme}://...")
    if scheme == "ble" and importlib.util.find_spec("bleak") is None:
        raise UsageError(f"{url}: BLE needs bleak: pip install 'tinyfed[ble]'")
    if scheme == "tcp":
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"device URL {url!r}: bad port ({exc})") from exc
        if not parts.hostname or port is None:
            raise UsageError(f"device URL {url!r}: use tcp://HOST:PORT")
    return url


#: scheme -> (module, class); a module is imported only when its scheme is used.
BACKENDS: dict[str, tuple[str, str]] = {
    "serial": ("tinyfed.link.transports.serial", "SerialTransport"),
    "tcp": ("tinyfed.link.transports.tcp", "TcpTransport"),
    "ble": ("tinyfed.link.transports.ble", "BleTransport"),
}


def open_transport(url: str) -> Transport:
    """The transport for ``url`` (not yet opened); imports bleak only for ``ble://``."""
    module_name, class_name = BACKENDS[check_url(url).partition("://")[0]]
    cls = getattr(importlib.import_module(module_name), class_name)
    transport: Transport = cls(url)
    return transport
