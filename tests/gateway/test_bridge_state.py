"""The gateway's decisions (:class:`tinyfed.gateway.state.BridgeState`), without a board or a
broker."""

from __future__ import annotations

import dataclasses

import pytest

from tinyfed import model
from tinyfed.gateway.state import BridgeState, Held, Pull, Push
from tinyfed.link.client import Hello, LossReport
from tinyfed.model import families
from tinyfed.mqtt import contract


def hello(boot: int = 1, round: int = 0, steps: int = 0, pipeline: int = 2) -> Hello:
    return Hello(
        boot_id=boot,
        board_id=bytes.fromhex("0011223344556677"),
        fw_version=(0, 1, 0),
        arch=1,
        pipeline=pipeline,
        lr=0.3,
        momentum=0.9,
        local_steps=10,
        model_round=round,
        steps_since_global=steps,
        total_steps=steps,
        state=0,
        window=8,
        chunk_bytes=228,
        flags=1,
    )


def global_model(
    round: int, local_steps: int = 3, pipeline: str = "centroid"
) -> contract.GlobalModel:
    return contract.GlobalModel(
        round=round,
        params=model.init_params(seed=round),
        hyper=contract.HyperParams(local_steps=local_steps),
        pipeline=pipeline,
    )


def loss(steps: int, round: int, value: float = 0.5) -> LossReport:
    return LossReport(
        step=steps,
        loss=value,
        label=0,
        outputs=(0.1, 0.2, 0.3),
        model_round=round,
        steps_since_global=steps,
        source=0,
    )


# ----------------------------------------------------------------------------- decisions


def test_a_board_that_appears_gets_the_global_model() -> None:
    state = BridgeState("w")
    g = global_model(4)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    assert state.next_action() == Push(g)


def test_nothing_happens_without_a_board_or_without_a_global_model() -> None:
    state = BridgeState("w")
    assert state.next_action() is None
    state.on_hello(hello())
    assert state.next_action() is None


def test_a_board_holding_the_current_global_model_is_left_alone() -> None:
    state = BridgeState("w")
    g = global_model(4)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    assert state.next_action() is None


def test_a_rebooted_board_gets_the_global_model_again() -> None:
    state = BridgeState("w")
    g = global_model(4)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_hello(hello(boot=2))
    assert state.next_action() == Push(g)


def test_a_new_global_model_is_pushed() -> None:
    state = BridgeState("w")
    state.on_global(global_model(4))
    state.on_hello(hello(boot=1))
    state.pushed(1, global_model(4))
    g5 = global_model(5)
    state.on_global(g5)
    assert state.next_action() == Push(g5)


def test_the_model_is_pulled_once_after_the_local_steps() -> None:
    # Prepare
    state = BridgeState("w")
    g = global_model(4, local_steps=3)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    # Execute / Assert: two steps are not enough, the third is.
    state.on_loss(loss(1, 4, 0.6))
    state.on_loss(loss(2, 4, 0.4))
    assert state.next_action() is None
    state.on_loss(loss(3, 4, 0.2))
    action = state.next_action()
    assert action == Pull(Held(1, 4, g.sha256, 3))
    summary = state.loss_summary()
    assert (summary.count, summary.last) == (3, 0.2)
    assert summary.mean == pytest.approx(0.4)
    state.pulled(action.held)
    state.on_loss(loss(4, 4))
    assert state.next_action() is None


def test_upload_now_pulls_the_model_after_one_step_on_the_requested_round() -> None:
    # Prepare: 10 local steps per round; the aggregator asks for round 5 (the one that starts
    # from global model 4, which the board holds) now
    state = BridgeState("w")
    g = global_model(4, local_steps=10)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_upload_now(5)
    # Execute / Assert: no step yet, nothing to upload; the first step is enough
    assert state.next_action() is None
    state.on_loss(loss(1, 4, 0.6))
    action = state.next_action()
    assert action == Pull(Held(1, 4, g.sha256, 10))
    state.pulled(action.held)  # once per boot and round, as always
    state.on_loss(loss(2, 4))
    assert state.next_action() is None


@pytest.mark.parametrize("asked", [4, 6, None])
def test_upload_now_for_another_round_changes_nothing(asked: int | None) -> None:
    state = BridgeState("w")
    g = global_model(4, local_steps=10)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_loss(loss(2, 4))
    state.on_upload_now(asked)
    assert state.next_action() is None


def test_steps_on_a_model_from_before_the_push_do_not_count() -> None:
    state = BridgeState("w")
    g = global_model(4, local_steps=2)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_loss(loss(7, 0))  # a step of the fresh boot model, reported late
    assert state.next_action() is None


def test_finished_local_steps_are_uploaded_before_a_newer_global_model_is_pushed() -> None:
    state = BridgeState("w")
    g = global_model(4, local_steps=1)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_loss(loss(1, 4))
    state.on_global(global_model(5))
    assert isinstance(state.next_action(), Pull)


def test_a_board_that_rebooted_after_its_steps_uploads_nothing() -> None:
    state = BridgeState("w")
    g = global_model(4, local_steps=1)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_loss(loss(1, 4))
    state.on_hello(hello(boot=2))  # the steps died with the old boot
    assert state.next_action() == Push(g)


def test_a_board_that_reconnects_after_its_steps_is_still_pulled() -> None:
    state = BridgeState("w")
    g = global_model(4, local_steps=3)
    state.on_global(g)
    state.on_hello(hello(boot=1))
    state.pushed(1, g)
    state.on_board_lost()
    state.on_hello(hello(boot=1, round=4, steps=3))  # same boot: trained while we were away
    assert isinstance(state.next_action(), Pull)


def test_a_global_model_for_another_feature_pipeline_is_never_pushed() -> None:
    state = BridgeState("w")
    state.on_global(global_model(4, pipeline="paper"))
    state.on_hello(hello(pipeline=2))
    assert state.next_action() is None
    assert state.problem is not None
    assert "'paper' feature pipeline" in state.problem


def _with_arch(h: Hello, arch: int, pipeline: int) -> Hello:
    return dataclasses.replace(h, arch=arch, pipeline=pipeline)


def test_a_global_model_of_another_family_is_never_pushed_and_both_are_named() -> None:
    state = BridgeState("w")
    state.on_global(global_model(4))  # the paper's network
    state.on_hello(_with_arch(hello(), arch=2, pipeline=3))  # a dscnn board
    assert state.next_action() is None
    assert state.problem == (
        "board 0011223344556677 runs the dscnn family (dscnn64-head-v1), the fleet runs the "
        "paper family (fc650-16-3-sigmoid-v1): flash the board with the fleet's family or give "
        "it a fleet of its own"
    )


def test_a_dscnn_board_gets_a_dscnn_global_model() -> None:
    state = BridgeState("w")
    head = contract.GlobalModel(
        round=2,
        params=families.DSCNN.init(),
        hyper=contract.HyperParams(lr=0.01, momentum=0.0, local_steps=3),
        pipeline="logmel40",
        arch=families.DSCNN.arch,
    )
    state.on_global(head)
    state.on_hello(_with_arch(hello(), arch=2, pipeline=3))
    action = state.next_action()
    assert isinstance(action, Push)
    assert action.model is head
    assert state.problem is None


def test_a_board_of_an_unknown_architecture_is_named() -> None:
    state = BridgeState("w")
    state.on_global(global_model(1))
    state.on_hello(_with_arch(hello(), arch=9, pipeline=2))
    assert state.next_action() is None
    assert state.problem is not None
    assert "reports unknown architecture id 9; known: paper" in state.problem
