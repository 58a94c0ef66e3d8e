"""The device link protocol, declared once.

Wire format of one frame (all integers little-endian)::

    COBS( version:u8 | type:u8 | seq:u16 | length:u16 | payload[length] | crc16:u16 ) 0x00

``crc16`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) over
every byte before it. Frames are COBS-encoded and delimited by a single zero byte, so a reader
resynchronises at the next zero after any garbage. ``seq`` counts frames per sender (a gap in
the board's sequence means the host lost a frame); replies name the command they answer by
its ``seq`` (``ref_seq``).

A frame is at most :data:`MAX_FRAME_WIRE` bytes on the wire, so one fits one BLE ATT write at
MTU 247 (244 bytes of payload) and a window of frames fits the board's receive buffer.

Transfers (model download, sample upload) are chunked: ``XFER_BEGIN`` (target, length, CRC-32,
meta), ``XFER_CHUNK`` x n, ``XFER_END``. The board answers ``XFER_ACK(next_offset)`` after every
``window`` chunks, at the last chunk, and whenever a chunk arrives out of order (go-back-N).
``XFER_END`` makes the board verify the end-to-end CRC-32 (IEEE, as zlib) and only then apply
the data. Model upload (board to host): ``GET_MODEL`` returns ``MODEL_INFO`` (length, CRC-32,
round, steps); ``READ(offset, count)`` returns ``count`` ``MODEL_CHUNK`` frames.

Rules both sides keep:

* An ERROR answering a frame whose own ``seq`` cannot be trusted (bad COBS, CRC or an
  overflow) carries ``ref_seq`` = :data:`UNKNOWN_SEQ`. A bad frame never changes the state.
* ``XFER_BEGIN`` while a transfer is open replaces it (after validating its arguments), so a
  host that lost the reply simply starts again; ``XFER_ABORT`` with nothing open is ACKed.
* ``XFER_END`` before every byte has arrived is answered BAD_STATE and the transfer stays
  open; a transfer with no frame for :data:`XFER_TIMEOUT_MS` is abandoned (and logged).
* A MODEL transfer zeroes the momentum buffer as soon as it begins (the buffer stages the
  model); the running weights change only when ``XFER_END`` verifies.
* The board sends HELLO at boot, but a host that opens the port later has missed it: hosts
  start with ``HELLO_REQ``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

PROTOCOL_VERSION = 1  #: bumped on any incompatible change of this file
HEADER_FORMAT = "<BBHH"  #: version, type, seq, payload length
HEADER_BYTES = struct.calcsize(HEADER_FORMAT)  #: 6
CRC_BYTES = 2  #: CRC-16/CCITT-FALSE
#: Largest frame on the wire including the COBS overhead byte and the 0x00 delimiter: one BLE
#: ATT write at MTU 247 carries 244 bytes, and 242 leaves room to spare.
MAX_FRAME_WIRE = 242
#: Largest payload: the wire limit minus delimiter, COBS overhead (1 byte per 254), header, CRC.
MAX_PAYLOAD = MAX_FRAME_WIRE - 2 - HEADER_BYTES - CRC_BYTES  # 232
CHUNK_BYTES = 228  #: data bytes per XFER_CHUNK / MODEL_CHUNK (57 floats; payload 232)
DEFAULT_WINDOW = 8  #: chunks per acknowledgement the board advertises (8 x 242 B = 1.9 KB)
MAX_TEXT = 200  #: longest LOG / ERROR message text in bytes (UTF-8)
NO_CLASS = 0xFF  #: "no class" in label / prediction fields (inference, below threshold)
UNKNOWN_SEQ = 0xFFFF  #: ref_seq of an ERROR answering a frame whose seq cannot be trusted
#: A transfer with no frame for this long is abandoned by the board; far above one window's
#: round trip even over BLE (~0.1 s), short enough that a vanished gateway frees the board.
XFER_TIMEOUT_MS = 5000
BAUD_RATE = 115200  #: nominal; USB CDC ignores it, a UART bridge (tcp://) needs it

# BLE: one custom GATT service carrying the same byte stream of frames as serial.
BLE_SERVICE_UUID = "7a1f0001-5c4e-4b9a-9d1e-7f1ed0b0a001"
#: Host to board: write without response, MTU-sized pieces of the frame stream.
BLE_RX_CHAR_UUID = "7a1f0002-5c4e-4b9a-9d1e-7f1ed0b0a001"
#: Board to host: notifications, MTU-sized pieces of the frame stream.
BLE_TX_CHAR_UUID = "7a1f0003-5c4e-4b9a-9d1e-7f1ed0b0a001"
BLE_NAME_PREFIX = "tinyfed-"  #: advertised local name: prefix + last 4 hex digits of board id
USB_VID_PID = ((0x2341, 0x805A), (0x2341, 0x005A))  #: Arduino Nano 33 BLE (app, bootloader)


class MsgType(IntEnum):
    """Frame types. Host-to-board commands are 0x01-0x3F; board-to-host frames 0x40-0x7F."""

    HELLO_REQ = 0x01
    SET_PARAMS = 0x02
    XFER_BEGIN = 0x03
    XFER_CHUNK = 0x04
    XFER_END = 0x05
    XFER_ABORT = 0x06
    GET_MODEL = 0x07
    READ = 0x08
    RESET = 0x09
    HELLO = 0x40
    ACK = 0x41
    ERROR = 0x42
    XFER_ACK = 0x43
    MODEL_INFO = 0x44
    MODEL_CHUNK = 0x45
    LOSS = 0x46
    INFER = 0x47
    STATE = 0x48
    LOG = 0x49


class XferTarget(IntEnum):
    """What a host-to-board transfer carries, and where the board stages it."""

    MODEL = 1  #: 41,868 B of parameters; staged in the momentum buffer, applied on verify
    FEATURES = 2  #: one sample of 650 float32 features; meta = label (NO_CLASS: infer only)
    AUDIO = 3  #: one second of 16,000 int16 samples; meta = label (NO_CLASS: infer only)


class ErrorCode(IntEnum):
    """Codes of ERROR frames; the text beside them says more."""

    BAD_CRC = 1  #: frame CRC-16 mismatch
    BAD_LENGTH = 2  #: length field disagrees with the frame, or a payload of the wrong size
    UNKNOWN_TYPE = 3  #: type not in this table (or a board-to-host type sent to the board)
    BAD_VERSION = 4  #: protocol version differs from PROTOCOL_VERSION
    BAD_STATE = 5  #: command not allowed now (a chunk with no transfer open, ...)
    BAD_ARGUMENT = 6  #: a field out of range (target, length, offset, label, lr, ...)
    CHECKSUM = 7  #: end-to-end CRC-32 of a transfer does not match
    NON_FINITE = 8  #: a model or sample with NaN or infinity
    BUSY = 9  #: the board is recording or computing; retry later
    OVERFLOW = 10  #: a frame longer than the receive buffer
    BAD_ENCODING = 11  #: COBS decoding failed


class State(IntEnum):
    """Device states reported in HELLO and STATE frames."""

    IDLE = 0
    ARMED = 1  #: a training/inference button is held (LED shows the class colour)
    RECORDING = 2  #: recording one second after the button was released
    COMPUTING = 3  #: features, training step or inference (built-in LED on)
    RECEIVING = 4  #: a host-to-board transfer is open


class Source(IntEnum):
    """Where a training/inference sample came from."""

    BUTTON = 0  #: the microphone, after a button press
    HOST = 1  #: a sample sent by the host over the link


class ArchId(IntEnum):
    """Network architectures."""

    FC650_16_3 = 1  #: the paper's 650-16-3 sigmoid network (tinyfed.model.ARCH_ID)
    DSCNN_HEAD = 2  #: the frozen int8 DS-CNN extractor + a float head; only the head moves


class PipelineId(IntEnum):
    """Feature pipelines (tinyfed.features.pipelines); ids never change meaning."""

    PAPER = 1  #: the paper's Edge Impulse MFCC, exactly
    CENTROID = 2  #: energy-centroid alignment, then the paper's MFCC
    LOGMEL40 = 3  #: alignment, 40 log-mel bands x 50 frames, int8 (docs/learning.md)


@dataclass(frozen=True)
class Field:
    """One fixed-size field: ``fmt`` is a :mod:`struct` code (``B H I f 8s 3f``...)."""

    name: str
    fmt: str
    doc: str = ""
    #: The value Python reads as ``None`` (``prediction``: NO_CLASS); the wire keeps the integer.
    none: int | None = None
    #: The value Python gives the field when a message is built without it (``protocol``).
    default: int | None = None

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.fmt)


@dataclass(frozen=True)
class Message:
    """One frame type: fixed fields, then optionally a variable tail (``bytes`` or ``text``)."""

    type: MsgType
    doc: str
    fields: tuple[Field, ...] = ()
    tail: str | None = None  #: "bytes" (chunk data) or "text" (UTF-8, <= MAX_TEXT)
    tail_max: int = 0

    @property
    def fixed_format(self) -> str:
        return "<" + "".join(f.fmt for f in self.fields)

    @property
    def fixed_size(self) -> int:
        return struct.calcsize(self.fixed_format)

    def offset(self, name: str) -> int:
        """Byte offset of field ``name`` in the payload."""
        pos = 0
        for f in self.fields:
            if f.name == name:
                return pos
            pos += f.size
        raise KeyError(f"{self.type.name} has no field {name!r}")


_REF = (Field("ref_seq", "H", "seq of the command answered"),)

MESSAGES: tuple[Message, ...] = (
    Message(MsgType.HELLO_REQ, "Ask the board to send HELLO (also a liveness check)."),
    Message(
        MsgType.SET_PARAMS,
        "Set the training hyper-parameters; answered by ACK.",
        (
            Field("lr", "f", "learning rate, (0, 10]"),
            Field("momentum", "f", "momentum, [0, 1)"),
            Field("local_steps", "H", "steps per round, >= 1"),
        ),
    ),
    Message(
        MsgType.XFER_BEGIN,
        "Open a host-to-board transfer; answered by ACK (or ERROR).",
        (
            Field("target", "B", "XferTarget"),
            Field("total_len", "I", "bytes to follow, must equal the target's size"),
            Field("crc32", "I", "CRC-32 (IEEE) of all bytes"),
            Field("meta", "I", "MODEL: its global round; FEATURES/AUDIO: label or NO_CLASS"),
        ),
    ),
    Message(
        MsgType.XFER_CHUNK,
        "Transfer data at an offset; the board answers XFER_ACK per window and on gaps.",
        (Field("offset", "I"),),
        tail="bytes",
        tail_max=CHUNK_BYTES,
    ),
    Message(
        MsgType.XFER_END,
        "Close the transfer: the board verifies CRC-32, applies it, answers ACK or ERROR.",
    ),
    Message(MsgType.XFER_ABORT, "Abandon the open transfer (the running model is untouched)."),
    Message(MsgType.GET_MODEL, "Ask for MODEL_INFO: a snapshot description of the model."),
    Message(
        MsgType.READ,
        "Ask for `count` MODEL_CHUNK frames from `offset` of the model.",
        (Field("offset", "I"), Field("count", "B")),
    ),
    Message(MsgType.RESET, "Reboot: ACK, then a HELLO with a new boot id and a fresh model."),
    Message(
        MsgType.HELLO,
        "Sent at boot and on HELLO_REQ.",
        (
            Field("protocol", "B", "PROTOCOL_VERSION", default=PROTOCOL_VERSION),
            Field("boot_id", "I", "random at every boot"),
            Field("board_id", "8s", "unique: nRF52840 FICR DEVICEID, or a host flag"),
            Field("fw_version", "3B", "major, minor, patch"),
            Field("arch", "H", "ArchId"),
            Field("pipeline", "B", "PipelineId"),
            Field("lr", "f"),
            Field("momentum", "f"),
            Field("local_steps", "H"),
            Field("model_round", "I", "global round the model descends from"),
            Field("steps_since_global", "I", "training steps since that global model"),
            Field("total_steps", "I", "training steps since boot"),
            Field("state", "B", "State"),
            Field("window", "B", "chunks per acknowledgement the board accepts"),
            Field("chunk_bytes", "H", "largest chunk data, CHUNK_BYTES"),
            Field("flags", "B", "bit 0: virtual board"),
        ),
    ),
    Message(
        MsgType.ACK,
        "Success reply to a command.",
        (*_REF, Field("ref_type", "B", "type of the command answered")),
    ),
    Message(
        MsgType.ERROR,
        "Failure reply (or an unsolicited problem); the state is unchanged.",
        (*_REF, Field("code", "B", "ErrorCode")),
        tail="text",
        tail_max=MAX_TEXT,
    ),
    Message(
        MsgType.XFER_ACK,
        "All bytes before next_offset have arrived in order.",
        (Field("next_offset", "I"),),
    ),
    Message(
        MsgType.MODEL_INFO,
        "Reply to GET_MODEL.",
        (
            *_REF,
            Field("total_len", "I"),
            Field("crc32", "I", "CRC-32 of the model at this moment"),
            Field("model_round", "I"),
            Field("steps_since_global", "I"),
            Field("total_steps", "I"),
        ),
    ),
    Message(
        MsgType.MODEL_CHUNK,
        "Model bytes at an offset (reply to READ).",
        (Field("offset", "I"),),
        tail="bytes",
        tail_max=CHUNK_BYTES,
    ),
    Message(
        MsgType.LOSS,
        "One training step done (loss and outputs before its update).",
        (
            Field("step", "I", "total_steps after this step"),
            Field("loss", "f"),
            Field("label", "B"),
            Field("outputs", "3f"),
            Field("model_round", "I"),
            Field("steps_since_global", "I"),
            Field("source", "B", "Source"),
        ),
    ),
    Message(
        MsgType.INFER,
        "One inference done.",
        (
            Field("outputs", "3f"),
            Field("prediction", "B", "class above the threshold, or NO_CLASS", none=NO_CLASS),
            Field("source", "B", "Source"),
        ),
    ),
    Message(
        MsgType.STATE,
        "State or LED change.",
        (Field("state", "B", "State"), Field("led", "B", "bit0 R, bit1 G, bit2 B, bit3 busy")),
    ),
    Message(
        MsgType.LOG, "A log line.", (Field("level", "B", "0 debug .. 3 error"),), "text", MAX_TEXT
    ),
)

BY_TYPE: dict[int, Message] = {m.type.value: m for m in MESSAGES}


def _check() -> None:
    for m in MESSAGES:
        assert m.fixed_size + m.tail_max <= MAX_PAYLOAD, m.type.name
    assert len(BY_TYPE) == len(MESSAGES) == len(MsgType)


_check()
