"""The MQTT contract: every topic and payload the fleet exchanges, in one module.

Everything else works with the frozen dataclasses below; only this module touches msgpack
and JSON. Topics live under ``<prefix>/<fleet>/`` (default prefix ``tinyfed``):

============================  ==================  =========================================
topic                         QoS / retain        payload
============================  ==================  =========================================
``global``                    1, retained         msgpack :class:`GlobalModel`
``workers/<id>/update``       1                   msgpack :class:`ModelUpdate`
``workers/<id>/loss``         1                   JSON :class:`LossEvent`
``workers/<id>/status``       1, retained, Will   JSON :class:`WorkerStatus`
``rounds``                    1                   JSON :class:`RoundEvent`
``aggregator/status``         1, retained, Will   JSON :class:`AggregatorStatus`
============================  ==================  =========================================

Model payloads carry the parameters as little-endian float32 bytes in the board's layout (see
:mod:`tinyfed.model`) and their SHA-256; decoding checks the format version, every field's type
and range, the size, finiteness and the checksum, and raises :class:`ContractError` naming the
first problem. JSON keeps telemetry readable by people and by tools such as Node-RED or Grafana
(``mosquitto_sub -t 'tinyfed/+/workers/+/loss'``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import msgpack

from tinyfed import model
from tinyfed.errors import ModelError, TinyfedError

FORMAT_VERSION = 1  #: version of every payload below; bumped on any incompatible change
DEFAULT_PREFIX = "tinyfed"
#: Largest model payload accepted: the 41,868 model bytes plus generous room for metadata.
MAX_MODEL_PAYLOAD = 64 * 1024
#: Largest JSON payload accepted (a loss event is ~200 bytes, a round event a few KB).
MAX_JSON_PAYLOAD = 64 * 1024
_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_FLEET = _WORKER_ID


class ContractError(TinyfedError):
    """A payload or topic does not follow the contract; the message names the problem."""


def check_worker_id(worker_id: str) -> str:
    """Return ``worker_id`` if it is a valid topic level (letters, digits, ``_.-``, <= 64)."""
    if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
        raise ContractError(
            f"invalid worker id {worker_id!r}: use 1-64 letters, digits, '_', '.', '-'"
        )
    return worker_id


@dataclass(frozen=True)
class Topics:
    """Topic names of one fleet."""

    fleet: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _FLEET.match(self.fleet):
            raise ContractError(
                f"invalid fleet name {self.fleet!r}: use 1-64 letters, digits, '_', '.', '-'"
            )
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise ContractError(f"invalid topic prefix {self.prefix!r}")

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

    @property
    def all_updates(self) -> str:
        return self.base + "workers/+/update"

    @property
    def all_losses(self) -> str:
        return self.base + "workers/+/loss"

    @property
    def all_worker_status(self) -> str:
        return self.base + "workers/+/status"

    def parse_worker_topic(self, topic: str) -> tuple[str, str]:
        """Split ``.../workers/<id>/<kind>`` into ``(id, kind)``; ContractError otherwise."""
        prefix = self.base + "workers/"
        if not topic.startswith(prefix):
            raise ContractError(f"topic {topic!r} is not a worker topic of fleet {self.fleet}")
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in ("update", "loss", "status"):
            raise ContractError(f"topic {topic!r} is not a worker topic of fleet {self.fleet}")
        return check_worker_id(parts[0]), parts[1]


@dataclass(frozen=True)
class HyperParams:
    """Training hyper-parameters that travel with every global model to every board."""

    lr: float = model.DEFAULT_LR
    momentum: float = model.DEFAULT_MOMENTUM
    local_steps: int = 10  #: steps a board trains between two uploads (the paper: 10)

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, float | int) and math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ContractError(f"learning rate must be in (0, 10], got {self.lr!r}")
        if not (
            isinstance(self.momentum, float | int)
            and math.isfinite(self.momentum)
            and 0 <= self.momentum < 1
        ):
            raise ContractError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if (
            not isinstance(self.local_steps, int)
            or isinstance(self.local_steps, bool)
            or not 1 <= self.local_steps <= 65535
        ):
            raise ContractError(
                f"local steps must be an integer in 1..65535, got {self.local_steps!r}"
            )


@dataclass(frozen=True)
class GlobalModel:
    """The fleet's current model, published retained by the aggregator."""

    round: int
    params: model.F32 = field(repr=False)
    hyper: HyperParams
    pipeline: str
    arch: str = model.ARCH_ID
    created: float = 0.0  #: unix time the aggregator made it

    @property
    def sha256(self) -> str:
        return model.sha256(self.params)


