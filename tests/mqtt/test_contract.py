"""The MQTT contract: topics and payload codecs reject what they must, keep what they should."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from tinyfed import model
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ContractError, HyperParams, Topics


def _update(**overrides: object) -> contract.ModelUpdate:
    fields: dict[str, object] = {
        "worker_id": "board-1",
        "base_round": 3,
        "local_steps": 10,
        "params": model.init_params(),
        "upload_id": "board-1-3-abc",
        "pipeline": "centroid",
        "loss": contract.LossSummary(count=10, mean=0.2, last=0.1),
        "created": 1.5,
    }
    fields.update(overrides)
    return contract.ModelUpdate(**fields)  # type: ignore[arg-type]


def test_topics_follow_the_documented_layout() -> None:
    t = Topics("kitchen")
    assert t.global_model == "tinyfed/kitchen/global"
    assert t.worker_update("b1") == "tinyfed/kitchen/workers/b1/update"
    assert t.all_losses == "tinyfed/kitchen/workers/+/loss"
    assert t.parse_worker_topic("tinyfed/kitchen/workers/b1/status") == ("b1", "status")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x" * 65])
def test_invalid_fleet_or_worker_names_are_refused(bad: str) -> None:
    with pytest.raises(ContractError, match="invalid"):
        Topics(bad)
    with pytest.raises(ContractError, match="invalid worker id"):
        Topics("f").worker_update(bad)


def test_global_model_round_trips() -> None:
    g = contract.GlobalModel(
        round=4, params=model.init_params(7), hyper=HyperParams(0.1, 0.9, 10), pipeline="paper"
    )
    back = contract.decode_global(contract.encode_global(g))
    assert (back.round, back.hyper, back.pipeline, back.arch) == (4, g.hyper, "paper", g.arch)
    np.testing.assert_array_equal(back.params, g.params)
    assert back.sha256 == g.sha256


def test_update_round_trips_with_its_upload_id() -> None:
    u = _update()
    back = contract.decode_update(contract.encode_update(u))
    assert back.upload_id == u.upload_id
    assert back.loss == u.loss
    np.testing.assert_array_equal(back.params, u.params)


def _tamper(payload: bytes, **changes: object) -> bytes:
    obj = msgpack.unpackb(payload, raw=False)
    obj.update(changes)
    return bytes(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"v": 2}, "format version 2"),
        ({"params": b"\x00" * 100}, "sha256 does not match"),
        ({"local_steps": -1}, "negative"),
        ({"base_round": "3"}, "'base_round' has type str"),
        ({"worker": "a/b"}, "invalid worker id"),
        ({"upload_id": ""}, "upload id"),
    ],
)
def test_malformed_updates_are_rejected_naming_the_problem(
    changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(ContractError, match=reason):
        contract.decode_update(_tamper(contract.encode_update(_update()), **changes))


def test_update_with_nan_and_matching_checksum_is_rejected() -> None:
    raw = np.full(model.N_PARAMS, np.nan, "<f4").tobytes()
    payload = _tamper(
        contract.encode_update(_update()), params=raw, sha256=hashlib.sha256(raw).hexdigest()
    )
    with pytest.raises(ContractError, match="non-finite"):
        contract.decode_update(payload)


@pytest.mark.parametrize(
    "payload", [b"", b"\xc1", b"\x93\x01\x02\x03", b"x" * (contract.MAX_MODEL_PAYLOAD + 1)]
)
def test_garbage_is_rejected_not_crashed_on(payload: bytes) -> None:
    with pytest.raises(ContractError):
        contract.decode_update(payload)


def test_loss_event_is_readable_json() -> None:
    e = contract.LossEvent("b1", 12, 0.25, 1, (0.1, 0.8, 0.1), 1, 3, 100.0)
    obj = json.loads(contract.encode_loss(e))
    assert obj["loss"] == 0.25
    assert obj["worker"] == "b1"
    assert contract.decode_loss(contract.encode_loss(e)) == e


def test_loss_event_with_nan_cannot_be_encoded_or_decoded() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        contract.encode_loss(contract.LossEvent("b1", 1, float("nan"), 0, (0, 0, 0), None, 0, 0))
    with pytest.raises(ContractError):
        contract.decode_loss(
            b'{"v":1,"worker":"b1","step":1,"loss":NaN,"label":0,'
            b'"outputs":[0,0,0],"round":0,"time":0}'
        )


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"lr": 0.0}, "learning rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"local_steps": 0}, "local"),
    ],
)
def test_hyper_parameters_are_validated(kwargs: dict[str, float], reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        HyperParams(**kwargs)  # type: ignore[arg-type]


def test_status_and_round_events_round_trip() -> None:
    s = contract.WorkerStatus("b1", "online", transport="serial", model_round=2, time=1.0)
    assert contract.decode_worker_status(contract.encode_worker_status(s)) == s
    r = contract.RoundEvent(
        round=2,
        outcome="closed",
        strategy="fedavg",
        participants=(contract.Participant("b1", "u1", 10, 0.5, 0.2),),
        dropped=("b3",),
        rejected=(contract.Rejection("b2", "u2", "stale: base round 1, open round 2"),),
    )
    assert contract.decode_round_event(contract.encode_round_event(r)) == r
    a = contract.AggregatorStatus("online", round=2, expected=("b1",), reported=())
    assert contract.decode_aggregator_status(contract.encode_aggregator_status(a)) == a


# ----------------------------------------------------------------------------- round requests


def test_round_request_topics_follow_the_documented_layout() -> None:
    t = Topics("kitchen")
    assert t.worker_request("b1") == "tinyfed/kitchen/workers/b1/request"
    assert t.all_requests == "tinyfed/kitchen/workers/+/request"
    assert t.parse_worker_topic("tinyfed/kitchen/workers/b1/request") == ("b1", "request")
    with pytest.raises(ContractError, match="not a worker topic"):
        t.parse_worker_topic("tinyfed/kitchen/workers/b1/requests")


def test_round_request_round_trips_as_readable_json() -> None:
    r = contract.RoundRequest("b1", "round", 12.5)
    payload = contract.encode_request(r)
    assert json.loads(payload) == {"v": 1, "worker": "b1", "kind": "round", "time": 12.5}
    assert contract.decode_request(payload) == r
    assert contract.decode_request(b'{"v":1,"worker":"b1","kind":"round","time":3}').time == 3.0


def _request_json(**changes: object) -> bytes:
    obj: dict[str, object] = {"v": 1, "worker": "b1", "kind": "round", "time": 1.0}
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_request_json(kind="shutdown"), "'kind' is 'shutdown', expected one of round"),
        (_request_json(kind=1), "'kind' is 1, expected one of round"),
        (_request_json(time="now"), "'time' has type str"),
        (_request_json(time=True), "'time' has type bool"),
        (_request_json(time=10**400), "'time' is too large"),
        (_request_json(time=1e400), "'time' is not finite"),
        (b'{"v":1,"worker":"b1","kind":"round","time":NaN}', "'time' is not finite"),
        (_request_json(worker="b 1"), "'worker': invalid worker id"),
        (_request_json(worker=7), "'worker': invalid worker id"),
        (b'{"v":1,"worker":"b1","time":1}', "missing field 'kind'"),
        (b'{"v":1,"kind":"round","time":1}', "missing field 'worker'"),
        (b"[1]", "payload is not a JSON object"),
        (b"\xff", "not valid JSON"),
        (b" " * (contract.MAX_JSON_PAYLOAD + 1), "limit"),
    ],
)
def test_malformed_round_requests_are_rejected_naming_the_field(
    payload: bytes, reason: str
) -> None:
    with pytest.raises(ContractError, match="^round request: .*" + reason):
        contract.decode_request(payload)


def test_a_round_request_the_contract_cannot_carry_is_not_encoded() -> None:
    with pytest.raises(ContractError, match="invalid worker id"):
        contract.encode_request(contract.RoundRequest("b 1"))
    with pytest.raises(ContractError, match="round request: cannot be encoded"):
        contract.encode_request(contract.RoundRequest("b1", time=float("nan")))


def test_the_aggregator_status_says_which_round_to_upload_now() -> None:
    s = contract.AggregatorStatus("online", round=4, attempt=1, upload_now=4)
    payload = contract.encode_aggregator_status(s)
    assert json.loads(payload)["upload_now"] == 4
    assert contract.decode_aggregator_status(payload, lists=False).upload_now == 4
    assert contract.decode_aggregator_status(b'{"v":1,"state":"online"}').upload_now is None
    for bad, reason in (("4", "has type str"), (-1, "is negative"), (2**31, "is too large")):
        obj = {"v": 1, "state": "online", "upload_now": bad}
        with pytest.raises(ContractError, match=f"'upload_now' {reason}"):
            contract.decode_aggregator_status(json.dumps(obj).encode())


# ----------------------------------------------------------------------------- receipts


def test_receipt_topics_follow_the_documented_layout() -> None:
    t = Topics("kitchen")
    assert t.worker_receipt("b1") == "tinyfed/kitchen/workers/b1/receipt"
    assert t.all_receipts == "tinyfed/kitchen/workers/+/receipt"
    assert t.parse_worker_topic("tinyfed/kitchen/workers/b1/receipt") == ("b1", "receipt")
    with pytest.raises(ContractError, match="not a worker topic"):
        t.parse_worker_topic("tinyfed/kitchen/workers/b1/receipts")


def test_receipt_round_trips_as_readable_json() -> None:
    r = contract.Receipt("b1", "b1-3-abc", 3, "rejected", "stale update", 12.5)
    obj = json.loads(contract.encode_receipt(r))
    assert obj == {
        "v": 1,
        "worker": "b1",
        "upload_id": "b1-3-abc",
        "round": 3,
        "outcome": "rejected",
        "reason": "stale update",
        "time": 12.5,
    }
    assert contract.decode_receipt(contract.encode_receipt(r)) == r
    accepted = contract.Receipt("b1", "u", 0, "accepted")
    assert contract.decode_receipt(contract.encode_receipt(accepted)) == accepted


def _receipt_json(**changes: object) -> bytes:
    obj = json.loads(contract.encode_receipt(contract.Receipt("b1", "u1", 3, "accepted")))
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"outcome": "maybe"}, "'outcome' is 'maybe', expected one of accepted, rejected"),
        ({"upload_id": ""}, "upload id must be 1-128 characters"),
        ({"upload_id": "u" * 129}, "upload id must be 1-128 characters"),
        ({"worker": "a/b"}, "invalid worker id"),
        ({"round": -1}, "'round' is negative"),
        ({"round": True}, "'round' has type bool"),
        ({"reason": "r" * 501}, "'reason' must have 0-500 characters"),
        ({"time": "now"}, "'time' has type str"),
    ],
)
def test_malformed_receipts_are_rejected_naming_the_problem(
    changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(ContractError, match=reason):
        contract.decode_receipt(_receipt_json(**changes))


def test_receipt_reasons_are_truncated_by_the_encoder() -> None:
    r = contract.Receipt("b1", "u1", 3, "rejected", "x" * 10_000)
    back = contract.decode_receipt(contract.encode_receipt(r))
    assert len(back.reason) == contract.MAX_REASON
    assert back.reason.endswith("…")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", ["b1\n", "b1 ", "é", 5, None])
def test_worker_ids_are_checked_in_full(bad: object) -> None:
    with pytest.raises(ContractError, match="invalid worker id"):
        contract.check_worker_id(bad)  # type: ignore[arg-type]


#: kind -> (encoder, decoder, a valid message of that kind)
JSON_VALID: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], object], object]] = {
    "loss": (
        contract.encode_loss,
        contract.decode_loss,
        contract.LossEvent("b1", 1, 0.5, 0, (0.1,), None, 0, 0.0),
    ),
    "status": (
        contract.encode_worker_status,
        contract.decode_worker_status,
        contract.WorkerStatus("b1", "online"),
    ),
    "receipt": (
        contract.encode_receipt,
        contract.decode_receipt,
        contract.Receipt("b1", "u", 0, "accepted"),
    ),
    "request": (
        contract.encode_request,
        contract.decode_request,
        contract.RoundRequest("b1", "round", 12.5),
    ),
    "round": (
        contract.encode_round_event,
        contract.decode_round_event,
        contract.RoundEvent(0, "failed", "fedavg"),
    ),
    "aggregator": (
        contract.encode_aggregator_status,
        contract.decode_aggregator_status,
        contract.AggregatorStatus("online"),
    ),
}


@pytest.mark.parametrize("kind", sorted(JSON_VALID))
@pytest.mark.parametrize("version", [99, 0, "1", 1.0, True, None])
def test_json_payloads_must_carry_the_format_version(kind: str, version: object) -> None:
    encode, decode, valid = JSON_VALID[kind]
    obj = json.loads(encode(valid))
    assert decode(json.dumps(obj).encode()) == valid
    if version is None:
        del obj["v"]
    else:
        obj["v"] = version
    with pytest.raises(ContractError, match="format version"):
        decode(json.dumps(obj).encode())


def _loss_json(**changes: object) -> bytes:
    obj = json.loads(contract.encode_loss(JSON_VALID["loss"][2]))  # type: ignore[arg-type]
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"label": 256}, r"'label' is too large \(256 > 255\)"),
        ({"label": -1}, "'label' is negative"),
        ({"prediction": 256}, "'prediction' is too large"),
        ({"prediction": False}, "'prediction' has type bool"),
        ({"outputs": [0.1] * 17}, "'outputs' has 17 entries, at most 16"),
        ({"outputs": [0.1, True]}, r"'outputs\[1\]' has type bool"),
        ({"outputs": [0.1, "0.2"]}, r"'outputs\[1\]' has type str"),
        ({"outputs": [10**400]}, r"'outputs\[0\]' is too large"),
        ({"loss": True}, "'loss' has type bool"),
        ({"loss": 1e400}, "'loss' is not finite"),
        ({"step": 2**31}, "'step' is too large"),
        ({"round": -1}, "'round' is negative"),
        ({"worker": "x" * 65}, "invalid worker id"),
        ({"time": None}, "'time' has type NoneType"),
    ],
)
def test_malformed_loss_events_are_rejected_naming_the_problem(
    changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(ContractError, match=reason):
        contract.decode_loss(_loss_json(**changes))


def test_integers_in_number_fields_come_out_as_floats() -> None:
    e = contract.decode_loss(_loss_json(loss=1, outputs=[0, 1], time=2**63))
    assert (type(e.loss), type(e.time), [type(o) for o in e.outputs]) == (float, float, [float] * 2)
    assert e.time == float(2**63)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"state": "asleep"}, "'state' is 'asleep'"),
        ({"transport": "t" * 129}, "'transport' must have 0-128 characters"),
        ({"firmware": 1}, "'firmware' has type int"),
        ({"pipeline": "p" * 65}, "'pipeline' must have 0-64 characters"),
        ({"model_round": 2**64}, "'model_round' is too large"),
        ({"model_round": "3"}, "'model_round' has type str"),
        ({"board_id": "\ud800"}, "'board_id' is not valid Unicode"),
    ],
)
def test_malformed_worker_status_is_rejected_naming_the_problem(
    changes: dict[str, object], reason: str
) -> None:
    obj = {"v": 1, "worker": "b1", "state": "online", **changes}
    with pytest.raises(ContractError, match=reason):
        contract.decode_worker_status(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"created": float("nan")}, "'created' is not finite"),
        ({"loss": {"count": 1, "mean": "0.1"}}, "'loss.mean' has type str"),
        ({"loss": {"count": 2**32, "mean": 0.1}}, "'loss.count' is too large"),
        ({"loss": {"mean": 0.1}}, "missing field 'loss.count'"),
        ({"loss": [1]}, "field 'loss' is not a map"),
        ({"arch": ""}, "'arch' must have 1-64 characters"),
        ({"pipeline": "p" * 65}, "'pipeline' must have 1-64 characters"),
        ({"sha256": "z" * 64}, "'sha256' is malformed"),
        ({"params": "abc"}, "'params' has type str"),
        ({"v": True}, "format version True"),
    ],
)
def test_more_malformed_updates_are_rejected(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        contract.decode_update(_tamper(contract.encode_update(_update()), **changes))


@pytest.mark.parametrize(
    ("hyper", "reason"),
    [
        ({"lr": 0.1, "momentum": 0.9, "local_steps": 0}, "'hyper.local_steps' is below 1"),
        ({"lr": 2**64 - 1, "momentum": 0.9, "local_steps": 10}, "learning rate"),
        ({"lr": True, "momentum": 0.9, "local_steps": 10}, "'hyper.lr' has type bool"),
        ({"lr": 0.1, "momentum": float("inf"), "local_steps": 10}, "not finite"),
        ({"lr": 0.1, "momentum": 0.9}, "missing field 'hyper.local_steps'"),
    ],
)
def test_malformed_global_models_are_rejected(hyper: dict[str, object], reason: str) -> None:
    g = contract.GlobalModel(
        round=4, params=model.init_params(7), hyper=HyperParams(0.1, 0.9, 10), pipeline="paper"
    )
    with pytest.raises(ContractError, match=reason):
        contract.decode_global(_tamper(contract.encode_global(g), hyper=hyper))
    with pytest.raises(ContractError, match="'round' is too large"):
        contract.decode_global(_tamper(contract.encode_global(g), round=2**31))


def _round_json(**changes: object) -> bytes:
    r = contract.RoundEvent(
        round=2,
        outcome="closed",
        strategy="fedavg",
        participants=(contract.Participant("b1", "u1", 10, 0.5, 0.2),),
        rejected=(contract.Rejection("b2", "", "malformed"),),
    )
    obj = json.loads(contract.encode_round_event(r))
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"outcome": "won"}, "'outcome' is 'won', expected one of closed, failed"),
        ({"participants": [{"worker_id": "b1"}]}, r"missing field 'participants\[0\].upload_id'"),
        (
            {
                "participants": [
                    {"worker_id": "b1", "upload_id": "u", "local_steps": 1, "weight": True}
                ]
            },
            r"'participants\[0\].weight' has type bool",
        ),
        ({"participants": ["b1"]}, r"'participants\[0\]' is not a map"),
        ({"participants": {"b1": 1}}, "'participants' has type dict"),
        ({"dropped": ["ok", "a/b"]}, r"'dropped\[1\]': invalid worker id"),
        (
            {"rejected": [{"worker_id": "b2", "upload_id": "", "reason": 5}]},
            r"'rejected\[0\].reason'",
        ),
        ({"global_sha256": "ab"}, "'global_sha256' is not 64 hex digits"),
        ({"global_sha256": "g" * 64}, "'global_sha256' is not 64 hex digits"),
        ({"duration_s": None}, "'duration_s' has type NoneType"),
        ({"loss_mean": "0.2"}, "'loss_mean' has type str"),
        ({"strategy": "s" * 65}, "'strategy' must have 0-64 characters"),
        ({"participant_count": 0}, "'participant_count' is 0, less than the 1 listed"),
        ({"rejected_count": -1}, "'rejected_count' is negative"),
    ],
)
def test_malformed_round_events_are_rejected_naming_the_problem(
    changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(ContractError, match=reason):
        contract.decode_round_event(_round_json(**changes))


def test_round_event_counts_default_to_the_lists_and_ignore_unknown_keys() -> None:
    obj = json.loads(_round_json())
    for key in ("participant_count", "dropped_count", "rejected_count"):
        del obj[key]
    obj["participants"][0]["future"] = 1
    obj["future"] = {"x": 1}
    e = contract.decode_round_event(json.dumps(obj).encode())
    assert (e.participant_count, e.dropped_count, e.rejected_count) == (1, 0, 1)
    assert e.rejected[0].upload_id == ""  # a payload that did not decode has no upload id


def test_counts_are_never_below_the_lists() -> None:
    r = contract.RoundEvent(1, "closed", "fedavg", dropped=("a", "b"), rejected_count=7)
    assert (r.participant_count, r.dropped_count, r.rejected_count) == (0, 2, 7)
    s = contract.AggregatorStatus("online", expected=("a", "b"), reported=("a",), expected_count=5)
    assert (s.expected_count, s.reported_count) == (5, 1)
    assert contract.decode_aggregator_status(contract.encode_aggregator_status(s)) == s
    with pytest.raises(ContractError, match="'attempt' has type str"):
        contract.decode_aggregator_status(b'{"v":1,"state":"online","attempt":"1"}')
    with pytest.raises(ContractError, match=r"'reported\[0\]': invalid worker id"):
        contract.decode_aggregator_status(b'{"v":1,"state":"online","reported":[""]}')


def test_a_gateway_reads_the_status_without_its_lists() -> None:
    s = contract.AggregatorStatus(
        "online", round=3, attempt=1, expected=("a", "b"), reported=("a",), expected_count=5
    )
    lean = contract.decode_aggregator_status(contract.encode_aggregator_status(s), lists=False)
    assert (lean.state, lean.round, lean.attempt) == ("online", 3, 1)
    assert (lean.expected, lean.reported) == ((), ())
    assert (lean.expected_count, lean.reported_count) == (5, 1)
    bad_list = b'{"v":1,"state":"online","round":2,"reported":[""]}'
    assert contract.decode_aggregator_status(bad_list, lists=False).round == 2
    with pytest.raises(ContractError, match="'state'"):  # the fields it returns are checked
        contract.decode_aggregator_status(b'{"v":1,"state":"banana"}', lists=False)


# ----------------------------------------------------------------------------- bounded payloads

N_HUGE = 100_000
LONGEST_WORKER = "w" * 64
LONGEST_UPLOAD = "u" * contract.MAX_UPLOAD_ID


def test_a_round_event_of_a_huge_fleet_stays_below_the_payload_limit() -> None:
    r = contract.RoundEvent(
        round=contract.MAX_INT,
        outcome="closed",
        strategy="s" * 64,
        participants=tuple(
            contract.Participant(LONGEST_WORKER, LONGEST_UPLOAD, contract.MAX_INT, -1e308, 1e308)
            for _ in range(N_HUGE)
        ),
        dropped=(LONGEST_WORKER,) * N_HUGE,
        rejected=(contract.Rejection(LONGEST_WORKER, LONGEST_UPLOAD, "r" * 10_000),) * N_HUGE,
        duration_s=-1e308,
        loss_mean=-1e308,
        global_sha256="f" * 64,
        reason="x" * 10_000,
        time=1e308,
    )
    payload = contract.encode_round_event(r)
    assert len(payload) < contract.MAX_JSON_PAYLOAD
    back = contract.decode_round_event(payload)
    assert len(back.participants) == len(back.dropped) == contract.MAX_LISTED
    assert len(back.rejected) == contract.MAX_LISTED_REJECTIONS
    assert back.participant_count == back.dropped_count == back.rejected_count == N_HUGE
    assert back.participants == r.participants[: contract.MAX_LISTED]
    assert {len(x.reason) for x in back.rejected} == {contract.MAX_REASON}
    assert len(back.reason) == contract.MAX_REASON


def test_an_aggregator_status_of_a_huge_fleet_stays_below_the_payload_limit() -> None:
    s = contract.AggregatorStatus(
        "online",
        round=contract.MAX_INT,
        attempt=contract.MAX_INT,
        strategy="s" * 64,
        expected=(LONGEST_WORKER,) * N_HUGE,
        reported=(LONGEST_WORKER,) * N_HUGE,
        time=1e308,
    )
    payload = contract.encode_aggregator_status(s)
    assert len(payload) < contract.MAX_JSON_PAYLOAD
    back = contract.decode_aggregator_status(payload)
    assert len(back.expected) == len(back.reported) == contract.MAX_LISTED
    assert back.expected_count == back.reported_count == N_HUGE
    assert back.attempt == contract.MAX_INT


def test_a_receipt_with_maximal_fields_stays_below_the_payload_limit() -> None:
    r = contract.Receipt(
        LONGEST_WORKER, "😀" * 128, contract.MAX_INT, "rejected", "😀" * 10_000, 1e308
    )
    payload = contract.encode_receipt(r)
    assert len(payload) < contract.MAX_JSON_PAYLOAD
    assert contract.decode_receipt(payload).upload_id == r.upload_id


def test_lists_shrink_further_when_their_text_escapes_to_many_bytes() -> None:
    emoji = "😀" * contract.MAX_UPLOAD_ID  # 12 bytes per character in JSON: \\ud83d\\ude00
    r = contract.RoundEvent(
        round=1,
        outcome="failed",
        strategy="fedavg",
        participants=(contract.Participant(LONGEST_WORKER, emoji, 1, 1.0),) * 1000,
        rejected=(contract.Rejection(LONGEST_WORKER, emoji, "😀" * 1000),) * 1000,
    )
    payload = contract.encode_round_event(r)
    assert len(payload) < contract.MAX_JSON_PAYLOAD
    back = contract.decode_round_event(payload)
    assert 0 < len(back.participants) < contract.MAX_LISTED
    assert (back.participant_count, back.rejected_count) == (1000, 1000)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"upload_id": ""}, "upload id must be 1-128"),
        ({"worker_id": "a/b"}, "invalid worker id"),
        ({"round": -1}, "'round' is negative"),
        ({"outcome": "maybe"}, "'outcome' is 'maybe'"),
        ({"time": float("nan")}, "cannot be encoded"),
    ],
)
def test_a_receipt_the_contract_cannot_carry_is_not_encoded(
    changes: dict[str, object], reason: str
) -> None:
    fields: dict[str, object] = {
        "worker_id": "b1",
        "upload_id": "u1",
        "round": 0,
        "outcome": "accepted",
        **changes,
    }
    with pytest.raises(ContractError, match=reason):
        contract.encode_receipt(contract.Receipt(**fields))  # type: ignore[arg-type]


def test_a_round_event_carries_its_figures() -> None:
    figures = {"participants": 3.0, "loss_min": 0.12, "update_norm_max": 4.5, "nan": math.nan}
    e = contract.RoundEvent(0, "closed", "fedavg", metrics=figures)
    back = contract.decode_round_event(contract.encode_round_event(e))
    assert back.metrics == {"participants": 3.0, "loss_min": 0.12, "update_norm_max": 4.5}
    assert contract.decode_round_event(b'{"v":1,"round":0,"outcome":"failed"}').metrics == {}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ('{"Loss Min": 1}', "metrics.Loss Min"),
        ('{"loss": "x"}', "metrics.loss"),
        ('{"loss": 1e999}', "metrics.loss"),
        ("[1, 2]", "'metrics' has type list"),
        ("{" + ",".join(f'"m{i}": {i}' for i in range(40)) + "}", "40 entries, at most 32"),
    ],
)
def test_a_round_events_figures_are_checked(metrics: str, message: str) -> None:
    payload = f'{{"v":1,"round":0,"outcome":"closed","metrics":{metrics}}}'.encode()
    with pytest.raises(ContractError, match=re.escape(message)):
        contract.decode_round_event(payload)


def test_the_words_travel_with_the_global_model_and_the_loss_events() -> None:
    g = contract.GlobalModel(
        1, model.init_params(), contract.HyperParams(), "centroid", classes=("vermell", "verd")
    )
    assert contract.decode_global(contract.encode_global(g)).classes == ("vermell", "verd")
    e = contract.LossEvent("a", 1, 0.2, 1, (0.1, 0.7), 1, 0, 1.0, word="verd", heard="verd")
    assert contract.decode_loss(contract.encode_loss(e)) == e
    old = (  # a loss event from before the words
        b'{"v":1,"worker":"a","step":1,"loss":0.1,"label":0,"outputs":[0.1],'
        b'"prediction":null,"round":0,"time":1}'
    )
    assert (contract.decode_loss(old).word, contract.decode_loss(old).heard) == ("", "")
    raw = msgpack.unpackb(contract.encode_global(g), raw=False)
    for bad, message in ((["x"] * 17, "at most 16"), ([""], "classes[0]")):
        raw["classes"] = bad
        with pytest.raises(ContractError, match=re.escape(message)):
            contract.decode_global(msgpack.packb(raw, use_bin_type=True))
