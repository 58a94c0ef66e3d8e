"""The real gateway between a dscnn-family board and a dscnn fleet's aggregator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.aggregator.test_service import aggregator_in_process, flags
from tinyfed.aggregator.store import Store
from tinyfed.gateway.bridge import Bridge
from tinyfed.gateway.settings import GatewaySettings
from tinyfed.model import families
from tinyfed.mqtt.session import parse_broker_url
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.fake_board import FakeBoard

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
