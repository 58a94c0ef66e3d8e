"""Broker URLs and MQTT clients, shared by the aggregator, the gateways and the monitor.

A broker is named by a URL: ``mqtt://[USER[:PASSWORD]@]HOST[:PORT][?protocol=VERSION]``
(default port 1883) or ``mqtts://...`` for TLS (default port 8883). Credentials may also come
from the environment variables ``TINYFED_MQTT_USERNAME`` and ``TINYFED_MQTT_PASSWORD`` (so they
stay out of process listings); ``TINYFED_MQTT_CA`` names a CA bundle for ``mqtts://`` (the
system's CAs otherwise).

``protocol`` is the MQTT version spoken: ``5`` (the default) or ``3.1.1``, for brokers without
MQTT v5 (NATS's MQTT interface, for one: it refuses a v5 CONNECT with "unsupported protocol
version"). Under 3.1.1 the same topics, QoS 1, retained messages, Last Wills and persistent
sessions are used, and delivery stays correct (it rests on the aggregator's receipts, not on
the broker), but these v5 features are gone (docs/deploy.md, "MQTT 3.1.1"):

* reason codes on PUBACK and SUBACK: a publish the broker refuses (ACL, quota) is acknowledged
  or dropped silently; updates are re-sent until their receipt comes anyway, loss events and
  statuses are not;
* the aggregator's Receive Maximum (:data:`tinyfed.aggregator.service.INBOUND_WINDOW`): what bounds
  its unacknowledged inbound messages is then the broker's setting (NATS ``mqtt {
  max_ack_pending }``, Mosquitto ``max_inflight_messages``);
* the session expiry interval: the aggregator's persistent session (``clean_session`` off)
  lives until the broker's own limit, not one day;
* No Local: the aggregator receives its own global models back (they match its database and
  are ignored).

A client from :func:`make_client` says why it cannot reach the broker: paho, connecting in its
own thread (``connect_async`` + ``loop_start``), swallows the socket and TLS errors of its
connection attempts and retries. Each failed attempt is described (:func:`describe_connect_error`:
certificate not trusted, certificate for another name, connection refused, unreachable host,
...) and logged by a :class:`ConnectFailureLog`: once per distinct cause, again at most every
:data:`REPEAT_S` seconds while it persists.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tinyfed.errors import UsageError
from tinyfed.mqtt.topics import payload_format

#: The MQTT layer's log keeps its name, "tinyfed.mqtt" (people and tests filter on it).
log = logging.getLogger("tinyfed.mqtt")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: The MQTT versions a broker URL may ask for (``?protocol=``), and paho's name for each.
PROTOCOLS = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311}
REPEAT_S = 60.0  #: a connection failure that persists is logged again at most this often
PROBE_TIMEOUT_S = 3.0  #: the look at a mismatched certificate's names gives up after this

#: OpenSSL verification results meaning "signed by no CA this client trusts".
_UNTRUSTED = {
    2,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
}
#: OpenSSL verification results meaning "valid certificate, but for another name".
_NAME_MISMATCH = {
    62,  # X509_V_ERR_HOSTNAME_MISMATCH
    64,  # X509_V_ERR_IP_ADDRESS_MISMATCH
}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker address (``ca``: the CA bundle for TLS, None for the system's CAs).

    ``protocol``: the MQTT version, ``"5"`` or ``"3.1.1"`` (:data:`PROTOCOLS`).
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    protocol: str = "5"

    @property
    def v5(self) -> bool:
        """True if the broker is spoken to in MQTT v5 (else 3.1.1)."""
        return self.protocol == "5"

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        query = "" if self.v5 else f"?protocol={self.protocol}"
        return f"{scheme}://{user}{self.host}:{self.port}{query}"


#: paho's reconnection backoff: the first wait, doubling up to the last (s)
RETRY_MIN_S, RETRY_MAX_S = 1, 8


def parse_broker_url(url: str, *, env: dict[str, str] | None = None) -> BrokerUrl:
    """Parse ``mqtt://`` / ``mqtts://`` URLs; raise :class:`UsageError` naming a bad value."""
    environ = os.environ if env is None else env
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise UsageError(
            f"broker URL {url!r}: scheme must be mqtt:// or mqtts://, e.g. mqtt://localhost:1883"
        )
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise UsageError(f"broker URL {url!r}: bad query ({exc})") from exc
    unknown = sorted(set(query) - {"protocol"})
    if unknown:
        raise UsageError(f"broker URL {url!r}: unknown parameter {unknown[0]!r} (only protocol=)")
    protocols = query.get("protocol", ["5"])
    if len(protocols) != 1 or protocols[0] not in PROTOCOLS:
        raise UsageError(
            f"broker URL {url!r}: protocol must be one of {', '.join(PROTOCOLS)} "
            "(e.g. ?protocol=3.1.1 for a broker without MQTT v5)"
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
        ca=environ.get("TINYFED_MQTT_CA") or None,
        protocol=protocols[0],
    )


# ------------------------------------------------------------------ why a connection failed


