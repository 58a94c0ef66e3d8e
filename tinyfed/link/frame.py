"""Frame codec of the link protocol: CRC-16, COBS, frame (de)construction, messages.

This module is pure: no I/O. :class:`FrameParser` is fed raw bytes from any transport and
returns complete frames, dropping bytes up to the next delimiter after anything invalid and
reporting why (so a gateway can log the problem and the board can answer with an ERROR).
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from typing import TypeVar

from tinyfed.link import messages
from tinyfed.link.messages import MessageBase
from tinyfed.link.spec import (
    BY_TYPE,
    CRC_BYTES,
    HEADER_BYTES,
    HEADER_FORMAT,
    MAX_FRAME_WIRE,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    ErrorCode,
    Message,
    MsgType,
)


class FrameError(Exception):
    """A frame that cannot be accepted; ``code`` is the :class:`ErrorCode` a board would send."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor.

    ``binascii.crc_hqx`` is exactly this CRC (poly 0x1021, unreflected, init given), in C: a
    bitwise Python loop cost ~0.16 ms per full frame, most of a model transfer's time.
    """
    return binascii.crc_hqx(data, crc)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result has no zero byte."""
    out = bytearray([0])
    code_pos = 0
    code = 1
    for byte in data:
        if byte == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises :class:`FrameError` on an invalid encoding."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError(ErrorCode.BAD_ENCODING, "zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise FrameError(ErrorCode.BAD_ENCODING, "COBS block runs past the frame end")
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError(ErrorCode.BAD_ENCODING, "zero byte inside a COBS frame")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    """A decoded frame: type, sender's sequence number and raw payload."""

    type: int
    seq: int
    payload: bytes

    @property
    def name(self) -> str:
        try:
            return MsgType(self.type).name
        except ValueError:
            return f"0x{self.type:02x}"


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """The wire bytes of one frame, delimiter included."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    raw = struct.pack(HEADER_FORMAT, PROTOCOL_VERSION, msg_type, seq & 0xFFFF, len(payload))
    raw += payload
    raw += struct.pack("<H", crc16(raw))
    return cobs_encode(raw) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame's COBS bytes (without the delimiter); :class:`FrameError` if invalid."""
    if len(encoded) + 1 > MAX_FRAME_WIRE:
        raise FrameError(ErrorCode.OVERFLOW, f"frame of {len(encoded) + 1} bytes on the wire")
    raw = cobs_decode(encoded)
    if len(raw) < HEADER_BYTES + CRC_BYTES:
        raise FrameError(ErrorCode.BAD_LENGTH, f"frame of {len(raw)} bytes is too short")
    (crc,) = struct.unpack_from("<H", raw, len(raw) - CRC_BYTES)
    if crc16(raw[:-CRC_BYTES]) != crc:
        raise FrameError(ErrorCode.BAD_CRC, "frame CRC-16 mismatch")
    version, msg_type, seq, length = struct.unpack_from(HEADER_FORMAT, raw)
    if version != PROTOCOL_VERSION:
        raise FrameError(
            ErrorCode.BAD_VERSION, f"protocol version {version}, expected {PROTOCOL_VERSION}"
        )
    if length != len(raw) - HEADER_BYTES - CRC_BYTES:
        raise FrameError(
            ErrorCode.BAD_LENGTH,
            f"length field {length} but {len(raw) - HEADER_BYTES - CRC_BYTES} payload bytes",
        )
    return Frame(msg_type, seq, raw[HEADER_BYTES:-CRC_BYTES])


class FrameParser:
    """Incremental frame extraction from a byte stream, resynchronising after garbage.

    ``feed(data)`` returns the complete frames and the errors (``FrameError``) met since the
    last call, in stream order. Bytes after the last delimiter wait for the next call; a
    partial frame longer than :data:`MAX_FRAME_WIRE` is dropped up to the next delimiter.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:], out)
                return out
            self._append(data[start:end], out)
            if self._discarding:
                self._discarding = False
            elif self._buf:
                try:
                    out.append(decode_frame(bytes(self._buf)))
                except FrameError as exc:
                    out.append(exc)
            self._buf.clear()
            start = end + 1

    def _append(self, piece: bytes, out: list[Frame | FrameError]) -> None:
        if self._discarding or not piece:
            return
        self._buf += piece
        if len(self._buf) + 1 > MAX_FRAME_WIRE:
            out.append(FrameError(ErrorCode.OVERFLOW, "frame longer than the receive buffer"))
            self._buf.clear()
            self._discarding = True


# ----------------------------------------------------------------------------- messages

M = TypeVar("M", bound=MessageBase)


def pack(message: MessageBase, seq: int) -> bytes:
    """Wire bytes of a message (one of the generated :mod:`tinyfed.link.messages` classes)."""
    return encode_frame(message.TYPE, seq, message.payload())


def message_of(frame: Frame) -> Message:
    """The spec entry of a frame's type; :class:`FrameError` for an unknown type."""
    msg = BY_TYPE.get(frame.type)
    if msg is None:
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type 0x{frame.type:02x}")
    return msg


def unpack(frame: Frame) -> messages.Message:
    """The message a frame carries, through the dispatch table (:data:`messages.BY_TYPE`).

    :class:`FrameError` for an unknown type or a payload of the wrong size.
    """
    message_of(frame)
    cls = messages.BY_TYPE[frame.type]
    n = len(frame.payload)
    if n < cls.FIXED_SIZE or (cls.TAIL is None and n != cls.FIXED_SIZE):
        raise FrameError(
            ErrorCode.BAD_LENGTH,
            f"{cls.TYPE.name} payload of {n} bytes, expected "
            f"{cls.FIXED_SIZE}{' + tail' if cls.TAIL else ''}",
        )
    if n - cls.FIXED_SIZE > cls.TAIL_MAX:
        raise FrameError(ErrorCode.BAD_LENGTH, f"{cls.TYPE.name} tail too long")
    return cls.from_payload(frame.payload)


def unpack_as(frame: Frame, cls: type[M]) -> M:
    """:func:`unpack` for a frame that must be a ``cls``; :class:`FrameError` if it is not."""
    message = unpack(frame)
    if not isinstance(message, cls):
        raise FrameError(
            ErrorCode.UNKNOWN_TYPE, f"{frame.name} frame where {cls.TYPE.name} was expected"
        )
    return message
