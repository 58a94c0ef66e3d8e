"""The MQTT contract: every topic and payload the fleet exchanges, in one module.

Everything else works with the payloads' frozen dataclasses (:mod:`tinyfed.mqtt.payloads`,
re-exported here); only this module's codecs touch msgpack and JSON. The field checks and
limits are in :mod:`tinyfed.mqtt.fields`, the topic names in :mod:`tinyfed.mqtt.topics`.
Topics live under ``<prefix>/<fleet>/`` (default prefix ``tinyfed``):

============================  ==================  =========================================
topic                         QoS / retain        payload
============================  ==================  =========================================
``global``                    1, retained         msgpack :class:`GlobalModel`
``workers/<id>/update``       1                   msgpack :class:`ModelUpdate`
``workers/<id>/loss``         1                   JSON :class:`LossEvent`
``workers/<id>/status``       1, retained, Will   JSON :class:`WorkerStatus`
``workers/<id>/receipt``      1, retained         JSON :class:`Receipt`
``workers/<id>/request``      1                   JSON :class:`RoundRequest`
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
* ``arch`` names a known model family (:mod:`tinyfed.model.families`; docs/learning.md's
  table), and the parameters are exactly that family's count of finite float32 values
  (10,467 for ``fc650-16-3-sigmoid-v1``, 195 for ``dscnn64-head-v1``) whose SHA-256 matches.

Unknown fields are ignored (a newer publisher may add some); optional fields may be absent.

**Bounded payloads**: round events and the aggregator status list at most :data:`MAX_LISTED`
workers per list (and :data:`MAX_LISTED_REJECTIONS` rejections) and carry the true totals in
``*_count`` fields; the encoder truncates reasons to :data:`MAX_REASON` characters, and keeps
every payload below :data:`MAX_JSON_PAYLOAD` (listing fewer entries if needed): however many
workers a fleet has, its round events and status still decode.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from typing import Any, cast, get_args

import msgpack

from tinyfed import model
from tinyfed.errors import ModelError
from tinyfed.model import families
from tinyfed.mqtt.fields import (
    _SHA256,
    DEFAULT_PREFIX as DEFAULT_PREFIX,
    FORMAT_VERSION as FORMAT_VERSION,
    MAX_CLASS as MAX_CLASS,
    MAX_INFO_TEXT as MAX_INFO_TEXT,
    MAX_INT as MAX_INT,
    MAX_JSON_PAYLOAD as MAX_JSON_PAYLOAD,
    MAX_LABEL_TEXT as MAX_LABEL_TEXT,
    MAX_LISTED as MAX_LISTED,
    MAX_LISTED_REJECTIONS as MAX_LISTED_REJECTIONS,
    MAX_METRICS as MAX_METRICS,
    MAX_MODEL_PAYLOAD as MAX_MODEL_PAYLOAD,
    MAX_OUTPUTS as MAX_OUTPUTS,
    MAX_REASON as MAX_REASON,
    MAX_TEXT as MAX_TEXT,
    MAX_UPLOAD_ID as MAX_UPLOAD_ID,
    ContractError as ContractError,
    _clip,
    _Fields,
    _fit,
    _fits_float,
    _float_value,
    _is_number,
    _json_dump,
    _json_load,
    _params,
    _show,
    _text_value,
    _unpack,
    _worker_value,
    check_worker_id as check_worker_id,
)
from tinyfed.mqtt.payloads import (
    AggregatorState as AggregatorState,
    AggregatorStatus as AggregatorStatus,
    GlobalModel as GlobalModel,
    HyperParams as HyperParams,
    LossEvent as LossEvent,
    LossSummary as LossSummary,
    ModelUpdate as ModelUpdate,
    Participant as Participant,
    Receipt as Receipt,
    ReceiptOutcome as ReceiptOutcome,
    Rejection as Rejection,
    RequestKind as RequestKind,
    RoundEvent as RoundEvent,
    RoundOutcome as RoundOutcome,
    RoundRequest as RoundRequest,
    WorkerState as WorkerState,
    WorkerStatus as WorkerStatus,
)

# Limits and field checks live in tinyfed.mqtt.fields; the public ones are re-exported here.
from tinyfed.mqtt.topics import Topics as Topics


def _hyper(f: _Fields) -> HyperParams:
    lr = f.number("lr")
    momentum = f.number("momentum")
    local_steps = f.integer("local_steps", lo=1, hi=65535)
    try:
        return HyperParams(lr=lr, momentum=momentum, local_steps=local_steps)
    except ContractError as exc:
        raise ContractError(f"{f.what}: field {f.path.rstrip('.')!r}: {exc}") from exc


# ----------------------------------------------------------------------------- codecs


def _classes(f: _Fields) -> tuple[str, ...]:
    return tuple(
        _text_value(c, f"classes[{i}]", f.what, 1, MAX_LABEL_TEXT)
        for i, c in enumerate(f.items("classes", hi=MAX_OUTPUTS))
    )


def _model_bytes(arch: str, params: model.F32, what: str) -> bytes:
    """The parameters' bytes, checked against the family ``arch`` names (ContractError if not)."""
    try:
        return families.by_arch(arch).to_bytes(params)
    except ModelError as exc:
        raise ContractError(f"{what}: {exc}") from exc