@dataclass(frozen=True)
class ConnectFailure:
    """Why one connection attempt failed: a log level, a key naming the cause, a message."""

    level: int
    cause: str
    message: str


def describe_connect_error(
    exc: BaseException,
    host: str,
    port: int,
    *,
    tls: bool,
    ca: str | None,
    certificate_names: Callable[[], list[str]] | None = None,
) -> ConnectFailure:
    """One line saying why connecting to ``host:port`` raised ``exc``, and what to check.

    ``certificate_names`` is asked, for a certificate valid for another name, which names the
    certificate is for (an empty list if unknown).
    """
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        if code in _NAME_MISMATCH:
            names = certificate_names() if certificate_names else []
            is_for = f"it is for {', '.join(names)}" if names else "it names other hosts"
            return ConnectFailure(
                logging.ERROR,
                f"hostname mismatch {host}",
                f"TLS hostname mismatch: the broker's certificate at {where} is not valid for "
                f"{host!r} ({is_for}); use a broker URL with a name the certificate lists, or "
                "issue the broker a certificate for this name",
            )
        trusted = f"TINYFED_MQTT_CA={ca}" if ca else "TINYFED_MQTT_CA is unset: the system's CAs"
        hint = (
            f"it is not signed by a CA this client trusts ({trusted}); check that "
            "TINYFED_MQTT_CA names the CA that signed the broker's certificate"
            if code in _UNTRUSTED
            else f"trusted CAs: {trusted}"
        )
        return ConnectFailure(
            logging.ERROR,
            f"certificate verification {code}",
            f"TLS certificate verification failed for the broker at {where}: {reason}; {hint}",
        )
    if isinstance(exc, ssl.SSLError) or (tls and isinstance(exc, ConnectionResetError)):
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return ConnectFailure(
            logging.ERROR,
            f"tls handshake {reason}",
            f"TLS handshake with the broker at {where} failed ({reason}): is that port a TLS "
            "listener (mqtts://), not plain MQTT (mqtt://)?",
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailure(
            logging.WARNING,
            f"refused {where}",
            f"cannot connect to the broker at {where}: connection refused (is the broker "
            "running, and listening on that port?)",
        )
    if isinstance(exc, socket.gaierror):
        return ConnectFailure(
            logging.WARNING,
            f"resolve {host}",
            f"cannot resolve the broker's host name {host!r}: {exc.strerror or exc}",
        )
    if isinstance(exc, TimeoutError):
        return ConnectFailure(
            logging.WARNING,
            f"timeout {where}",
            f"cannot connect to the broker at {where}: timed out (host down, or a firewall "
            "dropping the connection?)",
        )
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return ConnectFailure(
            logging.WARNING,
            f"unreachable {where}",
            f"cannot connect to the broker at {where}: {exc.strerror or 'host unreachable'}",
        )
    detail = str(exc) or type(exc).__name__
    return ConnectFailure(
        logging.WARNING,
        f"{type(exc).__name__} {where} {detail}",
        f"cannot connect to the broker at {where}: {detail}",
    )


def certificate_names(host: str, port: int, ca: str | None) -> list[str]:
    """The names (subjectAltName, else the subject's CN) of the certificate at ``host:port``.

    The certificate is read over a second TLS connection that checks the chain against ``ca``
    but not the name; an empty list if that fails.
    """
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert()
    except (OSError, ValueError):
        return []
    if not cert:
        return []
    alt_names = cast("tuple[tuple[str, str], ...]", cert.get("subjectAltName", ()))
    names = [f"{kind} {value}" for kind, value in alt_names]
    if not names:
        subject = cast("tuple[tuple[tuple[str, str], ...], ...]", cert.get("subject", ()))
        names = [f"CN {v}" for rdn in subject for k, v in rdn if k == "commonName"]
    return names


class ConnectFailureLog:
    """Logs a client's failed connection attempts: once per distinct cause.

    A cause that persists is logged again at most every ``repeat_s`` seconds, with the number of
    attempts since; a different cause is logged at once. A successful connection resets it.
    """

    def __init__(
        self,
        *,
        tls: bool,
        ca: str | None,
        repeat_s: float = REPEAT_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
        probe: Callable[[str, int, str | None], list[str]] = certificate_names,
    ) -> None:
        self.tls, self.ca = tls, ca
        self.repeat_s = repeat_s
        self._clock = clock
        self._log = logger
        self._probe = probe
        self._lock = threading.Lock()
        self._cause: str | None = None
        self._logged_at = 0.0
        self._attempts = 0  #: failed attempts since the cause was last logged

    def failed(self, exc: BaseException, host: str, port: int) -> ConnectFailure:
        """Record a failed attempt; log it unless the same cause was logged recently."""
        failure = describe_connect_error(exc, host, port, tls=self.tls, ca=self.ca)
        now = self._clock()
        with self._lock:
            self._attempts += 1
            same = failure.cause == self._cause
            if same and now - self._logged_at < self.repeat_s:
                return failure
            since = (
                f" (still failing: {self._attempts} attempts in the last "
                f"{now - self._logged_at:.0f} s)"
                if same
                else f"; trying again every {RETRY_MIN_S}-{RETRY_MAX_S} s, said again once a"
                f" minute while it fails"
            )
            self._cause, self._logged_at, self._attempts = failure.cause, now, 0
        if getattr(exc, "verify_code", None) in _NAME_MISMATCH:
            # Only now, as it costs a connection: which names is the certificate for?
            failure = describe_connect_error(
                exc,
                host,
                port,
                tls=self.tls,
                ca=self.ca,
                certificate_names=lambda: self._probe(host, port, self.ca),
            )
        self._log.log(failure.level, "%s", failure.message + since)
        return failure

    def succeeded(self) -> None:
        """A connection was made: the next failure is logged whatever its cause."""
        with self._lock:
            self._cause, self._attempts = None, 0


class _Client(paho.Client):
    """A paho client whose failed connection attempts are logged by a ConnectFailureLog."""

    failures: ConnectFailureLog

    def reconnect(self) -> MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as exc:  # paho's retry loop catches it (and says nothing): log it first
            self.failures.failed(exc, self.host, self.port)
            raise
        self.failures.succeeded()
        return rc


# ------------------------------------------------------------------ clients


def tls_context(ca: str | None) -> ssl.SSLContext:
    """A client TLS context verifying the broker's certificate and name against ``ca``.

    ``ca`` is a PEM bundle (None: the system's CAs); :class:`UsageError` if it cannot be read.
    """
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"TINYFED_MQTT_CA={ca}: cannot load a CA bundle from it ({exc})") from exc


