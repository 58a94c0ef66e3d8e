"""The round state machine, driven with an injected clock (no sockets)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np
import pytest

from tinyfed import model
from tinyfed.aggregator.rounds import (
    Accepted,
    Counted,
    Decision,
    Duplicate,
    Rejected,
    RoundClosed,
    RoundFailed,
    RoundMachine,
    RoundPolicy,
)
from tinyfed.aggregator.strategies import Strategy
from tinyfed.mqtt.contract import GlobalModel, HyperParams, LossSummary, ModelUpdate

T0 = 1000.0
TIMEOUT = 60.0


def vec(value: float) -> np.ndarray:
    return np.full(model.N_PARAMS, value, np.float32)


def global_model(round_: int = 0, value: float = 0.0) -> GlobalModel:
    return GlobalModel(round=round_, params=vec(value), hyper=HyperParams(), pipeline="centroid")


def update(
    worker: str,
    value: float,
    *,
    steps: int = 10,
    base: int = 0,
    upload: str | None = None,
    loss: float | None = 0.5,
) -> ModelUpdate:
    return ModelUpdate(
        worker_id=worker,
        base_round=base,
        local_steps=steps,
        params=vec(value),
        upload_id=upload or f"{worker}-r{base}",
        pipeline="centroid",
        loss=LossSummary(count=steps, mean=loss, last=loss),
    )


def machine(
    *,
    expect: str | None = None,
    min_workers: int = 1,
    online: tuple[str, ...] = (),
    strategy: Strategy | None = None,
) -> RoundMachine:
    return RoundMachine(
        policy=RoundPolicy(
            min_workers=min_workers,
            expect=frozenset(expect.split(",")) if expect else None,
            timeout_s=TIMEOUT,
        ),
        strategy=strategy or Strategy("fedavg"),
        hyper=HyperParams(),
        current=global_model(),
        now=T0,
        online=online,
    )


D = TypeVar("D")


def only(decisions: list[Decision], kind: type[D]) -> list[D]:
    return [d for d in decisions if isinstance(d, kind)]


def test_round_closes_as_soon_as_every_expected_worker_has_reported() -> None:
    # Prepare
    m = machine(expect="a,b")
    # Execute
    first = m.update_received(update("a", 1.0, steps=10), T0 + 1)
    second = m.update_received(update("b", 4.0, steps=5), T0 + 2)
    # Assert
    assert [type(d) for d in first] == [Accepted]
    closed = only(second, RoundClosed)[0]
    assert closed.model.round == 1
    np.testing.assert_allclose(closed.model.params, vec((10 * 1.0 + 5 * 4.0) / 15), rtol=1e-6)
    assert [p.worker_id for p in closed.event.participants] == ["a", "b"]
    assert [p.weight for p in closed.event.participants] == [10.0, 5.0]
    assert closed.event.outcome == "closed"
    assert closed.event.dropped == ()
    assert closed.event.duration_s == pytest.approx(2.0)
    assert closed.event.global_sha256 == closed.model.sha256
    assert (m.round, m.attempt, m.reported) == (1, 1, ())


def test_round_waits_for_the_rest_of_the_expected_workers_before_its_deadline() -> None:
    m = machine(expect="a,b")
    m.update_received(update("a", 1.0), T0 + 1)
    assert m.tick(T0 + TIMEOUT - 0.1) == []
    assert m.round == 0


def test_round_closes_at_the_deadline_with_a_quorum_and_lists_the_dropped() -> None:
    # Prepare
    m = machine(expect="a,b,c", min_workers=2)
    m.update_received(update("a", 1.0), T0 + 1)
    m.update_received(update("b", 3.0), T0 + 2)
    # Execute
    decisions = m.tick(T0 + TIMEOUT)
    # Assert
    closed = only(decisions, RoundClosed)[0]
    assert closed.event.dropped == ("c",)
    np.testing.assert_allclose(closed.model.params, vec(2.0))


def test_round_below_quorum_fails_and_keeps_the_global_model() -> None:
    # Prepare
    m = machine(expect="a,b", min_workers=2)
    m.update_received(update("a", 1.0), T0 + 1)
    # Execute
    decisions = m.tick(T0 + TIMEOUT)
    # Assert
    failed = only(decisions, RoundFailed)[0]
    assert failed.event.outcome == "failed"
    assert "1 of at least 2" in failed.event.reason
    assert failed.event.dropped == ("b",)
    assert failed.event.global_sha256 == global_model().sha256
    assert (m.round, m.attempt) == (0, 2)
    assert failed.next.attempt == 2
    np.testing.assert_array_equal(m.current.params, vec(0.0))


def test_failed_round_keeps_accepted_updates_for_its_retry() -> None:
    # Prepare
    m = machine(expect="a,b", min_workers=2)
    m.update_received(update("a", 1.0), T0 + 1)
    m.tick(T0 + TIMEOUT)
    # Execute
    decisions = m.update_received(update("b", 3.0), T0 + TIMEOUT + 5)
    # Assert
    closed = only(decisions, RoundClosed)[0]
    assert closed.attempt == 2
    assert [p.worker_id for p in closed.event.participants] == ["a", "b"]
    np.testing.assert_allclose(closed.model.params, vec(2.0))


def test_retry_has_a_new_deadline() -> None:
    m = machine(expect="a,b", min_workers=2)
    m.tick(T0 + TIMEOUT)
    assert m.tick(T0 + TIMEOUT + 1) == []
    assert only(m.tick(T0 + 2 * TIMEOUT), RoundFailed)[0].attempt == 2


def test_expected_workers_are_those_online_when_the_round_opens() -> None:
    # Prepare
    m = machine(online=("a", "b"))
    # Execute
    after_a = m.update_received(update("a", 1.0), T0 + 1)
    after_b = m.update_received(update("b", 1.0), T0 + 2)
    # Assert
    assert only(after_a, RoundClosed) == []
    assert len(only(after_b, RoundClosed)) == 1


def test_worker_coming_online_during_a_round_is_waited_for() -> None:
    m = machine(online=("a",))
    m.worker_status("b", online=True)
    assert only(m.update_received(update("a", 1.0), T0 + 1), RoundClosed) == []
    assert m.expected == {"a", "b"}


def test_worker_going_offline_stays_expected_until_the_deadline() -> None:
    # Prepare
    m = machine(online=("a", "b"))
    m.worker_status("b", online=False)
    # Execute
    early = m.update_received(update("a", 1.0), T0 + 1)
    late = m.tick(T0 + TIMEOUT)
    # Assert
    assert only(early, RoundClosed) == []
    assert only(late, RoundClosed)[0].event.dropped == ("b",)


def test_next_round_expects_the_workers_online_at_its_start() -> None:
    # Prepare
    m = machine(online=("a", "b"))
    m.update_received(update("a", 1.0), T0 + 1)
    m.worker_status("b", online=False)
    # Execute
    m.tick(T0 + TIMEOUT)
    # Assert
    assert m.round == 1
    assert m.expected == {"a"}


def test_round_with_nobody_expected_waits_for_its_deadline() -> None:
    m = machine()
    assert only(m.update_received(update("a", 1.0), T0 + 1), RoundClosed) == []
    assert len(only(m.tick(T0 + TIMEOUT), RoundClosed)) == 1


def test_stale_update_is_rejected_naming_both_rounds() -> None:
    # Prepare
    m = machine(expect="a,b")
    # Execute
    decisions = m.update_received(update("a", 1.0, base=3), T0 + 1)
    # Assert
    rejected = only(decisions, Rejected)[0].rejection
    assert "based on global model 3, the open round 1 starts from global model 0" in (
        rejected.reason
    )
    assert m.reported == ()


def test_redelivered_upload_is_confirmed_again_and_counted_once() -> None:
    # A gateway re-sends an update until it sees the receipt: the copy changes nothing.
    m = machine(expect="a,b")
    m.update_received(update("a", 1.0, upload="u1"), T0 + 1)
    decisions = m.update_received(update("a", 1.0, upload="u1"), T0 + 2)
    assert decisions == [Duplicate(0, 1, "a", "u1")]
    assert len(m.participants) == 1
    assert m.rejected_count == 0


def test_an_upload_id_counted_for_another_worker_is_rejected() -> None:
    m = machine(expect="a,b")
    m.update_received(update("a", 1.0, upload="u1"), T0 + 1)
    decisions = m.update_received(update("b", 1.0, upload="u1"), T0 + 2)
    assert "duplicate upload 'u1'" in only(decisions, Rejected)[0].rejection.reason
    assert len(m.participants) == 1


def test_second_update_from_a_counted_worker_is_rejected() -> None:
    # Prepare
    m = machine(expect="a,b")
    m.update_received(update("a", 1.0, upload="u1"), T0 + 1)
    # Execute
    decisions = m.update_received(update("a", 9.0, upload="u2"), T0 + 2)
    m.update_received(update("b", 3.0), T0 + 3)
    # Assert
    assert (
        "already counted in round 1 (upload 'u1')" in only(decisions, Rejected)[0].rejection.reason
    )
    np.testing.assert_allclose(m.current.params, vec(2.0))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"arch": "fc650-32-3-relu"}, "architecture 'fc650-32-3-relu'"),
        ({"pipeline": "paper"}, "feature pipeline 'paper', expected 'centroid'"),
        ({"params": vec(np.nan)}, "non-finite"),
        ({"params": np.zeros(10, np.float32)}, "shape"),
    ],
)
def test_incompatible_update_is_rejected_and_changes_nothing(
    change: dict[str, Any], reason: str
) -> None:
    # Prepare
    m = machine(expect="a")
    bad = dataclasses.replace(update("a", 1.0), **change)
    # Execute
    decisions = m.update_received(bad, T0 + 1)
    # Assert
    assert [type(d) for d in decisions] == [Rejected]
    assert isinstance(decisions[0], Rejected)
    assert reason in decisions[0].rejection.reason
    assert m.reported == ()


def test_update_on_another_workers_topic_is_rejected() -> None:
    m = machine()
    decisions = m.update_received(update("a", 1.0), T0 + 1, sender="b")
    assert "published on the topic of 'b'" in only(decisions, Rejected)[0].rejection.reason


def test_worker_outside_expect_is_rejected() -> None:
    m = machine(expect="a")
    decisions = m.update_received(update("mallory", 1.0), T0 + 1)
    assert "not one of the expected workers" in only(decisions, Rejected)[0].rejection.reason


def test_self_reported_steps_are_capped_at_the_rounds_local_steps() -> None:
    # Prepare
    m = machine(expect="a,b")
    # Execute
    m.update_received(update("a", 0.0, steps=10), T0 + 1)
    closed = only(m.update_received(update("b", 100.0, steps=1_000_000), T0 + 2), RoundClosed)[0]
    # Assert: b weighs as much as a full honest round, no more
    assert [p.weight for p in closed.event.participants] == [10.0, 10.0]
    assert closed.event.participants[1].local_steps == 1_000_000
    np.testing.assert_allclose(closed.model.params, vec(50.0))


def test_worker_with_zero_steps_counts_with_weight_zero() -> None:
    m = machine(expect="a,b")
    m.update_received(update("a", 2.0, steps=4), T0 + 1)
    closed = only(m.update_received(update("b", 99.0, steps=0), T0 + 2), RoundClosed)[0]
    assert closed.event.participants[1].weight == 0.0
    np.testing.assert_allclose(closed.model.params, vec(2.0))


def test_malformed_payload_and_rejections_appear_in_the_round_event() -> None:
    # Prepare
    m = machine(expect="a")
    m.malformed("a", "model update: sha256 does not match the parameters", T0 + 1)
    m.update_received(update("a", 1.0, base=7), T0 + 2)
    # Execute
    closed = only(m.update_received(update("a", 1.0), T0 + 3), RoundClosed)[0]
    # Assert
    reasons = [r.reason for r in closed.event.rejected]
    assert "sha256 does not match" in reasons[0]
    assert "stale" in reasons[1]
    assert closed.metrics["rejected"] == 2


def test_round_event_summarises_the_participants_loss() -> None:
    m = machine(expect="a,b")
    m.update_received(update("a", 1.0, loss=0.2), T0 + 1)
    closed = only(m.update_received(update("b", 1.0, loss=0.4), T0 + 2), RoundClosed)[0]
    assert closed.event.loss_mean == pytest.approx(0.3)
    assert closed.metrics["loss_min"] == pytest.approx(0.2)
    assert closed.metrics["loss_max"] == pytest.approx(0.4)


def test_new_global_carries_the_aggregators_hyper_parameters() -> None:
    hyper = HyperParams(lr=0.1, momentum=0.5, local_steps=20)
    m = RoundMachine(
        policy=RoundPolicy(expect=frozenset({"a"}), timeout_s=TIMEOUT),
        strategy=Strategy(),
        hyper=hyper,
        current=global_model(),
        now=T0,
    )
    closed = only(m.update_received(update("a", 1.0), T0 + 1), RoundClosed)[0]
    assert closed.model.hyper == hyper
    assert closed.model.pipeline == "centroid"


def test_fedavgm_carries_its_server_momentum_into_the_next_round() -> None:
    # Prepare
    m = machine(expect="a", strategy=Strategy("fedavgm", server_lr=1.0, server_momentum=0.5))
    # Execute: the worker moves the model by +1 in each of two rounds
    r1 = only(m.update_received(update("a", 1.0, base=0), T0 + 1), RoundClosed)[0]
    r2 = only(m.update_received(update("a", 2.0, base=1, upload="x"), T0 + 2), RoundClosed)[0]
    # Assert: round 1 moves by 1; round 2 by 1 + 0.5 * 1
    np.testing.assert_allclose(r1.model.params, vec(1.0))
    np.testing.assert_allclose(r2.model.params, vec(2.5))


def test_machine_restored_from_counted_updates_ends_where_an_uninterrupted_one_does() -> None:
    # Prepare: an uninterrupted round of a, b, c
    whole = machine(expect="a,b,c")
    whole.update_received(update("a", 1.0, steps=3), T0 + 1)
    accepted = only(whole.update_received(update("b", 5.0, steps=7), T0 + 2), Accepted)[0]
    expected = only(whole.update_received(update("c", 2.0), T0 + 3), RoundClosed)[0]
    stored = expected.event.participants[:2]
    counted = [Counted(p, vec(v), norm=0.0) for p, v in zip(stored, (1.0, 5.0), strict=True)]
    # Execute: a machine restarted after a and b were stored
    restored = RoundMachine(
        policy=RoundPolicy(expect=frozenset("abc"), timeout_s=TIMEOUT),
        strategy=Strategy(),
        hyper=HyperParams(),
        current=global_model(),
        now=T0 + 100,
        first_opened=T0,
        counted=counted,
    )
    again = restored.update_received(update("b", 5.0, steps=7), T0 + 101)
    closed = only(restored.update_received(update("c", 2.0), T0 + 102), RoundClosed)[0]
    # Assert
    assert accepted.weight == 7.0
    assert only(again, Duplicate) == [Duplicate(0, 1, "b", "b-r0")]
    np.testing.assert_array_equal(closed.model.params, expected.model.params)
    assert closed.event.duration_s == pytest.approx(102.0)
