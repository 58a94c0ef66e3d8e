"""The session's bounded inbox (tinyfed.mqtt.adapter.Inbox): the aggregator's memory bound."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho
import pytest

from tinyfed.aggregator import service
from tinyfed.mqtt.adapter import PUT_POLL_S, Event, Inbox, Message
from tinyfed.mqtt.session import connect, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto


def msg(i: int) -> Message:
    return Message("t", i.to_bytes(4, "big"), i, 1)


def test_a_full_inbox_makes_the_producer_wait_and_keeps_the_order() -> None:
    # Prepare
    inbox = Inbox(8)
    got: list[int] = []

    def produce() -> None:
        for i in range(300):
            assert inbox.put(msg(i))

    producer = threading.Thread(target=produce)
    # Execute: a consumer slower than the producer
    producer.start()
    while len(got) < 300:
        event = inbox.get(5)
        assert isinstance(event, Message)
        got.append(event.mid)
        if len(got) % 50 == 0:
            time.sleep(0.05)
    producer.join(timeout=30)
    # Assert
    assert got == list(range(300))
    assert inbox.peak <= 8
    assert inbox.waits > 0  # the producer did have to wait


def test_closing_releases_a_producer_waiting_for_room() -> None:
    # Prepare
    inbox = Inbox(1)
    assert inbox.put(msg(1))
    results: list[bool] = []
    producer = threading.Thread(target=lambda: results.append(inbox.put(msg(2))))
    producer.start()
    time.sleep(2 * PUT_POLL_S)
    assert producer.is_alive()  # waiting for room
    # Execute
    inbox.close()
    producer.join(timeout=10)  # it wakes within PUT_POLL_S; generous for a loaded machine
    # Assert
    assert results == [False]
    assert [e.mid for e in inbox.drain() if isinstance(e, Message)] == [1]


def test_an_inbox_holds_at_least_one_event() -> None:
    with pytest.raises(ValueError, match="capacity 0"):
        Inbox(0)


def test_a_flood_through_a_real_broker_stays_within_the_inbox(
    broker: Mosquitto, fleet: str
) -> None:
    # A subscriber that acknowledges by hand, as the aggregator does, behind a real Mosquitto:
    # 600 updates of 42 KB arrive faster than it acknowledges them. Mosquitto 2.0.11 honours
    # the Receive Maximum only until the first acknowledgements; the inbox holds whatever the
    # broker does, and nothing is lost.
    url = parse_broker_url(broker.url)
    inbox = Inbox(service.INBOUND_WINDOW)
    sub = make_client(url, f"inbox-{fleet}", persistent=True)
    sub.manual_ack_set(True)

    def on_message(client: paho.Client, userdata: object, m: paho.MQTTMessage) -> None:
        inbox.put(Message(m.topic, bytes(m.payload), m.mid, m.qos))

    sub.on_message = on_message
    connect(sub, url, session_expiry=60, receive_maximum=service.INBOUND_WINDOW)
    sub.loop_start()
    pub = make_client(url, f"inbox-pub-{fleet}")
    pub.connect(url.host, url.port)
    pub.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not sub.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sub.subscribe(f"{fleet}/+/update", qos=1)[0] == paho.MQTT_ERR_SUCCESS
        time.sleep(0.3)
        n = 600
        for i in range(n):
            pub.publish(f"{fleet}/w{i % 20}/update", i.to_bytes(4, "big") * 10_500, qos=1)
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < n and time.monotonic() < deadline:
            batch: list[Event] = []
            while len(batch) < service.INBOUND_WINDOW:  # what is there, up to a window
                event = inbox.get(1.0)
                if event is None:
                    break
                batch.append(event)
            time.sleep(0.05)  # slower than the publisher
            for m in batch:
                assert isinstance(m, Message)
                seen.append(int.from_bytes(m.payload[:4], "big"))
                sub.ack(m.mid, m.qos)
        assert sorted(seen) == list(range(n))
        assert inbox.peak <= service.INBOUND_WINDOW
    finally:
        inbox.close()
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
