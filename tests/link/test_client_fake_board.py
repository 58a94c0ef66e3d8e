"""The link client's retries and go-back-N windows against the in-process fake board.

:class:`~tinyfed.testbed.fake_board.FakeBoard` answers with real frames by the firmware's
rules, in this process: each test takes milliseconds, so the client's timeout is set to
``TIMEOUT`` and each recovery path (a lost chunk, a lost acknowledgement, a corrupted frame, a
model damaged despite its frame CRCs, a lost reply to XFER_END, a lost MODEL_CHUNK) is driven
exactly, by dropping or changing the n-th frame of a type. ``test_client.py`` does the same
through a pseudo-terminal against the compiled virtual board.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from tests import link_support
from tinyfed import model
from tinyfed.link import frame, spec
from tinyfed.link.client import BoardLink, LinkTimeoutError, LossReport
from tinyfed.link.frame import Frame
from tinyfed.link.spec import ErrorCode, MsgType
from tinyfed.testbed.fake_board import FakeBoard, Fault

#: The client's answer timeout. The fake board answers within microseconds; 0.2 s keeps a
#: loaded machine from timing out where a test counts on an answer.
TIMEOUT = 0.2
CHUNKS = -(-model.MODEL_BYTES // spec.CHUNK_BYTES)  #: 184 chunks per model
WINDOWS = -(-CHUNKS // spec.DEFAULT_WINDOW)  #: 23 windows of 8

T = TypeVar("T")


def drop(*which: tuple[str, MsgType, int]) -> Fault:
    """Drop the n-th frame of a type in a direction, for each ``(direction, type, n)``."""
    gone = set(which)

    def fault(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        return b"" if (direction, msg_type, index) in gone else wire

    return fault


def run(board: FakeBoard, scenario: Callable[[BoardLink], Awaitable[T]]) -> T:
    """Run ``scenario`` on a started link to ``board`` (no compiler, no pty: quick)."""

    async def main() -> T:
        async with BoardLink(board, timeout=TIMEOUT, retries=3) as link:
            await link.hello()
            return await scenario(link)

    start = time.monotonic()
    result = asyncio.run(main())
    assert time.monotonic() - start < 5.0  # idle machine: 2 ms to 0.8 s
    return result


def sent(board: FakeBoard, msg_type: MsgType) -> list[Frame]:
    return [f for f in board.sent if f.type == msg_type]


def chunk_offsets(board: FakeBoard) -> list[int]:
    return [
        link_support.unpack(f)["offset"] for f in board.received if f.type == MsgType.XFER_CHUNK
    ]


def test_a_model_goes_down_in_windows_and_comes_back_identical() -> None:
    board = FakeBoard()
    params = model.init_params(7)

    async def scenario(link: BoardLink) -> tuple[model.F32, int]:
        await link.put_model(params, 3)
        got, info = await link.get_model()
        return got, info.model_round

    got, round_ = run(board, scenario)
    np.testing.assert_array_equal(got, params)
    assert round_ == 3
    assert board.models_applied == 1
    # one XFER_ACK per window of 8 chunks (the last window acknowledged at its last byte)
    assert len(sent(board, MsgType.XFER_ACK)) == WINDOWS
    assert chunk_offsets(board) == [i * spec.CHUNK_BYTES for i in range(CHUNKS)]
    # the upload: 184 chunks in READs of 64
    assert [link_support.unpack(f)["count"] for f in board.received if f.type == MsgType.READ] == [
        64,
        64,
        56,
    ]


def test_a_lost_chunk_is_asked_for_once_and_the_window_goes_back_to_it() -> None:
    board = FakeBoard(fault=drop(("to_board", MsgType.XFER_CHUNK, 12)))
    params = model.init_params(8)

    async def scenario(link: BoardLink) -> int:
        await link.put_model(params, 1)
        return link.stats.retries

    retries = run(board, scenario)
    np.testing.assert_array_equal(board.params, params)
    lost = 11 * spec.CHUNK_BYTES
    acks = [link_support.unpack(f)["next_offset"] for f in sent(board, MsgType.XFER_ACK)]
    assert acks.count(lost) == 1  # the gap is acknowledged once, whatever follows it
    c = spec.CHUNK_BYTES
    offsets = chunk_offsets(board)
    assert offsets[8:15] == [c * i for i in (8, 9, 10, 12, 13, 14, 15)]  # 11 never arrived
    assert offsets[15:23] == [c * i for i in range(11, 19)]  # the window again, from 11
    assert retries == 1


def test_a_lost_window_acknowledgement_is_recovered_by_sending_the_window_again() -> None:
    board = FakeBoard(fault=drop(("to_host", MsgType.XFER_ACK, 3)))
    params = model.init_params(9)

    async def scenario(link: BoardLink) -> int:
        await link.put_model(params, 2)
        return link.stats.retries

    retries = run(board, scenario)
    np.testing.assert_array_equal(board.params, params)
    # the window went again; its chunks were duplicates, the last one re-acknowledged it
    window_3 = [i * spec.CHUNK_BYTES for i in range(16, 24)]
    offsets = chunk_offsets(board)
    assert all(offsets.count(o) == 2 for o in window_3)
    assert len(sent(board, MsgType.XFER_ACK)) == WINDOWS + 1
    assert retries == 1


def test_a_corrupted_chunk_is_an_error_then_a_gap_and_the_model_arrives_intact() -> None:
    def flip_chunk_5(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if (direction, msg_type, index) != ("to_board", MsgType.XFER_CHUNK, 5):
            return wire
        i = len(wire) // 2
        return wire[:i] + bytes([wire[i] ^ 0x55 or 0x01]) + wire[i + 1 :]

    board = FakeBoard(fault=flip_chunk_5)
    params = model.init_params(10)
    run(board, lambda link: link.put_model(params, 5))
    np.testing.assert_array_equal(board.params, params)
    errors = [link_support.unpack(f) for f in sent(board, MsgType.ERROR)]
    assert [(e["ref_seq"], e["code"]) for e in errors] == [(spec.UNKNOWN_SEQ, ErrorCode.BAD_CRC)]
    assert board.models_applied == 1


def test_a_model_damaged_despite_its_frame_crcs_is_refused_and_sent_again() -> None:
    def damage_chunk_3(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if (direction, msg_type, index) != ("to_board", MsgType.XFER_CHUNK, 3):
            return wire
        (f,) = frame.FrameParser().feed(wire)
        assert isinstance(f, Frame)
        payload = bytearray(f.payload)
        payload[-1] ^= 0x01  # a valid frame carrying a wrong byte
        return frame.encode_frame(f.type, f.seq, bytes(payload))

    board = FakeBoard(fault=damage_chunk_3)
    params = model.init_params(11)

    async def scenario(link: BoardLink) -> int:
        await link.put_model(params, 6)
        return link.stats.retries

    retries = run(board, scenario)
    errors = [link_support.unpack(f)["code"] for f in sent(board, MsgType.ERROR)]
    assert errors == [ErrorCode.CHECKSUM]
    np.testing.assert_array_equal(board.params, params)
    assert board.models_applied == 1
    assert retries >= 1


def test_a_lost_reply_to_xfer_end_is_settled_by_asking_for_the_model_info() -> None:
    # ACK 1 answers XFER_BEGIN, ACK 2 XFER_END: lost, the END goes again and finds nothing open
    board = FakeBoard(fault=drop(("to_host", MsgType.ACK, 2)))
    params = model.init_params(12)
    run(board, lambda link: link.put_model(params, 8))
    assert board.models_applied == 1
    errors = [link_support.unpack(f)["code"] for f in sent(board, MsgType.ERROR)]
    assert errors == [ErrorCode.BAD_STATE]
    assert [f.type for f in board.received][-2:] == [MsgType.XFER_END, MsgType.GET_MODEL]


def test_a_board_that_never_acknowledges_fails_the_download_after_the_retries() -> None:
    board = FakeBoard(fault=lambda d, t, i, w: b"" if t == MsgType.XFER_ACK else w)
    params = model.init_params(13)

    async def scenario(link: BoardLink) -> None:
        with pytest.raises(LinkTimeoutError, match="without progress"):
            await link.put_model(params, 1)

    run(board, scenario)
    # the first window and 3 retries of it, then XFER_ABORT; the model never changed
    assert chunk_offsets(board).count(0) == 4
    assert board.received[-1].type == MsgType.XFER_ABORT
    assert board.models_applied == 0


def test_a_lost_model_chunk_is_read_again() -> None:
    board = FakeBoard(fault=drop(("to_host", MsgType.MODEL_CHUNK, 5)))

    async def scenario(link: BoardLink) -> model.F32:
        params, _ = await link.get_model()
        return params

    got = run(board, scenario)
    np.testing.assert_array_equal(got, board.params)
    reads = [link_support.unpack(f) for f in board.received if f.type == MsgType.READ]
    c = spec.CHUNK_BYTES
    # the first READ's chunk 4 is lost: after its timeout, only chunk 4 is asked for again
    assert [(r["offset"], r["count"]) for r in reads] == [
        (0, 64),
        (4 * c, 1),
        (64 * c, 64),
        (128 * c, 56),
    ]


def test_a_labelled_sample_trains_one_step_of_the_reference_network() -> None:
    board = FakeBoard()
    x = np.random.default_rng(0).normal(size=650).astype(np.float32)
    expected = model.Trainer(board.params.copy()).step(x, 1)

    async def scenario(link: BoardLink) -> LossReport:
        await link.send_sample(features=x, label=1)
        while True:  # the board's first HELLO came as an event too
            event = await link.next_event(timeout=1.0)
            if isinstance(event, LossReport):
                return event

    event = run(board, scenario)
    assert (event.step, event.label, event.steps_since_global) == (1, 1, 1)
    assert event.loss == pytest.approx(expected.loss, rel=1e-6)
    np.testing.assert_allclose(event.outputs, expected.outputs, rtol=1e-6)


def test_reset_reboots_with_a_new_boot_id_and_the_seeded_model() -> None:
    board = FakeBoard()

    async def scenario(link: BoardLink) -> tuple[int, int]:
        before = await link.hello()
        await link.put_model(model.init_params(14), 9)
        after = await link.reset()
        return before.boot_id, after.boot_id

    before, after = run(board, scenario)
    assert after != before
    np.testing.assert_array_equal(board.params, model.init_params())
    assert board.model_round == 0