def publish_properties(
    broker: BrokerUrl, topic: str, packet: int = PacketTypes.PUBLISH
) -> Properties | None:
    """MQTT v5 properties that say what ``topic``'s payload is (None under MQTT 3.1.1, which
    has no properties): Content Type, and Payload Format Indicator 1 for UTF-8 text."""
    if not broker.v5:
        return None
    content_type, utf8 = payload_format(topic)
    props = Properties(packet)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    props.PayloadFormatIndicator = 1 if utf8 else 0
    return props


def make_client(
    broker: BrokerUrl,
    client_id: str,
    *,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    failure_log: ConnectFailureLog | None = None,
    persistent: bool = False,
) -> paho.Client:
    """A paho client for ``broker`` (MQTT v5, or 3.1.1 if its URL says so), not yet connected.

    ``will_topic`` sets a retained QoS 1 Last Will (the broker publishes it if the process
    dies). Call :func:`connect` to connect with reconnect backoff: a clean start unless
    ``persistent`` (under 3.1.1 the session's persistence, ``clean_session``, is fixed here;
    under v5 :func:`connect`'s ``session_expiry`` decides it). For
    ``mqtts://`` the broker's certificate and host name are verified against ``broker.ca``
    (or ``TINYFED_MQTT_CA``; the system's CAs if neither is set). Failed connection attempts
    are logged by ``failure_log`` (a new :class:`ConnectFailureLog` by default).
    """
    ca = broker.ca or os.environ.get("TINYFED_MQTT_CA") or None
    client = _Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=PROTOCOLS[broker.protocol],
        clean_session=None if broker.v5 else not persistent,
    )
    client.failures = failure_log or ConnectFailureLog(tls=broker.tls, ca=ca)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(tls_context(ca))
    if will_topic is not None:
        client.will_set(
            will_topic,
            will_payload,
            qos=1,
            retain=True,
            properties=publish_properties(broker, will_topic, PacketTypes.WILLMESSAGE),
        )
    client.reconnect_delay_set(min_delay=RETRY_MIN_S, max_delay=RETRY_MAX_S)
    return client


def connect(
    client: paho.Client,
    broker: BrokerUrl,
    *,
    keepalive: int = 15,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
) -> None:
    """Start connecting ``client`` (asynchronously; paho retries with backoff).

    MQTT v5: a clean start if ``session_expiry`` is 0, else the session is resumed and kept
    ``session_expiry`` seconds after a disconnection; ``receive_maximum`` is announced if set.
    MQTT 3.1.1 has neither: the client's ``clean_session`` (:func:`make_client`'s
    ``persistent``) decides, and the broker's own settings bound the session and the messages
    in flight.
    """
    if not broker.v5:
        client.connect_async(broker.host, broker.port, keepalive=keepalive)
        return
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    client.connect_async(
        broker.host,
        broker.port,
        keepalive=keepalive,
        clean_start=session_expiry == 0,
        properties=props,
    )


class Throttle:
    """Whether to log a repeated message: the first time, when it changes, then once a period.

    A broker that refuses a login refuses it again at every reconnect (every 1-8 s); one line
    per cause and minute says the same without burying the rest of the log.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last: tuple[str, float] | None = None
        self.suppressed = 0  #: repeats not logged since the last line

    def __call__(self, key: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        last = self._last
        if last is None or last[0] != key or t - last[1] >= self.every_s:
            self._last = (key, t)
            self.suppressed = 0
            return True
        self.suppressed += 1
        return False
