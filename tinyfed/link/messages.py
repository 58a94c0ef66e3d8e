"""The link messages as typed classes, with their payload codecs and the dispatch table.

GENERATED from :mod:`tinyfed.link.spec` by ``python -m tinyfed.link.gen``: do not edit.
One frozen dataclass per frame type, its fields named and ordered as in the spec;
:func:`tinyfed.link.frame.pack` and :func:`tinyfed.link.frame.unpack` build and read frames
through them. The drift check (``--check``) fails when this file differs from the spec.
It is long (one class per frame type, ~600 lines) because it is generated: read the
spec for the protocol, views.py for the few hand-written properties.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from tinyfed.link import views
from tinyfed.link.spec import MAX_TEXT, MsgType


def _text(text: str) -> bytes:
    """UTF-8, cut at MAX_TEXT bytes (a cut character is replaced when read)."""
    return text.encode("utf-8")[:MAX_TEXT]


class MessageBase:
    """What every message class below has: its type, layout, and payload codec."""

    TYPE: ClassVar[MsgType]
    STRUCT: ClassVar[struct.Struct]
    FIXED_SIZE: ClassVar[int]
    TAIL: ClassVar[str | None] = None  #: the variable tail: None, bytes or text
    TAIL_MAX: ClassVar[int] = 0

    def payload(self) -> bytes:
        """The payload bytes (fixed fields, then the tail)."""
        raise NotImplementedError

    @classmethod
    def _data(cls, tail: bytes) -> bytes:
        if len(tail) > cls.TAIL_MAX:
            raise ValueError(f"{cls.TYPE.name}: tail of {len(tail)} > {cls.TAIL_MAX} B")
        return tail


@dataclass(frozen=True, kw_only=True)
class HelloReq(MessageBase):
    """HELLO_REQ (0x01): Ask the board to send HELLO (also a liveness check)."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO_REQ
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    FIXED_SIZE: ClassVar[int] = 0

    def payload(self) -> bytes:
        return self.STRUCT.pack()

    @classmethod
    def from_payload(cls, payload: bytes) -> HelloReq:
        return cls()


@dataclass(frozen=True, kw_only=True)
class SetParams(MessageBase):
    """SET_PARAMS (0x02): Set the training hyper-parameters; answered by ACK."""

    TYPE: ClassVar[MsgType] = MsgType.SET_PARAMS
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<ffH")
    FIXED_SIZE: ClassVar[int] = 10

    lr: float  #: learning rate, (0, 10]
    momentum: float  #: momentum, [0, 1)
    local_steps: int  #: steps per round, >= 1

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.lr, self.momentum, self.local_steps)

    @classmethod
    def from_payload(cls, payload: bytes) -> SetParams:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            lr=v[0],
            momentum=v[1],
            local_steps=v[2],
        )


@dataclass(frozen=True, kw_only=True)
class XferBegin(MessageBase):
    """XFER_BEGIN (0x03): Open a host-to-board transfer; answered by ACK (or ERROR)."""

    TYPE: ClassVar[MsgType] = MsgType.XFER_BEGIN
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<BIII")
    FIXED_SIZE: ClassVar[int] = 13

    target: int  #: XferTarget
    total_len: int  #: bytes to follow, must equal the target's size
    crc32: int  #: CRC-32 (IEEE) of all bytes
    meta: int  #: MODEL: its global round; FEATURES/AUDIO: label or NO_CLASS

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.target, self.total_len, self.crc32, self.meta)

    @classmethod
    def from_payload(cls, payload: bytes) -> XferBegin:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            target=v[0],
            total_len=v[1],
            crc32=v[2],
            meta=v[3],
        )


@dataclass(frozen=True, kw_only=True)
class XferChunk(MessageBase):
    """XFER_CHUNK (0x04): Transfer data at an offset; the board answers XFER_ACK per window and on
    gaps.
    """

    TYPE: ClassVar[MsgType] = MsgType.XFER_CHUNK
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    FIXED_SIZE: ClassVar[int] = 4
    TAIL: ClassVar[str | None] = "bytes"
    TAIL_MAX: ClassVar[int] = 228

    offset: int
    tail: bytes = b""  #: bytes, at most 228 bytes

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.offset) + self._data(self.tail)

    @classmethod
    def from_payload(cls, payload: bytes) -> XferChunk:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            offset=v[0],
            tail=bytes(payload[cls.FIXED_SIZE :]),
        )


