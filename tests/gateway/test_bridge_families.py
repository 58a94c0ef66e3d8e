"""The real gateway between a dscnn-family board and a dscnn fleet's aggregator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.aggregator.test_service import aggregator_in_process, flags
from tests.link_support import Gateway, write_script
from tinyfed.aggregator.store import Store
from tinyfed.gateway.bridge import Bridge
from tinyfed.gateway.settings import GatewaySettings
from tinyfed.gateway.simulated import db_round
from tinyfed.model import families
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.fake_board import FakeBoard
from tinyfed.testbed.virtual_board import VirtualBoard

WAIT_S = 30.0


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_dscnn_board_trains_uploads_its_head_and_gets_the_next_global_model(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: a dscnn fleet of one worker, 3 local steps; a dscnn fake board behind a gateway
    db = tmp_path / "agg.db"
    argv = flags(broker.url, fleet, db, "--model", "dscnn", "--expect", "w1")
    argv += ["--local-steps", "3", "--clip-norm", "off"]
    board = FakeBoard(family="dscnn")
    gateway = GatewaySettings(
        device="tcp://127.0.0.1:1",  # never opened: the transport is the fake board
        broker=parse_broker_url(broker.url),
        fleet=fleet,
        worker_id="w1",
        link_timeout=0.3,
    )
    bridge = Bridge(gateway, transport_factory=lambda url: board)
    rng = np.random.default_rng(0)

    async def scenario() -> None:
        task = asyncio.create_task(bridge.run())
        try:
            await _until(lambda: board.models_applied >= 1, "global model 0 on the board")
            # Execute: the user presses the buttons three times
            for label in (0, 1, 2):
                board.press(rng.integers(-128, 128, 2000), label)
            await _until(lambda: board.model_round == 1, "global model 1 on the board")
        finally:
            bridge.stop()
            await task

    with aggregator_in_process(argv):
        asyncio.run(scenario())
    # Assert: round 0's only update was the board's trained head; round 1 is it, back on the board
    with Store(db) as store:
        g1, _ = store.global_model(1)
        rounds = store.meta()
    assert rounds["model"] == "dscnn"
    assert g1.arch == families.DSCNN.arch
    assert g1.params.shape == (195,)
    assert np.any(g1.params != 0)
    np.testing.assert_array_equal(board.params, g1.params)
    assert bridge.uploads == 1


def test_the_compiled_dscnn_board_through_the_gateway_to_a_dscnn_aggregator(
    binary: Path, broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    """The firmware's dscnn family (the virtual board), the gateway process, the aggregator:
    the board's trained 780-byte head is averaged and comes back as global model 1."""
    db = tmp_path / "agg.db"
    argv = flags(broker.url, fleet, db, "--model", "dscnn", "--expect", "kitchen")
    argv += ["--local-steps", "3", "--clip-norm", "off"]
    script = write_script(tmp_path / "user", presses=3, wait_model=True)
    with (
        aggregator_in_process(argv),
        VirtualBoard(
            script, binary=binary, extra_args=["--record-ms", "50"], family="dscnn"
        ) as board,
    ):
        gw = Gateway(
            tmp_path,
            *("--device", f"serial://{board.port}", "--broker", broker.url, "--fleet", fleet),
            *("--link-timeout", "0.3", "--worker-id", "kitchen"),
        )
        try:
            deadline = time.monotonic() + 60
            while db_round(db) < 1:
                assert time.monotonic() < deadline, gw.text[-3000:]
                time.sleep(0.1)
            gw.wait_log("pushed global round 1")
        finally:
            assert gw.stop() == 0
    with Store(db) as store:
        g0, _ = store.global_model(0)
        g1, _ = store.global_model(1)
    assert g1.arch == "dscnn64-head-v1"
    assert g1.params.shape == (195,)
    assert not np.any(g0.params)
    assert np.any(g1.params)  # the board's trained head, averaged alone
    assert "model down: 780 B in" in gw.text
    assert "model up: 780 B in" in gw.text
