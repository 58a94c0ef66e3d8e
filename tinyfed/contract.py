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
``workers/<id>/receipt``      1, retained         JSON :class:`Receipt`
``rounds``                    1                   JSON :class:`RoundEvent`
``aggregator/status``         1, retained, Will   JSON :class:`AggregatorStatus`
============================  ==================  =========================================

The aggregator publishes a worker's **receipt** once it has durably recorded its decision
about an upload: ``accepted`` (counted, or a duplicate of an upload already counted) or
``rejected`` (with the reason; never counted). ``round`` is the open round in which the upload
was judged. A gateway may forget an upload once its receipt has arrived.

Model payloads carry the parameters as little-endian float32 bytes in the board's layout (see
:mod:`tinyfed.model`) and their SHA-256. JSON keeps telemetry readable by people and by tools
such as Node-RED or Grafana (``mosquitto_sub -t 'tinyfed/+/workers/+/loss'``).

**Decoding is total**: every ``decode_*`` returns a valid object or raises
:class:`ContractError` naming the field and the bad value, whatever the bytes. It checks the
payload size, the format version ``v`` (msgpack and JSON alike), and every field's type and
range:

* integers (rounds, steps, counts, local steps) are in ``0..MAX_INT``; ``label`` is 0..255 and
  ``prediction`` None or 0..255; a bool is never a number;
* numbers (losses, times, weights, outputs) may be written as integers or floats, must be
  finite, and come out as Python floats; ``outputs`` holds at most 16 of them;
* strings are bounded: worker ids and fleets 1-64 of ``[A-Za-z0-9_.-]``, upload ids 1-128
  characters (0-128 in a rejection: a payload that did not decode has none), ``arch`` and
  ``pipeline`` 1-64 (``pipeline`` may be empty in a status), ``strategy`` at most 64,
  ``transport`` / ``firmware`` / ``board_id`` / ``boot_id`` at most 128, free text such as
  ``reason`` at most 500, ``global_sha256`` empty or 64 hex digits; enumerations (``state``,
  ``outcome``) are checked; nested lists are checked element by element;
* model parameters are exactly 10,467 finite float32 values whose SHA-256 matches.

Unknown fields are ignored (a newer publisher may add some); optional fields may be absent.

**Bounded payloads**: round events and the aggregator status list at most :data:`MAX_LISTED`
workers per list (and :data:`MAX_LISTED_REJECTIONS` rejections) and carry the true totals in
``*_count`` fields; the encoder truncates reasons to :data:`MAX_REASON` characters, and keeps
every payload below :data:`MAX_JSON_PAYLOAD` (listing fewer entries if needed): however many
workers a fleet has, its round events and status still decode.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, cast, get_args

import msgpack

from tinyfed import model
from tinyfed.errors import ModelError, TinyfedError

FORMAT_VERSION = 1  #: version of every payload below; bumped on any incompatible change
DEFAULT_PREFIX = "tinyfed"
#: Largest model payload accepted: the 41,868 model bytes plus generous room for metadata.
MAX_MODEL_PAYLOAD = 64 * 1024
#: Largest JSON payload accepted (a loss event is ~200 bytes, a round event at most ~50 KB).
MAX_JSON_PAYLOAD = 64 * 1024
#: Largest round, step, count or local-step value accepted. Such values end up in SQLite
#: INTEGER columns (8 bytes: 2**63 overflows) and numpy int32 arrays; 2**31 - 1 fits both
#: everywhere, and a fleet reaches it after 68 years of one step per second.
MAX_INT: Final = 2**31 - 1
#: Most workers listed by name in a round event's ``participants`` / ``dropped`` or the
#: aggregator status's ``expected`` / ``reported``; the ``*_count`` fields carry the totals.
MAX_LISTED: Final = 100
#: Most rejections listed in a round event (``rejected_count`` carries the total).
MAX_LISTED_REJECTIONS: Final = 20
#: Reasons are truncated to this many characters by the encoders.
MAX_REASON: Final = 200
#: Longest free text (a reason) a decoder accepts.
MAX_TEXT: Final = 500
#: Longest upload id.
MAX_UPLOAD_ID: Final = 128
#: Longest ``arch``, ``pipeline`` or ``strategy`` label.
MAX_LABEL_TEXT: Final = 64
#: Longest ``transport``, ``firmware``, ``board_id`` or ``boot_id`` of a worker status.
MAX_INFO_TEXT: Final = 128
#: Largest class index (``label``, ``prediction``): one byte on the board.
MAX_CLASS: Final = 255
#: Most network outputs in a loss event.
MAX_OUTPUTS: Final = 16

