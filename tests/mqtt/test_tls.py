"""MQTT over TLS (``mqtts://``): the private broker's TLS listener, the shipped TLS option, the
clients of :mod:`tinyfed.mqtt.session` and the aggregator over TLS, and the one log line that says
why a connection fails (untrusted certificate, certificate for another host, refused connection).

Each test module run makes its own small PKI with ``cryptography``: a CA, a server certificate
for ``localhost`` and ``127.0.0.1`` signed by it, another CA that signed nothing the broker
shows, and a server certificate (by the first CA) for ``broker.example`` only.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.reasoncodes import ReasonCode

from tests.deploy.test_deploy import _test_config as deployed_config, credentials, env_file
from tinyfed.errors import UsageError
from tinyfed.mqtt import contract
from tinyfed.mqtt.session import (
    ConnectFailureLog,
    connect,
    describe_connect_error,
    make_client,
    parse_broker_url,
)
from tinyfed.testbed.broker import Mosquitto, TlsFiles, find_mosquitto, free_port

TIMEOUT = 10.0
AGGREGATOR_CLIENT_ID = "tinyfed-aggregator-tinyfed-home"  #: fixed, so anyone can know it


# ----------------------------------------------------------------------------- a small PKI


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(folder: Path, common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA, written as ``folder/<common_name>.pem`` and ``.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / common_name, cert, key)
    return cert, key


def make_server_cert(
    folder: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    names: list[str],
) -> None:
    """A server certificate for ``names`` (host names or IP addresses) signed by ``ca``."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / stem, cert, key)


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path  #: the CA that signed both server certificates
    other_ca: Path  #: a CA that signed nothing the brokers show
    server: TlsFiles  #: for localhost and 127.0.0.1
    elsewhere: TlsFiles  #: for broker.example only


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "tinyfed-test-ca")
    make_ca(folder, "other-ca")
    make_server_cert(folder, "server", ca, ["localhost", "127.0.0.1"])
    make_server_cert(folder, "elsewhere", ca, ["broker.example"])
    ca_file = folder / "tinyfed-test-ca.pem"
    return Pki(
        folder=folder,
        ca=ca_file,
        other_ca=folder / "other-ca.pem",
        server=TlsFiles(ca_file, folder / "server.pem", folder / "server.key"),
        elsewhere=TlsFiles(ca_file, folder / "elsewhere.pem", folder / "elsewhere.key"),
    )


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[Mosquitto]:
    """A private Mosquitto with a TLS listener (certificate for localhost and 127.0.0.1)."""
    try:
        find_mosquitto()
    except UsageError as exc:
        pytest.skip(str(exc))
    with Mosquitto(tls=pki.server) as broker:
        yield broker


# ----------------------------------------------------------------------------- clients


class Client:
    """A client made by :func:`tinyfed.mqtt.session.make_client`, connected by :func:`connect`."""

    def __init__(self, url: str, ca: Path | None, client_id: str) -> None:
        self.broker = parse_broker_url(url, env={"TINYFED_MQTT_CA": str(ca)} if ca else {})
        self.client = make_client(self.broker, client_id)
        self.connected = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subacks.put(mid)
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        connect(self.client, self.broker)
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's acknowledgement."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert self._subacks.get(timeout=TIMEOUT) == mid

    def wait_for(self, topic: str) -> bytes:
        """The payload of the next message on ``topic``."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            got_topic, payload = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            if got_topic == topic:
                return payload

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for_log(caplog: pytest.LogCaptureFixture, *parts: str) -> logging.LogRecord:
    """The first record of tinyfed.mqtt whose message contains every one of ``parts``."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for record in list(caplog.records):
            if record.name == "tinyfed.mqtt" and all(p in record.getMessage() for p in parts):
                return record
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "tinyfed.mqtt"]
    raise AssertionError(f"no log line with {parts}; tinyfed.mqtt logged {lines}")


def mqtt_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tinyfed.mqtt"]


# ----------------------------------------------------------------------------- tests


