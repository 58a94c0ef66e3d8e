"""The private Mosquitto used by the tests and the demo: start, kill, restart, retained data."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tinyfed.broker import Mosquitto


def _retained(port: int, topic: str) -> bytes | None:
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: threading.Timer(0.5, done.set).start()

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.append(msg.payload)
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
