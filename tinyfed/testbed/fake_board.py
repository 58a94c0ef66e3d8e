"""A fast in-process fake board: the link protocol's board side in Python, on real frames.

:class:`FakeBoard` is a :class:`~tinyfed.link.transports.base.Transport`, so
:class:`~tinyfed.link.client.BoardLink` drives it exactly as it drives a serial port, but no
compiler, process or pseudo-terminal is involved: what the host writes is parsed into frames
(:class:`~tinyfed.link.frame.FrameParser`), answered by the rules of the firmware's
``core/device_commands.cpp``, and the answers are encoded frames that :meth:`FakeBoard.read`
returns. A transfer takes milliseconds, so the link client's retries, go-back-N windows and
timeouts can be unit-tested quickly; the compiled virtual board (:mod:`tinyfed.testbed.
virtual_board`) stays the end-to-end reference.

What it implements, as the firmware does: HELLO_REQ (HELLO), SET_PARAMS (validated, ACK),
XFER_BEGIN (validated sizes and labels; a new BEGIN replaces an open transfer), XFER_CHUNK (in
order; a gap acknowledged once with the offset it wants; a duplicate ignored, acknowledged again
if it ends the last acknowledged window; XFER_ACK every ``window`` chunks and at the last byte),
XFER_END (BAD_STATE before every byte arrived, CHECKSUM on a CRC-32 mismatch, NON_FINITE, then a
model applied atomically), XFER_ABORT (idempotent), GET_MODEL (MODEL_INFO), READ (MODEL_CHUNK
frames), RESET (ACK, then a new boot id, the seeded model and a HELLO), and an ERROR for a
frame the codec rejects. A labelled FEATURES sample trains one step of the reference network
(:class:`tinyfed.model.Trainer`) and sends LOSS; an unlabelled one sends INFER. AUDIO samples
are acknowledged but not computed (no MFCC here). There are no buttons, LEDs or timers.

Both model families (:mod:`tinyfed.model.families`): ``FakeBoard(family="dscnn")`` reports arch
2 and pipeline ``logmel40`` in its HELLO, holds a 195-float head (zeros at boot, 780-byte
transfers) and takes FEATURES samples as the firmware does for that family: the extractor's
2,000-byte int8 input. It has no extractor weights, so its **embedding is a stand-in**: the
dequantised input (``q / 16``) averaged over 64 fixed strided groups (``x[c::64]``); on that
embedding it trains the reference head exactly (:func:`tinyfed.model.dscnn.head.sgd_step`,
one step per sample, no replay store) and reports the head's probabilities in LOSS and INFER.

Faults: ``fault(direction, frame_type, index, wire) -> wire`` sees every frame in both
directions (``"to_board"``, ``"to_host"``; ``index`` counts frames of that type and direction
from 1) and returns the bytes to deliver: ``b""`` drops the frame, changed bytes corrupt it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.link import frame, messages, spec
from tinyfed.link.frame import Frame, FrameError
from tinyfed.link.spec import ErrorCode, MsgType, Source, State, XferTarget
from tinyfed.link.transports.base import Transport, TransportError
from tinyfed.model import families
from tinyfed.model.dscnn import head

#: ``fault(direction, frame_type, index_of_that_type, wire) -> wire`` (``b""`` drops it).
Fault = Callable[[str, int, int, bytes], bytes]

N_FEATURES = 650
N_AUDIO = 16_000
DSCNN_INPUT_BYTES = 50 * 40  #: the dscnn family's host sample: the int8 extractor input
TARGET_SIZES = {
    XferTarget.MODEL: model.MODEL_BYTES,
    XferTarget.FEATURES: N_FEATURES * 4,
    XferTarget.AUDIO: N_AUDIO * 2,
}
PIPELINE_OF = {"paper": spec.PipelineId.CENTROID, "dscnn": spec.PipelineId.LOGMEL40}


def stand_in_embedding(q: npt.NDArray[np.int8]) -> model.F32:
    """The fake dscnn board's embedding of an int8 input (see the module docstring)."""
    x = q.reshape(-1).astype(np.float32) / np.float32(16)
    e = [x[c :: head.EMBED].mean(dtype=np.float32) for c in range(head.EMBED)]
    return np.asarray(e, np.float32)


COMMANDS = frozenset(t for t in MsgType if t < MsgType.HELLO)


