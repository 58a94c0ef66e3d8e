"""The link client takes the model's size from the board's family (HELLO ``arch``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from tinyfed import model
from tinyfed.errors import ModelError
from tinyfed.link import frame, messages, spec
from tinyfed.link.client import BoardLink, LinkError, LossReport
from tinyfed.link.spec import MsgType, XferTarget
from tinyfed.model import families
from tinyfed.model.dscnn import head
from tinyfed.testbed.fake_board import FakeBoard, stand_in_embedding

T = TypeVar("T")


def run(board: FakeBoard, scenario: Callable[[BoardLink], Awaitable[T]]) -> T:
    async def main() -> T:
        async with BoardLink(board, timeout=0.2, retries=3) as link:
            return await scenario(link)

    return asyncio.run(main())


def test_a_dscnn_board_moves_its_780_byte_head_both_ways() -> None:
    board = FakeBoard(family="dscnn")
    sent = (np.arange(195) / 100).astype(np.float32)

    async def scenario(link: BoardLink) -> tuple[model.F32, int, int]:
        family = await link.family()
        assert family is families.DSCNN
        down = await link.put_model(sent, round=4)
        params, info = await link.get_model()
        np.testing.assert_array_equal(params, sent)
        return params, down.size, info.total_len

    _, down_size, total = run(board, scenario)
    assert down_size == total == 780
    assert board.models_applied == 1
    hello = board.sent[0]
    assert frame.unpack_as(hello, messages.Hello).arch == spec.ArchId.DSCNN_HEAD
    assert frame.unpack_as(hello, messages.Hello).pipeline == spec.PipelineId.LOGMEL40


def test_a_dscnn_board_trains_the_reference_head_on_an_int8_input() -> None:
    board = FakeBoard(family="dscnn")
    q = ((np.arange(2000) * 37) % 256 - 128).astype(np.int8)

    async def scenario(link: BoardLink) -> tuple[LossReport, model.F32]:
        await link.set_params(lr=0.01, momentum=0.0, local_steps=1)
        await link.send_sample(features=q, label=2)
        event = await link.next_event(timeout=5)
        while not isinstance(event, LossReport):
            event = await link.next_event(timeout=5)
        params, _ = await link.get_model()
        return event, params

    loss, params = run(board, scenario)
    expected = families.DSCNN.init()
    expected_loss = head.sgd_step(expected, stand_in_embedding(q), 2, 0.01)
    assert loss.loss == pytest.approx(expected_loss, rel=1e-6)
    assert loss.loss == pytest.approx(np.log(3), rel=1e-5)  # a zero head: p = 1/3 each
    np.testing.assert_array_equal(params, expected)


def test_a_paper_model_is_refused_for_a_dscnn_board_before_anything_moves() -> None:
    board = FakeBoard(family="dscnn")

    async def scenario(link: BoardLink) -> None:
        with pytest.raises(ModelError, match=r"expected \(195,\).*dscnn family"):
            await link.put_model(model.init_params(), round=1)

    run(board, scenario)
    assert not [f for f in board.received if f.type == MsgType.XFER_BEGIN]


def _hello_with_arch(arch: int) -> Callable[[str, int, int, bytes], bytes]:
    def fault(direction: str, msg_type: int, index: int, wire: bytes) -> bytes:
        if direction != "to_host" or msg_type != MsgType.HELLO:
            return wire
        (f,) = frame.FrameParser().feed(wire)
        assert isinstance(f, frame.Frame)
        hello = dataclasses.replace(frame.unpack_as(f, messages.Hello), arch=arch)
        return frame.pack(hello, f.seq)

    return fault


def test_a_board_of_an_unknown_architecture_is_named() -> None:
    board = FakeBoard(fault=_hello_with_arch(9))

    async def scenario(link: BoardLink) -> None:
        with pytest.raises(LinkError, match=r"reports unknown architecture id 9; known: paper"):
            await link.get_model()
        with pytest.raises(LinkError, match="unknown architecture id 9"):
            await link.put_model(model.init_params(), round=1)

    run(board, scenario)
    assert not [f for f in board.received if f.type in (MsgType.GET_MODEL, MsgType.XFER_BEGIN)]


def test_a_paper_board_still_takes_41868_bytes() -> None:
    board = FakeBoard()

    async def scenario(link: BoardLink) -> int:
        assert await link.family() is families.PAPER
        return (await link.put_model(model.init_params(3, "scaled"), round=1)).size

    assert run(board, scenario) == model.MODEL_BYTES
    assert board.sizes[XferTarget.MODEL] == 41_868
