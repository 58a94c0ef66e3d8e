"""The gateway's Prometheus endpoint, scraped while a real gateway serves a virtual board."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.test_bridge import BOARD_ARGS, gateway_args, on_round
from tests.link_support import Gateway, Peer
from tinyfed import model
from tinyfed.testbed.broker import Mosquitto, free_port
from tinyfed.testbed.virtual_board import VirtualBoard


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as res:
        text = res.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_follow_the_board_link_and_the_broker(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare
    port = free_port()
    peer.publish_global(2, model.init_params(seed=2))
    with VirtualBoard(binary=binary, extra_args=BOARD_ARGS) as board:
        args = gateway_args(board, broker, fleet, "--worker-id", "b1", "--metrics", f":{port}")
        gw = Gateway(tmp_path, *args)
        try:
            # Execute: the gateway pushes the retained model down to the board
            peer.wait("status online with round 2", lambda p: on_round(p, 2))
            gw.wait_log("pushed global round 2")
            m = scrape(port)
        finally:
            assert gw.stop() == 0
    # Assert
    w = (("worker", "b1"),)
    assert m[("tinyfed_gateway_board_connected", w)] == 1
    assert m[("tinyfed_gateway_broker_connected", w)] == 1
    assert m[("tinyfed_gateway_mqtt_connections_total", w)] >= 1
    assert m[("tinyfed_gateway_link_round_trips_total", w)] > 0
    assert m[("tinyfed_gateway_link_bytes_total", (("direction", "out"), *w))] > model.MODEL_BYTES
    down = tuple(sorted((*w, ("what", "model down"))))
    assert m[("tinyfed_gateway_transfer_bytes", down)] == model.MODEL_BYTES
    assert 0 < m[("tinyfed_gateway_transfer_seconds", down)] < 30
    assert m[("tinyfed_gateway_transfer_retries", down)] >= 0
    assert m[("tinyfed_gateway_outbox_messages", w)] >= 0