_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_FLEET = _WORKER_ID
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

WorkerState = Literal["online", "offline", "board-missing"]
AggregatorState = Literal["online", "offline"]
RoundOutcome = Literal["closed", "failed"]
ReceiptOutcome = Literal["accepted", "rejected"]


class ContractError(TinyfedError):
    """A payload or topic does not follow the contract; the message names the problem."""


def _show(value: Any, limit: int = 40) -> str:
    """A short repr of a (possibly huge) bad value for an error message."""
    if isinstance(value, dict | list | tuple):
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_worker_id(worker_id: str) -> str:
    """Return ``worker_id`` if it is a valid topic level (letters, digits, ``_.-``, <= 64)."""
    if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
        raise ContractError(
            f"invalid worker id {_show(worker_id)}: use 1-64 letters, digits, '_', '.', '-'"
        )
    return worker_id


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

    def parse_worker_topic(self, topic: str) -> tuple[str, str]:
        """Split ``.../workers/<id>/<kind>`` into ``(id, kind)``; ContractError otherwise.

        ``kind`` is one of ``update``, ``loss``, ``status``, ``receipt``.
        """
        prefix = self.base + "workers/"
        if not isinstance(topic, str) or not topic.startswith(prefix):
            raise ContractError(
                f"topic {_show(topic, 200)} is not a worker topic of fleet {self.fleet}"
            )
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in ("update", "loss", "status", "receipt"):
            raise ContractError(
                f"topic {_show(topic, 200)} is not a worker topic of fleet {self.fleet}"
            )
        return check_worker_id(parts[0]), parts[1]


