"""The deployment: docker-compose.yml, the broker's accounts and its ACL on a real Mosquitto.

The broker tests start Mosquitto with ``deploy/mosquitto/mosquitto.conf`` (its container paths,
listener, persistence folder and log destination replaced), the unchanged
``deploy/mosquitto/acl`` and a password file made by ``tinyfed broker credentials``. Measured on
Mosquitto 2.0.11 with MQTT v5: a refused CONNECT (anonymous or wrong password) gets CONNACK
reason code 0x87 "not authorized"; a QoS 1 publish the ACL denies gets PUBACK 0x87 and is
dropped; a denied QoS 0 publish is dropped silently. Non-delivery is proven without sleeping:
after the denied publish the same client publishes a sentinel it may publish, and the watching
subscriber must see the sentinel and nothing of the denied message before it (Mosquitto keeps a
session's messages in order). The same broker shows the client-id binding
(``use_username_as_clientid``: no account can take over the aggregator's persistent session)
and the queue limits (more than Mosquitto's default 1,000 queued updates reach the aggregator).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tinyfed.aggregator.metrics import AggregatorMetrics
from tinyfed.cli import main
from tinyfed.deploy import cli as deploy_cli
from tinyfed.errors import UsageError
from tinyfed.mqtt import contract
from tinyfed.testbed.broker import LIMITS, Mosquitto, find_mosquitto

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
ACL = ROOT / "deploy" / "mosquitto" / "acl"
NOT_AUTHORIZED = 0x87  # MQTT v5 reason code 135
NO_MATCHING_SUBSCRIBERS = 0x10  # a successful PUBACK when nobody subscribes to the topic
TIMEOUT = 5.0
#: The gateways of docker-compose.yml need these accounts (their env files must exist).
COMPOSE_WORKERS = "board1,virtual-1,virtual-2"


def credentials(*argv: str) -> int:
    """Run ``tinyfed broker credentials ARGV`` through the module's own parser."""
    parser = argparse.ArgumentParser(prog="tinyfed")
    deploy_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["broker", "credentials", *argv])
    code: int = args.func(args)
    return code


def env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of an env file."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


# ----------------------------------------------------------------------------- credentials


def test_mosquitto_passwd_hash_is_reproduced_exactly() -> None:
    # Prepare: a line made by mosquitto_passwd 2.0.11 (`mosquitto_passwd -b FILE alice secret`)
    line = (
        "$7$101$cunFesC4JxomqH2W$cdL65SxCo3n0Jk2ElLyZvnafi7tTNRu6OHPxk7e1joUew6z439M6V2J3U3"
        "DN1oVaohCg1gSdLWmC8RKZa0rTqQ=="
    )
    salt = bytes.fromhex("72e9c57ac0b8271a26a87d96")  # base64 "cunFesC4JxomqH2W"
    # Execute / Assert
    assert deploy_cli.hash_password("secret", salt=salt) == line
    assert deploy_cli.verify_password("secret", line)
    assert not deploy_cli.verify_password("Secret", line)


def test_credentials_write_private_files_for_each_service(tmp_path: Path) -> None:
    # Execute
    code = credentials("--out", str(tmp_path / "s"), "--workers", "b1,b2", "--aggregator")
    # Assert
    out = tmp_path / "s"
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert names == {".gitignore", "passwd", "aggregator.env", "gateway-b1.env", "gateway-b2.env"}
    for name in names - {".gitignore"}:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    hashes = deploy_cli.read_password_file(out / "passwd")
    assert list(hashes) == ["aggregator", "b1", "b2"]
    for user, env in (("aggregator", "aggregator.env"), ("b1", "gateway-b1.env")):
        values = env_file(out / env)
        assert values["TINYFED_MQTT_USERNAME"] == user
        assert deploy_cli.verify_password(values["TINYFED_MQTT_PASSWORD"], hashes[user])


def test_credentials_default_to_the_aggregator_and_the_monitor(tmp_path: Path) -> None:
    credentials("--out", str(tmp_path))
    assert list(deploy_cli.read_password_file(tmp_path / "passwd")) == ["aggregator", "monitor"]