def test_client_with_the_right_ca_round_trips_a_message_over_tls(
    tls_broker: Mosquitto, pki: Pki, fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    topic = f"tinyfed/{fleet}/tls"
    client = Client(tls_broker.tls_url, pki.ca, f"tls-{fleet}")
    try:
        assert client.connected.wait(TIMEOUT), mqtt_log(caplog)
        client.subscribe(topic)
        # Execute
        client.client.publish(topic, b"over TLS", qos=1)
        payload = client.wait_for(topic)
    finally:
        client.close()
    # Assert
    assert client.broker.tls
    assert client.broker.ca == str(pki.ca)
    assert payload == b"over TLS"
    assert mqtt_log(caplog) == []


def test_an_untrusted_certificate_is_logged_naming_the_ca_setting(
    tls_broker: Mosquitto, pki: Pki, fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    client = Client(tls_broker.tls_url, pki.other_ca, f"tls-{fleet}")
    try:
        record = wait_for_log(caplog, "certificate verification failed")
    finally:
        client.close()
    assert not client.connected.is_set()
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert f"localhost:{tls_broker.tls_port}" in message
    assert "not signed by a CA this client trusts" in message
    assert f"TINYFED_MQTT_CA={pki.other_ca}" in message


def test_a_certificate_for_another_host_is_logged_naming_both(
    pki: Pki, fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    with Mosquitto(tls=pki.elsewhere) as broker:
        client = Client(broker.tls_url, pki.ca, f"tls-{fleet}")
        try:
            record = wait_for_log(caplog, "hostname mismatch")
        finally:
            client.close()
    assert not client.connected.is_set()
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert f"localhost:{broker.tls_port} is not valid for 'localhost'" in message
    assert "it is for DNS broker.example" in message


def test_a_refused_connection_is_logged_naming_host_and_port(
    fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    port = free_port()  # nothing listens there
    client = Client(f"mqtt://127.0.0.1:{port}", None, f"refused-{fleet}")
    try:
        record = wait_for_log(caplog, f"127.0.0.1:{port}", "connection refused")
    finally:
        client.close()
    assert record.levelno == logging.WARNING
    # what to check, and how often it is tried
    assert "is the broker running, and listening on that port?" in record.getMessage()
    assert "trying again every 1-8 s" in record.getMessage()


def test_tls_to_a_plain_listener_is_logged_as_a_failed_handshake(
    tls_broker: Mosquitto, pki: Pki, fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    client = Client(f"mqtts://localhost:{tls_broker.port}", pki.ca, f"tls-{fleet}")
    try:
        record = wait_for_log(caplog, f"localhost:{tls_broker.port}", "TLS handshake")
    finally:
        client.close()
    assert "is that port a TLS listener" in record.getMessage()


def test_a_failure_is_logged_once_per_cause_and_again_after_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    caplog.set_level(logging.INFO, logger="tinyfed.mqtt")
    now = [1000.0]
    failures = ConnectFailureLog(tls=False, ca=None, clock=lambda: now[0])
    refused = ConnectionRefusedError(111, "Connection refused")
    # Execute: a reconnect every 8 s for a minute and a half, then another cause, then success
    for _ in range(12):
        failures.failed(refused, "broker", 1883)
        now[0] += 8
    failures.failed(TimeoutError("timed out"), "broker", 1883)
    failures.failed(TimeoutError("timed out"), "broker", 1883)
    failures.succeeded()
    failures.failed(refused, "broker", 1883)
    # Assert
    lines = mqtt_log(caplog)
    assert len(lines) == 4, lines
    assert "broker:1883: connection refused" in lines[0]
    assert "(still failing: 8 attempts in the last 64 s)" in lines[1]
    assert "broker:1883: timed out" in lines[2]
    assert "broker:1883: connection refused" in lines[3]
    assert "still failing" not in lines[3]


def test_the_certificate_is_looked_at_only_when_a_mismatch_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: a hostname mismatch as Python's ssl reports it
    caplog.set_level(logging.INFO, logger="tinyfed.mqtt")
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code = 62
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'broker'."
    probes: list[tuple[str, int, str | None]] = []

    def probe(host: str, port: int, ca: str | None) -> list[str]:
        probes.append((host, port, ca))
        return ["DNS other.example", "IP Address 10.0.0.1"]

    failures = ConnectFailureLog(tls=True, ca="ca.pem", clock=lambda: 0.0, probe=probe)
    # Execute
    for _ in range(5):
        failures.failed(mismatch, "broker", 8883)
    # Assert
    assert probes == [("broker", 8883, "ca.pem")]
    assert mqtt_log(caplog) == [
        "TLS hostname mismatch: the broker's certificate at broker:8883 is not valid for "
        "'broker' (it is for DNS other.example, IP Address 10.0.0.1); use a broker URL with a "
        "name the certificate lists, or issue the broker a certificate for this name; trying "
        "again every 1-8 s, said again once a minute while it fails"
    ]


def test_describe_connect_error_names_unresolvable_hosts() -> None:
    error = socket.gaierror(-2, "Name or service not known")
    failure = describe_connect_error(error, "nowhere.invalid", 1883, tls=False, ca=None)
    assert failure.message == (
        "cannot resolve the broker's host name 'nowhere.invalid': Name or service not known"
    )


def test_a_missing_ca_file_is_a_usage_error(tmp_path: Path) -> None:
    broker = parse_broker_url(
        "mqtts://localhost:8883", env={"TINYFED_MQTT_CA": str(tmp_path / "nope.pem")}
    )
    with pytest.raises(UsageError, match=r"TINYFED_MQTT_CA=.*nope\.pem: cannot load"):
        make_client(broker, "x")


def test_the_aggregator_publishes_its_global_model_and_status_over_tls(
    tls_broker: Mosquitto, pki: Pki, fleet: str, tmp_path: Path
) -> None:
    # Prepare: an MQTT peer standing for a gateway, over TLS too
    topics = contract.Topics(fleet)
    peer = Client(tls_broker.tls_url, pki.ca, f"peer-{fleet}")
    assert peer.connected.wait(TIMEOUT)
    peer.subscribe(topics.base + "#")
    log_path = tmp_path / "aggregator.log"
    argv = ["aggregator", "--broker", tls_broker.tls_url, "--fleet", fleet]
    argv += ["--db", str(tmp_path / "aggregator.db")]
    env = {**os.environ, "TINYFED_MQTT_CA": str(pki.ca)}
    # Execute: the real CLI, its CA from the environment as in a deployment
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tinyfed.cli", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        status = contract.decode_aggregator_status(peer.wait_for(topics.aggregator_status))
        model = contract.decode_global(peer.wait_for(topics.global_model))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=TIMEOUT)
        peer.close()
    # Assert
    log = log_path.read_text(errors="replace")
    assert status.state == "online", log
    assert model.round == 0, log
    assert code == 0, log
    assert f"connected to mqtts://localhost:{tls_broker.tls_port}" in log


def test_the_shipped_tls_listener_serves_mqtts_with_passwords_and_the_acl(
    pki: Pki, fleet: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: deploy/mosquitto/mosquitto.conf with its TLS block uncommented, on a free port
    # and with the test's certificates (as the deployment tests adapt the plain listener)
    try:
        find_mosquitto()
    except UsageError as exc:
        pytest.skip(str(exc))
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    secrets = tmp_path / "secrets"
    credentials("--out", str(secrets), "--aggregator", "--workers", "b1")
    config = deployed_config(secrets / "passwd")
    tls_port = free_port()
    block = {
        "#listener 8883": f"listener {tls_port} 127.0.0.1",
        "#protocol mqtt": "protocol mqtt",
        "#use_username_as_clientid true": "use_username_as_clientid true",
        "#cafile /mosquitto/auth/certs/ca.pem": f"cafile {pki.ca}",
        "#certfile /mosquitto/auth/certs/server.pem": f"certfile {pki.server.certfile}",
        "#keyfile /mosquitto/auth/certs/server.key": f"keyfile {pki.server.keyfile}",
        "#require_certificate false": "require_certificate false",
    }
    for old, new in block.items():
        assert f"\n{old}\n" in config, f"the shipped TLS block lost {old!r}"
        config = config.replace(f"\n{old}\n", f"\n{new}\n", 1)
    accounts = {
        user: env_file(secrets / env)
        for user, env in (("aggregator", "aggregator.env"), ("b1", "gateway-b1.env"))
    }
    url = f"mqtts://{{user}}:{{password}}@localhost:{tls_port}"
    urls = {
        user: url.format(user=user, password=values["TINYFED_MQTT_PASSWORD"])
        for user, values in accounts.items()
    }
    with Mosquitto(workdir=tmp_path / "broker", extra_config=config, allow_anonymous=False):
        base = f"tinyfed/{fleet}/"
        aggregator = Client(urls["aggregator"], pki.ca, AGGREGATOR_CLIENT_ID)
        try:
            assert aggregator.connected.wait(TIMEOUT), mqtt_log(caplog)
            aggregator.subscribe(base + "workers/+/update")
            # Execute: a gateway with the aggregator's client id publishes its update
            gateway = Client(urls["b1"], pki.ca, AGGREGATOR_CLIENT_ID)
            try:
                assert gateway.connected.wait(TIMEOUT), mqtt_log(caplog)
                gateway.client.publish(base + "workers/b1/update", b"U", qos=1)
                got = aggregator.wait_for(base + "workers/b1/update")
            finally:
                gateway.close()
        finally:
            aggregator.close()
    # Assert: the update arrived over TLS, and the aggregator was never disconnected
    assert got == b"U"
    assert aggregator.disconnects.get(timeout=TIMEOUT).value == 0  # its own close()
    assert aggregator.disconnects.empty()
    assert mqtt_log(caplog) == []


def test_an_unreachable_tls_broker_does_not_hide_the_refusal(
    pki: Pki, fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfed.mqtt")
    port = free_port()
    client = Client(f"mqtts://localhost:{port}", pki.ca, f"refused-{fleet}")
    try:
        record = wait_for_log(caplog, f"localhost:{port}", "connection refused")
    finally:
        client.close()
    assert record.levelno == logging.WARNING