@dataclass(frozen=True, kw_only=True)
class XferEnd(MessageBase):
    """XFER_END (0x05): Close the transfer: the board verifies CRC-32, applies it, answers ACK or
    ERROR.
    """

    TYPE: ClassVar[MsgType] = MsgType.XFER_END
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    FIXED_SIZE: ClassVar[int] = 0

    def payload(self) -> bytes:
        return self.STRUCT.pack()

    @classmethod
    def from_payload(cls, payload: bytes) -> XferEnd:
        return cls()


@dataclass(frozen=True, kw_only=True)
class XferAbort(MessageBase):
    """XFER_ABORT (0x06): Abandon the open transfer (the running model is untouched)."""

    TYPE: ClassVar[MsgType] = MsgType.XFER_ABORT
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    FIXED_SIZE: ClassVar[int] = 0

    def payload(self) -> bytes:
        return self.STRUCT.pack()

    @classmethod
    def from_payload(cls, payload: bytes) -> XferAbort:
        return cls()


@dataclass(frozen=True, kw_only=True)
class GetModel(MessageBase):
    """GET_MODEL (0x07): Ask for MODEL_INFO: a snapshot description of the model."""

    TYPE: ClassVar[MsgType] = MsgType.GET_MODEL
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    FIXED_SIZE: ClassVar[int] = 0

    def payload(self) -> bytes:
        return self.STRUCT.pack()

    @classmethod
    def from_payload(cls, payload: bytes) -> GetModel:
        return cls()


@dataclass(frozen=True, kw_only=True)
class Read(MessageBase):
    """READ (0x08): Ask for `count` MODEL_CHUNK frames from `offset` of the model."""

    TYPE: ClassVar[MsgType] = MsgType.READ
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<IB")
    FIXED_SIZE: ClassVar[int] = 5

    offset: int
    count: int

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.offset, self.count)

    @classmethod
    def from_payload(cls, payload: bytes) -> Read:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            offset=v[0],
            count=v[1],
        )


@dataclass(frozen=True, kw_only=True)
class Reset(MessageBase):
    """RESET (0x09): Reboot: ACK, then a HELLO with a new boot id and a fresh model."""

    TYPE: ClassVar[MsgType] = MsgType.RESET
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    FIXED_SIZE: ClassVar[int] = 0

    def payload(self) -> bytes:
        return self.STRUCT.pack()

    @classmethod
    def from_payload(cls, payload: bytes) -> Reset:
        return cls()


@dataclass(frozen=True, kw_only=True)
class Hello(MessageBase, views.HelloView):
    """HELLO (0x40): Sent at boot and on HELLO_REQ."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<BI8s3BHBffHIIIBBHB")
    FIXED_SIZE: ClassVar[int] = 46

    protocol: int = 1  #: PROTOCOL_VERSION
    boot_id: int  #: random at every boot
    board_id: bytes  #: unique: nRF52840 FICR DEVICEID, or a host flag
    fw_version: tuple[int, int, int]  #: major, minor, patch
    arch: int  #: ArchId
    pipeline: int  #: PipelineId
    lr: float
    momentum: float
    local_steps: int
    model_round: int  #: global round the model descends from
    steps_since_global: int  #: training steps since that global model
    total_steps: int  #: training steps since boot
    state: int  #: State
    window: int  #: chunks per acknowledgement the board accepts
    chunk_bytes: int  #: largest chunk data, CHUNK_BYTES
    flags: int  #: bit 0: virtual board

    def payload(self) -> bytes:
        return self.STRUCT.pack(
            self.protocol,
            self.boot_id,
            self.board_id,
            *self.fw_version,
            self.arch,
            self.pipeline,
            self.lr,
            self.momentum,
            self.local_steps,
            self.model_round,
            self.steps_since_global,
            self.total_steps,
            self.state,
            self.window,
            self.chunk_bytes,
            self.flags,
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Hello:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            protocol=v[0],
            boot_id=v[1],
            board_id=v[2],
            fw_version=(v[3], v[4], v[5]),
            arch=v[6],
            pipeline=v[7],
            lr=v[8],
            momentum=v[9],
            local_steps=v[10],
            model_round=v[11],
            steps_since_global=v[12],
            total_steps=v[13],
            state=v[14],
            window=v[15],
            chunk_bytes=v[16],
            flags=v[17],
        )


@dataclass(frozen=True, kw_only=True)
class Ack(MessageBase):
    """ACK (0x41): Success reply to a command."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<HB")
    FIXED_SIZE: ClassVar[int] = 3

    ref_seq: int  #: seq of the command answered
    ref_type: int  #: type of the command answered

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.ref_seq, self.ref_type)

    @classmethod
    def from_payload(cls, payload: bytes) -> Ack:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            ref_seq=v[0],
            ref_type=v[1],
        )


