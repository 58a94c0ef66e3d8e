"""A client in another language (Node.js, the ``mqtt`` package from npm) reads tinyfed's topics.

What tinyfed publishes describes itself under MQTT v5: a JSON topic carries Content Type
``application/json`` and Payload Format Indicator 1 (UTF-8), so the Node client parses it
without knowing tinyfed's contract; a model carries ``application/vnd.msgpack`` and no UTF-8
indicator. The messages come from the real aggregator (its retained status and first global
model) and from the MQTT session adapter the gateway publishes loss events with.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tinyfed.mqtt import contract
from tinyfed.mqtt.adapter import Connected, Event, MqttSession
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto

log = logging.getLogger(__name__)
NODE_DIR = Path(__file__).parent / "node"
WORDS = ("vermell", "verd", "blau")


def node_reader() -> list[str]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "mqtt").is_dir():
        pytest.skip("Node.js or its mqtt package is missing (scripts/setup runs npm ci here)")
    return [node, str(NODE_DIR / "read_fleet.js")]


def publish_loss(broker: Mosquitto, fleet: str) -> None:
    up = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Connected):
            up.set()

    session = MqttSession(parse_broker_url(broker.url), f"node-test-{fleet}", logger=log)
    session.start(handler=on_event)
    try:
        assert up.wait(10)
        event = contract.LossEvent(
            worker_id="b1",
            step=3,
            loss=0.25,
            label=1,
            outputs=(0.1, 0.7, 0.2),
            prediction=1,
            round=1,
            time=time.time(),
            word="verd",
            heard="verd",
        )
        topic = contract.Topics(fleet).worker_loss("b1")
        session.publish(topic, contract.encode_loss(event)).wait_for_publish(10)
    finally:
        session.close()


def test_a_node_client_reads_json_and_recognises_msgpack_by_content_type(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: the node client waits for 3 messages (two retained from the aggregator, a loss)
    reader = subprocess.Popen(
        [*node_reader(), broker.url, fleet, "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = (tmp_path / "aggregator.log").open("wb")
    aggregator = subprocess.Popen(
        [
            *(sys.executable, "-m", "tinyfed.cli", "aggregator", "--broker", broker.url),
            *("--fleet", fleet, "--db", str(tmp_path / "agg.db"), "--classes", ",".join(WORDS)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Execute
        time.sleep(0.5)
        publish_loss(broker, fleet)
        out, err = reader.communicate(timeout=60)
    finally:
        aggregator.terminate()
        aggregator.wait(timeout=15)
        log.close()
        if reader.poll() is None:
            reader.kill()
    # Assert
    assert reader.returncode == 0, err
    lines = {m["topic"].split("/", 2)[2]: m for m in map(json.loads, out.splitlines())}
    assert set(lines) == {"aggregator/status", "global", "workers/b1/loss"}
    status, model, loss = lines["aggregator/status"], lines["global"], lines["workers/b1/loss"]
    for m in (status, loss):
        assert m["contentType"] == "application/json"
        assert m["payloadFormatIndicator"] is True
    assert status["json"]["state"] == "online"
    assert loss["json"]["heard"] == "verd"
    assert loss["json"]["outputs"] == [0.1, 0.7, 0.2]
    assert model["contentType"] == "application/vnd.msgpack"
    assert model["payloadFormatIndicator"] in (None, False)
    assert model["json"] is None
    assert model["bytes"] > 780  # a model, not an error message