def encode_global(g: GlobalModel) -> bytes:
    """msgpack payload of the retained global model (``params`` of the family of ``arch``)."""
    data = _model_bytes(g.arch, g.params, "global model")
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
            "classes": [_clip(c, MAX_LABEL_TEXT) for c in g.classes[:MAX_OUTPUTS]],
        },
        use_bin_type=True,
    )
    return packed


def decode_global(payload: bytes) -> GlobalModel:
    """Parse and validate a global model payload."""
    f = _unpack(payload, "global model")
    arch = f.text("arch", lo=1, hi=MAX_LABEL_TEXT)
    return GlobalModel(
        round=f.integer("round"),
        arch=arch,
        pipeline=f.text("pipeline", lo=1, hi=MAX_LABEL_TEXT),
        hyper=_hyper(f.sub("hyper")),
        created=f.number("created"),
        params=_params(f, arch),
        classes=_classes(f),
    )


def encode_update(u: ModelUpdate) -> bytes:
    """msgpack payload of a worker's model update (``params`` of the family of ``arch``)."""
    data = _model_bytes(u.arch, u.params, "model update")
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
    arch = f.text("arch", lo=1, hi=MAX_LABEL_TEXT)
    return ModelUpdate(
        worker_id=worker,
        base_round=f.integer("base_round"),
        local_steps=f.integer("local_steps"),
        upload_id=upload_id,
        arch=arch,
        pipeline=f.text("pipeline", lo=1, hi=MAX_LABEL_TEXT),
        loss=LossSummary(
            count=loss.integer("count"), mean=loss.opt_number("mean"), last=loss.opt_number("last")
        ),
        created=f.number("created"),
        params=_params(f, arch),
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
            "word": _clip(e.word, MAX_LABEL_TEXT),
            "heard": _clip(e.heard, MAX_LABEL_TEXT),
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
        word=f.text("word", hi=MAX_LABEL_TEXT, default=""),
        heard=f.text("heard", hi=MAX_LABEL_TEXT, default=""),
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


def encode_request(r: RoundRequest) -> bytes:
    """JSON payload of a round request (ContractError for one the contract cannot carry)."""
    try:
        payload = _json_dump(
            {"worker": check_worker_id(r.worker_id), "kind": r.kind, "time": r.time}
        )
    except (TypeError, ValueError) as exc:  # not JSON-serialisable, or NaN / infinity
        raise ContractError(f"round request: cannot be encoded ({exc})") from exc
    decode_request(payload)
    return payload


def decode_request(payload: bytes) -> RoundRequest:
    """Parse and validate a round request."""
    f = _json_load(payload, "round request")
    return RoundRequest(
        worker_id=f.worker("worker"),
        kind=cast(RequestKind, f.choice("kind", get_args(RequestKind))),
        time=f.number("time"),
    )


def _finite(v: Any) -> bool:
    return _is_number(v) and _fits_float(v) and math.isfinite(v)


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
                "metrics": dict(  # a figure that is not a finite number is left out
                    sorted((k, v) for k, v in r.metrics.items() if _finite(v))[:MAX_METRICS]
                ),
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
        metrics=f.number_map("metrics"),
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
                "upload_now": s.upload_now,
            }
        )

    return _fit(build, "aggregator status")


def decode_aggregator_status(payload: bytes, *, lists: bool = True) -> AggregatorStatus:
    """Parse and validate the aggregator's status.

    ``lists=False`` leaves out the ``expected`` and ``reported`` lists (not read, not checked;
    the counts stay): what a gateway needs, which reads every status the aggregator publishes
    and has no use for up to 200 worker ids each time (at 10,000 gateways in one process,
    checking them took more CPU than everything else the gateways did).
    """
    f = _json_load(payload, "aggregator status")
    expected = _workers(f, "expected") if lists else ()
    reported = _workers(f, "reported") if lists else ()
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
        upload_now=f.opt_integer("upload_now"),
    )
