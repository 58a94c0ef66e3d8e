"""The gateway as a process: a compiled virtual board on a real pty, a real Mosquitto.

A scripted MQTT peer plays the aggregator: it publishes a retained global model and records
what the gateway publishes (status, loss events, updates).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.link_support import Gateway, Peer, write_clip, write_script
from tinyfed import model
from tinyfed.data.wav import read_wav
from tinyfed.features import get_pipeline
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.virtual_board import VirtualBoard

BOARD_ARGS = ["--record-ms", "50"]


def gateway_args(board: VirtualBoard, broker: Mosquitto, fleet: str, *more: str) -> list[str]:
    return [
        "--device",
        f"serial://{board.port}",
        "--broker",
        broker.url,
        "--fleet",
        fleet,
        "--link-timeout",
        "0.3",
        *more,
    ]


def on_round(peer: Peer, round: int) -> bool:
    statuses = peer.statuses()
    return bool(statuses) and statuses[-1].model_round == round


def last_state(peer: Peer) -> str | None:
    statuses = peer.statuses()
    return statuses[-1].state if statuses else None


def applied(board: VirtualBoard, params: model.F32, round: int) -> bool:
    """Whether the board's log says it applied exactly ``params`` as the model of ``round``."""
    crc = f"{zlib.crc32(model.to_bytes(params)) & 0xFFFFFFFF:08x}"
    return any(f"model of round {round} applied (crc 0x{crc})" in ln for ln in board.log_lines())


def test_a_new_board_gets_the_retained_global_model_and_goes_online(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: the aggregator's model is retained on the broker before the board appears.
    g = peer.publish_global(5, model.init_params(seed=5))
    with VirtualBoard(binary=binary, extra_args=BOARD_ARGS) as board:
        # Execute: a gateway with no --worker-id names the worker after the board.
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet))
        try:
            worker = f"board-{board.board_id}"
            peer.wait(
                "status online with round 5",
                lambda p: any(
                    s.state == "online" and s.model_round == 5 and s.worker_id == worker
                    for s in p.statuses()
                ),
            )
            # Assert
            assert applied(board, g.params, 5)
            status = peer.statuses()[-1]
            assert status.board_id == board.board_id
            assert status.transport == f"serial://{board.port}"
            assert status.pipeline == "centroid"
            assert "pushed global round 5" in gw.wait_log("pushed global round 5")
            assert "model down: 41868 B in" in gw.text
        finally:
            assert gw.stop() == 0
    peer.wait("status offline", lambda p: last_state(p) == "offline")


def test_losses_are_forwarded_and_the_model_is_uploaded_after_the_local_steps(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: 3 local steps per round; the scripted user presses 4 times after a pause.
    words = ("vermell", "verd", "blau")
    g = peer.publish_global(7, model.init_params(seed=7), local_steps=3, classes=words)
    script = write_script(tmp_path / "user", presses=4, wait_model=True)
    with VirtualBoard(script, binary=binary, extra_args=BOARD_ARGS) as board:
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "kitchen"))
        try:
            # Execute
            peer.wait("an update", lambda p: len(p.of_kind("update")) >= 1, timeout=20)
            peer.wait("4 loss events", lambda p: len(p.of_kind("loss")) >= 4, timeout=20)
            gw.wait_log("delivered to the broker")
        finally:
            gw.stop()
    # Assert: one update, after exactly the local steps of round 7, with every loss event.
    (update,) = peer.updates()
    assert update.worker_id == "kitchen"
    assert update.base_round == 7
    assert update.local_steps == 3
    assert update.loss.count == 3
    assert len(update.upload_id) == 32
    assert not np.array_equal(update.params, g.params)
    losses = [e for e in peer.losses() if e.round == 7]
    assert [e.step for e in losses[:3]] == [1, 2, 3]
    assert update.loss.mean == pytest.approx(np.mean([e.loss for e in losses[:3]]), rel=1e-6)
    assert all(e.worker_id == "kitchen" and len(e.outputs) == 3 for e in losses)
    # the words travel with the global model: each loss event names its label and prediction
    assert all(e.word == words[e.label] for e in losses)
    assert all(e.heard == ("" if e.prediction is None else words[e.prediction]) for e in losses)


def test_every_new_global_model_is_pushed_down(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    peer.publish_global(1, model.init_params(seed=1))
    with VirtualBoard(binary=binary, extra_args=BOARD_ARGS) as board:
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "w1"))
        try:
            peer.wait("round 1 on the board", lambda p: on_round(p, 1))
            # Execute
            g2 = peer.publish_global(2, model.init_params(seed=2))
            # Assert
            peer.wait("round 2 on the board", lambda p: on_round(p, 2))
            assert applied(board, g2.params, 2)
        finally:
            gw.stop()


def test_a_killed_gateway_leaves_its_last_will_offline(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    with VirtualBoard(binary=binary, extra_args=BOARD_ARGS) as board:
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "w2"))
        try:
            peer.wait("online", lambda p: any(s.state == "online" for s in p.statuses()))
        finally:
            # Execute
            gw.kill()
        # Assert: the broker publishes the Will, retained.
        peer.wait("the Last Will", lambda p: last_state(p) == "offline")
    late = Peer(broker.url, fleet)
    try:
        late.wait("the retained status", lambda p: len(p.statuses()) == 1)
        assert late.statuses()[0].state == "offline"
    finally:
        late.close()


def test_the_board_trains_with_the_hyper_parameters_of_the_global_model(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: the board boots with lr 0.05; the global model says lr 0.3. The user presses
    # as soon as the model is applied ("wait model").
    g = peer.publish_global(4, model.init_params(seed=4), local_steps=1, lr=0.3, pipeline="paper")
    folder = tmp_path / "user"
    folder.mkdir()
    clip = write_clip(folder / "clip.wav", 1)
    script = folder / "script.txt"
    script.write_text(f"hold 30\nwait model\npress D3 {clip.name}\n")
    args = [*BOARD_ARGS, "--lr", "0.05", "--pipeline", "paper"]
    with VirtualBoard(script, binary=binary, extra_args=args) as board:
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "w2"))
        try:
            # Execute
            peer.wait("an update", lambda p: len(p.of_kind("update")) >= 1, timeout=20)
        finally:
            gw.stop()
    # Assert: the uploaded model is exactly one step at lr 0.3 on that clip.
    (update,) = peer.updates()
    x = get_pipeline("paper").compute(read_wav(clip))
    trainer = model.Trainer(g.params, lr=0.3, momentum=0.9)
    trainer.step(x, 1)
    np.testing.assert_allclose(update.params, trainer.params, atol=1e-5, rtol=0)
