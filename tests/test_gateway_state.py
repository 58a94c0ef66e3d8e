"""The gateway's decisions, buffer, spool and settings, without a board or a broker."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from tinyfed import model
from tinyfed.bench.link import Exchange, gatt_ops, usb_ms
from tinyfed.cli import build_parser
from tinyfed.errors import UsageError
from tinyfed.gateway import cli as gateway_cli
from tinyfed.gateway.bridge import BridgeState, Held, Outbox, Outgoing, Pull, Push
from tinyfed.gateway.settings import GatewaySettings
from tinyfed.gateway.uplink import Uplink
from tinyfed.link.client import Hello, LossReport
from tinyfed.mqtt import contract
from tinyfed.mqtt.session import parse_broker_url


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


# ----------------------------------------------------------------------------- settings, CLI


def settings(**changes: object) -> GatewaySettings:
    base: dict[str, object] = {
        "device": "serial:///dev/ttyACM0",
        "broker": parse_broker_url("mqtt://localhost"),
        "fleet": "demo",
    }
    base.update(changes)
    return GatewaySettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "com3"}, "device URL 'com3'"),
        ({"fleet": "a/b"}, "invalid fleet name"),
        ({"worker_id": "bad id"}, "invalid worker id"),
        ({"buffer": 1}, "--buffer must be at least 10"),
        ({"link_timeout": 0}, "--link-timeout"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_value(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        settings(**changes)


def test_flags_fall_back_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYFED_DEVICE", "tcp://10.0.0.7:4000")
    monkeypatch.setenv("TINYFED_BROKER", "mqtts://broker.lan")
    monkeypatch.setenv("TINYFED_FLEET", "kitchen")
    monkeypatch.setenv("TINYFED_MQTT_PASSWORD", "s3cret")
    args = build_parser().parse_args(["gateway", "--username", "gw1"])
    s = GatewaySettings.from_args(args)
    assert (s.device, s.fleet) == ("tcp://10.0.0.7:4000", "kitchen")
    assert (s.broker.tls, s.broker.port, s.broker.username) == (True, 8883, "gw1")
    assert s.broker.password == "s3cret"


def test_a_missing_device_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYFED_DEVICE", raising=False)
    args = build_parser().parse_args(["gateway", "--broker", "mqtt://x", "--fleet", "f"])
    with pytest.raises(UsageError, match="--device is required"):
        GatewaySettings.from_args(args)


def test_gateway_help_teaches_one_gateway_per_board_over_serial_ble_and_tcp() -> None:
    parser = argparse.ArgumentParser(prog="tinyfed")
    sub = parser.add_subparsers()
    gateway_cli.register(sub)
    text = sub.choices["gateway"].format_help()
    for needle in ("one gateway per board", "serial://auto", "ble://", "tcp://", "--spool"):
        assert needle.lower() in text.lower()


# ----------------------------------------------------------------------------- bench figures


def test_usb_and_ble_estimates_count_packets_frames_and_gatt_operations() -> None:
    # One window of 8 full frames out and a 12-byte acknowledgement back.
    window = [Exchange(out=8 * 242, into=12)]
    assert usb_ms(window) == 2  # 31 + 1 packets: two 1 ms frames of 19
    assert gatt_ops(window) == (8, 1)  # 1,936 B in 244-byte writes, one notification


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

    # Execute and assert
    uplink._on_message(topics.aggregator_status, status("offline", 1))
    assert uplink.aggregator_offline
    assert [m.key for m in box.awaiting.values()] == ["u1"]  # nothing re-sent while offline
    uplink._on_message(topics.aggregator_status, status("online", 1))
    assert not uplink.aggregator_offline
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