@dataclass(frozen=True, slots=True)
class LossSummary:
    """Summary of the local steps behind an update."""

    count: int = 0
    mean: float | None = None
    last: float | None = None


@dataclass(frozen=True)
class ModelUpdate:
    """A worker's model after its local steps, published by its gateway."""

    worker_id: str
    base_round: int  #: the global round the board started from
    local_steps: int  #: steps since that global model (self-reported: capped by the aggregator)
    params: model.F32 = field(repr=False)
    upload_id: str  #: unique per upload; a re-sent upload keeps its id (idempotence)
    pipeline: str
    arch: str = model.ARCH_ID
    loss: LossSummary = field(default_factory=LossSummary)
    created: float = 0.0

    @property
    def sha256(self) -> str:
        return model.sha256(self.params)


@dataclass(frozen=True)
class LossEvent:
    """One training step on a board (JSON on the loss topic)."""

    worker_id: str
    step: int  #: the board's step counter since boot
    loss: float
    label: int
    outputs: tuple[float, ...]
    prediction: int | None  #: the class whose output is highest and above 0.6, else None
    round: int  #: the global round the board's model descends from
    time: float


@dataclass(frozen=True)
class WorkerStatus:
    """A gateway's view of its board (JSON, retained; also the gateway's Last Will)."""

    worker_id: str
    state: Literal["online", "offline", "board-missing"]
    transport: str = ""
    firmware: str = ""
    board_id: str = ""
    boot_id: str = ""
    pipeline: str = ""
    model_round: int | None = None
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """An update the aggregator refused, and why."""

    worker_id: str
    upload_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Participant:
    """A worker whose update entered a round's aggregate."""

    worker_id: str
    upload_id: str
    local_steps: int
    weight: float
    loss_mean: float | None = None


@dataclass(frozen=True)
class RoundEvent:
    """The outcome of one round (JSON on the rounds topic)."""

    round: int
    outcome: Literal["closed", "failed"]
    strategy: str
    participants: tuple[Participant, ...] = ()
    dropped: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    duration_s: float = 0.0
    loss_mean: float | None = None
    global_sha256: str = ""
    reason: str = ""
    time: float = 0.0


@dataclass(frozen=True)
class AggregatorStatus:
    """The aggregator's state (JSON, retained; also its Last Will)."""

    state: Literal["online", "offline"]
    round: int | None = None
    strategy: str = ""
    expected: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    time: float = 0.0


# ----------------------------------------------------------------------------- helpers


