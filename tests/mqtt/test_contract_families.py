"""Model payloads carry the parameters of the family their ``arch`` names."""

from __future__ import annotations

import hashlib

import msgpack
import numpy as np
import pytest

from tinyfed import model
from tinyfed.model import families
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ContractError, GlobalModel, HyperParams, ModelUpdate

HEAD = (np.arange(195) / 64).astype(np.float32)


def _update(params: model.F32, arch: str) -> ModelUpdate:
    return ModelUpdate(
        worker_id="b1",
        base_round=2,
        local_steps=10,
        params=params,
        upload_id="u1",
        pipeline="logmel40",
        arch=arch,
    )


def test_a_dscnn_update_and_global_model_round_trip() -> None:
    u = contract.decode_update(contract.encode_update(_update(HEAD, families.DSCNN.arch)))
    np.testing.assert_array_equal(u.params, HEAD)
    assert u.arch == "dscnn64-head-v1"
    g = GlobalModel(
        round=3,
        params=HEAD,
        hyper=HyperParams(lr=0.01, momentum=0.0),
        pipeline="logmel40",
        arch=families.DSCNN.arch,
    )
    payload = contract.encode_global(g)
    assert len(msgpack.unpackb(payload)["params"]) == 780
    back = contract.decode_global(payload)
    np.testing.assert_array_equal(back.params, HEAD)
    assert back.sha256 == hashlib.sha256(HEAD.tobytes()).hexdigest()


def test_params_of_another_family_than_arch_says_are_refused_both_ways() -> None:
    with pytest.raises(ContractError, match=r"model update: .*expected \(195,\).*dscnn family"):
        contract.encode_update(_update(model.init_params(), families.DSCNN.arch))
    # a payload built by hand: a head under the paper's arch
    data = HEAD.tobytes()
    raw = msgpack.unpackb(contract.encode_update(_update(HEAD, families.DSCNN.arch)))
    raw["arch"] = families.PAPER.arch
    with pytest.raises(ContractError, match=r"780 bytes, expected 41868 \(paper family"):
        contract.decode_update(msgpack.packb(raw))
    assert hashlib.sha256(data).hexdigest() == raw["sha256"]


def test_an_unknown_arch_is_a_decode_error_naming_it() -> None:
    raw = msgpack.unpackb(contract.encode_update(_update(HEAD, families.DSCNN.arch)))
    raw["arch"] = "cnn-v7"
    with pytest.raises(
        ContractError,
        match=r"model update: field 'arch': unknown architecture 'cnn-v7'; known: paper",
    ):
        contract.decode_update(msgpack.packb(raw))
    g = msgpack.unpackb(
        contract.encode_global(
            GlobalModel(round=0, params=model.init_params(), hyper=HyperParams(), pipeline="paper")
        )
    )
    g["arch"] = "cnn-v7"
    with pytest.raises(ContractError, match="global model: field 'arch': unknown architecture"):
        contract.decode_global(msgpack.packb(g))
    with pytest.raises(ContractError, match="unknown architecture 'cnn-v7'"):
        contract.encode_update(_update(HEAD, "cnn-v7"))
