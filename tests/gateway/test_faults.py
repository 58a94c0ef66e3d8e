"""The gateway under faults, each made for real: a board killed mid-transfer, bytes flipped on
the wire, a broker stopped and restarted, a gateway restarted, bad payloads on the broker.

Nothing here depends on how fast the machine is: the scripted user presses only once the board
has the gateway's model (``wait model``), a board that must train while the broker is away is
plugged in only after the broker stopped, and every wait is for a condition, with a deadline
(:data:`DEADLINE`) far above what a loaded machine needs (a gateway reopening a board backs
off up to 8 s).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.gateway.test_bridge import BOARD_ARGS, applied, gateway_args, on_round
from tests.link_support import Gateway, Peer, Relay, corrupt_nth, write_script
from tinyfed import model
from tinyfed.link import spec
from tinyfed.link.client import BoardLink
from tinyfed.link.transports import open_transport
from tinyfed.mqtt import contract
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.virtual_board import VirtualBoard

T = spec.MsgType
DEADLINE = 60.0  #: seconds any awaited condition may take before the test fails


def boots(board: VirtualBoard) -> list[list[str]]:
    """The board's log split into one list of lines per boot."""
    runs: list[list[str]] = []
    for line in board.log_lines():
        if "boot id=" in line:
            runs.append([])
        if runs:
            runs[-1].append(line)
    return runs


def board_model(board: VirtualBoard) -> model.F32:
    """The model the board holds now, read over its own port (the gateway must be stopped)."""

    async def read() -> model.F32:
        async with BoardLink(open_transport(f"serial://{board.port}")) as link:
            params, _ = await link.get_model()
            return params

    return asyncio.run(read())


def via(relay: Relay, broker: Mosquitto, fleet: str, *more: str) -> list[str]:
    args = ["--device", relay.url, "--broker", broker.url, "--fleet", fleet]
    return [*args, "--link-timeout", "0.3", *more]