@dataclass(frozen=True, kw_only=True)
class Error(MessageBase):
    """ERROR (0x42): Failure reply (or an unsolicited problem); the state is unchanged."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<HB")
    FIXED_SIZE: ClassVar[int] = 3
    TAIL: ClassVar[str | None] = "text"
    TAIL_MAX: ClassVar[int] = 200

    ref_seq: int  #: seq of the command answered
    code: int  #: ErrorCode
    tail: str = ""  #: text, at most 200 bytes

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.ref_seq, self.code) + _text(self.tail)

    @classmethod
    def from_payload(cls, payload: bytes) -> Error:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            ref_seq=v[0],
            code=v[1],
            tail=payload[cls.FIXED_SIZE :].decode("utf-8", errors="replace"),
        )


@dataclass(frozen=True, kw_only=True)
class XferAck(MessageBase):
    """XFER_ACK (0x43): All bytes before next_offset have arrived in order."""

    TYPE: ClassVar[MsgType] = MsgType.XFER_ACK
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    FIXED_SIZE: ClassVar[int] = 4

    next_offset: int

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.next_offset)

    @classmethod
    def from_payload(cls, payload: bytes) -> XferAck:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            next_offset=v[0],
        )


@dataclass(frozen=True, kw_only=True)
class ModelInfo(MessageBase):
    """MODEL_INFO (0x44): Reply to GET_MODEL."""

    TYPE: ClassVar[MsgType] = MsgType.MODEL_INFO
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<HIIIII")
    FIXED_SIZE: ClassVar[int] = 22

    ref_seq: int  #: seq of the command answered
    total_len: int
    crc32: int  #: CRC-32 of the model at this moment
    model_round: int
    steps_since_global: int
    total_steps: int

    def payload(self) -> bytes:
        return self.STRUCT.pack(
            self.ref_seq,
            self.total_len,
            self.crc32,
            self.model_round,
            self.steps_since_global,
            self.total_steps,
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> ModelInfo:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            ref_seq=v[0],
            total_len=v[1],
            crc32=v[2],
            model_round=v[3],
            steps_since_global=v[4],
            total_steps=v[5],
        )


@dataclass(frozen=True, kw_only=True)
class ModelChunk(MessageBase):
    """MODEL_CHUNK (0x45): Model bytes at an offset (reply to READ)."""

    TYPE: ClassVar[MsgType] = MsgType.MODEL_CHUNK
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<I")
    FIXED_SIZE: ClassVar[int] = 4
    TAIL: ClassVar[str | None] = "bytes"
    TAIL_MAX: ClassVar[int] = 228

    offset: int
    tail: bytes = b""  #: bytes, at most 228 bytes

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.offset) + self._data(self.tail)

    @classmethod
    def from_payload(cls, payload: bytes) -> ModelChunk:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            offset=v[0],
            tail=bytes(payload[cls.FIXED_SIZE :]),
        )


@dataclass(frozen=True, kw_only=True)
class Loss(MessageBase, views.LossView):
    """LOSS (0x46): One training step done (loss and outputs before its update)."""

    TYPE: ClassVar[MsgType] = MsgType.LOSS
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<IfB3fIIB")
    FIXED_SIZE: ClassVar[int] = 30

    step: int  #: total_steps after this step
    loss: float
    label: int
    outputs: tuple[float, float, float]
    model_round: int
    steps_since_global: int
    source: int  #: Source

    def payload(self) -> bytes:
        return self.STRUCT.pack(
            self.step,
            self.loss,
            self.label,
            *self.outputs,
            self.model_round,
            self.steps_since_global,
            self.source,
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Loss:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            step=v[0],
            loss=v[1],
            label=v[2],
            outputs=(v[3], v[4], v[5]),
            model_round=v[6],
            steps_since_global=v[7],
            source=v[8],
        )


@dataclass(frozen=True, kw_only=True)
class Infer(MessageBase):
    """INFER (0x47): One inference done."""

    TYPE: ClassVar[MsgType] = MsgType.INFER
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<3fBB")
    FIXED_SIZE: ClassVar[int] = 14

    outputs: tuple[float, float, float]
    prediction: int | None  #: class above the threshold, or NO_CLASS
    source: int  #: Source

    def payload(self) -> bytes:
        return self.STRUCT.pack(
            *self.outputs,
            255 if self.prediction is None else self.prediction,
            self.source,
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Infer:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            outputs=(v[0], v[1], v[2]),
            prediction=None if v[3] == 255 else v[3],
            source=v[4],
        )


@dataclass(frozen=True, kw_only=True)
class State(MessageBase):
    """STATE (0x48): State or LED change."""

    TYPE: ClassVar[MsgType] = MsgType.STATE
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<BB")
    FIXED_SIZE: ClassVar[int] = 2

    state: int  #: State
    led: int  #: bit0 R, bit1 G, bit2 B, bit3 busy

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.state, self.led)

    @classmethod
    def from_payload(cls, payload: bytes) -> State:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            state=v[0],
            led=v[1],
        )


@dataclass(frozen=True, kw_only=True)
class Log(MessageBase, views.LogView):
    """LOG (0x49): A log line."""

    TYPE: ClassVar[MsgType] = MsgType.LOG
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<B")
    FIXED_SIZE: ClassVar[int] = 1
    TAIL: ClassVar[str | None] = "text"
    TAIL_MAX: ClassVar[int] = 200

    level: int  #: 0 debug .. 3 error
    tail: str = ""  #: text, at most 200 bytes

    def payload(self) -> bytes:
        return self.STRUCT.pack(self.level) + _text(self.tail)

    @classmethod
    def from_payload(cls, payload: bytes) -> Log:
        v = cls.STRUCT.unpack_from(payload)
        return cls(
            level=v[0],
            tail=payload[cls.FIXED_SIZE :].decode("utf-8", errors="replace"),
        )


#: Any message.
Message: TypeAlias = (
    HelloReq
    | SetParams
    | XferBegin
    | XferChunk
    | XferEnd
    | XferAbort
    | GetModel
    | Read
    | Reset
    | Hello
    | Ack
    | Error
    | XferAck
    | ModelInfo
    | ModelChunk
    | Loss
    | Infer
    | State
    | Log
)

#: The dispatch table: frame type -> its message class.
BY_TYPE: dict[int, type[Message]] = {
    MsgType.HELLO_REQ: HelloReq,
    MsgType.SET_PARAMS: SetParams,
    MsgType.XFER_BEGIN: XferBegin,
    MsgType.XFER_CHUNK: XferChunk,
    MsgType.XFER_END: XferEnd,
    MsgType.XFER_ABORT: XferAbort,
    MsgType.GET_MODEL: GetModel,
    MsgType.READ: Read,
    MsgType.RESET: Reset,
    MsgType.HELLO: Hello,
    MsgType.ACK: Ack,
    MsgType.ERROR: Error,
    MsgType.XFER_ACK: XferAck,
    MsgType.MODEL_INFO: ModelInfo,
    MsgType.MODEL_CHUNK: ModelChunk,
    MsgType.LOSS: Loss,
    MsgType.INFER: Infer,
    MsgType.STATE: State,
    MsgType.LOG: Log,
}