def test_existing_credentials_are_kept_and_new_workers_appended(tmp_path: Path) -> None:
    # Prepare
    credentials("--out", str(tmp_path), "--workers", "b1")
    passwd_before = (tmp_path / "passwd").read_text()
    env_before = (tmp_path / "gateway-b1.env").read_text()
    # Execute
    credentials("--out", str(tmp_path), "--workers", "b1,b2")
    # Assert
    passwd_after = (tmp_path / "passwd").read_text()
    assert passwd_after.startswith(passwd_before)
    assert list(deploy_cli.read_password_file(tmp_path / "passwd")) == ["b1", "b2"]
    assert (tmp_path / "gateway-b1.env").read_text() == env_before


def test_force_gives_an_existing_account_a_new_password(tmp_path: Path) -> None:
    credentials("--out", str(tmp_path), "--workers", "b1,b2")
    old = env_file(tmp_path / "gateway-b1.env")["TINYFED_MQTT_PASSWORD"]
    credentials("--out", str(tmp_path), "--workers", "b1", "--force")
    new = env_file(tmp_path / "gateway-b1.env")["TINYFED_MQTT_PASSWORD"]
    hashes = deploy_cli.read_password_file(tmp_path / "passwd")
    assert new != old
    assert deploy_cli.verify_password(new, hashes["b1"])
    assert list(hashes) == ["b1", "b2"]


