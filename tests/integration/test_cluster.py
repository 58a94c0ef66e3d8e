"""The fleet on a clustered broker: three NATS servers (JetStream, MQTT interface), one killed.

NATS's MQTT interface speaks MQTT 3.1.1 only (it refuses a v5 CONNECT), so everything here
connects with ``?protocol=3.1.1`` (docs/deploy.md, "MQTT 3.1.1"). Each node runs JetStream and
MQTT; the MQTT streams (sessions, retained messages, QoS 1 messages) and their consumers are
replicated on all three (``stream_replicas: 3``, ``consumer_replicas: 3``), so any two nodes
hold everything acknowledged. ``max_ack_pending`` bounds what the broker sends the aggregator
unacknowledged (its v5 Receive Maximum does not exist in 3.1.1); ``ack_wait`` is how soon an
unacknowledged message is sent again (NATS redelivers only then, not at a reconnection).

* :func:`test_nats_refuses_mqtt_v5_and_serves_3_1_1_across_nodes` pins down what the
  interface offers: a v5 CONNECT refused; under 3.1.1 a retained QoS 1 message published on one
  node reaches a subscriber on another, a persistent session moves between nodes, and a
  message delivered but not acknowledged comes again (flagged DUP) after ``ack_wait``.
* :func:`test_fleet_survives_a_nats_node_killed_mid_round`: the real aggregator (subprocess)
  on node 1 and six simulated gateways (the real uplink) two per node. Mid-round (a gateway of
  node 3 has just sent its update) node 3 is SIGKILLed: rounds keep closing without it. It is
  restarted; its gateways come back. Then node 1, the aggregator's, is killed mid-round and
  restarted (a broker URL names one host: the aggregator reconnects to the same node, or to
  a load balancer in front of the cluster). At the end every update with an "accepted"
  receipt is counted exactly once, in its base round, and no upload or worker is counted twice
  in a round.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tinyfed.gateway.simulated import SimulatedGateway, db_round
from tinyfed.mqtt.contract import Topics
from tinyfed.mqtt.session import parse_broker_url

# scripts/setup installs Debian's nats-server: a missing one is a failure, not a skip.
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ACK_WAIT_S = 3  #: the broker re-sends a QoS 1 message not acknowledged after this long
MAX_ACK_PENDING = 64  #: unacknowledged QoS 1 messages per subscription (Receive Maximum's role)


def _free_ports(k: int) -> list[int]:
    """``k`` distinct loopback ports free a moment ago (held together, so never one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(k)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


class NatsCluster:
    """``n`` nats-servers on free loopback ports: one cluster, JetStream and MQTT on each."""

    def __init__(self, workdir: Path, n: int = 3) -> None:
        self.workdir = workdir
        self.names = [f"n{i + 1}" for i in range(n)]
        ports = _free_ports(3 * n)
        self.mqtt_ports, self.client_ports, self.route_ports = (
            ports[:n],
            ports[n : 2 * n],
            ports[2 * n :],
        )
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        for i, name in enumerate(self.names):
            routes = ", ".join(
                f'"nats-route://127.0.0.1:{p}"' for j, p in enumerate(self.route_ports) if j != i
            )
            (workdir / f"{name}.conf").write_text(
                f"server_name: {name}\n"
                f"listen: 127.0.0.1:{self.client_ports[i]}\n"
                f'jetstream {{ store_dir: "{workdir / name}" }}\n'
                f"cluster {{ name: tinyfed, listen: 127.0.0.1:{self.route_ports[i]}, "
                f"routes: [{routes}] }}\n"
                f'mqtt {{ listen: "127.0.0.1:{self.mqtt_ports[i]}", stream_replicas: {n}, '
                f"consumer_replicas: {n}, max_ack_pending: {MAX_ACK_PENDING}, "
                f'ack_wait: "{ACK_WAIT_S}s" }}\n'
            )

    def url(self, i: int) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_ports[i]}?protocol=3.1.1"

    def start(self, i: int) -> None:
        name = self.names[i]
        with (self.workdir / f"{name}.log").open("ab") as out:
            self.procs[i] = subprocess.Popen(
                [str(NATS), "-c", str(self.workdir / f"{name}.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self, i: int) -> None:
        proc, self.procs[i] = self.procs[i], None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs[i] = None

    def log_tail(self, i: int, lines: int = 15) -> str:
        path = self.workdir / f"{self.names[i]}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path)
    try:
        for i in range(3):
            c.start(i)
        wait_until(lambda: all(_listening(p) for p in c.mqtt_ports), 20, "MQTT listeners")
        yield c
    finally:
        c.stop_all()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g} s")


# ----------------------------------------------------------------------------- the interface


class _Probe:
    """A plain paho client recording what it receives (MQTT 3.1.1 unless told)."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        protocol: MQTTProtocolVersion = paho.MQTTv311,
        clean: bool = True,
        manual_ack: bool = False,
    ) -> None:
        self.connected = threading.Event()
        self.rc: object = None
        self.session_present = False
        self.messages: list[tuple[str, bytes, bool, int, bool]] = []  # topic, payload, retain...
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if protocol == paho.MQTTv5 else clean,
        )
        self.client.manual_ack_set(manual_ack)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, c: paho.Client, u: object, flags: object, rc: object, p: object) -> None:
        self.rc = rc
        self.session_present = bool(getattr(flags, "session_present", False))
        self.connected.set()

    def _on_message(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        self.messages.append((m.topic, bytes(m.payload), bool(m.retain), m.mid, bool(m.dup)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connect_ok(probe: _Probe, timeout: float = 20.0) -> None:
    # JetStream elects its leaders after the listeners open: early CONNECTs may be refused.
    # Only a CONNACK that was looked at is cleared, and the result is read again after the
    # clear: a success landing between the two must not be lost (paho reconnects only after
    # a failure, so a lost success would never come again).
    def succeeded() -> bool:
        return not getattr(probe.rc, "is_failure", True)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe.connected.wait(0.5):
            if succeeded():
                return
            probe.connected.clear()
            if succeeded():
                return
    raise AssertionError(f"no MQTT connection within {timeout:g} s (last: {probe.rc})")


def test_nats_refuses_mqtt_v5_and_serves_3_1_1_across_nodes(cluster: NatsCluster) -> None:
    t = f"probe/{uuid.uuid4().hex[:8]}"
    # A v5 CONNECT: refused, whatever the node.
    v5 = _Probe(cluster.mqtt_ports[0], "v5", protocol=paho.MQTTv5)
    try:
        assert v5.connected.wait(10), "no CONNACK to a v5 CONNECT"
        assert str(v5.rc) == "Unsupported protocol version", v5.rc
    finally:
        v5.client.loop_stop()
    pub = _Probe(cluster.mqtt_ports[0], "pub")
    _connect_ok(pub)
    # A retained QoS 1 message published on node 1 is served by node 2.
    pub.client.publish(f"{t}/retained", b"R", qos=1, retain=True).wait_for_publish(10)
    sub = _Probe(cluster.mqtt_ports[1], "sub")
    _connect_ok(sub)
    sub.client.subscribe(f"{t}/retained", 1)
    wait_until(lambda: sub.messages, 10, "retained message on another node")
    assert sub.messages[0][:3] == (f"{t}/retained", b"R", True)
    # A persistent session on node 3 receives a message and does not acknowledge it ...
    agg = _Probe(cluster.mqtt_ports[2], "agg", clean=False, manual_ack=True)
    _connect_ok(agg)
    agg.client.subscribe(f"{t}/q", 1)
    time.sleep(0.5)
    pub.client.publish(f"{t}/q", b"m1", qos=1).wait_for_publish(10)
    wait_until(lambda: agg.messages, 10, "QoS 1 message")
    agg.close()
    pub.client.publish(f"{t}/q", b"m2", qos=1).wait_for_publish(10)  # while it is away
    # ... and resumes it on node 2: the session is there, both messages come (m1 again, DUP,
    # once ack_wait has passed: NATS does not re-send at the reconnection itself).
    back = _Probe(cluster.mqtt_ports[1], "agg", clean=False, manual_ack=True)
    _connect_ok(back)
    assert back.session_present
    wait_until(lambda: len(back.messages) >= 2, ACK_WAIT_S + 10, "queued and unacknowledged")
    got = {(m[1], m[4]) for m in back.messages}
    assert (b"m2", False) in got, back.messages
    assert (b"m1", True) in got, back.messages
    for p in (pub, sub, back):
        p.close()


# ----------------------------------------------------------------------------- the fleet


async def _wait_round(db: Path, target: int, timeout: float, what: str, log: Path) -> float:
    start = time.monotonic()
    while db_round(db) < target:
        if time.monotonic() - start > timeout:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise AssertionError(
                f"{what}: round {db_round(db)} < {target} after {timeout:g} s; aggregator:\n{tail}"
            )
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def test_fleet_survives_a_nats_node_killed_mid_round(cluster: NatsCluster, tmp_path: Path) -> None:
    asyncio.run(_fleet(cluster, tmp_path))


async def _fleet(cluster: NatsCluster, tmp_path: Path) -> None:
    t0 = time.monotonic()
    fleet = "cl" + uuid.uuid4().hex[:8]
    db = tmp_path / "aggregator.sqlite3"
    log = tmp_path / "aggregator.log"
    workers = [f"w{i + 1}" for i in range(6)]
    node_of = {w: i // 2 for i, w in enumerate(workers)}  # w1 w2 on n1, w3 w4 on n2, ...
    argv = [
        sys.executable, "-m", "tinyfed.cli", "aggregator",
        "--broker", cluster.url(0),
        "--fleet", fleet,
        "--db", str(db),
        "--expect", ",".join(workers),
        "--round-timeout", "5",
        "--min-workers", "1",
    ]  # fmt: skip
    with log.open("ab") as out:
        aggregator = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    topics = Topics(fleet)
    gateways = [
        SimulatedGateway(
            parse_broker_url(cluster.url(node_of[w])),
            topics,
            w,
            seed=i,
            resend_min=2.0,
            resend_max=4.0,
            train_delay=(0.2, 0.8),
        )
        for i, w in enumerate(workers)
    ]
    timeline: list[str] = []

    def note(text: str) -> None:
        timeline.append(f"{time.monotonic() - t0:5.1f} s  round {db_round(db):3d}  {text}")

    async def kill_mid_round(node: int) -> int:
        """Kill ``node`` right after one of its gateways sent this round's update."""
        r = db_round(db)
        mine = [g for g in gateways if node_of[g.worker_id] == node]
        deadline = time.monotonic() + 15
        while not any(r in g.sent_at for g in mine) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            r = max(r, db_round(db))
        await asyncio.to_thread(cluster.kill, node)
        note(f"killed {cluster.names[node]} (a gateway of it sent round {r}'s update)")
        return db_round(db)

    try:
        for gw in gateways:
            gw.start()
        await _wait_round(db, 2, 40, "warm-up", log)
        note("fleet up")

        # A gateway's node dies mid-round: rounds close without its gateways.
        at = await kill_mid_round(2)
        await _wait_round(db, at + 2, 25, "rounds with node 3 down", log)
        note("two rounds closed with node 3 down")
        cluster.start(2)
        note("restarted n3")
        at = db_round(db)
        await _wait_round(db, at + 1, 25, "after node 3's restart", log)
        wait_deadline = time.monotonic() + 20
        while time.monotonic() < wait_deadline and not all(g.uplink.connected for g in gateways):
            await asyncio.sleep(0.2)
        note("node 3's gateways back" if all(g.uplink.connected for g in gateways) else "n3 slow")

        # The aggregator's node dies mid-round: it reconnects once the node is back.
        at = await kill_mid_round(0)
        await asyncio.sleep(2.0)
        cluster.start(0)
        note("restarted n1")
        await _wait_round(db, at + 2, 35, "after node 1 (the aggregator's) was killed", log)
        note("two rounds closed after node 1's restart")
        # Let updates in flight get their receipts before the verdict.
        await asyncio.sleep(1.0)
    finally:
        await asyncio.gather(*(gw.stop() for gw in gateways))
        aggregator.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = await asyncio.to_thread(aggregator.wait, 15)
        except subprocess.TimeoutExpired:
            aggregator.kill()
            code = None
        print("\n".join(timeline))

    # The verdict: the database against what the gateways made and were told.
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute("SELECT round, worker_id, upload_id FROM participants").fetchall()
        closed = {r for (r,) in con.execute("SELECT round FROM rounds WHERE outcome='closed'")}
    by_upload: dict[str, list[int]] = {}
    per_round_worker: dict[tuple[int, str], int] = {}
    for rnd, worker, upload in rows:
        by_upload.setdefault(upload, []).append(rnd)
        per_round_worker[rnd, worker] = per_round_worker.get((rnd, worker), 0) + 1
    made = {u: m for g in gateways for u, m in g.made.items()}
    accepted = [rc for g in gateways for rc in g.receipts.values() if rc.outcome == "accepted"]
    lost = [
        f"{rc.worker_id}:{rc.upload_id} (round {made[rc.upload_id].base_round}) "
        f"counted in rounds {by_upload.get(rc.upload_id)}"
        for rc in accepted
        if by_upload.get(rc.upload_id) != [made[rc.upload_id].base_round]
    ]
    twice = [f"{u}: {rs}" for u, rs in by_upload.items() if len(rs) > 1]
    twice += [f"{w} x{n} in round {r}" for (r, w), n in per_round_worker.items() if n > 1]
    counted_by_node = {n: sum(1 for _, w, _ in rows if node_of[w] == n) for n in range(3)}
    figures = (
        f"uploads={len(made)} accepted={len(accepted)} counted={len(rows)} "
        f"rounds_closed={len(closed)} by_node={counted_by_node} "
        f"run={time.monotonic() - t0:.1f}s"
    )
    print(figures)
    assert lost == [], f"accepted but not counted once in its round: {lost}; {figures}"
    assert twice == [], f"counted twice: {twice}; {figures}"
    assert len(closed) >= 6, figures
    assert closed == set(range(len(closed))), f"closed rounds {sorted(closed)}; {figures}"
    assert all(counted_by_node.values()), f"a node's gateways never counted: {figures}"
    assert code == 0, f"aggregator exit {code}"
