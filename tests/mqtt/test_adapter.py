"""The MQTT session adapter: one hand-off of events, application code off paho's thread."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tinyfed.mqtt.adapter import (
    Connected,
    Disconnected,
    Event,
    Inbox,
    Message,
    MqttSession,
    Published,
    Subscribed,
)
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto

log = logging.getLogger(__name__)
TIMEOUT = 10.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_inbox_takes_a_batch_in_order_within_its_linger() -> None:
    inbox = Inbox()
    assert inbox.take(0.01) == []
    for mid in range(5):
        inbox.put(Subscribed(mid))
    assert inbox.take(0.01, linger=0.0, limit=3) == [Subscribed(0), Subscribed(1), Subscribed(2)]
    late = threading.Timer(0.05, lambda: inbox.put(Subscribed(9)))
    late.start()
    assert inbox.take(0.01, linger=0.5) == [Subscribed(3), Subscribed(4), Subscribed(9)]
    late.join()
    assert len(inbox) == 0


def test_a_slow_handler_does_not_block_keep_alives_nor_receiving(
    broker: Mosquitto, fleet: str
) -> None:
    # Prepare: a session with a 1 s keep-alive (the broker drops it after 1.5 s of silence)
    # whose handler holds its first message for 3 s, as a recorder scoring a model does
    url = parse_broker_url(broker.url)
    topic = f"tinyfed/{fleet}/slow"
    release = threading.Event()
    handled: list[Event] = []

    def handler(event: Event) -> None:
        handled.append(event)
        if isinstance(event, Message) and event.payload == b"first":
            release.wait(TIMEOUT)

    subscriber = MqttSession(url, f"slow-{fleet}", logger=log, keepalive=1)
    subscriber.start(handler=handler)
    publisher = MqttSession(url, f"pub-{fleet}", logger=log)
    publisher.start()
    try:
        wait_until(lambda: any(isinstance(e, Connected) for e in handled), "the connection")
        subscriber.subscribe([topic])
        wait_until(lambda: any(isinstance(e, Subscribed) for e in handled), "the SUBACK")
        wait_until(publisher.is_connected, "the publisher")
        # Execute: the first message blocks the handler; a second one arrives meanwhile
        publisher.publish(topic, b"first").wait_for_publish(TIMEOUT)
        wait_until(lambda: any(isinstance(e, Message) for e in handled), "the first message")
        publisher.publish(topic, b"second").wait_for_publish(TIMEOUT)
        # Assert: paho's thread received it while the handler was busy...
        wait_until(lambda: len(subscriber.inbox) == 1, "the second message in the inbox")
        time.sleep(3.0)  # ...and kept the connection alive: two keep-alive periods and more
        assert subscriber.is_connected()
        release.set()
        wait_until(lambda: len([e for e in handled if isinstance(e, Message)]) == 2, "both")
        assert not any(isinstance(e, Disconnected) for e in handled)
    finally:
        release.set()
        publisher.close()
        subscriber.close()


def test_an_asyncio_session_hands_events_to_the_loop_and_says_offline_on_exit(
    broker: Mosquitto, fleet: str
) -> None:
    url = parse_broker_url(broker.url)
    status = f"tinyfed/{fleet}/status"
    seen: list[bytes] = []
    watcher = MqttSession(url, f"watch-{fleet}", logger=log)
    watcher.start(handler=lambda e: seen.append(e.payload) if isinstance(e, Message) else None)
    wait_until(watcher.is_connected, "the watcher")
    wait_until(lambda: watcher.subscribe([status]) is not None, "the subscription")

    async def run(threaded: bool) -> list[Event]:
        loop_thread = threading.get_ident()
        events: list[Event] = []

        def handler(event: Event) -> None:
            assert threading.get_ident() == loop_thread
            events.append(event)

        session = MqttSession(
            url,
            f"loop-{threaded}-{fleet}",
            logger=log,
            status_topic=status,
            will=b"offline",
            pubacks=True,
        )
        session.start_in_loop(handler, threaded=threaded)
        deadline = time.monotonic() + TIMEOUT
        while not any(isinstance(e, Connected) for e in events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        info = session.publish_status(b"online")
        while not any(isinstance(e, Published) and e.mid == info.mid for e in events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await session.aclose(b"offline")
        return events

    try:
        for threaded in (True, False):
            seen.clear()
            asyncio.run(run(threaded))
            wait_until(lambda: seen[-1:] == [b"offline"], "the offline status")
            assert seen == [b"online", b"offline"]
    finally:
        watcher.close()


def test_a_refused_login_is_logged_once_per_cause(
    broker: Mosquitto, fleet: str, caplog: pytest.LogCaptureFixture
) -> None:
    session = MqttSession(parse_broker_url(broker.url), f"s-{fleet}", logger=log)
    for _ in range(3):
        session.inbox.put(Connected("Not authorized", failed=True))
    with caplog.at_level(logging.ERROR, logger=__name__):
        assert len(session.take(0.01)) == 3
    assert [r.getMessage() for r in caplog.records].count(
        f"broker {session.broker} refused the connection: Not authorized"
    ) == 1


class RefusingBroker:
    """An MQTT 3.1.1 broker at the byte level that refuses each client's first SUBSCRIBE.

    What a clustered broker answers while the leader of its session store is being elected
    (NATS, for one), which a real broker cannot be made to do on cue here. CONNECT gets a
    CONNACK, the first SUBSCRIBE a SUBACK of 0x80 (failure) for every filter, later ones
    0x01 (granted QoS 1), and each granted subscription one QoS 0 PUBLISH of ``b"hello"``.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.subscribes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while True:
                head = conn.recv(1)
                if not head:
                    return
                length, shift = 0, 0
                while True:  # the remaining length, 7 bits a byte
                    byte = conn.recv(1)[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = b""
                while len(body) < length:
                    body += conn.recv(length - len(body))
                kind = head[0] >> 4
                if kind == 1:  # CONNECT
                    conn.sendall(bytes([0x20, 2, 0, 0]))
                elif kind == 8:  # SUBSCRIBE: packet id, then (filter, options) pairs
                    self.subscribes += 1
                    filters, at = [], 2
                    while at < len(body):
                        n = int.from_bytes(body[at : at + 2], "big")
                        filters.append(body[at + 2 : at + 2 + n])
                        at += 2 + n + 1
                    code = 0x80 if self.subscribes == 1 else 0x01
                    codes = bytes([code] * len(filters))
                    conn.sendall(bytes([0x90, 2 + len(codes)]) + body[:2] + codes)
                    if code == 0x01:
                        topic = filters[0]
                        payload = len(topic).to_bytes(2, "big") + topic + b"hello"
                        conn.sendall(bytes([0x30, len(payload)]) + payload)
                elif kind == 12:  # PINGREQ
                    conn.sendall(bytes([0xD0, 0]))
                elif kind == 14:  # DISCONNECT
                    return

    def close(self) -> None:
        self.server.close()


def test_a_refused_subscription_is_retried_until_the_broker_grants_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    fake = RefusingBroker()
    url = parse_broker_url(f"mqtt://127.0.0.1:{fake.port}?protocol=3.1.1")
    session = MqttSession(url, "sub-retry", logger=log)
    session.start()
    events: list[Event] = []

    def seen(check: Callable[[Event], bool]) -> bool:
        events.extend(session.inbox.drain())
        return any(check(e) for e in events)

    try:
        wait_until(session.is_connected, "the connection")
        # Execute
        with caplog.at_level(logging.WARNING):
            mid = session.subscribe(["t/secret"])
            wait_until(lambda: fake.subscribes >= 1, "the first SUBSCRIBE")
            wait_until(lambda: "refused the subscription" in caplog.text, "the refusal logged")
            assert not seen(lambda e: isinstance(e, Subscribed))  # not granted: no event yet
            wait_until(lambda: seen(lambda e: e == Subscribed(mid or -1)), "the retry granted")
        # Assert: one refusal, one retry after a second, and the subscription works
        assert fake.subscribes == 2
        assert "t/secret (Unspecified error): trying again in 1 s" in caplog.text
        wait_until(
            lambda: seen(lambda e: isinstance(e, Message) and e.payload == b"hello"),
            "a message on the granted subscription",
        )
    finally:
        session.close()
        fake.close()


def test_a_will_made_by_a_function_is_made_again_for_every_connection(broker: Mosquitto) -> None:
    # Prepare: a watcher of the status topic, and a session whose Will counts its connections
    topic = f"t{time.monotonic_ns()}/status"
    seen: list[bytes] = []
    watcher = MqttSession(parse_broker_url(broker.url), f"w-{topic[:12]}", logger=log)

    def watch(e: Event) -> None:
        if isinstance(e, Connected):
            watcher.subscribe([topic])
        elif isinstance(e, Message):
            seen.append(e.payload)

    watcher.start(handler=watch)
    made: list[int] = []

    def will() -> bytes:
        made.append(len(made))
        return f"offline, connection {len(made)}".encode()

    ups: list[int] = []

    def count_ups(e: Event) -> None:
        if isinstance(e, Connected):
            ups.append(1)

    session = MqttSession(
        parse_broker_url(broker.url), f"s-{topic[:12]}", logger=log, status_topic=topic, will=will
    )
    session.start(handler=count_ups)
    try:
        wait_until(lambda: len(ups) == 1, "the first connection")
        # Execute: the connection dies twice without a DISCONNECT (as when a process is killed)
        for n in (1, 2):
            sock = session.client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)

            def got_will(n: int = n) -> bool:
                return len(seen) == n

            def reconnected(n: int = n) -> bool:
                return len(ups) == n + 1

            wait_until(got_will, f"Will number {n}")
            wait_until(reconnected, f"connection {n + 1}")
    finally:
        session.close()
        watcher.close()
    # Assert: each Will is its own connection's, not the first one's again
    assert seen == [b"offline, connection 1", b"offline, connection 2"]
