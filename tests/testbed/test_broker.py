"""The private Mosquitto used by the tests and the demo: start, kill, restart, retained data."""

from __future__ import annotations

import queue
import threading
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tinyfed.testbed.broker import LIMITS, BrokerLimits, Mosquitto


def _retained(port: int, topic: str) -> bytes | None:
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: threading.Timer(0.5, done.set).start()

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(5)
    client.loop_stop()
    client.disconnect()
    return got[0] if got else None


def test_retained_message_survives_a_graceful_restart(own_broker: Mosquitto) -> None:
    # Prepare
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", own_broker.port)
    client.loop_start()
    client.publish("t/x", b"kept", qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    # Execute
    own_broker.restart()
    # Assert
    assert own_broker.running
    assert _retained(own_broker.port, "t/x") == b"kept"


def test_killed_broker_restarts_on_the_same_port(own_broker: Mosquitto) -> None:
    port = own_broker.port
    own_broker.kill()
    assert not own_broker.running
    own_broker.start()
    assert own_broker.port == port
    assert _retained(port, "nothing/here") is None


class _Subscriber:
    """A persistent-session MQTT v5 subscriber (clean start off, session kept an hour)."""

    def __init__(self, port: int, topic: str) -> None:
        self.port = port
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"subscriber-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = lambda c, u, m: self.messages.put(bytes(m.payload))
        self.connect()
        self.client.subscribe(topic, qos=1)[1]
        self.client.publish(topic, b"subscribed", qos=1).wait_for_publish(5)
        assert self.messages.get(timeout=5) == b"subscribed"

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def receive(self, count: int) -> list[bytes]:
        return [self.messages.get(timeout=5) for _ in range(count)]


def _publish(port: int, topic: str, payloads: list[bytes]) -> list[int]:
    """Publish at QoS 1; the PUBACK reason codes."""
    codes: dict[int, int] = {}
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_publish = lambda c, u, mid, rc, p: codes.__setitem__(mid, rc.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    return [codes[info.mid] for info in infos]


def test_more_than_a_thousand_messages_wait_for_an_offline_persistent_session(
    own_broker: Mosquitto,
) -> None:
    # Prepare: Mosquitto's default max_queued_messages (1000) would drop the rest silently
    count = 1500
    subscriber = _Subscriber(own_broker.port, "t/updates")
    subscriber.disconnect()
    # Execute
    codes = _publish(own_broker.port, "t/updates", [b"%d" % i for i in range(count)])
    subscriber.connect()
    received = subscriber.receive(count)
    subscriber.disconnect()
    # Assert: all of them, in order
    assert codes == [0] * count
    assert [int(p) for p in received] == list(range(count))


def test_messages_beyond_the_queue_limit_are_dropped_but_acknowledged() -> None:
    # What docs/deploy.md says happens beyond max_queued_messages (or max_queued_bytes): the
    # publisher gets a successful PUBACK, the offline subscriber never gets the message.
    with Mosquitto(limits=BrokerLimits(max_queued_messages=10)) as broker:
        subscriber = _Subscriber(broker.port, "t/updates")
        subscriber.disconnect()
        # Execute
        codes = _publish(broker.port, "t/updates", [b"%d" % i for i in range(15)])
        subscriber.connect()
        received = subscriber.receive(10)
        subscriber.client.publish("t/updates", b"sentinel", qos=1).wait_for_publish(5)
        after = subscriber.receive(1)
        subscriber.disconnect()
        log = broker.log_path.read_text()
    # Assert
    assert codes == [0] * 15
    assert [int(p) for p in received] == list(range(10))
    assert after == [b"sentinel"]
    assert "Outgoing messages are being dropped for client subscriber-" in log


def test_private_broker_has_the_deployed_limits(own_broker: Mosquitto) -> None:
    config = own_broker.config_path.read_text().splitlines()
    assert set(LIMITS.config_lines()) <= set(config)
