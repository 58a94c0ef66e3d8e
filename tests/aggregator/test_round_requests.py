"""Round requests in the round state machine (a person held a board's D5 button): the round
closes now with a quorum, otherwise the gateways are asked to upload what they have."""

from __future__ import annotations

import numpy as np

from tests.aggregator.test_rounds import T0, TIMEOUT, machine, only, update, vec
from tinyfed.aggregator.rounds import (
    Accepted,
    RequestIgnored,
    RoundClosed,
    RoundFailed,
    UploadNow,
)


def test_a_request_with_a_quorum_closes_the_round_now_with_the_updates_it_has() -> None:
    # Prepare: 1 of 3 expected workers reported, the quorum is 1, the deadline is far
    m = machine(expect="a,b,c", min_workers=1)
    m.update_received(update("a", 2.0), T0 + 1)
    # Execute
    decisions = m.round_requested("c", T0 + 5)
    # Assert: closed as a deadline with quorum would, saying who asked
    (closed,) = only(decisions, RoundClosed)
    assert len(decisions) == 1
    assert closed.requested_by == "c"
    assert closed.model.round == 1
    np.testing.assert_allclose(closed.model.params, vec(2.0))
    assert [p.worker_id for p in closed.event.participants] == ["a"]
    assert closed.event.dropped == ("b", "c")
    assert closed.event.reason == "closed early at the request of c"
    assert closed.event.duration_s == 5.0
    assert (m.round, m.attempt, m.upload_now) == (1, 1, None)


def test_a_request_below_quorum_asks_the_gateways_to_upload_and_the_round_closes_as_usual() -> None:
    # Prepare
    m = machine(expect="a,b", min_workers=2)
    m.update_received(update("a", 1.0), T0 + 1)
    # Execute
    asked = m.round_requested("b", T0 + 2)
    # Assert: nothing closes; the open round is to be uploaded now
    assert asked == [UploadNow(round=0, attempt=1, worker_id="b")]
    assert (m.round, m.upload_now) == (0, 0)
    # b's gateway uploads its board's 3 steps: every expected worker reported, the round closes
    closing = m.update_received(update("b", 4.0, steps=3), T0 + 3)
    (closed,) = only(closing, RoundClosed)
    assert closed.requested_by == ""
    assert closed.event.reason == ""
    np.testing.assert_allclose(closed.model.params, vec((10 * 1.0 + 3 * 4.0) / 13), rtol=1e-6)
    assert (m.round, m.upload_now) == (1, None)


def test_a_request_before_any_update_asks_for_uploads() -> None:
    m = machine(online=("a", "b"))
    assert m.round_requested("a", T0 + 1) == [UploadNow(0, 1, "a")]
    assert m.upload_now == 0


def test_a_second_request_in_the_same_round_is_ignored_and_the_next_round_takes_one() -> None:
    # Prepare
    m = machine(expect="a,b", min_workers=2)
    m.round_requested("a", T0 + 1)
    # Execute
    again = m.round_requested("b", T0 + 2)
    # Assert
    assert again == [
        RequestIgnored(0, "b", "repeated", "round 0 was already requested: uploads are under way")
    ]
    assert (m.round, m.upload_now) == (0, 0)
    m.update_received(update("a", 1.0), T0 + 3)
    m.update_received(update("b", 1.0), T0 + 4)
    assert m.round == 1
    assert only(m.round_requested("b", T0 + 5), UploadNow) == [UploadNow(1, 1, "b")]


def test_a_failed_attempt_keeps_asking_for_uploads() -> None:
    m = machine(expect="a,b", min_workers=2)
    m.round_requested("a", T0 + 1)
    assert only(m.tick(T0 + TIMEOUT), RoundFailed)
    assert (m.round, m.attempt, m.upload_now) == (0, 2, 0)


def test_a_request_from_a_worker_outside_expect_changes_nothing() -> None:
    m = machine(expect="a,b", min_workers=1, online=("x",))
    m.update_received(update("a", 1.0), T0 + 1)
    decisions = m.round_requested("x", T0 + 2)
    assert decisions == [
        RequestIgnored(0, "x", "unknown_worker", "worker 'x' is not one of round 0's workers")
    ]
    assert (m.round, m.upload_now) == (0, None)


def test_without_expect_the_online_and_expected_workers_may_ask() -> None:
    # Prepare: a is online at the start; b comes online later; c never does
    m = machine(online=("a",), min_workers=2)
    m.worker_status("b", online=True)
    # Execute / Assert
    assert only(m.round_requested("c", T0 + 1), RequestIgnored)[0].kind == "unknown_worker"
    assert m.round_requested("b", T0 + 2) == [UploadNow(0, 1, "b")]
    m.update_received(update("a", 1.0), T0 + 3)
    closed = m.update_received(update("b", 1.0), T0 + 4)
    assert [type(d) for d in closed] == [Accepted, RoundClosed]
