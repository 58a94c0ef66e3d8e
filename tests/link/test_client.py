"""The host side of the link protocol against the compiled virtual board, on real ptys.

Faults are made on the wire by :class:`link_support.Relay`: a flipped byte in a chunk, an
acknowledgement or an upload chunk, a board killed in the middle of a transfer.

Timeouts: a test that needs the link to time out (a frame was lost and nothing else tells the
host) uses a short one and asserts only lower bounds on retries, so a loaded machine that makes
an extra timeout costs a retry, never the test; a test that counts retries or round trips
exactly uses a long one that no scheduling delay reaches.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import link_support
from tests.link_support import Fault, Relay, corrupt_nth, flip_byte
from tinyfed import model
from tinyfed.errors import UsageError
from tinyfed.link import frame, spec
from tinyfed.link.client import BoardLink, LinkClosedError, LinkTimeoutError, LossReport
from tinyfed.link.transports import open_transport
from tinyfed.link.transports.base import TransportError
from tinyfed.testbed.virtual_board import VirtualBoard

T = spec.MsgType
CHUNK = spec.CHUNK_BYTES
#: The answer timeout where no timeout is expected: far above any delay of a loaded machine.
TIMEOUT = 5.0
#: The answer timeout where a lost frame is found by a timeout (a pty answers in well under
#: 10 ms when idle); these tests assert at-least counts only.
LOSS_TIMEOUT = 0.3


@pytest.fixture
def board(binary: Path) -> Iterator[VirtualBoard]:
    with VirtualBoard(binary=binary, extra_args=["--record-ms", "50"]) as b:
        yield b


def link_to(url: str, timeout: float = TIMEOUT, retries: int = 4) -> BoardLink:
    return BoardLink(open_transport(url), timeout=timeout, retries=retries)


def lose(chunk_type: int, chunks: set[int], *, times: int, ack_type: int | None = None) -> Fault:
    """A wire fault mangling the first ``times`` copies of each chunk in ``chunks`` (by index),
    and the first ``times`` ``ack_type`` frames naming each of them as the board's next offset;
    the frames are recognised by their content, so extra retries do not shift the plan."""
    seen: dict[tuple[int, int], int] = {}

    def fault(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if msg_type not in (chunk_type, ack_type):
            return wire
        fields = link_support.unpack(frame.decode_frame(wire[:-1]))
        offset = fields["offset"] if msg_type == chunk_type else fields["next_offset"]
        key = (msg_type, offset)
        if offset % CHUNK or offset // CHUNK not in chunks or seen.get(key, 0) >= times:
            return wire
        seen[key] = seen.get(key, 0) + 1
        return flip_byte(wire)

    return fault


def test_model_goes_down_and_comes_back_identical_in_few_round_trips(
    board: VirtualBoard, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    params = model.init_params(seed=7)

    async def scenario() -> None:
        async with link_to(f"serial://{board.port}") as link:
            hello = await link.hello()
            assert hello.board_hex == board.board_id
            # Execute
            down = await link.put_model(params, 42)
            got, info = await link.get_model()
            # Assert
            np.testing.assert_array_equal(got, params)
            assert info.model_round == 42
            assert down.round_trips <= 30
            assert link.transfers[-1].round_trips <= 10
            assert link.stats.retries == 0

    with caplog.at_level(logging.INFO, logger="tinyfed.link.client"):
        asyncio.run(scenario())
    assert any("model down: 41868 B in" in r.message for r in caplog.records)
    assert any("model up: 41868 B in" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("direction", "msg_type", "n"),
    [
        ("to_board", T.XFER_CHUNK, 12),  # the board sees a bad CRC, then a gap
        ("to_board", T.XFER_CHUNK, 8),  # the last chunk of a window: found by a timeout
        ("to_host", T.XFER_ACK, 3),  # the acknowledgement is lost: the window is re-sent
        ("to_board", T.XFER_END, 1),  # END is lost: sent again
        ("to_host", T.ACK, 2),  # END's ACK is lost: MODEL_INFO shows the model was applied
    ],
    ids=["chunk-mid-window", "chunk-ending-window", "ack", "end", "end-ack"],
)
def test_a_corrupted_frame_of_a_download_is_retried_and_the_model_arrives_intact(
    board: VirtualBoard, direction: str, msg_type: int, n: int
) -> None:
    params = model.init_params(seed=11)

    async def scenario() -> None:
        with Relay(board.port, corrupt_nth(direction, msg_type, n)) as relay:
            async with link_to(relay.url, LOSS_TIMEOUT) as link:
                await link.hello()
                await link.put_model(params, 3)
                got, info = await link.get_model()
                assert relay.changed == 1
                np.testing.assert_array_equal(got, params)
                assert info.model_round == 3
                assert link.stats.retries >= 1

    asyncio.run(scenario())


def test_a_corrupted_chunk_of_an_upload_is_read_again(board: VirtualBoard) -> None:
    async def scenario() -> None:
        fault = corrupt_nth("to_host", T.MODEL_CHUNK, 100)
        with Relay(board.port, fault) as relay:
            async with link_to(relay.url, LOSS_TIMEOUT) as link:
                await link.hello()
                got, info = await link.get_model()
                assert relay.changed == 1
                assert link.stats.bad_frames == 1
                # The board's fresh model is the seeded one: nothing was lost or mixed up.
                np.testing.assert_array_equal(got, model.init_params())
                assert info.model_round == 0

    asyncio.run(scenario())


def test_a_download_whose_every_timeout_is_followed_by_progress_never_runs_out_of_retries(
    board: VirtualBoard,
) -> None:
    # Prepare: a budget of 2 retries; chunks 3, 9 and 12 are each lost once, and so is the
    # board's gap acknowledgement asking for each of them, so only a timeout tells the host.
    # Each re-sent window then gets an acknowledgement further on (progress) but never the
    # whole window: 3 timeouts before a window completes, more than the budget, and every
    # one of them followed by progress. A budget per whole window fails this download.
    params = model.init_params(seed=13)
    fault = lose(T.XFER_CHUNK, {3, 9, 12}, times=1, ack_type=T.XFER_ACK)

    async def scenario() -> None:
        with Relay(board.port, fault) as relay:
            async with link_to(relay.url, timeout=1.0, retries=2) as link:
                await link.hello()
                # Execute
                down = await link.put_model(params, 8)
                got, info = await link.get_model()
                # Assert: intact, after at least the three timeouts, each going back.
                assert relay.changed == 6
                assert down.retries >= 6  # three timeouts and three gaps
                np.testing.assert_array_equal(got, params)
                assert info.model_round == 8

    asyncio.run(scenario())


def test_an_upload_whose_every_failed_read_is_followed_by_progress_never_runs_out_of_retries(
    board: VirtualBoard,
) -> None:
    # Prepare: a budget of 1 retry; chunks 10, 70 and 130 (one per READ batch of 64) are lost
    # twice each: every batch times out, its first re-read brings nothing, its second does.
    # 3 READs without a new chunk, more than the budget, never 2 in a row.
    fault = lose(T.MODEL_CHUNK, {10, 70, 130}, times=2)

    async def scenario() -> None:
        with Relay(board.port, fault) as relay:
            async with link_to(relay.url, LOSS_TIMEOUT, retries=1) as link:
                await link.hello()
                # Execute
                got, info = await link.get_model()
                # Assert
                assert relay.changed == 6
                assert link.stats.bad_frames == 6
                np.testing.assert_array_equal(got, model.init_params())
                assert info.model_round == 0

    asyncio.run(scenario())


def test_a_download_with_no_progress_gives_up_after_its_retries(board: VirtualBoard) -> None:
    # Prepare: every copy of chunk 5 is mangled, so the board never gets past it.
    def fault(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if msg_type == T.XFER_CHUNK:
            fields = link_support.unpack(frame.decode_frame(wire[:-1]))
            if fields["offset"] == 5 * CHUNK:
                return flip_byte(wire)
        return wire

    async def scenario() -> None:
        with Relay(board.port, fault) as relay:
            async with link_to(relay.url, LOSS_TIMEOUT, retries=2) as link:
                await link.hello()
                # Execute
                with pytest.raises(LinkTimeoutError, match="without progress"):
                    await link.put_model(model.init_params(seed=5), 9)
                # Assert: the board kept its own model.
                got, info = await link.get_model()
                assert relay.changed >= 3
                np.testing.assert_array_equal(got, model.init_params())
                assert info.model_round == 0

    asyncio.run(scenario())


def test_a_board_killed_mid_download_fails_the_transfer_and_keeps_no_half_model(
    board: VirtualBoard,
) -> None:
    # Prepare: the relay pulls the plug when the 60th chunk (of 184) goes by.
    def unplug(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if msg_type == T.XFER_CHUNK and index == 60:
            board.kill()
            return b""
        return wire

    async def scenario() -> None:
        with Relay(board.port, unplug) as relay:
            async with link_to(relay.url) as link:
                await link.hello()
                # Execute
                with pytest.raises(LinkClosedError):
                    await link.put_model(model.init_params(seed=5), 9)
        board.start()  # plugged in again: a new boot
        async with link_to(f"serial://{board.port}") as link:
            got, info = await link.get_model()
        # Assert: the board runs its fresh seeded model, not a part of the one that was cut.
        np.testing.assert_array_equal(got, model.init_params())
        assert info.model_round == 0

    asyncio.run(scenario())


def test_reset_reboots_the_board_with_a_new_boot_id(board: VirtualBoard) -> None:
    async def scenario() -> None:
        async with link_to(f"serial://{board.port}") as link:
            before = await link.hello()
            await link.put_model(model.init_params(seed=3), 5)
            after = await link.reset()
            assert after.boot_id != before.boot_id
            assert after.model_round == 0

    asyncio.run(scenario())


def test_a_sample_sent_by_the_host_trains_the_board_and_reports_its_loss(
    board: VirtualBoard,
) -> None:
    features = np.random.default_rng(1).normal(0, 1, model.N_INPUTS).astype(np.float32)
    expected = model.Trainer(model.init_params()).step(features, 1).loss

    async def scenario() -> None:
        async with link_to(f"serial://{board.port}") as link:
            await link.hello()
            await link.set_params(model.DEFAULT_LR, model.DEFAULT_MOMENTUM, 10)
            await link.send_sample(features=features, label=1)
            while not isinstance(event := await link.next_event(timeout=5), LossReport):
                pass
            assert event.label == 1
            assert event.step == 1
            assert event.steps_since_global == 1
            assert event.loss == pytest.approx(expected, rel=1e-5)

    asyncio.run(scenario())


def test_the_tcp_transport_carries_the_same_protocol(board: VirtualBoard) -> None:
    params = model.init_params(seed=21)

    async def scenario() -> None:
        with Relay(board.port, tcp=True) as relay:
            assert relay.url.startswith("tcp://")
            async with link_to(relay.url) as link:
                await link.hello()
                await link.put_model(params, 1)
                got, _ = await link.get_model()
                np.testing.assert_array_equal(got, params)

    asyncio.run(scenario())


def test_serial_auto_names_the_ports_it_saw_when_no_board_is_plugged() -> None:
    transport = open_transport("serial://auto")
    with pytest.raises(
        TransportError, match=r"found no Arduino Nano 33 BLE \(USB 2341:805a.*serial ports: "
    ):
        asyncio.run(transport.open())


@pytest.mark.parametrize("url", ["usb://x", "serial://", "tcp://host", "/dev/ttyACM0"])
def test_a_device_url_without_a_known_scheme_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="device URL"):
        open_transport(url)


def test_bleak_is_imported_only_for_a_ble_device() -> None:
    code = (
        "import sys; from tinyfed.link.transports import open_transport; "
        "open_transport('serial:///dev/null'); open_transport('tcp://127.0.0.1:1'); "
        "print('bleak' in sys.modules, 'tinyfed.link.transports.ble' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
