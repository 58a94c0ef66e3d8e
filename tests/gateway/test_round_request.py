"""A person at a board asks for a round: the board's LOG line becomes a round request on
MQTT (the compiled virtual board's scripted user holds D5 3.2 s; a real gateway; Mosquitto)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.gateway.test_bridge import BOARD_ARGS, gateway_args, on_round
from tests.link_support import Gateway, Peer
from tinyfed import model
from tinyfed.gateway.bridge import ROUND_REQUEST_EVENT
from tinyfed.mqtt import contract
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.virtual_board import VirtualBoard

DEVICE_H = Path(__file__).resolve().parents[2] / "firmware" / "core" / "device.h"


def test_the_gateway_matches_the_firmwares_round_request_marker() -> None:
    found = re.search(r'kRoundRequestEvent = "([^"]*)"', DEVICE_H.read_text())
    assert found is not None, f"{DEVICE_H} lost kRoundRequestEvent"
    assert found.group(1) == ROUND_REQUEST_EVENT


def test_a_board_that_asks_for_a_round_makes_its_gateway_publish_a_request(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: the scripted user waits for the model, then holds D5 past 3 s and releases
    peer.publish_global(2, model.init_params(seed=2))
    script = tmp_path / "user" / "script.txt"
    script.parent.mkdir()
    script.write_text("wait model\nrequest round\n")
    with VirtualBoard(script, binary=binary, extra_args=BOARD_ARGS) as board:
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "hall"))
        try:
            peer.wait("round 2 on the board", lambda p: on_round(p, 2))
            # Execute
            peer.wait("a round request", lambda p: len(p.of_kind("request")) >= 1, timeout=30)
            text = gw.wait_log("round request of worker hall published")
        finally:
            gw.stop()
    # Assert: one request, on the worker's own topic, and the board's line is still logged
    topics = contract.Topics(fleet)
    requests = [p for t, p in peer.messages if t == topics.worker_request("hall")]
    assert len(requests) == 1
    request = contract.decode_request(requests[0])
    assert (request.worker_id, request.kind) == ("hall", "round")
    assert request.time > 0
    assert "board: event round_request button=D5 held_ms=" in text
    assert " round=2 steps=0" in text
