"""The recorder and the report, fed with real contract payloads through a real Mosquitto."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import cast

import numpy as np
import paho.mqtt.client as paho
import pytest

from tinyfed import model
from tinyfed.cli import main as fleet_main
from tinyfed.data import dataset as ds
from tinyfed.fleet import report
from tinyfed.fleet.corpus import HeldOut
from tinyfed.fleet.recorder import Recorder
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import (
    GlobalModel,
    HyperParams,
    LossEvent,
    LossSummary,
    ModelUpdate,
    Participant,
    RoundEvent,
    Topics,
    WorkerStatus,
)
from tinyfed.mqtt.session import connect, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto

WORKERS = ("board-a", "board-b")


def held_out_set(n: int = 12) -> HeldOut:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((n, 16000)) * 3000).astype(np.int16)
    return HeldOut(
        ds.Dataset(
            audio=audio,
            labels=np.arange(n, dtype=np.int64) % 3,
            classes=("vermell", "verd", "blau"),
            split=np.array(["test"] * n, dtype=np.str_),
            voice=np.array([f"v{i}" for i in range(n)], dtype=np.str_),
            paths=tuple(f"x/{i}.wav" for i in range(n)),
            lengths=np.full(n, 16000, np.int64),
            root=Path("corpus"),
        )
    )


def publisher(broker: Mosquitto) -> paho.Client:
    url = parse_broker_url(broker.url)
    client = make_client(url, "test-fleet-publisher")
    connect(client, url)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    return client


def publish(client: paho.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def perturbed(params: model.F32, seed: int) -> model.F32:
    rng = np.random.default_rng(seed)
    return (params + rng.normal(0, 0.05, params.shape)).astype(np.float32)


def play_one_round(client: paho.Client, t: Topics) -> tuple[model.F32, list[model.F32]]:
    """A round as a fleet makes it: statuses, losses, two updates, the event, global 1."""
    hyper = HyperParams(0.3, 0.9, 3)
    g0 = model.init_params()
    publish(
        client, t.global_model, contract.encode_global(GlobalModel(0, g0, hyper, "paper")), True
    )
    updates = []
    for i, w in enumerate(WORKERS):
        status = WorkerStatus(w, "online", transport="serial:///dev/pts/9", pipeline="paper")
        publish(client, t.worker_status(w), contract.encode_worker_status(status), True)
        for step in range(1, 4):
            loss = LossEvent(
                w, step, 0.3 - 0.05 * step + 0.01 * i, step % 3, (0.1, 0.2, 0.7), 2, 0, time.time()
            )
            publish(client, t.worker_loss(w), contract.encode_loss(loss))
        params = perturbed(g0, i)
        updates.append(params)
        update = ModelUpdate(w, 0, 3, params, f"u{i}", "paper", loss=LossSummary(3, 0.2, 0.15))
        publish(client, t.worker_update(w), contract.encode_update(update))
    g1 = ((updates[0].astype(np.float64) + updates[1]) / 2).astype(np.float32)
    event = RoundEvent(
        round=1,  # round 1: from global model 0 to global model 1
        outcome="closed",
        strategy="fedavg",
        participants=tuple(Participant(w, f"u{i}", 3, 3.0, 0.2) for i, w in enumerate(WORKERS)),
        duration_s=1.5,
        loss_mean=0.2,
        global_sha256=model.sha256(g1),
    )
    publish(client, t.rounds, contract.encode_round_event(event))
    publish(
        client, t.global_model, contract.encode_global(GlobalModel(1, g1, hyper, "paper")), True
    )
    return g1, updates


@pytest.fixture
def recorded(broker: Mosquitto, fleet: str) -> tuple[Recorder, model.F32, list[model.F32]]:
    t = Topics(fleet)
    recorder = Recorder(parse_broker_url(broker.url), t, held_out=held_out_set())
    recorder.start()
    client = publisher(broker)
    try:
        g1, updates = play_one_round(client, t)
        publish(client, t.worker_loss("board-a"), b"{not json")  # a broken payload
        recorder.wait_for(
            lambda s: (
                s.latest_global is not None
                and s.latest_global.round == 1
                and s.rejected_payloads == 1
            ),
            timeout=10,
        )
    finally:
        client.disconnect()
        client.loop_stop()
        recorder.stop()
    return recorder, g1, updates


def test_recorder_keeps_every_loss_update_round_and_global(
    recorded: tuple[Recorder, model.F32, list[model.F32]],
) -> None:
    recorder, g1, _ = recorded
    snap = recorder.snapshot()
    assert [w.worker_id for w in snap.workers] == list(WORKERS)
    assert [w.steps for w in snap.workers] == [3, 3]
    assert snap.workers[0].state == "online"
    assert [g.round for g in snap.globals] == [0, 1]
    np.testing.assert_array_equal(snap.global_of(1).params, g1)  # type: ignore[union-attr]
    assert [r.round for r in snap.closed_rounds] == [1]
    assert {u.worker_id for u in snap.updates} == set(WORKERS)
    assert snap.rejected_payloads == 1


def test_recorder_scores_globals_and_updates_on_the_held_out_voices(
    recorded: tuple[Recorder, model.F32, list[model.F32]],
) -> None:
    recorder, g1, updates = recorded
    snap = recorder.snapshot()
    held = held_out_set()
    assert snap.global_of(1).accuracy == held.accuracy(g1, "paper")  # type: ignore[union-attr]
    by_worker = {u.worker_id: u.accuracy for u in snap.updates}
    assert by_worker["board-b"] == held.accuracy(updates[1], "paper")


def test_report_writes_global_bin_metrics_losses_and_figures(
    recorded: tuple[Recorder, model.F32, list[model.F32]], tmp_path: Path
) -> None:
    # Prepare
    recorder, g1, _ = recorded
    info = report.RunInfo(
        title="test run",
        strategy="fedavg",
        pipeline="paper",
        classes=("vermell", "verd", "blau"),
        non_iid=False,
        rounds=1,
        local_steps=3,
        boards=tuple({"worker": w, "name": w} for w in WORKERS),
        held_out_clips=12,
    )
    # Execute
    report.write(tmp_path, recorder.snapshot(), info, wall_time_s=1.0)
    # Assert
    assert (tmp_path / "global.bin").read_bytes() == model.to_bytes(g1)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["final"]["round"] == 1
    (r0,) = m["rounds"]
    assert r0["outcome"] == "closed"
    assert r0["round"] == r0["global_round"] == 1  # one numbering: round 1 made global 1
    assert [p["worker"] for p in r0["participants"]] == list(WORKERS)
    assert r0["accuracy"] == held_out_set().accuracy(g1, "paper")
    assert all(p["accuracy"] is not None for p in r0["participants"])
    losses = json.loads((tmp_path / "losses.json").read_text())
    assert [len(w["steps"]) for w in losses["workers"]] == [3, 3]
    for png in ("loss.png", "accuracy.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_plot_command_redraws_the_figures_of_a_recorded_run(
    recorded: tuple[Recorder, model.F32, list[model.F32]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder, _, _ = recorded
    info = report.RunInfo("t", "fedavg", "paper", (), False, 1, 3)
    report.write(tmp_path, recorder.snapshot(), info, plots=False)
    assert not (tmp_path / "loss.png").exists()
    assert fleet_main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "loss.png").exists()
    assert (tmp_path / "accuracy.png").exists()
    assert "round 1: closed, 2 participants" in capsys.readouterr().out


def test_plot_of_a_folder_without_a_run_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fleet_main(["plot", str(tmp_path)]) == 2
    assert "is not a recorded run" in capsys.readouterr().err


def test_monitor_records_a_fleet_from_its_topics(
    broker: Mosquitto, fleet: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the retained global model is on the broker before the monitor starts
    client = publisher(broker)
    t = Topics(fleet)
    hyper = HyperParams(0.3, 0.9, 3)
    g0 = model.init_params()
    publish(
        client, t.global_model, contract.encode_global(GlobalModel(0, g0, hyper, "paper")), True
    )
    client.disconnect()
    client.loop_stop()
    # Execute
    code = fleet_main(
        [
            "monitor",
            "--broker",
            broker.url,
            "--fleet",
            fleet,
            "--no-dashboard",
            "--duration",
            "1.0",
            "--record",
            str(tmp_path),
        ]
    )
    # Assert
    assert code == 0
    assert (tmp_path / "global.bin").read_bytes() == model.to_bytes(g0)
    assert json.loads((tmp_path / "metrics.json").read_text())["initial"]["round"] == 0


class _SlowHeldOut:
    """Scores like a first scoring of a real HeldOut (MFCCs of every clip): slowly."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.threads: list[str] = []

    def accuracy(self, params: model.F32, pipeline: str) -> float:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.release.wait(10)
        return 0.5


