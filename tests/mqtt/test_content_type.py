"""MQTT v5 payloads describe themselves: Content Type and Payload Format Indicator."""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tinyfed.mqtt.adapter import MqttSession
from tinyfed.mqtt.contract import Topics
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.mqtt.topics import JSON_CONTENT_TYPE, MSGPACK_CONTENT_TYPE, payload_format
from tinyfed.testbed.broker import Mosquitto

log = logging.getLogger(__name__)


def test_each_topic_names_its_payload_format() -> None:
    t = Topics("home")
    assert payload_format(t.global_model) == (MSGPACK_CONTENT_TYPE, False)
    assert payload_format(t.worker_update("b1")) == (MSGPACK_CONTENT_TYPE, False)
    for topic in (
        t.rounds,
        t.aggregator_status,
        t.worker_loss("b1"),
        t.worker_status("b1"),
        t.worker_receipt("b1"),
        t.worker_request("b1"),
    ):
        assert payload_format(topic) == (JSON_CONTENT_TYPE, True), topic


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_subscriber_sees_what_each_payload_is(
    broker: Mosquitto, fleet: str, protocol: str
) -> None:
    # Prepare: a plain paho v5 subscriber, as any other client would be
    t = Topics(fleet)
    got: dict[str, paho.MQTTMessage] = {}
    sub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: got.__setitem__(m.topic, m)
    url = parse_broker_url(broker.url)
    sub.connect(url.host, url.port)
    sub.loop_start()
    suffix = "" if protocol == "5" else "?protocol=3.1.1"
    session = MqttSession(
        parse_broker_url(broker.url + suffix),
        f"pub-{protocol}",
        logger=log,
        status_topic=t.worker_status("b1"),
        will=b"{}",
    )
    session.start()
    try:
        sub.subscribe(f"{t.base}#", qos=1)
        deadline = time.monotonic() + 10
        while not session.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        # Execute
        session.publish(t.global_model, b"\x81\xa1v\x01")
        session.publish(t.worker_loss("b1"), b'{"v":1}')
        session.publish_status(b'{"v":1,"state":"online"}')
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        session.close()
        sub.disconnect()
        sub.loop_stop()
    # Assert: v5 names the format; 3.1.1 has no properties to carry it
    assert set(got) == {t.global_model, t.worker_loss("b1"), t.worker_status("b1")}
    for topic, m in got.items():
        props = m.properties
        kind = getattr(props, "ContentType", None)
        indicator = getattr(props, "PayloadFormatIndicator", None)
        if protocol == "5":
            assert (kind, indicator) == (
                (MSGPACK_CONTENT_TYPE, 0) if topic == t.global_model else (JSON_CONTENT_TYPE, 1)
            ), topic
        else:
            assert (kind, indicator) == (None, None), topic