def wait_until(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_board_unplugged_mid_download_gets_the_whole_model_after_it_comes_back(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: the wire pulls the plug when the 60th chunk of 184 goes by.
    g = peer.publish_global(3, model.init_params(seed=3))
    with VirtualBoard(binary=binary, extra_args=BOARD_ARGS) as board:

        def unplug(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
            if msg_type == T.XFER_CHUNK and index == 60:
                board.kill()
                return b""
            return wire

        with Relay(board.port, unplug, link=tmp_path / "ttyACM0") as relay:
            gw = Gateway(tmp_path, *via(relay, broker, fleet, "--worker-id", "w"))
            try:
                # Execute: the board comes back (a new boot id) once it was killed.
                wait_until("the unplug", lambda: not board.running)
                board.start()
                peer.wait("round 3 on the new boot", lambda p: on_round(p, 3), DEADLINE)
            finally:
                gw.stop()
        # Assert: the first boot began the transfer and never applied it; the second did.
        first, second = boots(board)
        assert any("transfer MODEL begins" in line for line in first)
        assert not any("applied" in line for line in first)
        assert any("applied" in line for line in second)
        assert applied(board, g.params, 3)
        assert f"boot id={peer.statuses()[-1].boot_id}" in "\n".join(second)
    assert "unavailable" in gw.text
    assert peer.updates() == []


def test_a_board_unplugged_mid_upload_publishes_no_half_model(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: 3 local steps; the wire pulls the plug in the middle of the first upload. The
    # user presses once the board has the global model, in each boot (steps made before it
    # arrives are discarded, and then nothing would be uploaded, nor unplugged).
    peer.publish_global(4, model.init_params(seed=4), local_steps=3)
    script = write_script(tmp_path / "user", presses=3, wait_model=True)
    killed: list[int | None] = []
    with VirtualBoard(script, binary=binary, extra_args=BOARD_ARGS) as board:

        def unplug(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
            if msg_type == T.MODEL_CHUNK and index == 100 and not killed:
                killed.append(board.kill())
                return b""
            return wire

        with Relay(board.port, unplug, link=tmp_path / "ttyACM0") as relay:
            gw = Gateway(tmp_path, *via(relay, broker, fleet, "--worker-id", "w"))
            try:
                wait_until("the unplug", lambda: bool(killed))
                board.start()  # the new boot runs the script again: 3 new steps
                peer.wait("an update", lambda p: len(p.of_kind("update")) >= 1, DEADLINE)
                gw.wait_log("delivered to the broker", DEADLINE)
            finally:
                gw.stop()
        # Assert: one update only, from the second boot, equal to what that board holds.
        (update,) = peer.updates()
        assert update.base_round == 4
        assert update.local_steps == 3
        np.testing.assert_array_equal(update.params, board_model(board))
        assert "rebooted" in gw.text or "unavailable" in gw.text


def test_corrupted_bytes_on_the_wire_are_rejected_and_the_transfers_retried(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    # Prepare: one flipped byte in a download chunk, in an acknowledgement, in an upload chunk.
    faults = [
        corrupt_nth("to_board", T.XFER_CHUNK, 30),
        corrupt_nth("to_host", T.XFER_ACK, 2),
        corrupt_nth("to_host", T.MODEL_CHUNK, 50),
    ]

    def wire(direction: str, msg_type: int, index: int, data: bytes) -> bytes:
        for fault in faults:
            data = fault(direction, msg_type, index, data)
        return data

    g = peer.publish_global(6, model.init_params(seed=6), local_steps=3)
    script = write_script(tmp_path / "user", presses=3, wait_model=True)
    with VirtualBoard(script, binary=binary, extra_args=BOARD_ARGS) as board:
        with Relay(board.port, wire) as relay:
            gw = Gateway(tmp_path, *via(relay, broker, fleet, "--worker-id", "w"))
            try:
                # Execute
                peer.wait("an update", lambda p: len(p.of_kind("update")) >= 1, DEADLINE)
            finally:
                gw.stop()
            assert relay.changed == 3
        # Assert: the board got the exact global model and the broker the exact board model.
        assert applied(board, g.params, 6)
        (update,) = peer.updates()
        np.testing.assert_array_equal(update.params, board_model(board))
    down = re.findall(r"model down: .*?(\d+) retries", gw.text)
    up = re.findall(r"model up: .*?(\d+) retries", gw.text)
    assert int(down[0]) >= 2
    assert int(up[0]) >= 1


def test_updates_and_losses_made_while_the_broker_is_down_arrive_once_after_it_restarts(
    binary: Path, own_broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: the aggregator's session survives the restart (persistent, QoS 1). The gateway
    # holds the global model before the board is plugged in; the board comes only once the
    # broker is down, and its user presses once it has the model: every step and the update
    # are made while the broker is away, however slow the machine.
    peer = Peer(own_broker.url, fleet, session=True)
    peer.publish_global(8, model.init_params(seed=8), local_steps=3)
    script = write_script(tmp_path / "user", presses=3, wait_model=True)
    board = VirtualBoard(script, binary=binary, extra_args=BOARD_ARGS)  # not plugged in yet
    try:
        gw = Gateway(tmp_path, *gateway_args(board, own_broker, fleet, "--worker-id", "w"))
        try:
            gw.wait_log("global model round 8", DEADLINE)
            # Execute: the broker goes away, then the board comes, trains and is uploaded.
            own_broker.stop()
            gw.wait_log("lost the broker", DEADLINE)
            board.start()
            text = gw.wait_log("round 8, 3 local steps", DEADLINE)
            upload_id = re.findall(r"update ([0-9a-f]{32}): round 8", text)[0]
            own_broker.start()
            gw.wait_log(f"update {upload_id} delivered to the broker", DEADLINE)
            peer.wait("the update", lambda p: len(p.of_kind("update")) >= 1, DEADLINE)
            peer.wait("3 losses", lambda p: len(p.of_kind("loss")) >= 3, DEADLINE)
        finally:
            gw.stop()
        # Assert: the board was served with the broker away; every step's loss and the
        # update arrive, each exactly once.
        assert "pushed global round 8" in gw.text
        assert [u.upload_id for u in peer.updates()] == [upload_id]
        steps = [e.step for e in peer.losses()]
        assert sorted(steps) == sorted(set(steps))
        assert {1, 2, 3} <= set(steps)
    finally:
        board.close()
        peer.close()


def test_an_update_in_the_spool_survives_a_gateway_restart_with_its_upload_id(
    binary: Path, own_broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: the broker is down when the update is made (the board is plugged in only
    # then, as above); the gateway is stopped too.
    peer = Peer(own_broker.url, fleet, session=True)
    peer.publish_global(9, model.init_params(seed=9), local_steps=3)
    script = write_script(tmp_path / "user", presses=3, wait_model=True)
    spool = tmp_path / "spool"
    board = VirtualBoard(script, binary=binary, extra_args=BOARD_ARGS)  # not plugged in yet
    try:
        args = gateway_args(board, own_broker, fleet, "--worker-id", "w", "--spool", str(spool))
        gw = Gateway(tmp_path, *args)
        try:
            gw.wait_log("global model round 9", DEADLINE)
            own_broker.stop()
            gw.wait_log("lost the broker", DEADLINE)
            board.start()
            upload_id = re.findall(
                r"update ([0-9a-f]{32}): round 9", gw.wait_log("round 9, 3 local steps", DEADLINE)
            )[0]
        finally:
            gw.stop()
        assert "kept in the spool" in gw.text
        assert len(list((spool / "updates").glob("*.msgpack"))) == 1
        # Execute: broker and gateway come back; the board is the same boot.
        own_broker.start()
        gw2 = Gateway(tmp_path, *args)
        try:
            gw2.wait_log(f"update {upload_id} delivered to the broker", DEADLINE)
            peer.wait("the update", lambda p: len(p.of_kind("update")) >= 1, DEADLINE)
            # the broker's PUBACK is not the end: the aggregator's receipt is
            assert len(list((spool / "updates").glob("*.msgpack"))) == 1
            receipt = contract.Receipt("w", upload_id, 9, "accepted")
            topic = contract.Topics(fleet).worker_receipt("w")
            peer.client.publish(topic, contract.encode_receipt(receipt), qos=1, retain=True)
            gw2.wait_log(f"update {upload_id} counted by the aggregator", DEADLINE)
        finally:
            gw2.stop()
        # Assert: the same upload id, once; the board was not given the global model again.
        assert [u.upload_id for u in peer.updates()] == [upload_id]
        assert "restored" in gw2.text
        assert "pushed global round" not in gw2.text
        assert list((spool / "updates").glob("*.msgpack")) == []
    finally:
        board.close()
        peer.close()


def test_malformed_and_oversize_global_models_are_rejected_and_the_gateway_keeps_running(
    binary: Path, broker: Mosquitto, fleet: str, peer: Peer, tmp_path: Path
) -> None:
    good = contract.encode_global(
        contract.GlobalModel(
            round=2,
            params=model.init_params(seed=2),
            hyper=contract.HyperParams(),
            pipeline="centroid",
        )
    )
    tampered = good.replace(model.to_bytes(model.init_params(seed=2))[:8], b"\x00" * 8)
    with VirtualBoard(binary=binary, extra_args=BOARD_ARGS) as board:
        gw = Gateway(tmp_path, *gateway_args(board, broker, fleet, "--worker-id", "w"))
        try:
            peer.wait("online", lambda p: any(s.state == "online" for s in p.statuses()), DEADLINE)
            # Execute
            peer.publish_raw(b"\x93not msgpack at all")
            gw.wait_log("not valid msgpack", DEADLINE)
            peer.publish_raw(b"\x00" * 70_000)
            gw.wait_log("payload is 70000 bytes, limit 65536", DEADLINE)
            peer.publish_raw(tampered)
            gw.wait_log("sha256 does not match", DEADLINE)
            peer.publish_raw(good)
            # Assert: each was named in the log, and the next good model still went down.
            peer.wait("round 2 on the board", lambda p: on_round(p, 2), DEADLINE)
            assert gw.text.count("rejected a global model") == 3
            assert gw.running
        finally:
            gw.stop()
