"""Home Assistant MQTT discovery: every board of a fleet appears as a device, with no YAML.

Home Assistant creates entities from retained *config* messages under its discovery prefix
(``homeassistant/<component>/<node>/<object>/config``, JSON). tinyfed's own topics already hold
everything a dashboard card needs, so the configs only point Home Assistant at them, with a
template that picks a field; nothing else is published and the boards' topics do not change:

* from the worker's retained status (``tinyfed/<fleet>/workers/<id>/status``): a
  ``connectivity`` binary sensor (on while the gateway reports its board ``online``), the
  board's model round and firmware;
* from the loss events (``.../loss``, one per training step): the last word heard (the board's
  prediction, ``unknown`` when no output passed the threshold), the word it was told, the loss
  and the step counter; these are *available* only while the board is online.

:class:`HomeAssistantDiscovery` watches a fleet's status topics and publishes a board's configs
the first time it sees the board, and again for every board when Home Assistant announces that
it (re)started (``online`` on ``homeassistant/status``, its birth message), as Home Assistant
asks integrations to do. ``remove`` publishes empty retained configs, which deletes the entities.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tinyfed.mqtt.adapter import Connected, Event, Message, MqttSession
from tinyfed.mqtt.contract import ContractError, Topics, decode_worker_status
from tinyfed.mqtt.session import BrokerUrl

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "homeassistant"  #: Home Assistant's default discovery prefix
BIRTH_SUFFIX = "status"  #: Home Assistant publishes "online" here when it starts
ORIGIN = {"name": "tinyfed", "support_url": "https://github.com/tinyfed/tinyfed"}
_ONLINE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity of a board: where its state is and how to read it."""

    component: str  #: ``sensor`` or ``binary_sensor``
    key: str  #: the object id, stable (part of the unique id)
    name: str
    source: str  #: ``status`` or ``loss``: which of the worker's topics
    template: str
    extra: tuple[tuple[str, Any], ...] = ()


ENTITIES: tuple[Entity, ...] = (
    Entity(
        "binary_sensor",
        "online",
        "Online",
        "status",
        "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
        (("device_class", "connectivity"),),
    ),
    Entity("sensor", "model_round", "Model round", "status", "{{ value_json.model_round }}"),
    Entity(
        "sensor",
        "firmware",
        "Firmware",
        "status",
        "{{ value_json.firmware }}",
        (("entity_category", "diagnostic"),),
    ),
    Entity("sensor", "heard", "Last word heard", "loss", "{{ value_json.heard or 'unknown' }}"),
    Entity(
        "sensor", "word", "Last word taught", "loss", "{{ value_json.word or value_json.label }}"
    ),
    Entity(
        "sensor",
        "loss",
        "Training loss",
        "loss",
        "{{ value_json.loss }}",
        (("state_class", "measurement"), ("suggested_display_precision", 3)),
    ),
    Entity(
        "sensor",
        "step",
        "Training steps",
        "loss",
        "{{ value_json.step }}",
        (("state_class", "total_increasing"),),
    ),
)


def node_id(fleet: str, worker_id: str) -> str:
    """Home Assistant's node id for a board: ``tinyfed_<fleet>_<worker>``, in [a-zA-Z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"tinyfed_{fleet}_{worker_id}")


def configs(
    topics: Topics, worker_id: str, *, prefix: str = DEFAULT_PREFIX, firmware: str = ""
) -> Iterator[tuple[str, bytes]]:
    """The discovery config messages ``(topic, JSON payload)`` of one board."""
    node = node_id(topics.fleet, worker_id)
    status = topics.worker_status(worker_id)
    device: dict[str, Any] = {
        "identifiers": [node],
        "name": f"tinyfed {worker_id}",
        "manufacturer": "tinyfed",
        "model": "keyword-spotting board",
        "via_device": f"tinyfed_{topics.fleet}",
    }
    if firmware:
        device["sw_version"] = firmware
    for e in ENTITIES:
        config: dict[str, Any] = {
            "name": e.name,
            "unique_id": f"{node}_{e.key}",
            "object_id": f"{node}_{e.key}",
            "state_topic": status if e.source == "status" else topics.worker_loss(worker_id),
            "value_template": e.template,
            "device": device,
            "origin": ORIGIN,
            **dict(e.extra),
        }
        if e.source == "loss":
            config["availability_topic"] = status
            config["availability_template"] = _ONLINE
        yield f"{prefix}/{e.component}/{node}/{e.key}/config", json.dumps(config).encode()


def removals(topics: Topics, worker_id: str, *, prefix: str = DEFAULT_PREFIX) -> Iterator[str]:
    """The config topics whose empty retained message deletes a board's entities."""
    for topic, _ in configs(topics, worker_id, prefix=prefix):
        yield topic


