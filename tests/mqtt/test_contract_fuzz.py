"""Type-confusion fuzz of the MQTT contract: every decoder is total.

Starting from a valid payload of every message kind, a seeded generator replaces fields (nested
ones too) by values of other types (None, bools, huge and negative integers, NaN and infinities,
strings of 10,000 characters, lists, maps, bytes), drops and adds fields, and truncates, flips
and inserts bytes. Every decoder must return a valid object or raise ContractError, nothing
else; a returned object must hold only finite floats, integers in range and bounded strings, and
survive its encoder unchanged. Also the four poison messages that once crashed a consumer.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from tinyfed import model
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ContractError, HyperParams

SEED = 0x7F3D
PER_KIND = 3000  #: mutated payloads per message kind (8 kinds: 24,000 in all)

PARAMS = model.init_params(3)

VALID: dict[str, object] = {
    "global": contract.GlobalModel(
        round=5, params=PARAMS, hyper=HyperParams(0.1, 0.9, 10), pipeline="paper", created=1.5
    ),
    "update": contract.ModelUpdate(
        worker_id="board-1",
        base_round=5,
        local_steps=10,
        params=PARAMS,
        upload_id="board-1-5-abc",
        pipeline="paper",
        loss=contract.LossSummary(count=10, mean=0.25, last=0.125),
        created=2.5,
    ),
    "loss": contract.LossEvent("board-1", 12, 0.25, 1, (0.1, 0.8, 0.1), 1, 5, 100.0),
    "status": contract.WorkerStatus(
        "board-1",
        "online",
        transport="serial:///dev/ttyACM0",
        firmware="0.1.0",
        board_id="ab12",
        boot_id="cd34",
        pipeline="paper",
        model_round=5,
        time=3.0,
    ),
    "receipt": contract.Receipt("board-1", "board-1-5-abc", 5, "rejected", "stale", 4.0),
    "request": contract.RoundRequest("board-1", "round", 7.0),
    "round": contract.RoundEvent(
        round=5,
        outcome="closed",
        strategy="fedavg",
        participants=(
            contract.Participant("board-1", "u1", 10, 10.0, 0.25),
            contract.Participant("board-2", "u2", 8, 8.0, None),
        ),
        dropped=("board-3",),
        rejected=(contract.Rejection("board-4", "u4", "stale"), contract.Rejection("b5", "", "x")),
        duration_s=12.5,
        loss_mean=0.2,
        global_sha256=model.sha256(PARAMS),
        time=5.0,
        participant_count=3,
    ),
    "aggregator": contract.AggregatorStatus(
        "online",
        round=5,
        strategy="fedavg",
        expected=("board-1", "board-2"),
        reported=("board-1",),
        time=6.0,
        attempt=1,
        upload_now=5,
    ),
}

ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "global": contract.encode_global,
    "update": contract.encode_update,
    "loss": contract.encode_loss,
    "status": contract.encode_worker_status,
    "receipt": contract.encode_receipt,
    "request": contract.encode_request,
    "round": contract.encode_round_event,
    "aggregator": contract.encode_aggregator_status,
}

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "global": contract.decode_global,
    "update": contract.decode_update,
    "loss": contract.decode_loss,
    "status": contract.decode_worker_status,
    "receipt": contract.decode_receipt,
    "request": contract.decode_request,
    "round": contract.decode_round_event,
    "aggregator": contract.decode_aggregator_status,
}

_WHAT = {
    "global": "global model: ",
    "update": "model update: ",
    "loss": "loss event: ",
    "status": "worker status: ",
    "receipt": "receipt: ",
    "request": "round request: ",
    "round": "round event: ",
    "aggregator": "aggregator status: ",
}

MSGPACK_KINDS = {"global", "update"}

#: Values of every type a field may be confused with (both codecs).
POISON: list[object] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    256,
    contract.MAX_INT,
    contract.MAX_INT + 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    0.5,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "online",
    "closed",
    "accepted",
    "board-1",
    "a/b",
    "b1\n",
    "é" * 65,
    "0" * 64,
    "g" * 64,
    "x" * 129,
    "x" * 501,
    "x" * 10_000,
    [],
    [1],
    [None],
    ["board-1"],
    [{}],
    [[[]]],
    [0.1] * 17,
    {},
    {"x": 1},
    {"worker_id": "board-1"},
    {"count": 1, "mean": 2**63},
]
MSGPACK_POISON: list[object] = [
    *POISON,
    b"",
    b"\x00" * 10,
    bytes(model.MODEL_BYTES),
    msgpack.ExtType(1, b"x"),
]
JSON_POISON: list[object] = [*POISON, 10**400, -(10**30), "\ud800", "😀" * 40]

#: Field names a mutation may add (known ones, at the wrong place, and unknown ones).
EXTRA_KEYS = ["v", "worker", "round", "time", "participants", "reason", "zzz", "count", "mean"]


def _tree(kind: str) -> Any:
    payload = ENCODERS[kind](VALID[kind])
    if kind in MSGPACK_KINDS:
        return msgpack.unpackb(payload, raw=False)
    return json.loads(payload)


def _slots(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``tree``, nested ones included."""
    out: list[tuple[Any, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            out.append((node, key))
            if isinstance(value, dict | list):
                stack.append(value)
    return out


def _containers(tree: Any) -> list[Any]:
    return [tree] + [c[k] for c, k in _slots(tree) if isinstance(c[k], dict | list)]


def _mutate_tree(rng: random.Random, tree: Any, poison: list[object]) -> None:
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.random()
        slots = _slots(tree)
        if op < 0.6 and slots:  # replace a value by one of another type
            node, key = rng.choice(slots)
            node[key] = copy.deepcopy(rng.choice(poison))
        elif op < 0.8 and slots:  # drop a field or a list entry
            node, key = rng.choice(slots)
            del node[key]
        else:  # add a field or a list entry
            node = rng.choice(_containers(tree))
            value = copy.deepcopy(rng.choice(poison))
            if isinstance(node, dict):
                node[rng.choice(EXTRA_KEYS)] = value
            else:
                node.insert(rng.randint(0, len(node)), value)


def _mutate_bytes(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    op = rng.random()
    if op < 0.3:
        return bytes(data[: rng.randint(0, len(data))])
    if op < 0.6:
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if op < 0.8:
        at = rng.randint(0, len(data))
        return bytes(data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:])
    # near the start, where the header and the small fields are
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(min(len(data), 64))] = rng.randrange(256)
    return bytes(data)


def _payloads(kind: str, n: int) -> list[bytes]:
    rng = random.Random(f"{SEED}-{kind}")
    base = _tree(kind)
    packed = kind in MSGPACK_KINDS
    poison = MSGPACK_POISON if packed else JSON_POISON
    valid = ENCODERS[kind](VALID[kind])
    out: list[bytes] = []
    while len(out) < n:
        if rng.random() < 0.15:
            out.append(_mutate_bytes(rng, valid))
            continue
        tree = copy.deepcopy(base)
        _mutate_tree(rng, tree, poison)
        if packed:
            payload = bytes(msgpack.packb(tree, use_bin_type=True))
        else:
            payload = json.dumps(tree, allow_nan=True).encode()
        if rng.random() < 0.1:
            payload = _mutate_bytes(rng, payload)
        out.append(payload)
    return out


def _check_value(value: object, where: str) -> None:
    if value is None:
        return
    assert not isinstance(value, bool), f"{where} is a bool"
    if isinstance(value, int):
        assert 0 <= value <= contract.MAX_INT, f"{where} = {value} out of range"
    elif isinstance(value, float):
        assert type(value) is float, f"{where} is a {type(value)}"
        assert math.isfinite(value), f"{where} = {value} is not finite"
    elif isinstance(value, str):
        assert len(value) <= contract.MAX_TEXT, f"{where} has {len(value)} characters"
        value.encode("utf-8")
    elif isinstance(value, tuple):
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]")
    elif isinstance(value, dict):  # a round event's figures: names to finite floats
        assert len(value) <= contract.MAX_METRICS, f"{where} has {len(value)} entries"
        for k, v in value.items():
            assert isinstance(k, str), f"{where} has a key of type {type(k)}"
            assert 1 <= len(k) <= contract.MAX_LABEL_TEXT, f"{where} key {k!r}"
            assert type(v) is float, f"{where}.{k} is a {type(v)}"
            _check_value(v, f"{where}.{k}")
    elif isinstance(value, np.ndarray):
        assert value.dtype == np.float32
        assert value.shape == (model.N_PARAMS,)
        assert np.isfinite(value).all()
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _check_value(getattr(value, f.name), f"{where}.{f.name}")
    else:
        raise AssertionError(f"{where} has unexpected type {type(value)}")


