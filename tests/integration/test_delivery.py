"""End-to-end delivery: an update is done when the aggregator's receipt says it is on its disk.

The real gateway uplink (:mod:`tinyfed.gateway.uplink`) and the real aggregator service against a
real Mosquitto: updates the broker acknowledged but could not deliver are sent again until counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.aggregator.test_poison import running_aggregator
from tests.aggregator.test_service import Observer, Worker, flags, perturbed
from tinyfed.aggregator import service
from tinyfed.aggregator.store import Store
from tinyfed.gateway.outbox import Outbox
from tinyfed.gateway.uplink import Uplink
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ModelUpdate, Topics, WorkerStatus
from tinyfed.mqtt.session import make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto


async def _until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_an_update_acknowledged_with_no_aggregator_listening_is_sent_again_and_counted(
    broker: Mosquitto, fleet: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: no aggregator has ever subscribed, so the broker acknowledges the update with
    # "no matching subscribers" (0x10) and drops it; the old gateway called that delivered.
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    params = perturbed(21)
    upload_id = uuid.uuid4().hex
    update = ModelUpdate(
        worker_id="a",
        base_round=0,
        local_steps=10,
        params=params,
        upload_id=upload_id,
        pipeline="centroid",
    )
    outbox = Outbox(100, tmp_path / "spool", resend_min=60.0)  # the timer will not help

    async def scenario() -> None:
        uplink = Uplink(
            parse_broker_url(broker.url),
            topics,
            "a",
            outbox,
            status=lambda state: WorkerStatus("a", state, transport="test", time=time.time()),
            on_global=lambda g: None,
        )
        uplink.start()
        try:
            await _until(lambda: uplink.connected, "the uplink to connect")
            uplink.send_update(update)
            await _until(lambda: upload_id in outbox.awaiting, "the broker's PUBACK")
            assert len(list((tmp_path / "spool" / "updates").glob("*.msgpack"))) == 1
            # Execute: the aggregator comes up (its online status makes the gateway re-send)
            argv = flags(broker.url, fleet, str(tmp_path / "agg.db"), "--expect", "a")
            with running_aggregator(argv):
                await _until(lambda: upload_id in uplink.receipts, "the receipt", timeout=30)
                await asyncio.to_thread(observer.global_model, 1)
        finally:
            await uplink.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    observer.close()
    # Assert: counted once, and the spool is empty only now
    with Store(tmp_path / "agg.db") as store:
        assert [p.upload_id for p in store.participants(0)] == [upload_id]
    assert list((tmp_path / "spool" / "updates").glob("*.msgpack")) == []
    assert "re-sending update(s) without a receipt" in caplog.text


def test_a_resent_update_of_a_closed_round_is_confirmed_not_rejected(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: round 0 closes with a's update; a's receipt is "lost" and a sends it again
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    a, b = Worker(broker.url, topics, "a"), Worker(broker.url, topics, "b")
    ua = a.update(perturbed(1), upload="a-r0")
    with running_aggregator(flags(broker.url, fleet, str(tmp_path / "agg.db"), "--expect", "a,b")):
        observer.global_model(0)
        a.send(ua)
        b.send(b.update(perturbed(2), upload="b-r0"))
        observer.global_model(1)
        # Execute
        a.send(ua)
        observer.wait(
            topics.worker_receipt("a"),
            lambda p: len(observer.receipts("a")) >= 2,
            "the second receipt",
        )
        a.send(a.update(perturbed(3), base=1, upload="a-r1"))
        b.send(b.update(perturbed(4), base=1, upload="b-r1"))
        event = observer.round_event(2)
    observer.close()
    a.close()
    b.close()
    # Assert
    receipts = observer.receipts("a")
    assert [(r.upload_id, r.round, r.outcome) for r in receipts[:2]] == [
        ("a-r0", 1, "accepted"),  # counted by round 1 (from global model 0) ...
        ("a-r0", 1, "accepted"),  # ... and confirmed again, not judged by round 2
    ]
    assert event.rejected == ()
    assert np.isfinite(contract.decode_global(observer.wait(
        topics.global_model, lambda p: contract.decode_global(p).round == 2, "global 2"
    )).params).all()  # fmt: skip


def test_the_broker_sends_no_more_unacknowledged_messages_than_the_receive_maximum(
    broker: Mosquitto, fleet: str
) -> None:
    # The aggregator acknowledges only after committing and announces Receive Maximum =
    # service.INBOUND_WINDOW, so a flood waits at the broker. Mosquitto 2.0.11 honours it only
    # until the first acknowledgements (then it sends all it queued): the aggregator's memory
    # bound rests on its Inbox (tests/mqtt/test_inbox.py), this checks the first window.
    url = parse_broker_url(broker.url)
    got: list[int] = []
    sub = make_client(url, f"rm-{fleet}")
    sub.manual_ack_set(True)
    sub.on_message = lambda c, u, m: got.append(m.mid)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = service.INBOUND_WINDOW
    props.SessionExpiryInterval = 60
    sub.connect(url.host, url.port, clean_start=True, properties=props)
    sub.loop_start()
    pub = make_client(url, f"rm-pub-{fleet}")
    pub.connect(url.host, url.port)
    pub.loop_start()
    try:
        info = sub.subscribe(f"{fleet}/flood", qos=1)
        assert info[0] == 0
        time.sleep(0.3)
        n = service.INBOUND_WINDOW * 3
        for _ in range(n):
            pub.publish(f"{fleet}/flood", b"x", qos=1)
        deadline = time.monotonic() + 20
        while len(got) < service.INBOUND_WINDOW and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # more would have arrived by now if the broker ignored the maximum
        assert len(got) == service.INBOUND_WINDOW
        acked = 0
        while len(got) < n and time.monotonic() < deadline:  # each ack lets one more in
            for mid in got[acked:]:
                sub.ack(mid, 1)
            acked = len(got)
            time.sleep(0.05)
        assert len(got) == n
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def test_a_failed_attempt_asks_again_with_the_global_model(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # A broker that lost the retained global model (a cluster node's failover during the
    # publish) would leave every gateway waiting: each failed attempt republishes it.
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    argv = flags(broker.url, fleet, str(tmp_path / "agg.db"), "--expect", "a")
    with running_aggregator([*argv, "--round-timeout", "1"]):
        observer.global_model(0)
        observer.wait(topics.rounds, lambda p: True, "a failed attempt")
        observer.status(lambda s: (s.attempt or 0) >= 2, "attempt 2")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            globals_seen = [
                m for m in observer._messages if m.topic == topics.global_model and m.payload
            ]
            if len(globals_seen) >= 2:
                break
            time.sleep(0.05)
    observer.close()
    assert len(globals_seen) >= 2
    assert {contract.decode_global(bytes(m.payload)).round for m in globals_seen} == {0}