def test_the_recorder_scores_off_the_network_thread_which_keeps_receiving(
    broker: Mosquitto, fleet: str
) -> None:
    # Prepare: a recorder whose scoring blocks until released
    t = Topics(fleet)
    slow = _SlowHeldOut()
    recorder = Recorder(parse_broker_url(broker.url), t, held_out=cast(HeldOut, slow))
    recorder.start()
    client = publisher(broker)
    try:
        # Execute: a global model to score, then a loss event while the scoring runs
        g0 = GlobalModel(0, model.init_params(), HyperParams(0.3, 0.9, 3), "paper")
        publish(client, t.global_model, contract.encode_global(g0), True)
        assert slow.started.wait(10)
        loss = LossEvent("board-a", 1, 0.3, 0, (0.1, 0.2, 0.7), 2, 0, time.time())
        publish(client, t.worker_loss("board-a"), contract.encode_loss(loss))
        # Assert: paho's thread received the loss meanwhile and the connection stays up
        mqtt = recorder._mqtt
        assert mqtt is not None
        deadline = time.monotonic() + 10
        while len(mqtt.inbox) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(mqtt.inbox) == 1
        assert mqtt.is_connected()
        assert not any(name.startswith("paho") for name in slow.threads)
        slow.release.set()
        snap = recorder.wait_for(lambda s: s.latest_global is not None and s.workers != (), 10)
        assert snap.latest_global is not None
        assert snap.latest_global.accuracy == 0.5
        assert [w.steps for w in snap.workers] == [1]
    finally:
        slow.release.set()
        client.disconnect()
        client.loop_stop()
        recorder.stop()


def test_a_monitor_that_joins_late_shows_the_boards_own_step_count(
    broker: Mosquitto, fleet: str
) -> None:
    # A board at step 60 whose first 57 steps were before the monitor started
    t = Topics(fleet)
    recorder = Recorder(parse_broker_url(broker.url), t)
    recorder.start()
    client = publisher(broker)
    try:
        for step in (58, 59, 60):
            loss = LossEvent("late", step, 0.2, 0, (0.5, 0.2, 0.1), None, 4, time.time())
            publish(client, t.worker_loss("late"), contract.encode_loss(loss))
        recorder.wait_for(lambda s: bool(s.workers) and len(s.workers[0].losses) == 3, timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
        recorder.stop()
    (worker,) = recorder.snapshot().workers
    assert worker.steps == 60