def _check_object(kind: str, obj: object) -> None:
    _check_value(obj, kind)
    if isinstance(obj, contract.LossEvent):
        assert 0 <= obj.label <= contract.MAX_CLASS
        assert obj.prediction is None or 0 <= obj.prediction <= contract.MAX_CLASS
        assert len(obj.outputs) <= contract.MAX_OUTPUTS
    again = DECODERS[kind](ENCODERS[kind](obj))
    if isinstance(obj, contract.GlobalModel | contract.ModelUpdate):
        assert again.sha256 == obj.sha256
        assert dataclasses.replace(again, params=PARAMS) == dataclasses.replace(obj, params=PARAMS)
    else:
        assert again == obj


def _decode(decode: Callable[[bytes], Any], payload: bytes, what: str) -> tuple[Any, str]:
    """``(object, "")`` or ``(None, ContractError message)``; fails on any other exception."""
    try:
        return decode(payload), ""
    except ContractError as exc:
        return None, str(exc)
    except Exception as exc:
        pytest.fail(f"{what}: raised {exc!r} on {payload[:300]!r}")


def test_the_fuzz_is_big_enough() -> None:
    assert PER_KIND * len(DECODERS) >= 20_000


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_every_decoder_returns_a_valid_object_or_raises_contract_error(kind: str) -> None:
    accepted = refused = 0
    for i, payload in enumerate(_payloads(kind, PER_KIND)):
        for name, decode in DECODERS.items():
            obj, message = _decode(decode, payload, f"{name} on {kind} payload #{i}")
            if obj is None:  # refused: the message names the problem, briefly
                assert message.startswith(_WHAT[name]), message
                assert len(message) < 1000, f"{name}: message of {len(message)} characters"
                refused += name == kind
                continue
            try:
                _check_object(name, obj)
            except AssertionError as exc:
                pytest.fail(f"{name} accepted bad {kind} payload #{i}: {exc}; {payload[:300]!r}")
            accepted += name == kind
    print(f"{kind}: {accepted} accepted, {refused} refused")
    # both outcomes happen: the fuzz neither only breaks nor only keeps payloads valid
    assert accepted > PER_KIND // 50
    assert refused > PER_KIND // 2


# ----------------------------------------------------------------------------- poison messages


def _update_with(**changes: object) -> bytes:
    obj = _tree("update")
    obj.update(changes)
    return bytes(msgpack.packb(obj, use_bin_type=True))


def test_update_with_local_steps_beyond_64_bits_worth_is_refused() -> None:
    with pytest.raises(ContractError, match=r"'local_steps' is too large \(18446744073709551615"):
        contract.decode_update(_update_with(local_steps=2**64 - 1))


def test_update_with_integer_loss_mean_of_2_to_the_63_comes_out_as_a_float() -> None:
    u = contract.decode_update(_update_with(loss={"count": 10, "mean": 2**63, "last": 1}))
    assert type(u.loss.mean) is float
    assert u.loss.mean == float(2**63)
    assert type(u.loss.last) is float


@pytest.mark.parametrize(("time", "problem"), [('"x"', "str"), ("null", "NoneType")])
def test_worker_status_with_a_time_that_is_not_a_number_is_refused(time: str, problem: str) -> None:
    payload = f'{{"v":1,"worker":"b1","state":"online","time":{time}}}'.encode()
    with pytest.raises(ContractError, match=f"worker status: field 'time' has type {problem}"):
        contract.decode_worker_status(payload)
