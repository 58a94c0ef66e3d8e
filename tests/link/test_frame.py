"""The link frame codec and the single protocol definition."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests import link_support
from tinyfed.link import frame, gen, spec
from tinyfed.link.frame import Frame, FrameError, FrameParser
from tinyfed.link.spec import ErrorCode, MsgType

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "link" / "frames.txt"


def test_generated_header_and_vectors_match_the_spec() -> None:
    # A failure here means tinyfed/link/spec.py changed without `python -m tinyfed.link.gen`.
    assert gen.main(["--check"]) == 0
    assert gen.HEADER_PATH.read_text() == gen.render()


def test_crc16_is_ccitt_false() -> None:
    assert frame.crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("size", [0, 1, 253, 254, 255, 508, 1000])
def test_cobs_round_trips_and_never_emits_zero(size: int) -> None:
    rng = random.Random(size)
    for _ in range(50):
        data = bytes(rng.choice([0, 0, 1, 255, rng.randrange(256)]) for _ in range(size))
        encoded = frame.cobs_encode(data)
        assert 0 not in encoded
        assert frame.cobs_decode(encoded) == data


def test_every_vector_decodes_as_recorded() -> None:
    cases = [ln.split() for ln in VECTORS.read_text().splitlines() if not ln.startswith("#")]
    assert len(cases) >= 10
    for name, wire_hex, outcome, *rest in cases:
        wire = bytes.fromhex(wire_hex)
        assert wire.endswith(b"\x00"), name
        if outcome == "ok":
            decoded = frame.decode_frame(wire[:-1])
            payload = b"" if rest[2] == "-" else bytes.fromhex(rest[2])
            assert (decoded.type, decoded.seq, decoded.payload) == (
                int(rest[0]),
                int(rest[1]),
                payload,
            ), name
        else:
            with pytest.raises(FrameError) as info:
                frame.decode_frame(wire[:-1])
            assert info.value.code == int(rest[0]), name


def test_largest_frame_fits_one_ble_write() -> None:
    wire = link_support.pack(MsgType.XFER_CHUNK, 1, offset=0, tail=b"\xff" * spec.CHUNK_BYTES)
    assert len(wire) <= spec.MAX_FRAME_WIRE <= 244


def test_parser_resyncs_after_garbage_and_split_reads() -> None:
    # Prepare
    good = link_support.pack(MsgType.READ, 3, offset=228, count=8)
    stream = b"\x13\x37garbage\x00" + good + b"\xff" * 500 + b"\x00" + good
    parser = FrameParser()
    # Execute: feed one byte at a time, as a slow serial line would deliver it
    results: list[Frame | FrameError] = []
    for i in range(len(stream)):
        results += parser.feed(stream[i : i + 1])
    # Assert
    frames = [r for r in results if isinstance(r, Frame)]
    errors = [r for r in results if isinstance(r, FrameError)]
    assert [link_support.unpack(f) for f in frames] == [{"offset": 228, "count": 8}] * 2
    assert {e.code for e in errors} >= {ErrorCode.OVERFLOW}
    assert len(errors) == 2


def test_corrupted_byte_is_reported_as_bad_crc() -> None:
    wire = bytearray(link_support.pack(MsgType.SET_PARAMS, 1, lr=0.1, momentum=0.9, local_steps=10))
    wire[5] ^= 0x40
    (result,) = FrameParser().feed(bytes(wire))
    assert isinstance(result, FrameError)
    assert result.code == ErrorCode.BAD_CRC


def test_unpack_rejects_unknown_type_and_wrong_size() -> None:
    with pytest.raises(FrameError, match="unknown frame type 0x30") as info:
        link_support.unpack(Frame(0x30, 1, b""))
    assert info.value.code == ErrorCode.UNKNOWN_TYPE
    with pytest.raises(FrameError, match="READ payload of 4 bytes, expected 5") as info:
        link_support.unpack(Frame(MsgType.READ, 1, b"\x00" * 4))
    assert info.value.code == ErrorCode.BAD_LENGTH


def test_pack_and_unpack_every_message_round_trip() -> None:
    for msg in spec.MESSAGES:
        values: dict[str, object] = {}
        for f in msg.fields:
            count = f.size // (1 if f.fmt[-1] in "Bs" else 2 if f.fmt[-1] == "H" else 4)
            if f.fmt.endswith("s"):
                values[f.name] = b"x" * f.size
            elif f.fmt[-1] == "f":
                values[f.name] = 0.5 if count == 1 else (0.5,) * count
            else:
                values[f.name] = 1 if len(f.fmt) == 1 else (1,) * int(f.fmt[:-1])
        tail: bytes | str = b""
        if msg.tail == "bytes":
            tail = b"\x01" * msg.tail_max
        elif msg.tail == "text":
            tail = "héllo"
        (decoded,) = FrameParser().feed(link_support.pack(msg.type, 9, tail=tail, **values))
        assert isinstance(decoded, Frame)
        out = link_support.unpack(decoded)
        if msg.tail is not None:
            assert out.pop("tail") == tail
        assert out == values, msg.type.name
