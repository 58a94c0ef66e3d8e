"""The dashboard renders a recorded fleet to text: live frames and log lines."""

from __future__ import annotations

import io
import time

import numpy as np

from tinyfed import model
from tinyfed.fleet import dashboard as db
from tinyfed.fleet.recorder import FleetSnapshot, Recorder, WorkerView
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import (
    GlobalModel,
    HyperParams,
    LossEvent,
    ModelUpdate,
    Participant,
    RoundEvent,
    Topics,
    WorkerStatus,
)
from tinyfed.mqtt.session import parse_broker_url

T = Topics("dash")
HYPER = HyperParams(0.3, 0.9, 4)
INFO = db.DashboardInfo(
    title="tinyfed demo",
    broker="mqtt://127.0.0.1:1883",
    strategy="fedavg",
    pipeline="paper",
    rounds=3,
    local_steps=4,
    words={"board-a": "vermell, blau", "board-b": "verd"},
    held_out=None,
)


def recorded(rounds_closed: int) -> FleetSnapshot:
    """A fleet of two boards after ``rounds_closed`` rounds, decoded from contract payloads."""
    rec = Recorder(parse_broker_url("mqtt://127.0.0.1:1"), T)
    rec.set_names({"board-a": "board 1", "board-b": "board 2"})
    g = model.init_params()
    rec.handle(T.global_model, contract.encode_global(GlobalModel(0, g, HYPER, "paper")))
    for w in ("board-a", "board-b"):
        rec.handle(T.worker_status(w), contract.encode_worker_status(WorkerStatus(w, "online")))
    for r in range(rounds_closed):
        for i, w in enumerate(("board-a", "board-b")):
            for s in range(4):
                loss = 0.4 / (1 + r * 4 + s) + 0.02 * i
                event = LossEvent(w, r * 4 + s + 1, loss, s % 3, (0.2, 0.3, 0.5), None, r, 0.0)
                rec.handle(T.worker_loss(w), contract.encode_loss(event))
            update = ModelUpdate(w, r, 4, g, f"u{r}{i}", "paper")
            rec.handle(T.worker_update(w), contract.encode_update(update))
        round_event = RoundEvent(
            r + 1,  # round r + 1 turns global model r into global model r + 1
            "closed",
            "fedavg",
            tuple(
                Participant(w, f"u{r}{i}", 4, 4.0, 0.2)
                for i, w in enumerate(("board-a", "board-b"))
            ),
            duration_s=2.0,
        )
        rec.handle(T.rounds, contract.encode_round_event(round_event))
        rec.handle(T.global_model, contract.encode_global(GlobalModel(r + 1, g, HYPER, "paper")))
    return rec.snapshot()


def test_frame_shows_progress_each_boards_curve_and_what_it_hears() -> None:
    # Prepare
    snap = recorded(rounds_closed=2)
    # Execute
    frame = db.render(snap, INFO, width=80, now=snap.started + 75, color=False)
    # Assert
    lines = frame.splitlines()
    assert lines[0] == (
        "tinyfed demo · fleet dash · mqtt://127.0.0.1:1883 · fedavg · paper · 01:15"
    )
    assert "round 3 of 3" in lines[2]
    assert "board 1 … 0/4" in lines[2]
    assert "board 1 (board-a)  hears vermell, blau  online  step 8" in frame
    assert "board 2 (board-b)  hears verd  online  step 8" in frame
    # the averaging ticks every 4 steps under each curve
    assert "───┴───┴" in frame
    assert all(len(ln) <= 80 for ln in lines)
    assert "\x1b[" not in frame


def test_frame_with_held_out_accuracy_has_a_row_per_board_and_the_global() -> None:
    snap = recorded(rounds_closed=2)
    info = db.DashboardInfo(**{**INFO.__dict__, "held_out": 45})
    frame = db.render(snap, info, width=100, color=False)
    assert "held-out accuracy on 45 clips" in frame
    table = frame[frame.index("accuracy    start") :].splitlines()
    assert table[0].split() == ["accuracy", "start", "r1", "r2"]
    assert table[1].split()[0] == "global"
    assert table[2].split()[:2] == ["board", "1"]


def test_round_done_and_an_empty_fleet_render() -> None:
    done = db.render(recorded(rounds_closed=3), INFO, color=False)
    assert "round 3 of 3 done" in done
    empty = db.render(recorded(rounds_closed=0), INFO, color=False)
    assert "step 0" in empty


def test_curve_and_sparkline_use_eighth_blocks() -> None:
    assert db.sparkline([0.0, 0.5, 1.0], 1.0) == "▁▄█"
    rows = db.curve([0.0, 0.25, 0.5, 1.0], width=4, height=2, vmax=1.0)
    assert rows == ["   █", " ▄██"]
    assert db.bucket(list(range(10)), 5) == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_live_dashboard_redraws_in_place_with_ansi() -> None:
    out = io.StringIO()
    dash = db.Dashboard(INFO, out, live=True)
    dash.update(recorded(1), force=True)
    dash.update(recorded(2), force=True)
    dash.close()
    text = out.getvalue()
    assert text.startswith(db.HIDE_CURSOR + db.CLEAR + db.HOME)
    assert text.count(db.HOME) == 2
    assert text.endswith(db.SHOW_CURSOR)


def test_log_mode_prints_a_line_per_closed_round() -> None:
    # Prepare
    out = io.StringIO()
    dash = db.Dashboard(INFO, out, live=False, interval=3600)
    # Execute
    dash.update(recorded(1))
    dash.update(recorded(2))
    dash.update(recorded(2))
    # Assert
    lines = out.getvalue().splitlines()
    rounds = [ln for ln in lines if ln.startswith("round ")]
    assert rounds == [
        "round 1/3 closed in 2.0 s: board 1 (4 steps, loss 0.200), board 2 (4 steps, loss 0.200)",
        "round 2/3 closed in 2.0 s: board 1 (4 steps, loss 0.200), board 2 (4 steps, loss 0.200)",
    ]
    assert "\x1b[" not in out.getvalue()
    assert lines[1] == "progress: board 1 4 steps (loss 0.100), board 2 4 steps (loss 0.120)"


def test_snapshot_rendering_is_fast_enough_for_four_frames_a_second() -> None:
    snap = recorded(rounds_closed=3)
    t0 = time.perf_counter()
    for _ in range(20):
        db.render(snap, INFO)
    assert (time.perf_counter() - t0) / 20 < 0.05
    assert np.isfinite(snap.workers[0].losses[-1].loss)


def test_a_narrow_terminal_keeps_the_numbers_and_the_round_ticks() -> None:
    # Prepare: 200 steps (more than the columns), on a 60-column terminal
    losses = tuple(
        LossEvent("board-a", s, 0.5 / s, s % 3, (0.2, 0.3, 0.5), None, (s - 1) // 4, float(s))
        for s in range(1, 201)
    )
    worker = WorkerView("board-a", "board 1", losses=losses)
    snap = FleetSnapshot("dash", 0.0, (worker,), (), (), (), None, 0, True)
    # Execute
    frame = db.render(snap, INFO, width=60, now=10.0, color=False)
    # Assert: every line fits; the figures stay, the words go first
    lines = frame.splitlines()
    assert all(len(ln) <= 60 for ln in lines)
    head = next(ln for ln in lines if ln.startswith("board 1"))
    assert "step 200" in head
    assert "mean10 0.003" in head
    axis = next(ln for ln in lines if "└" in ln)
    assert axis.count("┴") >= 10  # an averaging point every 4 steps, drawn in its column
