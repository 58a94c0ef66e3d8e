"""Home Assistant discovery: the configs a real broker holds, rendered as Home Assistant would.

Home Assistant renders ``value_template`` with Jinja2 and ``value_json`` bound to the decoded
payload; the test does the same on payloads tinyfed's own encoders produce, so a renamed field
or a broken template fails here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import jinja2
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tinyfed.cli import main
from tinyfed.fleet import homeassistant as ha
from tinyfed.mqtt import contract
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto

PREFIX = "ha-test"


class Retained:
    """Everything under a topic filter, as a late subscriber sees it (retained included)."""

    def __init__(self, broker: Mosquitto, pattern: str) -> None:
        self.messages: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex[:12])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(pattern, qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages[msg.topic] = bytes(msg.payload)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 15.0) -> dict[str, bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for p in self.messages.values() if p) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} configs, expected {n}")
                self._cond.wait(left)
            return dict(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish(broker: Mosquitto, topic: str, payload: bytes, retain: bool = True) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex[:12])
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def render(template: str, payload: bytes) -> str:
    return (
        jinja2.Environment(autoescape=False)
        .from_string(template)
        .render(value_json=json.loads(payload))
    )


def status(worker: str, state: contract.WorkerState = "online") -> bytes:
    return contract.encode_worker_status(
        contract.WorkerStatus(
            worker_id=worker, state=state, firmware="1.4.0", model_round=7, time=time.time()
        )
    )


def loss(worker: str, heard: str) -> bytes:
    return contract.encode_loss(
        contract.LossEvent(
            worker_id=worker,
            step=42,
            loss=0.125,
            label=1,
            outputs=(0.1, 0.8, 0.1),
            prediction=1 if heard else None,
            round=7,
            time=time.time(),
            word="verd",
            heard=heard,
        )
    )


def test_each_board_becomes_a_device_whose_sensors_read_tinyfed_topics(
    broker: Mosquitto, fleet: str
) -> None:
    # Prepare: a board's gateway has reported before discovery starts
    topics = contract.Topics(fleet)
    publish(broker, topics.worker_status("b1"), status("b1"))
    seen = Retained(broker, f"{PREFIX}/#")
    disco = ha.HomeAssistantDiscovery(parse_broker_url(broker.url), topics, prefix=PREFIX)
    try:
        # Execute: one board known at start, a second one appears later
        disco.start()
        assert disco.published.wait(15)
        publish(broker, topics.worker_status("b2"), status("b2", "offline"))
        configs = seen.wait(2 * len(ha.ENTITIES))
    finally:
        disco.close()
        seen.close()
    # Assert
    node = ha.node_id(fleet, "b1")
    by_key = {t.split("/")[-2]: json.loads(p) for t, p in configs.items() if f"/{node}/" in t and p}
    assert set(by_key) == {e.key for e in ha.ENTITIES}
    assert {c["unique_id"] for c in by_key.values()} == {f"{node}_{e.key}" for e in ha.ENTITIES}
    assert by_key["online"]["state_topic"] == topics.worker_status("b1")
    assert by_key["heard"]["state_topic"] == topics.worker_loss("b1")
    assert by_key["firmware"]["device"]["sw_version"] == "1.4.0"
    # The templates, rendered as Home Assistant renders them, on tinyfed's own payloads
    assert render(by_key["online"]["value_template"], status("b1")) == "ON"
    assert render(by_key["online"]["value_template"], status("b1", "offline")) == "OFF"
    assert render(by_key["model_round"]["value_template"], status("b1")) == "7"
    assert render(by_key["heard"]["value_template"], loss("b1", "verd")) == "verd"
    assert render(by_key["heard"]["value_template"], loss("b1", "")) == "unknown"
    assert render(by_key["word"]["value_template"], loss("b1", "")) == "verd"
    assert render(by_key["loss"]["value_template"], loss("b1", "")) == "0.125"
    assert render(by_key["heard"]["availability_template"], status("b1")) == "online"
    assert render(by_key["heard"]["availability_template"], status("b1", "board-missing")) == (
        "offline"
    )


def test_a_home_assistant_restart_gets_every_board_again_and_remove_deletes_them(
    broker: Mosquitto, fleet: str
) -> None:
    topics = contract.Topics(fleet)
    publish(broker, topics.worker_status("b1"), status("b1"))
    disco = ha.HomeAssistantDiscovery(parse_broker_url(broker.url), topics, prefix=PREFIX)
    disco.start()
    try:
        assert disco.published.wait(15)
        seen = Retained(broker, f"{PREFIX}/+/{ha.node_id(fleet, 'b1')}/+/config")
        seen.wait(len(ha.ENTITIES))
        seen.messages.clear()
        # Execute: Home Assistant's birth message (not retained: only a live session sees it)
        publish(broker, f"{PREFIX}/status", b"online", retain=False)
        assert len(seen.wait(len(ha.ENTITIES))) == len(ha.ENTITIES)
        seen.close()
    finally:
        disco.close()
    argv = ["homeassistant", "--broker", broker.url, "--fleet", fleet]
    assert main([*argv, "--discovery-prefix", PREFIX, "--remove", "b1"]) == 0
    after = Retained(broker, f"{PREFIX}/+/{ha.node_id(fleet, 'b1')}/+/config")
    time.sleep(0.5)  # retained messages arrive right after SUBACK; none should
    after.close()
    assert not [t for t, p in after.messages.items() if p]


def test_bad_worker_ids_and_an_unreachable_broker_are_clear_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["homeassistant", "--broker", "mqtt://127.0.0.1:1", "--fleet", "f"]
    assert main([*argv, "--remove", "a/b"]) == 2
    assert "--remove" in capsys.readouterr().err
    assert main(argv) == 2
    assert "cannot reach the broker at 127.0.0.1:1" in capsys.readouterr().err
