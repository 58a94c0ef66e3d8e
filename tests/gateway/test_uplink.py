"""The gateway's MQTT side without a broker: the outbox (buffer, spool, resends) and the uplink's
answers to the aggregator's status and to global models."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tinyfed import model
from tinyfed.gateway.outbox import Outbox, Outgoing
from tinyfed.gateway.uplink import Uplink
from tinyfed.mqtt import contract
from tinyfed.mqtt.session import parse_broker_url

# ----------------------------------------------------------------------------- outbox


def message(kind: str, key: str) -> Outgoing:
    return Outgoing(f"t/{kind}", key.encode(), kind, key)  # type: ignore[arg-type]


def test_a_full_buffer_drops_the_oldest_loss_event_first_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = Outbox(limit=3)
    box.add(message("loss", "loss-1"))
    box.add(message("update", "u1"))
    box.add(message("loss", "loss-2"))
    with caplog.at_level(logging.WARNING):
        box.add(message("loss", "loss-3"))
    assert [m.key for m in box.queued] == ["u1", "loss-2", "loss-3"]
    assert box.dropped == 1
    assert "MQTT buffer full (3 messages" in caplog.text
    assert "dropped loss loss-1" in caplog.text


def test_a_buffer_full_of_updates_drops_the_oldest_update() -> None:
    box = Outbox(limit=2)
    for key in ("u1", "u2", "u3"):
        box.add(message("update", key))
    assert [m.key for m in box.queued] == ["u2", "u3"]


def test_messages_stay_until_acknowledged_and_in_flight_is_bounded() -> None:
    box = Outbox(limit=100)
    for i in range(30):
        box.add(message("loss", f"loss-{i}"))
    handed: list[Outgoing] = []
    while (m := box.take()) is not None:
        box.handed(m, len(handed) + 1)
        handed.append(m)
    assert len(handed) == 20
    assert len(box) == 30
    assert box.acked(1) is handed[0]
    assert box.acked(1) is None
    assert len(box) == 29


def update_payload(upload_id: str) -> bytes:
    return contract.encode_update(
        contract.ModelUpdate(
            worker_id="w",
            base_round=1,
            local_steps=3,
            params=model.init_params(),
            upload_id=upload_id,
            pipeline="centroid",
        )
    )


def test_spooled_updates_come_back_after_a_restart_and_leave_once_receipted(
    tmp_path: Path,
) -> None:
    # Prepare
    first = Outbox(limit=10, spool=tmp_path)
    first.add(Outgoing("t/w/update", update_payload("abc"), "update", "abc"))
    first.add(Outgoing("t/w/loss", b"{}", "loss", "loss-1"))  # losses are not spooled
    # Execute
    second = Outbox(limit=10, spool=tmp_path)
    assert second.load_spool() == 1
    msg = second.take()
    assert msg is not None
    second.handed(msg, 7)
    second.acked(7)
    # Assert: the broker's PUBACK is not delivery; the aggregator's receipt is
    assert (msg.topic, msg.key, msg.base_round) == ("t/w/update", "abc", 1)
    assert len(list((tmp_path / "updates").iterdir())) == 2
    assert second.confirmed("abc") is msg
    assert list((tmp_path / "updates").iterdir()) == []


def test_an_update_without_receipt_is_sent_again_with_backoff_until_its_round_is_over() -> None:
    # Prepare
    box = Outbox(limit=10, resend_min=10.0, resend_max=25.0)
    box.add(Outgoing("t/w/update", b"u", "update", "u1", base_round=3))
    sends: list[float] = []
    # Execute: PUBACKs at t=0, then each time it is queued again; no receipt ever comes
    now = 0.0
    for _ in range(4):
        msg = box.take()
        assert msg is not None
        box.handed(msg, 1)
        box.acked(1, now)
        sends.append(now)
        while not box.due(now):
            now += 1.0
    # Assert: waits of 10, 20, then capped at 25 s; a newer global model ends it
    assert sends == [0.0, 10.0, 30.0, 55.0]
    assert box.resent == 4
    assert [m.key for m in box.expire(4)] == ["u1"]
    assert len(box) == 0


def test_a_receipt_or_a_newer_round_ends_an_update_wherever_it_waits() -> None:
    box = Outbox(limit=10)
    box.add(Outgoing("t/w/update", b"a", "update", "a", base_round=1))
    box.add(Outgoing("t/w/update", b"b", "update", "b", base_round=2))
    box.add(Outgoing("t/w/update", b"c", "update", "c", base_round=2))
    first = box.take()
    assert first is not None
    box.handed(first, 9)  # "a" in flight, "b" and "c" queued
    assert box.confirmed("b") is not None
    assert box.confirmed("b") is None  # a retained receipt seen again changes nothing
    assert [m.key for m in box.expire(2)] == ["a"]
    assert [m.key for m in box.updates()] == ["c"]


def test_an_unreadable_spool_file_is_moved_aside(tmp_path: Path) -> None:
    box = Outbox(limit=10, spool=tmp_path)
    bad = tmp_path / "updates" / "0001-x.msgpack"
    bad.write_bytes(b"junk")
    bad.with_suffix(".topic").write_text("t/w/update")
    assert box.load_spool() == 0
    assert bad.with_suffix(".bad").exists()


def test_the_uplink_re_sends_when_the_aggregator_comes_back_and_waits_while_it_is_offline() -> None:
    # Prepare: an update the broker acknowledged, awaiting its receipt
    topics = contract.Topics("demo")
    box = Outbox(limit=10, resend_min=1.0)
    box.add(Outgoing(topics.worker_update("w"), b"u", "update", "u1", base_round=0))
    msg = box.take()
    assert msg is not None
    box.handed(msg, 1)
    box.acked(1)
    uplink = Uplink(
        parse_broker_url("mqtt://localhost"),
        topics,
        "w",
        box,
        status=lambda state: contract.WorkerStatus("w", state),
        on_global=lambda g: None,
    )

    def status(state: str, attempt: int) -> bytes:
        return contract.encode_aggregator_status(
            contract.AggregatorStatus(state=state, round=0, attempt=attempt)  # type: ignore[arg-type]
        )

    def offline() -> bool:  # read afresh each time (mypy would keep an attribute narrowed)
        return uplink.aggregator_offline

    # Execute and assert
    uplink._on_message(topics.aggregator_status, status("offline", 1))
    assert offline()
    assert [m.key for m in box.awaiting.values()] == ["u1"]  # nothing re-sent while offline
    uplink._on_message(topics.aggregator_status, status("online", 1))
    assert not offline()
    assert [m.key for m in box.queued] == ["u1"]  # back online: sent again at once
    msg = box.take()
    assert msg is not None
    box.handed(msg, 2)
    box.acked(2)
    uplink._on_message(topics.aggregator_status, status("online", 1))  # the same status again
    assert not box.queued
    uplink._on_message(topics.aggregator_status, status("online", 2))  # a new attempt asks
    assert [m.key for m in box.queued] == ["u1"]
    receipt = contract.Receipt("w", "u1", 0, "accepted")
    uplink._on_message(topics.worker_receipt("w"), contract.encode_receipt(receipt))
    assert len(box) == 0
    assert uplink.receipts["u1"] == receipt


def test_the_uplink_ignores_an_older_global_model_unless_the_fleet_started_over() -> None:
    # A broker restored from an older save may hand back global 7 after 9 for a moment.
    topics = contract.Topics("demo")
    seen: list[int] = []
    uplink = Uplink(
        parse_broker_url("mqtt://localhost"),
        topics,
        "w",
        Outbox(limit=10),
        status=lambda state: contract.WorkerStatus("w", state),
        on_global=lambda g: seen.append(g.round),
    )

    def global_model(round_: int, created: float) -> bytes:
        g = contract.GlobalModel(
            round_, model.init_params(), contract.HyperParams(), "centroid", created=created
        )
        return contract.encode_global(g)

    uplink._on_message(topics.global_model, global_model(9, 900.0))
    uplink._on_message(topics.global_model, global_model(7, 700.0))  # the stale save
    uplink._on_message(topics.global_model, global_model(9, 900.0))  # republished
    uplink._on_message(topics.global_model, global_model(0, 2000.0))  # a new fleet database
    assert seen == [9, 9, 0]
