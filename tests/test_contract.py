"""The MQTT contract: topics and payload codecs reject what they must, keep what they should."""

from __future__ import annotations

import hashlib
import json

import msgpack
import numpy as np
import pytest

from tinyfed import contract, model
from tinyfed.contract import ContractError, HyperParams, Topics


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
