"""The topic names of one fleet (part of the MQTT contract; re-exported by
:mod:`tinyfed.mqtt.contract`, whose table says what each topic carries)."""

from __future__ import annotations

from dataclasses import dataclass

from tinyfed.mqtt.fields import _WORKER_ID, DEFAULT_PREFIX, ContractError, _show, check_worker_id

_FLEET = _WORKER_ID  #: a fleet name follows the worker id's rules (one topic level)
#: the last level of a worker's topics (``workers/<id>/<kind>``; the contract's table)
WORKER_KINDS = ("update", "loss", "status", "receipt", "request")

#: MQTT v5 Content Type of the model payloads (``global``, ``workers/<id>/update``): msgpack
MSGPACK_CONTENT_TYPE = "application/vnd.msgpack"
#: MQTT v5 Content Type of every other tinyfed payload: UTF-8 JSON
JSON_CONTENT_TYPE = "application/json"


def payload_format(topic: str) -> tuple[str, bool]:
    """``(content type, is UTF-8 text)`` of what a tinyfed topic carries, from its last level:
    what a publisher puts in the MQTT v5 Content Type and Payload Format Indicator, so any
    client can tell the JSON topics from the msgpack ones without knowing the contract."""
    binary = topic.rsplit("/", 1)[-1] in ("global", "update")
    return (MSGPACK_CONTENT_TYPE, False) if binary else (JSON_CONTENT_TYPE, True)


@dataclass(frozen=True)
class Topics:
    """Topic names of one fleet."""

    fleet: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.fleet, str) or not _FLEET.fullmatch(self.fleet):
            raise ContractError(
                f"invalid fleet name {_show(self.fleet)}: use 1-64 letters, digits, '_', '.', '-'"
            )
        if (
            not isinstance(self.prefix, str)
            or not self.prefix
            or any(c in self.prefix for c in "+#\0")
            or self.prefix.endswith("/")
        ):
            raise ContractError(f"invalid topic prefix {_show(self.prefix)}")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.fleet}/"

    @property
    def global_model(self) -> str:
        return self.base + "global"

    @property
    def rounds(self) -> str:
        return self.base + "rounds"

    @property
    def aggregator_status(self) -> str:
        return self.base + "aggregator/status"

    def worker_update(self, worker_id: str) -> str:
        return f"{self.base}workers/{check_worker_id(worker_id)}/update"

    def worker_loss(self, worker_id: str) -> str:
        return f"{self.base}workers/{check_worker_id(worker_id)}/loss"

    def worker_status(self, worker_id: str) -> str:
        return f"{self.base}workers/{check_worker_id(worker_id)}/status"

    def worker_receipt(self, worker_id: str) -> str:
        return f"{self.base}workers/{check_worker_id(worker_id)}/receipt"

    def worker_request(self, worker_id: str) -> str:
        return f"{self.base}workers/{check_worker_id(worker_id)}/request"

    @property
    def all_updates(self) -> str:
        return self.base + "workers/+/update"

    @property
    def all_losses(self) -> str:
        return self.base + "workers/+/loss"

    @property
    def all_worker_status(self) -> str:
        return self.base + "workers/+/status"

    @property
    def all_receipts(self) -> str:
        return self.base + "workers/+/receipt"

    @property
    def all_requests(self) -> str:
        return self.base + "workers/+/request"

    def parse_worker_topic(self, topic: str) -> tuple[str, str]:
        """Split ``.../workers/<id>/<kind>`` into ``(id, kind)``; ContractError otherwise.

        ``kind`` is one of :data:`WORKER_KINDS`.
        """
        prefix = self.base + "workers/"
        if not isinstance(topic, str) or not topic.startswith(prefix):
            raise ContractError(
                f"topic {_show(topic, 200)} is not a worker topic of fleet {self.fleet}"
            )
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in WORKER_KINDS:
            raise ContractError(
                f"topic {_show(topic, 200)} is not a worker topic of fleet {self.fleet}"
            )
        return check_worker_id(parts[0]), parts[1]
