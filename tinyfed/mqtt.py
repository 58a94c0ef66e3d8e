"""Broker URLs and MQTT v5 clients, shared by the aggregator, the gateways and the monitor.

A broker is named by a URL: ``mqtt://[USER[:PASSWORD]@]HOST[:PORT]`` (default port 1883) or
``mqtts://...`` for TLS (default port 8883). Credentials may also come from the environment
variables ``TINYFED_MQTT_USERNAME`` and ``TINYFED_MQTT_PASSWORD`` (so they stay out of process
listings); ``TINYFED_MQTT_CA`` names a CA bundle for ``mqtts://``.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tinyfed.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker address."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str, *, env: dict[str, str] | None = None) -> BrokerUrl:
    """Parse ``mqtt://`` / ``mqtts://`` URLs; raise :class:`UsageError` naming a bad value."""
    environ = os.environ if env is None else env
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise UsageError(
            f"broker URL {url!r}: scheme must be mqtt:// or mqtts://, e.g. mqtt://localhost:1883"
        )
    if not parts.hostname:
        raise UsageError(f"broker URL {url!r} has no host")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise UsageError(f"broker URL {url!r}: bad port ({exc})") from exc
    username = unquote(parts.username) if parts.username else environ.get("TINYFED_MQTT_USERNAME")
    password = unquote(parts.password) if parts.password else environ.get("TINYFED_MQTT_PASSWORD")
    return BrokerUrl(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=username or None,
        password=password or None,
    )


def make_client(
    broker: BrokerUrl,
    client_id: str,
    *,
    will_topic: str | None = None,
    will_payload: bytes = b"",
) -> paho.Client:
    """An MQTT v5 paho client for ``broker``, not yet connected.

    ``will_topic`` sets a retained QoS 1 Last Will (the broker publishes it if the process
    dies). Call :func:`connect` to connect with a clean start and reconnect backoff.
    """
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        ca = os.environ.get("TINYFED_MQTT_CA")
        client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
    if will_topic is not None:
        client.will_set(will_topic, will_payload, qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=8)
    return client


def connect(client: paho.Client, broker: BrokerUrl, *, keepalive: int = 15) -> None:
    """Start connecting ``client`` (asynchronously; paho retries with backoff)."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect_async(
        broker.host, broker.port, keepalive=keepalive, clean_start=True, properties=props
    )