class FakeBoard(Transport):
    """A board in this process, reached through the transport interface.

    Args:
        window: chunks per acknowledgement the board advertises in HELLO.
        fault: see the module docstring; None delivers every frame unchanged.
        board_id: the 8-byte board id of its HELLO.
        family: the model family it runs (``paper`` or ``dscnn``).
    """

    url = "fake://board"

    def __init__(
        self,
        *,
        window: int = spec.DEFAULT_WINDOW,
        fault: Fault | None = None,
        board_id: bytes = bytes.fromhex("74696e7966656401"),
        family: str = "paper",
    ) -> None:
        self.family = families.by_name(family)
        self.sizes = dict(TARGET_SIZES)
        self.sizes[XferTarget.MODEL] = self.family.model_bytes
        if self.family is families.DSCNN:
            self.sizes[XferTarget.FEATURES] = DSCNN_INPUT_BYTES
        self.window = window
        self.fault = fault
        self.board_id = board_id
        self.counts: dict[tuple[str, int], int] = {}
        self.received: list[Frame] = []  #: every frame the board accepted, in order
        self.sent: list[Frame] = []  #: every frame the board sent (before any fault)
        self.models_applied = 0
        self.boot_id = 0
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._parser = frame.FrameParser()
        self._open = False
        self._seq = 0
        self._boot()

    # -- the board's state -----------------------------------------------------------------

    def _boot(self) -> None:
        self.boot_id += 1
        # the firmware's boot model: the paper's seeded one, or a zero head
        paper = self.family is families.PAPER
        self.params = model.init_params() if paper else self.family.init()
        self.model_round = 0
        self.steps_since_global = 0
        self.total_steps = 0
        self.lr = float(self.family.lr)
        self.momentum = float(self.family.momentum)
        self.local_steps = 10
        self.velocity = np.zeros(self.family.n_params, np.float32)
        self._xfer: _Transfer | None = None

    # -- Transport -------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "fake"

    async def open(self) -> None:
        self._open = True

    async def read(self) -> bytes:
        if not self._open:
            raise TransportError(f"{self.url} is closed")
        data = await self._inbox.get()
        if data is None:
            raise TransportError(f"{self.url} closed")
        return data

    async def write(self, data: bytes) -> None:
        if not self._open:
            raise TransportError(f"{self.url} is closed")
        for item in self._parser.feed(data):
            if isinstance(item, FrameError):
                self._codec_error(item)
                continue
            wire = frame.encode_frame(item.type, item.seq, item.payload)
            for f in self._frames_of(self._faulted("to_board", item.type, wire)):
                self._handle(f)

    async def close(self) -> None:
        if self._open:
            self._open = False
            self._inbox.put_nowait(None)

    # -- frames in and out ------------------------------------------------------------------

    def _faulted(self, direction: str, msg_type: int, wire: bytes) -> bytes:
        if self.fault is None:
            return wire
        key = (direction, msg_type)
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.fault(direction, msg_type, self.counts[key], wire)

    def _frames_of(self, wire: bytes) -> list[Frame]:
        """The frames in ``wire`` after a fault: a corrupted frame gets the codec's ERROR."""
        frames: list[Frame] = []
        for item in frame.FrameParser().feed(wire):
            if isinstance(item, FrameError):
                self._codec_error(item)
            else:
                frames.append(item)
        return frames

    def _codec_error(self, exc: FrameError) -> None:
        """A frame whose seq cannot be trusted: ERROR with ``ref_seq`` UNKNOWN_SEQ."""
        self._send(
            messages.Error(ref_seq=spec.UNKNOWN_SEQ, code=int(exc.code), tail=str(exc)[:200])
        )

    def _send(self, message: messages.Message) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        msg_type = message.TYPE
        wire = frame.pack(message, self._seq)
        (sent,) = frame.FrameParser().feed(wire)
        assert isinstance(sent, Frame)
        self.sent.append(sent)
        out = self._faulted("to_host", msg_type, wire)
        if out:
            self._inbox.put_nowait(out)

    def _ack(self, f: Frame) -> None:
        self._send(messages.Ack(ref_seq=f.seq, ref_type=f.type))

    def _error(self, f: Frame, code: ErrorCode, text: str) -> None:
        self._send(messages.Error(ref_seq=f.seq, code=int(code), tail=text[: spec.MAX_TEXT]))

    # -- commands ---------------------------------------------------------------------------

    def _handle(self, f: Frame) -> None:
        if f.type not in COMMANDS:
            self._error(f, ErrorCode.UNKNOWN_TYPE, f"type 0x{f.type:02x} is not a command")
            return
        try:
            message = frame.unpack(f)
        except FrameError as exc:
            self._error(f, exc.code, str(exc))
            return
        self.received.append(f)
        handler = getattr(self, "_on_" + MsgType(f.type).name.lower())
        handler(f, message)

    def press(self, features: npt.ArrayLike, label: int) -> None:
        """A user's training step on the board itself (a button press): trains one step on
        ``features`` (the family's sample: 650 float32, or 2,000 int8 for dscnn) and sends
        LOSS, as a step the host asked for does."""
        if not 0 <= label < model.N_OUTPUTS:
            raise ValueError(f"label {label} outside 0..{model.N_OUTPUTS - 1}")
        if self.family is families.DSCNN:
            self._compute_head(np.asarray(features).astype(np.int8).ravel(), label)
        else:
            self._compute(np.asarray(features, np.float32).ravel(), label)

    def _on_hello_req(self, f: Frame, m: messages.HelloReq) -> None:
        self._hello()

    def _hello(self) -> None:
        self._send(
            messages.Hello(
                protocol=spec.PROTOCOL_VERSION,
                boot_id=self.boot_id,
                board_id=self.board_id,
                fw_version=(0, 1, 0),
                arch=self.family.arch_id,
                pipeline=int(PIPELINE_OF[self.family.name]),
                lr=self.lr,
                momentum=self.momentum,
                local_steps=self.local_steps,
                model_round=self.model_round,
                steps_since_global=self.steps_since_global,
                total_steps=self.total_steps,
                state=int(State.RECEIVING if self._xfer else State.IDLE),
                window=self.window,
                chunk_bytes=spec.CHUNK_BYTES,
                flags=1,
            )
        )

    def _on_set_params(self, f: Frame, m: messages.SetParams) -> None:
        lr, momentum, steps = m.lr, m.momentum, m.local_steps
        if not (0 < lr <= 10 and 0 <= momentum < 1 and steps >= 1):
            self._error(f, ErrorCode.BAD_ARGUMENT, "need lr in (0, 10], momentum in [0, 1)")
            return
        self.lr, self.momentum, self.local_steps = lr, momentum, steps
        self._ack(f)

    def _on_xfer_begin(self, f: Frame, m: messages.XferBegin) -> None:
        target, total, meta = m.target, m.total_len, m.meta
        if target not in {t.value for t in XferTarget}:
            self._error(f, ErrorCode.BAD_ARGUMENT, f"unknown transfer target {target}")
            return
        kind = XferTarget(target)
        if total != self.sizes[kind]:
            self._error(f, ErrorCode.BAD_ARGUMENT, f"{kind.name} of {total} bytes")
            return
        if kind != XferTarget.MODEL and meta >= model.N_OUTPUTS and meta != spec.NO_CLASS:
            self._error(f, ErrorCode.BAD_ARGUMENT, f"label {meta} outside 0..2")
            return
        self._xfer = _Transfer(kind, total, m.crc32, meta)
        if kind == XferTarget.MODEL:
            self.velocity[:] = 0  # the momentum buffer stages the model
        self._ack(f)

    def _on_xfer_chunk(self, f: Frame, m: messages.XferChunk) -> None:
        x = self._xfer
        if x is None:
            self._error(f, ErrorCode.BAD_STATE, "XFER_CHUNK with no transfer open")
            return
        offset, data = m.offset, m.tail
        if not data:
            self._error(f, ErrorCode.BAD_LENGTH, "XFER_CHUNK with no data")
            return
        if offset > x.total or len(data) > x.total - offset:
            self._error(f, ErrorCode.BAD_ARGUMENT, "chunk runs past the end")
            return
        end = offset + len(data)
        if offset > x.next:  # a gap: go-back-N, tell the host once where we are
            if not x.gap_acked:
                x.gap_acked = True
                self._xfer_ack(x)
            return
        if end <= x.next:  # a duplicate: re-acknowledged if it ends the last acknowledged window
            if end == x.last_ack:
                self._xfer_ack(x)
            return
        x.data[x.next : end] = data[x.next - offset :]
        x.next = end
        x.gap_acked = False
        x.since_ack += 1
        if x.since_ack >= self.window or x.next == x.total:
            self._xfer_ack(x)

    def _xfer_ack(self, x: _Transfer) -> None:
        x.last_ack = x.next
        x.since_ack = 0
        self._send(messages.XferAck(next_offset=x.next))

    def _on_xfer_end(self, f: Frame, m: messages.XferEnd) -> None:
        x = self._xfer
        if x is None:
            self._error(f, ErrorCode.BAD_STATE, "XFER_END with no transfer open")
            return
        if x.next != x.total:
            self._error(f, ErrorCode.BAD_STATE, f"transfer incomplete: {x.next} of {x.total}")
            return
        data = bytes(x.data)
        self._xfer = None
        crc = zlib.crc32(data) & 0xFFFFFFFF
        if crc != x.crc32:
            self._error(f, ErrorCode.CHECKSUM, f"CRC-32 {crc:08x}, expected {x.crc32:08x}")
            return
        floats = self.family is families.PAPER or x.target == XferTarget.MODEL
        if floats and x.target in (XferTarget.MODEL, XferTarget.FEATURES):
            values = np.frombuffer(data, "<f4")
            if not np.all(np.isfinite(values)):
                self._error(f, ErrorCode.NON_FINITE, "a value is not finite; discarded")
                return
        if x.target == XferTarget.MODEL:
            self.params = self.family.from_bytes(data).copy()
            self.velocity[:] = 0
            self.model_round = x.meta
            self.steps_since_global = 0
            self.models_applied += 1
            self._ack(f)
        elif x.target == XferTarget.FEATURES and self.family is families.DSCNN:
            self._ack(f)
            self._compute_head(np.frombuffer(data, np.int8), x.meta)
        elif x.target == XferTarget.FEATURES:
            self._ack(f)
            self._compute(np.frombuffer(data, "<f4").astype(np.float32), x.meta)
        else:
            self._ack(f)

    def _compute(self, features: model.F32, label: int) -> None:
        if label == spec.NO_CLASS:
            outputs = model.forward(self.params, features[None, :])[0]
            best = int(np.argmax(outputs))
            prediction = best if outputs[best] > model.DETECTION_THRESHOLD else spec.NO_CLASS
            self._send(
                messages.Infer(
                    outputs=_three(outputs),
                    prediction=prediction,
                    source=int(Source.HOST),
                )
            )
            return
        trainer = model.Trainer(
            self.params, lr=self.lr, momentum=self.momentum, velocity=self.velocity
        )
        step = trainer.step(features, label)
        self.params, self.velocity = trainer.params, trainer.velocity
        self.total_steps += 1
        self.steps_since_global += 1
        self._send(
            messages.Loss(
                step=self.total_steps,
                loss=step.loss,
                label=label,
                outputs=_three(step.outputs),
                model_round=self.model_round,
                steps_since_global=self.steps_since_global,
                source=int(Source.HOST),
            )
        )

    def _compute_head(self, q: npt.NDArray[np.int8], label: int) -> None:
        e = stand_in_embedding(q)
        if label == spec.NO_CLASS:
            p = head.probabilities(self.params, e)
            best = head.decide(p)
            self._send(
                messages.Infer(
                    outputs=_three(p),
                    prediction=spec.NO_CLASS if best is None else best,
                    source=int(Source.HOST),
                )
            )
            return
        before = head.probabilities(self.params, e)
        loss = head.sgd_step(self.params, e, label, self.lr)
        self.total_steps += 1
        self.steps_since_global += 1
        self._send(
            messages.Loss(
                step=self.total_steps,
                loss=loss,
                label=label,
                outputs=_three(before),
                model_round=self.model_round,
                steps_since_global=self.steps_since_global,
                source=int(Source.HOST),
            )
        )

    def _on_xfer_abort(self, f: Frame, m: messages.XferAbort) -> None:
        self._xfer = None
        self._ack(f)  # idempotent: aborting nothing is fine

    def _on_get_model(self, f: Frame, m: messages.GetModel) -> None:
        self._send(
            messages.ModelInfo(
                ref_seq=f.seq,
                total_len=self.family.model_bytes,
                crc32=model.crc32(self.params),
                model_round=self.model_round,
                steps_since_global=self.steps_since_global,
                total_steps=self.total_steps,
            )
        )

    def _on_read(self, f: Frame, m: messages.Read) -> None:
        offset, count = m.offset, m.count
        if count == 0 or offset >= self.family.model_bytes:
            self._error(f, ErrorCode.BAD_ARGUMENT, f"READ of {count} chunks at {offset}")
            return
        data = self.family.to_bytes(self.params)
        for _ in range(count):
            if offset >= len(data):
                break
            self._send(
                messages.ModelChunk(
                    offset=offset,
                    tail=data[offset : offset + spec.CHUNK_BYTES],
                )
            )
            offset += spec.CHUNK_BYTES

    def _on_reset(self, f: Frame, m: messages.Reset) -> None:
        self._ack(f)
        self._boot()
        self._hello()


def _three(outputs: model.F32) -> tuple[float, float, float]:
    """The network's three outputs as the LOSS and INFER fields carry them."""
    return float(outputs[0]), float(outputs[1]), float(outputs[2])


class _Transfer:
    """One open host-to-board transfer."""

    def __init__(self, target: XferTarget, total: int, crc32: int, meta: int) -> None:
        self.target = target
        self.total = total
        self.crc32 = crc32
        self.meta = meta
        self.data = bytearray(total)
        self.next = 0  #: every byte before it arrived, in order
        self.last_ack = 0  #: the offset of the last XFER_ACK
        self.since_ack = 0  #: in-order chunks since the last XFER_ACK
        self.gap_acked = False