REMOVE_TIMEOUT_S = 10.0  #: how long ``remove`` waits for the broker (connection, acknowledgements)


def remove(
    broker: BrokerUrl,
    topics: Topics,
    workers: list[str],
    *,
    prefix: str = DEFAULT_PREFIX,
    timeout: float = REMOVE_TIMEOUT_S,
) -> None:
    """Delete the boards' entities: an empty retained message on each config topic.

    Raises:
        ConnectionError: the broker did not accept the session or acknowledge the deletions.
    """
    connected = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Connected):
            connected.set()

    mqtt = MqttSession(broker, f"tinyfed-ha-rm-{topics.fleet}"[:64], logger=log)
    mqtt.start(handler=on_event)
    try:
        if not connected.wait(timeout):
            raise ConnectionError(f"no MQTT session with {broker} within {timeout:.0f} s")
        infos = [
            mqtt.publish(t, b"", retain=True)
            for w in workers
            for t in removals(topics, w, prefix=prefix.rstrip("/"))
        ]
        for info in infos:
            info.wait_for_publish(timeout)
    finally:
        mqtt.close()


class HomeAssistantDiscovery:
    """Publishes the discovery configs of every board of a fleet (see the module's docstring).

    Args:
        broker: the fleet's broker.
        topics: the fleet's topics.
        prefix: Home Assistant's discovery prefix.
        client_id: the MQTT client id.
    """

    def __init__(
        self,
        broker: BrokerUrl,
        topics: Topics,
        *,
        prefix: str = DEFAULT_PREFIX,
        client_id: str | None = None,
    ) -> None:
        self.topics = topics
        self.prefix = prefix.rstrip("/")
        self._firmware: dict[str, str] = {}  #: every board seen, with its firmware
        self._announced: set[str] = set()
        self._lock = threading.Lock()
        self.published = threading.Event()  #: set after the first board's configs
        self._mqtt = MqttSession(broker, client_id or f"tinyfed-ha-{topics.fleet}"[:64], logger=log)

    def start(self) -> None:
        """Connect and start watching (returns at once; the session reconnects by itself)."""
        self._mqtt.start(handler=self._on_event)

    def close(self) -> None:
        """Disconnect; the retained configs stay (Home Assistant keeps the devices)."""
        self._mqtt.close()

    @property
    def boards(self) -> list[str]:
        """The boards announced so far."""
        with self._lock:
            return sorted(self._announced)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Connected):
            self._mqtt.subscribe([self.topics.all_worker_status, f"{self.prefix}/{BIRTH_SUFFIX}"])
        elif isinstance(event, Message):
            self._on_message(event.topic, event.payload)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.prefix}/{BIRTH_SUFFIX}":
            if payload.strip() == b"online":
                log.info("Home Assistant (re)started: announcing %d boards", len(self._firmware))
                for worker, firmware in sorted(self._firmware.items()):
                    self._announce(worker, firmware)
            return
        try:
            status = decode_worker_status(payload)
        except ContractError as exc:
            log.warning("ignored a status on %s: %s", topic, exc)
            return
        with self._lock:
            known = self._firmware.get(status.worker_id)
            self._firmware[status.worker_id] = status.firmware or known or ""
            new = status.worker_id not in self._announced
            changed = bool(status.firmware) and known not in (None, status.firmware)
        if new or changed:
            self._announce(status.worker_id, self._firmware[status.worker_id])

    def _announce(self, worker_id: str, firmware: str) -> None:
        for topic, payload in configs(
            self.topics, worker_id, prefix=self.prefix, firmware=firmware
        ):
            self._mqtt.publish(topic, payload, retain=True)
        with self._lock:
            first = not self._announced
            self._announced.add(worker_id)
        log.info("announced board %s to Home Assistant (%d entities)", worker_id, len(ENTITIES))
        if first:
            self.published.set()
