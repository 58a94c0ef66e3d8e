"""MQTT 3.1.1 for brokers without v5: ``?protocol=3.1.1`` in the broker URL.

The URL's parsing and the client it makes, then the real aggregator (subprocess) and two
simulated gateways (the real uplink) over 3.1.1 on a private Mosquitto, which speaks both. Its
log shows each client's protocol (``p2`` is 3.1.1, ``p5`` v5: Mosquitto's own numbering) and
clean-session flag, so the test proves the aggregator's session is persistent (``c0``) and the
gateways' clean (``c1``); rounds close, also across a SIGKILL of the aggregator, no global model
of its own coming back (no No Local in 3.1.1) is taken for a mismatch, and every update with an
accepted receipt is counted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tinyfed.errors import UsageError
from tinyfed.gateway.simulated import SimulatedGateway, db_round
from tinyfed.mqtt.contract import Topics
from tinyfed.mqtt.session import BrokerUrl, Throttle, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto


def test_the_url_selects_the_protocol_and_v5_stays_the_default() -> None:
    assert parse_broker_url("mqtt://h").protocol == "5"
    assert parse_broker_url("mqtt://h?protocol=5").protocol == "5"
    b = parse_broker_url("mqtts://u:p@h:1?protocol=3.1.1", env={})
    assert (b.host, b.port, b.tls, b.username, b.protocol, b.v5) == (
        "h",
        1,
        True,
        "u",
        "3.1.1",
        False,
    )
    assert str(b) == "mqtts://u@h:1?protocol=3.1.1"
    assert str(parse_broker_url("mqtt://h")) == "mqtt://h:1883"
    assert parse_broker_url(str(b), env={}).protocol == "3.1.1"  # the URL a log shows works


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mqtt://h?protocol=3.1", "protocol must be one of 5, 3.1.1"),
        ("mqtt://h?protocol=", "protocol must be one of 5, 3.1.1"),
        ("mqtt://h?protocol=5&protocol=3.1.1", "protocol must be one of"),
        ("mqtt://h?proto=3.1.1", "unknown parameter 'proto'"),
        ("mqtt://h?protocol", "bad query"),
    ],
)
def test_a_bad_protocol_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_broker_url(url)


def test_make_client_speaks_the_urls_protocol() -> None:
    v5 = make_client(BrokerUrl("h", 1), "a")
    v311 = make_client(BrokerUrl("h", 1, protocol="3.1.1"), "b")
    persistent = make_client(BrokerUrl("h", 1, protocol="3.1.1"), "c", persistent=True)
    assert v5.protocol == paho.MQTTv5
    assert v311.protocol == paho.MQTTv311
    assert v311._clean_session is True
    assert persistent._clean_session is False


@pytest.mark.timeout(120)
def test_aggregator_and_gateways_over_mqtt_3_1_1(tmp_path: Path) -> None:
    with Mosquitto(workdir=tmp_path / "broker") as broker:
        asyncio.run(_fleet(broker, tmp_path))
        log = broker.log_path.read_text(errors="replace")
    connected = re.findall(r"New client connected from \S+ as (\S+) \((p\d), (c\d)", log)
    by_client = {cid: (p, c) for cid, p, c in connected}
    aggregator = [cid for cid in by_client if "aggregator" in cid]
    gateways = [cid for cid in by_client if cid.startswith("tinyfed-gw-")]
    assert aggregator, log[-2000:]
    assert len(gateways) == 2, log[-2000:]
    assert by_client[aggregator[0]] == ("p2", "c0"), by_client  # 3.1.1, persistent session
    assert all(by_client[g] == ("p2", "c1") for g in gateways), by_client  # 3.1.1, clean


async def _fleet(broker: Mosquitto, tmp_path: Path) -> None:
    fleet = "p" + uuid.uuid4().hex[:8]
    db = tmp_path / "aggregator.sqlite3"
    log = tmp_path / "aggregator.log"
    url = broker.url + "?protocol=3.1.1"
    argv = [
        sys.executable, "-m", "tinyfed.cli", "aggregator",
        "--broker", url, "--fleet", fleet, "--db", str(db),
        "--expect", "w1,w2", "--round-timeout", "10", "--min-workers", "1",
    ]  # fmt: skip
    with log.open("ab") as out:
        aggregator = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    gateways = [
        SimulatedGateway(
            parse_broker_url(url), Topics(fleet), w, seed=i, resend_min=2.0, resend_max=4.0
        )
        for i, w in enumerate(["w1", "w2"])
    ]
    try:
        for gw in gateways:
            gw.start()
        deadline = time.monotonic() + 60
        while db_round(db) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # Restart the aggregator: its persistent 3.1.1 session brings what came meanwhile.
        aggregator.send_signal(signal.SIGKILL)
        await asyncio.to_thread(aggregator.wait)
        with log.open("ab") as out:
            aggregator = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        at = db_round(db)
        while db_round(db) < at + 2 and time.monotonic() < deadline + 30:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        await asyncio.gather(*(gw.stop() for gw in gateways))
        aggregator.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(aggregator.wait, 15)
    text = log.read_text(errors="replace")
    assert db_round(db) >= 5, text[-3000:]
    assert code == 0, text[-3000:]
    # Its own global models come back (3.1.1 has no No Local): never a mismatch. Only the SIGKILL
    # may land between committing a round and publishing its model: the restarted aggregator
    # then finds the previous one retained and republishes, once, right after it starts.
    restart = text.rfind("aggregator for fleet")
    repairs = re.findall(
        r"broker holds global model round (\d+) \w+, the database round (\d+) \w+: republishing",
        text,
    )
    assert text.count("republishing") == len(repairs), text[-3000:]
    assert len(repairs) <= 1, repairs
    for held, current in repairs:
        assert int(held) == int(current) - 1, repairs
        assert text.find("republishing") > restart, "a mismatch before the restart"
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute("SELECT round, upload_id FROM participants").fetchall()
    counted: dict[str, list[int]] = {}
    for rnd, upload in rows:
        counted.setdefault(upload, []).append(rnd)
    accepted = [rc for g in gateways for rc in g.receipts.values() if rc.outcome == "accepted"]
    made = {u: m for g in gateways for u, m in g.made.items()}
    assert len(accepted) >= 4, f"{len(accepted)} accepted receipts"
    for rc in accepted:
        assert counted.get(rc.upload_id) == [made[rc.upload_id].base_round], rc
    assert all(len(rs) == 1 for rs in counted.values()), counted


def test_a_repeated_refusal_is_logged_once_per_cause_and_minute() -> None:
    throttle = Throttle(every_s=60)
    seen = [
        throttle("Not authorized", now=0.0),
        throttle("Not authorized", now=8.0),  # the next reconnect: the same refusal
        throttle("Bad user name or password", now=16.0),  # a new cause: said at once
        throttle("Bad user name or password", now=30.0),
        throttle("Bad user name or password", now=76.5),  # a minute later: said again
    ]
    assert seen == [True, False, True, False, True]
    assert throttle.suppressed == 0