@dataclass(frozen=True)
class HyperParams:
    """Training hyper-parameters that travel with every global model to every board."""

    lr: float = model.DEFAULT_LR
    momentum: float = model.DEFAULT_MOMENTUM
    local_steps: int = 10  #: steps a board trains between two uploads (the paper: 10)

    def __post_init__(self) -> None:
        if not (_is_number(self.lr) and _fits_float(self.lr) and math.isfinite(self.lr)) or not (
            0 < self.lr <= 10
        ):
            raise ContractError(f"learning rate must be in (0, 10], got {_show(self.lr)}")
        if not (
            _is_number(self.momentum)
            and _fits_float(self.momentum)
            and math.isfinite(self.momentum)
            and 0 <= self.momentum < 1
        ):
            raise ContractError(f"momentum must be in [0, 1), got {_show(self.momentum)}")
        if (
            not isinstance(self.local_steps, int)
            or isinstance(self.local_steps, bool)
            or not 1 <= self.local_steps <= 65535
        ):
            raise ContractError(
                f"local steps must be an integer in 1..65535, got {_show(self.local_steps)}"
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
    state: WorkerState
    transport: str = ""
    firmware: str = ""
    board_id: str = ""
    boot_id: str = ""
    pipeline: str = ""
    model_round: int | None = None
    time: float = 0.0


@dataclass(frozen=True)
class Receipt:
    """The aggregator's durable decision about one upload (JSON, retained, per worker).

    Published once the decision is recorded: ``accepted`` (counted, or a duplicate of an upload
    already counted) or ``rejected`` (with the reason; never counted). ``round`` is the open
    round in which the upload was judged.
    """

    worker_id: str
    upload_id: str
    round: int
    outcome: ReceiptOutcome
    reason: str = ""
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """An update the aggregator refused, and why."""

    worker_id: str
    upload_id: str  #: empty when the payload did not decode
    reason: str


@dataclass(frozen=True, slots=True)
class Participant:
    """A worker whose update entered a round's aggregate."""

    worker_id: str
    upload_id: str
    local_steps: int
    weight: float
    loss_mean: float | None = None


def _raise_count(obj: object, name: str, listed: int) -> None:
    """Set a frozen dataclass's ``*_count`` to at least the number of entries listed."""
    count = getattr(obj, name)
    if isinstance(count, int) and count < listed:
        object.__setattr__(obj, name, listed)


@dataclass(frozen=True)
class RoundEvent:
    """The outcome of one round (JSON on the rounds topic).

    The payload lists at most :data:`MAX_LISTED` participants and dropped workers and
    :data:`MAX_LISTED_REJECTIONS` rejections; the ``*_count`` fields are the totals (never
    less than the entries listed: the constructor raises them to the lists' lengths).
    """

    round: int
    outcome: RoundOutcome
    strategy: str
    participants: tuple[Participant, ...] = ()
    dropped: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    duration_s: float = 0.0
    loss_mean: float | None = None
    global_sha256: str = ""
    reason: str = ""
    time: float = 0.0
    participant_count: int = 0
    dropped_count: int = 0
    rejected_count: int = 0

    def __post_init__(self) -> None:
        _raise_count(self, "participant_count", len(self.participants))
        _raise_count(self, "dropped_count", len(self.dropped))
        _raise_count(self, "rejected_count", len(self.rejected))


@dataclass(frozen=True)
class AggregatorStatus:
    """The aggregator's state (JSON, retained; also its Last Will).

    ``expected`` and ``reported`` list at most :data:`MAX_LISTED` workers in the payload; the
    ``*_count`` fields are the totals (raised to the lists' lengths by the constructor).
    """

    state: AggregatorState
    round: int | None = None
    strategy: str = ""
    expected: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    time: float = 0.0
    attempt: int | None = None  #: the open round's attempt (a failed attempt reopens it)
    expected_count: int = 0
    reported_count: int = 0

    def __post_init__(self) -> None:
        _raise_count(self, "expected_count", len(self.expected))
        _raise_count(self, "reported_count", len(self.reported))


# ----------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits_float(value: float) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _int_value(value: Any, name: str, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{what}: field {name!r} has type {type(value).__name__}")
    if value < lo:
        problem = "is negative" if value < 0 else f"is below {lo}"
        raise ContractError(f"{what}: field {name!r} {problem} ({_show(value)})")
    if value > hi:
        raise ContractError(f"{what}: field {name!r} is too large ({_show(value)} > {hi})")
    return int(value)


def _float_value(value: Any, name: str, what: str) -> float:
    if not _is_number(value):
        raise ContractError(f"{what}: field {name!r} has type {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ContractError(f"{what}: field {name!r} is too large ({_show(value)})") from None
    if not math.isfinite(number):
        raise ContractError(f"{what}: field {name!r} is not finite ({number})")
    return number


def _text_value(
    value: Any, name: str, what: str, lo: int, hi: int, *, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(value, str):
        raise ContractError(f"{what}: field {name!r} has type {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise ContractError(
            f"{what}: field {name!r} must have {lo}-{hi} characters, "
            f"got {len(value)} ({_show(value)})"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError(
            f"{what}: field {name!r} is not valid Unicode ({_show(value)})"
        ) from None
    if pattern is not None and not pattern.fullmatch(value):
        raise ContractError(f"{what}: field {name!r} is malformed ({_show(value)})")
    return str(value)


def _worker_value(value: Any, name: str, what: str) -> str:
    try:
        return check_worker_id(value)
    except ContractError as exc:
        raise ContractError(f"{what}: field {name!r}: {exc}") from None


_MISSING: Final[Any] = object()


class _Fields:
    """Typed, range-checked access to one decoded map; every failure is a ContractError."""

    def __init__(self, obj: Any, what: str, path: str = "") -> None:
        if not isinstance(obj, dict):
            where = f"field {path.rstrip('.')!r}" if path else "payload"
            raise ContractError(f"{what}: {where} is not a map ({type(obj).__name__})")
        self.obj: dict[Any, Any] = obj
        self.what = what
        self.path = path

    def name(self, key: str) -> str:
        return self.path + key

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The raw value; ContractError if absent and there is no default."""
        if key in self.obj:
            return self.obj[key]
        if default is _MISSING:
            raise ContractError(f"{self.what}: missing field {self.name(key)!r}")
        return default

    def integer(
        self, key: str, *, lo: int = 0, hi: int = MAX_INT, default: int | None = None
    ) -> int:
        value = self.get(key, _MISSING if default is None else default)
        return _int_value(value, self.name(key), self.what, lo, hi)

    def opt_integer(self, key: str, *, lo: int = 0, hi: int = MAX_INT) -> int | None:
        value = self.get(key, None)
        return None if value is None else _int_value(value, self.name(key), self.what, lo, hi)

    def number(self, key: str, *, default: float | None = None) -> float:
        value = self.get(key, _MISSING if default is None else default)
        return _float_value(value, self.name(key), self.what)

    def opt_number(self, key: str) -> float | None:
        value = self.get(key, None)
        return None if value is None else _float_value(value, self.name(key), self.what)

    def text(
        self,
        key: str,
        *,
        lo: int = 0,
        hi: int,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        value = self.get(key, _MISSING if default is None else default)
        return _text_value(value, self.name(key), self.what, lo, hi, pattern=pattern)

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.get(key)
        if not isinstance(value, str) or value not in options:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} is {_show(value)}, "
                f"expected one of {', '.join(options)}"
            )
        return value

    def upload_id(self, *, allow_empty: bool = False) -> str:
        """The ``upload_id`` field: 1-128 characters (0-128 with ``allow_empty``)."""
        value, lo = self.get("upload_id"), 0 if allow_empty else 1
        if isinstance(value, str) and not lo <= len(value) <= MAX_UPLOAD_ID:
            raise ContractError(
                f"{self.what}: field {self.name('upload_id')!r}: upload id must be "
                f"{lo}-{MAX_UPLOAD_ID} characters, got {len(value)} ({_show(value)})"
            )
        return _text_value(value, self.name("upload_id"), self.what, lo, MAX_UPLOAD_ID)

    def worker(self, key: str) -> str:
        return _worker_value(self.get(key), self.name(key), self.what)

    def items(self, key: str, *, hi: int | None = None, required: bool = False) -> list[Any]:
        """A list (empty when absent, unless ``required``) of at most ``hi`` entries."""
        value = self.get(key, _MISSING if required else [])
        if not isinstance(value, list):
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} has type {type(value).__name__}"
            )
        if hi is not None and len(value) > hi:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} has {len(value)} entries, at most {hi}"
            )
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.what, f"{self.name(key)}.")

    def count(self, key: str, listed: int) -> int:
        """A ``*_count`` total (the number listed when absent), never below that number."""
        total = self.integer(key, default=listed)
        if total < listed:
            raise ContractError(
                f"{self.what}: field {self.name(key)!r} is {total}, less than the {listed} listed"
            )
        return total


def _check_version(obj: dict[Any, Any], what: str) -> None:
    version = obj.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ContractError(f"{what}: format version {_show(version)}, expected {FORMAT_VERSION}")


def _params(f: _Fields) -> model.F32:
    raw = f.get("params")
    if not isinstance(raw, bytes):
        raise ContractError(f"{f.what}: field 'params' has type {type(raw).__name__}")
    sha = f.text("sha256", lo=64, hi=64, pattern=_SHA256)
    if hashlib.sha256(raw).hexdigest() != sha.lower():
        raise ContractError(f"{f.what}: sha256 does not match the parameters (corrupted payload)")
    try:
        return model.from_bytes(raw)
    except ModelError as exc:
        raise ContractError(f"{f.what}: {exc}") from exc


def _unpack(payload: bytes, what: str) -> _Fields:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"{what}: payload has type {type(payload).__name__}, expected bytes")
    if len(payload) > MAX_MODEL_PAYLOAD:
        raise ContractError(f"{what}: payload is {len(payload)} bytes, limit {MAX_MODEL_PAYLOAD}")
    try:
        obj = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ContractError(f"{what}: not valid msgpack ({_show(str(exc), 120)})") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: payload is not a map")
    _check_version(obj, what)
    return _Fields(obj, what)


def _json_load(payload: bytes, what: str) -> _Fields:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ContractError(f"{what}: payload has type {type(payload).__name__}, expected bytes")
    if len(payload) > MAX_JSON_PAYLOAD:
        raise ContractError(f"{what}: payload is {len(payload)} bytes, limit {MAX_JSON_PAYLOAD}")
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    # ValueError covers JSONDecodeError, UnicodeDecodeError and integers of over 4,300 digits;
    # RecursionError, deeply nested arrays.
    except (ValueError, RecursionError) as exc:
        raise ContractError(f"{what}: not valid JSON ({_show(str(exc), 120)})") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what}: payload is not a JSON object")
    _check_version(obj, what)
    return _Fields(obj, what)


def _json_dump(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": FORMAT_VERSION, **obj}, separators=(",", ":"), allow_nan=False).encode()


def _clip(text: str, limit: int = MAX_REASON) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(build: Callable[[int], bytes], what: str) -> bytes:
    """``build(limit)`` with the largest list limit (from :data:`MAX_LISTED`) that fits."""
    limit = MAX_LISTED
    while True:
        payload = build(limit)
        if len(payload) < MAX_JSON_PAYLOAD:
            return payload
        if limit == 0:
            raise ContractError(f"{what}: {len(payload)} bytes even without any list entries")
        limit //= 2


def _hyper(f: _Fields) -> HyperParams:
    lr = f.number("lr")
    momentum = f.number("momentum")
    local_steps = f.integer("local_steps", lo=1, hi=65535)
    try:
        return HyperParams(lr=lr, momentum=momentum, local_steps=local_steps)
    except ContractError as exc:
        raise ContractError(f"{f.what}: field {f.path.rstrip('.')!r}: {exc}") from exc


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
    f = _unpack(payload, "global model")
    return GlobalModel(
        round=f.integer("round"),
        arch=f.text("arch", lo=1, hi=MAX_LABEL_TEXT),
        pipeline=f.text("pipeline", lo=1, hi=MAX_LABEL_TEXT),
        hyper=_hyper(f.sub("hyper")),
        created=f.number("created"),
        params=_params(f),
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
    f = _unpack(payload, "model update")
    worker = f.worker("worker")
    upload_id = f.upload_id()
    loss = f.sub("loss")
    return ModelUpdate(
        worker_id=worker,
        base_round=f.integer("base_round"),
        local_steps=f.integer("local_steps"),
        upload_id=upload_id,
        arch=f.text("arch", lo=1, hi=MAX_LABEL_TEXT),
        pipeline=f.text("pipeline", lo=1, hi=MAX_LABEL_TEXT),
        loss=LossSummary(
            count=loss.integer("count"), mean=loss.opt_number("mean"), last=loss.opt_number("last")
        ),
        created=f.number("created"),
        params=_params(f),
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
    f = _json_load(payload, "loss event")
    outputs = f.items("outputs", hi=MAX_OUTPUTS, required=True)
    return LossEvent(
        worker_id=f.worker("worker"),
        step=f.integer("step"),
        loss=f.number("loss"),
        label=f.integer("label", hi=MAX_CLASS),
        outputs=tuple(_float_value(o, f"outputs[{i}]", f.what) for i, o in enumerate(outputs)),
        prediction=f.opt_integer("prediction", hi=MAX_CLASS),
        round=f.integer("round"),
        time=f.number("time"),
    )


def encode_worker_status(s: WorkerStatus) -> bytes:
    """JSON payload of a worker's status."""
    return _json_dump(
        {"worker": s.worker_id, **{k: v for k, v in asdict(s).items() if k != "worker_id"}}
    )


def decode_worker_status(payload: bytes) -> WorkerStatus:
    """Parse and validate a worker status."""
    f = _json_load(payload, "worker status")
    return WorkerStatus(
        worker_id=f.worker("worker"),
        state=cast(WorkerState, f.choice("state", get_args(WorkerState))),
        transport=f.text("transport", hi=MAX_INFO_TEXT, default=""),
        firmware=f.text("firmware", hi=MAX_INFO_TEXT, default=""),
        board_id=f.text("board_id", hi=MAX_INFO_TEXT, default=""),
        boot_id=f.text("boot_id", hi=MAX_INFO_TEXT, default=""),
        pipeline=f.text("pipeline", hi=MAX_LABEL_TEXT, default=""),
        model_round=f.opt_integer("model_round"),
        time=f.number("time", default=0.0),
    )


def encode_receipt(r: Receipt) -> bytes:
    """JSON payload of the aggregator's decision about one upload (reason truncated).

    Raises ContractError for a receipt the contract cannot carry (an empty or over-long upload
    id, say, or a non-finite time): no subscriber could read it.
    """
    try:
        payload = _json_dump(
            {
                "worker": check_worker_id(r.worker_id),
                "upload_id": r.upload_id,
                "round": r.round,
                "outcome": r.outcome,
                "reason": _clip(r.reason),
                "time": r.time,
            }
        )
    except (TypeError, ValueError) as exc:  # not JSON-serialisable, or NaN / infinity
        raise ContractError(f"receipt: cannot be encoded ({exc})") from exc
    decode_receipt(payload)
    return payload


def decode_receipt(payload: bytes) -> Receipt:
    """Parse and validate a receipt."""
    f = _json_load(payload, "receipt")
    return Receipt(
        worker_id=f.worker("worker"),
        upload_id=f.upload_id(),
        round=f.integer("round"),
        outcome=cast(ReceiptOutcome, f.choice("outcome", get_args(ReceiptOutcome))),
        reason=f.text("reason", hi=MAX_TEXT, default=""),
        time=f.number("time", default=0.0),
    )


def encode_round_event(r: RoundEvent) -> bytes:
    """JSON payload of a round's outcome, below :data:`MAX_JSON_PAYLOAD` however long its lists.

    Lists the first :data:`MAX_LISTED` participants and dropped workers and the first
    :data:`MAX_LISTED_REJECTIONS` rejections (fewer if their text would not fit), reasons
    truncated to :data:`MAX_REASON` characters; the ``*_count`` fields carry the totals.
    """

    def build(limit: int) -> bytes:
        return _json_dump(
            {
                "round": r.round,
                "outcome": r.outcome,
                "strategy": _clip(r.strategy, MAX_LABEL_TEXT),
                "participants": [asdict(p) for p in r.participants[:limit]],
                "participant_count": max(r.participant_count, len(r.participants)),
                "dropped": list(r.dropped[:limit]),
                "dropped_count": max(r.dropped_count, len(r.dropped)),
                "rejected": [
                    {"worker_id": x.worker_id, "upload_id": x.upload_id, "reason": _clip(x.reason)}
                    for x in r.rejected[: min(limit, MAX_LISTED_REJECTIONS)]
                ],
                "rejected_count": max(r.rejected_count, len(r.rejected)),
                "duration_s": r.duration_s,
                "loss_mean": r.loss_mean,
                "global_sha256": r.global_sha256,
                "reason": _clip(r.reason),
                "time": r.time,
            }
        )

    return _fit(build, "round event")


def _participant(value: Any, name: str, what: str) -> Participant:
    f = _Fields(value, what, f"{name}.")
    return Participant(
        worker_id=f.worker("worker_id"),
        upload_id=f.upload_id(),
        local_steps=f.integer("local_steps"),
        weight=f.number("weight"),
        loss_mean=f.opt_number("loss_mean"),
    )


def _rejection(value: Any, name: str, what: str) -> Rejection:
    f = _Fields(value, what, f"{name}.")
    return Rejection(
        worker_id=f.worker("worker_id"),
        upload_id=f.upload_id(allow_empty=True),
        reason=f.text("reason", hi=MAX_TEXT),
    )


def _workers(f: _Fields, key: str) -> tuple[str, ...]:
    return tuple(_worker_value(w, f"{key}[{i}]", f.what) for i, w in enumerate(f.items(key)))


def decode_round_event(payload: bytes) -> RoundEvent:
    """Parse and validate a round event (used by monitors and tests)."""
    f = _json_load(payload, "round event")
    participants = tuple(
        _participant(p, f"participants[{i}]", f.what) for i, p in enumerate(f.items("participants"))
    )
    dropped = _workers(f, "dropped")
    rejected = tuple(
        _rejection(x, f"rejected[{i}]", f.what) for i, x in enumerate(f.items("rejected"))
    )
    sha = f.text("global_sha256", hi=64, default="")
    if sha and not _SHA256.fullmatch(sha):
        raise ContractError(f"{f.what}: field 'global_sha256' is not 64 hex digits ({_show(sha)})")
    return RoundEvent(
        round=f.integer("round"),
        outcome=cast(RoundOutcome, f.choice("outcome", get_args(RoundOutcome))),
        strategy=f.text("strategy", hi=MAX_LABEL_TEXT, default=""),
        participants=participants,
        dropped=dropped,
        rejected=rejected,
        duration_s=f.number("duration_s", default=0.0),
        loss_mean=f.opt_number("loss_mean"),
        global_sha256=sha,
        reason=f.text("reason", hi=MAX_TEXT, default=""),
        time=f.number("time", default=0.0),
        participant_count=f.count("participant_count", len(participants)),
        dropped_count=f.count("dropped_count", len(dropped)),
        rejected_count=f.count("rejected_count", len(rejected)),
    )


def encode_aggregator_status(s: AggregatorStatus) -> bytes:
    """JSON payload of the aggregator's status (at most :data:`MAX_LISTED` ids per list)."""

    def build(limit: int) -> bytes:
        return _json_dump(
            {
                "state": s.state,
                "round": s.round,
                "attempt": s.attempt,
                "strategy": _clip(s.strategy, MAX_LABEL_TEXT),
                "expected": list(s.expected[:limit]),
                "expected_count": max(s.expected_count, len(s.expected)),
                "reported": list(s.reported[:limit]),
                "reported_count": max(s.reported_count, len(s.reported)),
                "time": s.time,
            }
        )

    return _fit(build, "aggregator status")


def decode_aggregator_status(payload: bytes) -> AggregatorStatus:
    """Parse and validate the aggregator's status."""
    f = _json_load(payload, "aggregator status")
    expected = _workers(f, "expected")
    reported = _workers(f, "reported")
    return AggregatorStatus(
        state=cast(AggregatorState, f.choice("state", get_args(AggregatorState))),
        round=f.opt_integer("round"),
        attempt=f.opt_integer("attempt"),
        strategy=f.text("strategy", hi=MAX_LABEL_TEXT, default=""),
        expected=expected,
        reported=reported,
        expected_count=f.count("expected_count", len(expected)),
        reported_count=f.count("reported_count", len(reported)),
        time=f.number("time", default=0.0),
    )