def _need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in obj:
        raise ContractError(f"{what}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
        raise ContractError(f"{what}: field {key!r} has type bool")
    if not isinstance(value, kind):
        raise ContractError(f"{what}: field {key!r} has type {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _nonneg(value: int, key: str, what: str) -> int:
    if value < 0:
        raise ContractError(f"{what}: field {key!r} is negative ({value})")
    return value


def _finite(value: float | None, key: str, what: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ContractError(f"{what}: field {key!r} is not finite ({value})")
    return value


def _params(obj: dict[str, Any], what: str) -> model.F32:
    raw = _need(obj, "params", bytes, what)
    sha = _need(obj, "sha256", str, what)
    if hashlib.sha256(raw).hexdigest() != sha:
        raise ContractError(f"{what}: sha256 does not match the parameters (corrupted payload)")
    try:
        return model.from_bytes(raw)
    except ModelError as exc:
        raise ContractError(f"{what}: {exc}") from exc


def _unpack(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_MODEL_PAYLOAD:
        raise ContractError(f"{what}: payload is {len(payload)} bytes, limit {MAX_MODEL_PAYLOAD}")
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ContractError(f"{what}: not valid msgpack ({exc})") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: payload is not a map")
    version = obj.get("v")
    if version != FORMAT_VERSION:
        raise ContractError(f"{what}: format version {version!r}, expected {FORMAT_VERSION}")
    return obj


def _json_load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_JSON_PAYLOAD:
        raise ContractError(f"{what}: payload is {len(payload)} bytes, limit {MAX_JSON_PAYLOAD}")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: payload is not a JSON object")
    return obj


def _json_dump(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": FORMAT_VERSION, **obj}, separators=(",", ":"), allow_nan=False).encode()


def _hyper(obj: Any, what: str) -> HyperParams:
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: field 'hyper' is not a map")
    try:
        return HyperParams(
            lr=float(_need(obj, "lr", (float, int), what)),
            momentum=float(_need(obj, "momentum", (float, int), what)),
            local_steps=_need(obj, "local_steps", int, what),
        )
    except ContractError as exc:
        raise ContractError(f"{what}: {exc}") from exc


# ----------------------------------------------------------------------------- codecs


def encode_global(g: GlobalModel) -> bytes:
    """msgpack payload of the retained global model."""
    data = model.to_bytes(g.params)
    packed: bytes = msgpack.packb(
        {
            "v": FORMAT_VERSION,
            "round": g.round,
            "arch": g.arch,
            "pipeline": g.pipeline,
            "hyper": asdict(g.hyper),
            "params": data,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": g.created,
        },
        use_bin_type=True,
    )
    return packed


def decode_global(payload: bytes) -> GlobalModel:
    """Parse and validate a global model payload."""
    what = "global model"
    obj = _unpack(payload, what)
    return GlobalModel(
        round=_nonneg(_need(obj, "round", int, what), "round", what),
        arch=_need(obj, "arch", str, what),
        pipeline=_need(obj, "pipeline", str, what),
        hyper=_hyper(_need(obj, "hyper", dict, what), what),
        params=_params(obj, what),
        created=float(_need(obj, "created", (float, int), what)),
    )


def encode_update(u: ModelUpdate) -> bytes:
    """msgpack payload of a worker's model update."""
    data = model.to_bytes(u.params)
    packed: bytes = msgpack.packb(
        {
            "v": FORMAT_VERSION,
            "worker": check_worker_id(u.worker_id),
            "base_round": u.base_round,
            "local_steps": u.local_steps,
            "upload_id": u.upload_id,
            "arch": u.arch,
            "pipeline": u.pipeline,
            "loss": asdict(u.loss),
            "params": data,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": u.created,
        },
        use_bin_type=True,
    )
    return packed


def decode_update(payload: bytes) -> ModelUpdate:
    """Parse and validate a model update payload."""
    what = "model update"
    obj = _unpack(payload, what)
    worker = _need(obj, "worker", str, what)
    try:
        check_worker_id(worker)
    except ContractError as exc:
        raise ContractError(f"{what}: {exc}") from exc
    upload_id = _need(obj, "upload_id", str, what)
    if not 1 <= len(upload_id) <= 128:
        raise ContractError(f"{what}: upload id must be 1-128 characters")
    loss = _need(obj, "loss", dict, what)
    count = _nonneg(_need(loss, "count", int, what), "loss.count", what)
    mean = loss.get("mean")
    last = loss.get("last")
    for key, value in (("loss.mean", mean), ("loss.last", last)):
        if value is not None and not isinstance(value, float | int):
            raise ContractError(f"{what}: field {key!r} is not a number")
        _finite(value, key, what)
    return ModelUpdate(
        worker_id=worker,
        base_round=_nonneg(_need(obj, "base_round", int, what), "base_round", what),
        local_steps=_nonneg(_need(obj, "local_steps", int, what), "local_steps", what),
        upload_id=upload_id,
        arch=_need(obj, "arch", str, what),
        pipeline=_need(obj, "pipeline", str, what),
        loss=LossSummary(count=count, mean=mean, last=last),
        params=_params(obj, what),
        created=float(_need(obj, "created", (float, int), what)),
    )


def encode_loss(e: LossEvent) -> bytes:
    """JSON payload of one per-step loss event."""
    return _json_dump(
        {
            "worker": e.worker_id,
            "step": e.step,
            "loss": e.loss,
            "label": e.label,
            "outputs": list(e.outputs),
            "prediction": e.prediction,
            "round": e.round,
            "time": e.time,
        }
    )


def decode_loss(payload: bytes) -> LossEvent:
    """Parse and validate a loss event."""
    what = "loss event"
    obj = _json_load(payload, what)
    outputs = _need(obj, "outputs", list, what)
    if not all(isinstance(o, float | int) and math.isfinite(o) for o in outputs):
        raise ContractError(f"{what}: outputs must be finite numbers")
    prediction = obj.get("prediction")
    if prediction is not None and not isinstance(prediction, int):
        raise ContractError(f"{what}: field 'prediction' is not an integer")
    loss = _finite(float(_need(obj, "loss", (float, int), what)), "loss", what)
    assert loss is not None
    return LossEvent(
        worker_id=_need(obj, "worker", str, what),
        step=_nonneg(_need(obj, "step", int, what), "step", what),
        loss=loss,
        label=_need(obj, "label", int, what),
        outputs=tuple(float(o) for o in outputs),
        prediction=prediction,
        round=_need(obj, "round", int, what),
        time=float(_need(obj, "time", (float, int), what)),
    )


def encode_worker_status(s: WorkerStatus) -> bytes:
    """JSON payload of a worker's status."""
    return _json_dump(
        {"worker": s.worker_id, **{k: v for k, v in asdict(s).items() if k != "worker_id"}}
    )


def decode_worker_status(payload: bytes) -> WorkerStatus:
    """Parse and validate a worker status."""
    what = "worker status"
    obj = _json_load(payload, what)
    state = _need(obj, "state", str, what)
    if state not in ("online", "offline", "board-missing"):
        raise ContractError(f"{what}: unknown state {state!r}")
    model_round = obj.get("model_round")
    if model_round is not None and not isinstance(model_round, int):
        raise ContractError(f"{what}: field 'model_round' is not an integer")
    return WorkerStatus(
        worker_id=_need(obj, "worker", str, what),
        state=state,
        transport=str(obj.get("transport", "")),
        firmware=str(obj.get("firmware", "")),
        board_id=str(obj.get("board_id", "")),
        boot_id=str(obj.get("boot_id", "")),
        pipeline=str(obj.get("pipeline", "")),
        model_round=model_round,
        time=float(obj.get("time", 0.0)),
    )


def encode_round_event(r: RoundEvent) -> bytes:
    """JSON payload of a round's outcome."""
    obj = asdict(r)
    obj["participants"] = [asdict(p) for p in r.participants]
    obj["rejected"] = [asdict(x) for x in r.rejected]
    obj["dropped"] = list(r.dropped)
    return _json_dump(obj)


def decode_round_event(payload: bytes) -> RoundEvent:
    """Parse a round event (used by monitors and tests)."""
    what = "round event"
    obj = _json_load(payload, what)
    try:
        return RoundEvent(
            round=_need(obj, "round", int, what),
            outcome=_need(obj, "outcome", str, what),
            strategy=str(obj.get("strategy", "")),
            participants=tuple(Participant(**p) for p in obj.get("participants", [])),
            dropped=tuple(obj.get("dropped", [])),
            rejected=tuple(Rejection(**x) for x in obj.get("rejected", [])),
            duration_s=float(obj.get("duration_s", 0.0)),
            loss_mean=obj.get("loss_mean"),
            global_sha256=str(obj.get("global_sha256", "")),
            reason=str(obj.get("reason", "")),
            time=float(obj.get("time", 0.0)),
        )
    except TypeError as exc:
        raise ContractError(f"{what}: {exc}") from exc


def encode_aggregator_status(s: AggregatorStatus) -> bytes:
    """JSON payload of the aggregator's status."""
    obj = asdict(s)
    obj["expected"] = list(s.expected)
    obj["reported"] = list(s.reported)
    return _json_dump(obj)


def decode_aggregator_status(payload: bytes) -> AggregatorStatus:
    """Parse the aggregator's status."""
    what = "aggregator status"
    obj = _json_load(payload, what)
    state = _need(obj, "state", str, what)
    if state not in ("online", "offline"):
        raise ContractError(f"{what}: unknown state {state!r}")
    return AggregatorStatus(
        state=state,
        round=obj.get("round"),
        strategy=str(obj.get("strategy", "")),
        expected=tuple(obj.get("expected", [])),
        reported=tuple(obj.get("reported", [])),
        time=float(obj.get("time", 0.0)),
    )