def test_half_an_account_is_an_error_unless_forced(tmp_path: Path) -> None:
    credentials("--out", str(tmp_path), "--workers", "b1")
    (tmp_path / "gateway-b1.env").unlink()
    with pytest.raises(UsageError, match=r"'b1' are incomplete.*--force"):
        credentials("--out", str(tmp_path), "--workers", "b1")
    assert credentials("--out", str(tmp_path), "--workers", "b1", "--force") == 0


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ("b1,bad/id", r"invalid worker id 'bad/id'"),
        ("b1,+", r"invalid worker id '\+'"),
        ("monitor", r"worker id 'monitor' is reserved"),
        ("b1,,b2", r"--workers 'b1,,b2': empty worker id"),
        ("b1,b1", r"worker id 'b1' is given twice"),
    ],
)
def test_bad_worker_ids_are_refused_by_name(tmp_path: Path, workers: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        credentials("--out", str(tmp_path / "s"), "--workers", workers)
    assert not (tmp_path / "s" / "passwd").exists()


# ----------------------------------------------------------------------------- compose file


@dataclass(frozen=True)
class ComposeService:
    """What the tests read of one service in ``docker-compose config`` output."""

    command: list[str]
    environment: dict[str, str]


def _rendered_services(
    binary: str, args: list[str], env: dict[str, str]
) -> dict[str, ComposeService]:
    """Run ``docker-compose ARGS config`` and read its services (docker-compose 1.x or 2.x)."""
    version = subprocess.run(
        [binary, "version", "--short"], capture_output=True, text=True, check=True
    ).stdout.strip()
    v2 = not version.startswith("1.")
    result = subprocess.run(
        [binary, *args, "config", *(["--format", "json"] if v2 else [])],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if v2:
        services = json.loads(result.stdout)["services"]
        return {
            name: ComposeService(list(svc.get("command") or []), dict(svc.get("environment") or {}))
            for name, svc in services.items()
        }
    # docker-compose 1.x prints YAML only, with 2-space indentation and block sequences.
    body = result.stdout.split("\nservices:\n", 1)[1]
    body = re.split(r"\n\S", body, maxsplit=1)[0]
    blocks = re.split(r"^  (\S[^:\n]*):\n", body, flags=re.M)
    parsed = {}
    for name, block in zip(blocks[1::2], blocks[2::2], strict=True):
        command = re.search(r"^    command:\n((?:    - .*\n(?:      .*\n)*)*)", block, re.M)
        items = re.findall(r"^    - (.*)$", command[1], re.M) if command else []
        environment = re.search(r"^    environment:\n((?:      .*\n)*)", block, re.M)
        pairs = re.findall(r"^      (\S+): (.*)$", environment[1], re.M) if environment else []
        parsed[name] = ComposeService([i.strip("'\"") for i in items], dict(pairs))
    return parsed


@pytest.fixture(scope="module")
def compose_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose") / "secrets"
    credentials("--out", str(out), "--aggregator", "--monitor", "--workers", COMPOSE_WORKERS)
    return out


PROFILES = {
    None: {"mosquitto", "aggregator"},
    "monitoring": {"mosquitto", "aggregator", "dashboard", "prometheus", "grafana"},
    "setup": {"mosquitto", "aggregator", "credentials"},
    "boards": {"mosquitto", "aggregator", "gateway-1"},
    "virtual": {
        "mosquitto",
        "aggregator",
        "virtual-users",
        "virtual-board-1",
        "virtual-gateway-1",
        "virtual-board-2",
        "virtual-gateway-2",
    },
}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_compose_file_is_valid(compose_secrets: Path, profile: str | None) -> None:
    # Prepare
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    args = ["-f", str(COMPOSE_FILE), *(["--profile", profile] if profile else [])]
    env = {**os.environ, "TINYFED_SECRETS": str(compose_secrets), "TINYFED_FLEET": "lab"}
    # Execute
    services = _rendered_services(binary, args, env)
    # Assert
    assert PROFILES[profile] <= set(services)  # 1.x lists every service, 2.x the active ones
    aggregator = services["aggregator"].command
    assert aggregator[aggregator.index("--fleet") + 1] == "lab"
    gateways = {name: s for name, s in services.items() if s.command[:1] == ["gateway"]}
    assert gateways or profile is None
    for name, service in gateways.items():  # the convention the ACL relies on
        worker = service.command[service.command.index("--worker-id") + 1]
        assert service.environment["TINYFED_MQTT_USERNAME"] == worker, name
        assert service.environment["TINYFED_MQTT_PASSWORD"], name


def test_the_virtual_boards_run_the_scripts_virtual_users_writes(
    compose_secrets: Path, tmp_path: Path
) -> None:
    # The "virtual" profile trains: each virtual board runs a script of the one-shot
    # virtual-users service, with the same --local-steps (else rounds never line up).
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env = {**os.environ, "TINYFED_SECRETS": str(compose_secrets), "TINYFED_FLEET": "lab"}
    services = _rendered_services(binary, ["-f", str(COMPOSE_FILE), "--profile", "virtual"], env)
    users = services["virtual-users"].command
    assert users[0] == "virtual-users"
    out = users[users.index("--out") + 1]
    # Execute the service's own command here (a smaller corpus, a folder of the test's)
    argv = [tmp_path.as_posix() if a == out else a for a in users]
    assert main([*argv, "--per-word", "24"]) == 0
    boards = [s.command for n, s in services.items() if n.startswith("virtual-board-")]
    assert len(boards) == 2
    for board in boards:
        script = board[board.index("--script") + 1]
        assert script.startswith(out + "/")
        assert (tmp_path / script.removeprefix(out + "/")).is_file(), script
        assert board[board.index("--local-steps") + 1] == users[users.index("--local-steps") + 1]


def _exported_metric_names() -> set[str]:
    """Every metric name tinyfed serves: the aggregator's registry and the dashboard's text."""
    names = {
        sample.name
        for family in AggregatorMetrics().registry.collect()
        for sample in family.samples
    }
    names |= {m.name for m in AggregatorMetrics().registry.collect()}  # histogram/counter bases
    web_source = (ROOT / "tinyfed" / "fleet" / "web.py").read_text()
    names |= {f"tinyfed_{n}" for n in re.findall(r'metric\(\s*"([a-z_]+)"', web_source)}
    return names


def test_the_grafana_dashboard_and_prometheus_use_what_tinyfed_serves(
    compose_secrets: Path,
) -> None:
    # Every metric a Grafana panel queries exists (a renamed metric would empty a panel).
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "tinyfed.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"tinyfed_\w+", e)
    }
    exported = _exported_metric_names()
    assert used, "the dashboard queries nothing"
    assert used <= exported, f"not served by tinyfed: {sorted(used - exported)}"
    # Prometheus scrapes the ports the compose file's services listen on.
    targets = re.findall(r'"(\w+):(\d+)"', (ROOT / "deploy/prometheus/prometheus.yml").read_text())
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env = {**os.environ, "TINYFED_SECRETS": str(compose_secrets), "TINYFED_FLEET": "lab"}
    services = _rendered_services(binary, ["-f", str(COMPOSE_FILE), "--profile", "monitoring"], env)
    listens = {
        "aggregator": services["aggregator"].command[
            services["aggregator"].command.index("--metrics") + 1
        ],
        "dashboard": services["dashboard"].command[
            services["dashboard"].command.index("--web") + 1
        ],
    }
    assert targets == [
        ("aggregator", listens["aggregator"].split(":")[1]),
        ("dashboard", listens["dashboard"].split(":")[1]),
    ]
    assert all(v.startswith("0.0.0.0:") for v in listens.values()), listens


def test_the_long_running_services_have_healthchecks_and_accounts_need_no_host_install(
    compose_secrets: Path,
) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env = {**os.environ, "TINYFED_SECRETS": str(compose_secrets), "TINYFED_FLEET": "lab"}
    args = ["-f", str(COMPOSE_FILE), "--profile", "monitoring", "--profile", "setup", "config"]
    out = subprocess.run(
        [binary, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True
    ).stdout
    if out.lstrip().startswith("{"):  # compose v2 prints JSON when asked; YAML by default
        pytest.skip("compose v2 output: the YAML check below reads docker-compose 1.x")
    blocks = dict(
        re.findall(r"^  (\S[^:\n]*):\n((?:    .*\n|\n)*)", out.split("\nservices:\n", 1)[1], re.M)
    )
    for service in ("mosquitto", "aggregator", "dashboard"):
        assert "    healthcheck:" in blocks[service], service
    assert "condition: service_healthy" in blocks["aggregator"]
    credentials = blocks["credentials"]
    assert "- broker" in credentials
    assert "- credentials" in credentials
    assert "/secrets" in credentials


# ----------------------------------------------------------------------------- real broker


@dataclass(frozen=True)
class Deployment:
    """A running broker with the deployed configuration and the accounts' passwords."""

    port: int
    passwords: dict[str, str]


def _test_config(passwd: Path) -> str:
    """The deployed mosquitto.conf, run by :class:`Mosquitto` with the test's files.

    The file and ACL paths point at the test's password file and the repository's ACL. Three
    lines are :class:`Mosquitto`'s own instead: its listener on a free loopback port, its
    persistence folder and its log file (Mosquitto refuses a second ``persistence_location``).
    """
    text = DEPLOY_CONF.read_text()
    paths = {
        "password_file /mosquitto/auth/passwd": f"password_file {passwd}",
        "acl_file /mosquitto/auth/acl": f"acl_file {ACL}",
    }
    own = ("listener 1883", "persistence_location /mosquitto/data/", "log_dest stdout")
    for line in (*paths, *own, "allow_anonymous false", "persistence true"):
        assert f"\n{line}\n" in text, f"{DEPLOY_CONF} lost the line {line!r}"
    for old, new in paths.items():
        text = text.replace(old, new)
    for line in own:
        text = text.replace(f"\n{line}\n", "\n")
    return text


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    try:
        find_mosquitto()
    except UsageError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("deployed-broker")
    secrets_dir = root / "secrets"
    credentials(
        "--out",
        str(secrets_dir),
        "--aggregator",
        "--monitor",
        "--homeassistant",
        "--workers",
        "b1,b2",
    )
    passwords = {}
    for env in secrets_dir.glob("*.env"):
        values = env_file(env)
        passwords[values["TINYFED_MQTT_USERNAME"]] = values["TINYFED_MQTT_PASSWORD"]
    config = _test_config(secrets_dir / "passwd")
    with Mosquitto(workdir=root / "broker", extra_config=config, allow_anonymous=False) as broker:
        yield Deployment(broker.port, passwords)


class Session:
    """A paho 2.x MQTT v5 client for the tests: connect, publish with PUBACK codes, receive.

    It never reconnects by itself: a connection the broker closes stays closed, and the reason
    code is put in :attr:`disconnects`.
    """

    def __init__(
        self,
        port: int,
        username: str | None = None,
        password: str | None = None,
        *,
        client_id: str | None = None,
    ):
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.port = port
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.session_present = False
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._acks: dict[int, ReasonCode | None] = {}
        self._acked = threading.Condition()
        self._subscribed: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.put(rcs)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client.on_publish = self._on_publish

    def _on_connect(
        self, c: object, u: object, flags: paho.ConnectFlags, rc: ReasonCode, p: object
    ) -> None:
        self.session_present = flags.session_present
        self._connack.put(rc)

    def _on_publish(self, c: object, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with self._acked:
            self._acks[mid] = rc
            self._acked.notify_all()

    def connect(self, *, session_expiry: int = 0) -> ReasonCode:
        """Connect and return the CONNACK reason code.

        ``session_expiry`` > 0 resumes (or makes) a persistent session: clean start off, kept
        that many seconds after a disconnection, as the aggregator does.
        """
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
        self.client.connect(
            "127.0.0.1",
            self.port,
            keepalive=10,
            clean_start=session_expiry == 0,
            properties=props,
        )
        self.client.loop_start()
        return self._connack.get(timeout=TIMEOUT)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        codes = self._subscribed.get(timeout=TIMEOUT)
        assert not any(code.is_failure for code in codes), codes

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Publish; return the PUBACK reason code (QoS 1) or 0 once sent (QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self._acks, TIMEOUT), topic
            code = self._acks.pop(info.mid)
        return code.value if qos and code is not None else 0

    def until(self, topic: str, payload: bytes) -> list[tuple[str, bytes, bool]]:
        """Every message received before ``payload`` on ``topic`` (which must come)."""
        before: list[tuple[str, bytes, bool]] = []
        while True:
            message = self.messages.get(timeout=TIMEOUT)
            if message[:2] == (topic, payload):
                return before
            before.append(message)

    def receive(self, count: int) -> list[tuple[str, bytes, bool]]:
        """The next ``count`` messages (which must come)."""
        return [self.messages.get(timeout=TIMEOUT) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


Login = Callable[[str], Session]  #: the login fixture: a connected session of an account


@pytest.fixture
def login(deployment: Deployment) -> Iterator[Login]:
    """Log in as an account of the deployment (closed at the end of the test)."""
    sessions: list[Session] = []

    def _login(user: str) -> Session:
        session = Session(deployment.port, user, deployment.passwords[user])
        sessions.append(session)
        code = session.connect()
        assert not code.is_failure, f"{user}: {code}"
        return session

    yield _login
    for session in sessions:
        session.close()


def test_anonymous_client_is_refused(deployment: Deployment) -> None:
    session = Session(deployment.port)
    try:
        code = session.connect()
    finally:
        session.close()
    assert code.value == NOT_AUTHORIZED


def test_wrong_password_is_refused(deployment: Deployment) -> None:
    session = Session(deployment.port, "b1", deployment.passwords["b1"] + "x")
    try:
        code = session.connect()
    finally:
        session.close()
    assert code.value == NOT_AUTHORIZED


def test_gateway_publishes_its_own_topics_and_reads_the_global_model(
    login: Login, fleet: str
) -> None:
    # Prepare
    base = f"tinyfed/{fleet}/"
    monitor, aggregator, gateway = login("monitor"), login("aggregator"), login("b1")
    monitor.subscribe(base + "#")
    assert aggregator.publish(base + "global", b"G1", retain=True) == 0
    # Execute
    codes = [
        gateway.publish(base + "workers/b1/update", b"U"),
        gateway.publish(base + "workers/b1/loss", b"L", qos=0),
        gateway.publish(base + "workers/b1/status", b"S", retain=True),
    ]
    gateway.subscribe(base + "global")
    # Assert
    assert codes == [0, 0, 0]
    assert gateway.until(base + "global", b"G1") == []
    seen = monitor.until(base + "workers/b1/status", b"S")
    assert [(t, p) for t, p, _ in seen] == [
        (base + "global", b"G1"),
        (base + "workers/b1/update", b"U"),
        (base + "workers/b1/loss", b"L"),
    ]


def test_gateway_asks_for_a_round_in_its_own_name_only_and_the_aggregator_reads_it(
    login: Login, fleet: str
) -> None:
    # Prepare: the aggregator subscribes to every worker's request, as the service does
    base = f"tinyfed/{fleet}/"
    aggregator, gateway, other = login("aggregator"), login("b1"), login("b2")
    aggregator.subscribe(base + "workers/+/request")
    # Execute
    own = gateway.publish(base + "workers/b1/request", b"R1")
    forged = gateway.publish(base + "workers/b2/request", b"forged")
    others = other.publish(base + "workers/b2/request", b"R2")
    posing = aggregator.publish(base + "workers/b1/request", b"A")
    # Assert: b1's and b2's own requests arrive, in order, and nothing else
    assert (own, forged, others, posing) == (0, NOT_AUTHORIZED, 0, NOT_AUTHORIZED)
    assert aggregator.until(base + "workers/b1/request", b"R1") == []
    assert aggregator.until(base + "workers/b2/request", b"R2") == []


@pytest.mark.parametrize("qos", [0, 1])
def test_gateway_cannot_publish_as_another_worker(login: Login, fleet: str, qos: int) -> None:
    # Prepare
    base = f"tinyfed/{fleet}/"
    aggregator, gateway = login("aggregator"), login("b1")
    aggregator.subscribe(base + "workers/+/#")
    # Execute
    code = gateway.publish(base + "workers/b2/update", b"forged", qos=qos)
    gateway.publish(base + "workers/b1/update", b"sentinel")
    # Assert
    assert code == (NOT_AUTHORIZED if qos else 0)
    assert aggregator.until(base + "workers/b1/update", b"sentinel") == []


def test_gateway_cannot_publish_the_global_model(login: Login, fleet: str) -> None:
    # Prepare
    base = f"tinyfed/{fleet}/"
    aggregator, gateway, monitor = login("aggregator"), login("b1"), login("monitor")
    assert aggregator.publish(base + "global", b"G1", retain=True) == NO_MATCHING_SUBSCRIBERS
    monitor.subscribe(base + "#")
    assert monitor.until(base + "global", b"G1") == []
    # Execute
    code = gateway.publish(base + "global", b"evil", retain=True)
    gateway.publish(base + "workers/b1/loss", b"sentinel")
    # Assert: refused, never delivered, and the retained model is still the aggregator's
    assert code == NOT_AUTHORIZED
    assert monitor.until(base + "workers/b1/loss", b"sentinel") == []
    late = login("b2")
    late.subscribe(base + "global")
    assert late.until(base + "global", b"G1") == []


@pytest.mark.parametrize("topic", ["aggregator/status", "rounds"])
def test_gateway_cannot_publish_the_aggregators_topics(
    login: Login, fleet: str, topic: str
) -> None:
    # Prepare: a forged status could make every gateway re-send, or believe a round closed
    base = f"tinyfed/{fleet}/"
    monitor, gateway = login("monitor"), login("b1")
    monitor.subscribe(base + "#")
    # Execute
    code = gateway.publish(base + topic, b"forged", retain=True)
    gateway.publish(base + "workers/b1/loss", b"sentinel")
    # Assert
    assert code == NOT_AUTHORIZED
    assert monitor.until(base + "workers/b1/loss", b"sentinel") == []


def test_gateway_reads_its_receipt_and_the_aggregator_status_but_no_other_worker_nor_round(
    login: Login, fleet: str
) -> None:
    # Prepare
    base = f"tinyfed/{fleet}/"
    aggregator, other, gateway = login("aggregator"), login("b2"), login("b1")
    gateway.subscribe(base + "#")
    # Execute
    other.publish(base + "workers/b2/loss", b"L2")
    other.publish(base + "workers/b2/update", b"U2")
    aggregator.publish(base + "workers/b2/receipt", b"R2")
    aggregator.publish(base + "rounds", b"R")
    aggregator.publish(base + "aggregator/status", b"A")
    aggregator.publish(base + "workers/b1/receipt", b"R1")
    gateway.publish(base + "workers/b1/loss", b"sentinel")
    # Assert: of all that, only the aggregator's status and its own receipt
    assert [(t, p) for t, p, _ in gateway.until(base + "workers/b1/loss", b"sentinel")] == [
        (base + "aggregator/status", b"A"),
        (base + "workers/b1/receipt", b"R1"),
    ]


def test_gateway_reads_only_its_own_retained_receipt(login: Login, fleet: str) -> None:
    # Prepare: the aggregator recorded both workers' updates while b1 was away
    base = f"tinyfed/{fleet}/"
    aggregator = login("aggregator")
    for worker in ("b1", "b2"):
        code = aggregator.publish(base + f"workers/{worker}/receipt", worker.encode(), retain=True)
        assert code == NO_MATCHING_SUBSCRIBERS
    gateway = login("b1")
    # Execute
    gateway.subscribe(base + "workers/#")
    gateway.publish(base + "workers/b1/loss", b"sentinel")
    # Assert
    assert gateway.until(base + "workers/b1/receipt", b"b1") == []
    assert gateway.until(base + "workers/b1/loss", b"sentinel") == []


@pytest.mark.parametrize("owner", ["b1", "b2"])
def test_gateway_cannot_forge_a_receipt(login: Login, fleet: str, owner: str) -> None:
    # Prepare: a forged receipt would make a gateway drop an update nobody recorded
    base = f"tinyfed/{fleet}/"
    receipt = base + f"workers/{owner}/receipt"
    aggregator, monitor, gateway = login("aggregator"), login("monitor"), login("b1")
    assert aggregator.publish(receipt, b"recorded", retain=True) == NO_MATCHING_SUBSCRIBERS
    monitor.subscribe(base + "#")
    assert monitor.until(receipt, b"recorded") == []
    # Execute
    codes = [gateway.publish(receipt, b"forged", qos=qos, retain=True) for qos in (1, 0)]
    gateway.publish(base + "workers/b1/loss", b"sentinel")
    # Assert: refused, never delivered, and the retained receipt is still the aggregator's
    assert codes == [NOT_AUTHORIZED, 0]
    assert monitor.until(base + "workers/b1/loss", b"sentinel") == []
    reader = gateway if owner == "b1" else login(owner)
    reader.subscribe(receipt)
    assert reader.until(receipt, b"recorded") == []


def test_monitor_reads_everything_and_writes_nothing(login: Login, fleet: str) -> None:
    # Prepare
    base = f"tinyfed/{fleet}/"
    monitor, aggregator = login("monitor"), login("aggregator")
    monitor.subscribe(base + "#")
    # Execute
    codes = {
        topic: monitor.publish(base + topic, b"M")
        for topic in ("global", "rounds", "workers/monitor/loss", "workers/b1/loss")
    }
    aggregator.publish(base + "rounds", b"R")
    aggregator.publish(base + "aggregator/status", b"A", retain=True)
    # Assert
    assert codes == dict.fromkeys(codes, NOT_AUTHORIZED)
    assert [(t, p) for t, p, _ in monitor.until(base + "aggregator/status", b"A")] == [
        (base + "rounds", b"R")
    ]


def test_homeassistant_reads_statuses_and_writes_only_discovery_configs(
    login: Login, fleet: str
) -> None:
    # Prepare
    base = f"tinyfed/{fleet}/"
    ha, gateway, monitor = login("homeassistant"), login("b1"), login("monitor")
    ha.subscribe(base + "#")
    monitor.subscribe("homeassistant/#")
    # Execute
    gateway.publish(base + "workers/b1/loss", b"L")
    gateway.publish(base + "workers/b1/status", b"S", retain=True)
    codes = {
        topic: ha.publish(topic, b"H")
        for topic in (base + "global", base + "workers/homeassistant/status", base + "rounds")
    }
    config = ha.publish(f"homeassistant/sensor/tinyfed_{fleet}_b1/loss/config", b"C")
    # Assert: only the status arrives; the configs are the account's only writes
    assert codes == dict.fromkeys(codes, NOT_AUTHORIZED)
    assert config == 0
    assert [(t, p) for t, p, _ in ha.until(base + "workers/b1/status", b"S")] == []
    seen = monitor.until(f"homeassistant/sensor/tinyfed_{fleet}_b1/loss/config", b"C")
    assert seen == []  # the monitor (a Home Assistant logged in as monitor) reads the configs


def test_aggregator_cannot_pose_as_a_worker(login: Login, fleet: str) -> None:
    aggregator = login("aggregator")
    for topic in ("aggregator/update", "b1/update", "b1/status", "b1/loss", "b1/request"):
        assert aggregator.publish(f"tinyfed/{fleet}/workers/{topic}", b"U") == NOT_AUTHORIZED


def test_aggregator_writes_receipts_that_their_gateway_reads(login: Login, fleet: str) -> None:
    base = f"tinyfed/{fleet}/"
    aggregator, gateway = login("aggregator"), login("b1")
    gateway.subscribe(base + "workers/b1/receipt")
    assert aggregator.publish(base + "workers/b1/receipt", b"R", retain=True) == 0
    assert gateway.until(base + "workers/b1/receipt", b"R") == []


# ----------------------------------------------------------------------------- sessions

#: The client id the aggregator sends (aggregator/settings.py): fixed, so anyone can know it.
AGGREGATOR_CLIENT_ID = "tinyfed-aggregator-tinyfed-home"


@pytest.fixture
def persistent_aggregator(deployment: Deployment, fleet: str) -> Iterator[Session]:
    """The aggregator's account with its persistent session, subscribed to the fleet's updates.

    The session is ended at the end of the test (a clean start, then a disconnection).
    """
    password = deployment.passwords["aggregator"]
    aggregator = Session(deployment.port, "aggregator", password, client_id=AGGREGATOR_CLIENT_ID)
    code = aggregator.connect(session_expiry=3600)
    assert not code.is_failure, code
    aggregator.subscribe(f"tinyfed/{fleet}/workers/+/update")
    yield aggregator
    aggregator.close()
    end = Session(deployment.port, "aggregator", password, client_id=AGGREGATOR_CLIENT_ID)
    end.connect()
    end.close()


def test_no_account_can_take_over_the_aggregators_session(
    deployment: Deployment, persistent_aggregator: Session, fleet: str
) -> None:
    # Prepare: without use_username_as_clientid, a CONNECT with the aggregator's client id
    # disconnects it ("session taken over"), and a clean start discards its queued updates.
    update = f"tinyfed/{fleet}/workers/b1/update"
    aggregator = persistent_aggregator
    intruders = []
    for user in ("b1", "b2"):
        intruder = Session(
            deployment.port, user, deployment.passwords[user], client_id=AGGREGATOR_CLIENT_ID
        )
        intruders.append(intruder)
    try:
        # Execute: one intruder while the aggregator is connected, one while it is away
        assert not intruders[0].connect().is_failure
        assert intruders[0].publish(update, b"while connected") == 0
        received_online = aggregator.until(update, b"while connected")
        aggregator.close()
        assert aggregator.disconnects.get(timeout=TIMEOUT).value == 0  # our own, normal
        assert not intruders[1].connect().is_failure
        assert intruders[0].publish(update, b"queued") == 0
        code = aggregator.connect(session_expiry=3600)
        # Assert: never disconnected by the broker, and the queued update waited for it
        assert received_online == []
        assert not code.is_failure
        assert aggregator.session_present
        assert aggregator.until(update, b"queued") == []
        assert aggregator.disconnects.empty()
        assert [i.disconnects.empty() for i in intruders] == [True, True]
    finally:
        for intruder in intruders:
            intruder.close()


def test_an_account_holds_one_connection(login: Login) -> None:
    # The consequence of binding client ids to usernames: a second connection of an account
    # takes over the first one's session, whatever client ids they send. Mosquitto 2.0.11
    # closes the first connection without a DISCONNECT packet ("Client monitor already
    # connected, closing old connection." in its log): paho reports "Unspecified error".
    first = login("monitor")
    second = login("monitor")
    assert first.disconnects.get(timeout=TIMEOUT).is_failure
    assert second.disconnects.empty()


def test_updates_queued_beyond_mosquittos_default_limit_all_reach_the_aggregator(
    deployment: Deployment, persistent_aggregator: Session, fleet: str
) -> None:
    # Prepare: the aggregator is away; Mosquitto's default (max_queued_messages 1000) would
    # keep the first 1000 updates and drop the rest silently
    count = 1500
    aggregator = persistent_aggregator
    aggregator.close()
    gateway = Session(deployment.port, "b1", deployment.passwords["b1"])
    try:
        assert not gateway.connect().is_failure
        # Execute
        infos = [
            gateway.client.publish(f"tinyfed/{fleet}/workers/b1/update", b"%d" % i, qos=1)
            for i in range(count)
        ]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
        assert not aggregator.connect(session_expiry=3600).is_failure
        received = aggregator.receive(count)
    finally:
        gateway.close()
    # Assert: all of them, in order
    assert [int(payload) for _, payload, _ in received] == list(range(count))


def test_the_deployed_limits_are_the_private_brokers() -> None:
    # tinyfed/testbed/broker.py's LIMITS must state what deploy/mosquitto/mosquitto.conf does
    settings = dict(
        line.split(maxsplit=1)
        for line in DEPLOY_CONF.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for line in LIMITS.config_lines():
        key, value = line.split()
        assert settings[key] == value, line
    # ...and leave room for the contract's largest payload, its topic and properties
    largest = max(contract.MAX_MODEL_PAYLOAD, contract.MAX_JSON_PAYLOAD)
    assert LIMITS.max_packet_size >= largest + 4096
