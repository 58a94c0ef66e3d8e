"""Generate every file that restates :mod:`tinyfed.link.spec`, and check them for drift.

What it writes (run ``python -m tinyfed.link.gen`` after changing the spec):

* ``tinyfed/link/messages.py``: a frozen dataclass per message with its payload codec, and the
  dispatch table ``BY_TYPE`` (:func:`render_python`);
* ``firmware/core/link_spec.h``: the constants and enums with their names, the payload offsets,
  a ``Fields`` struct with ``encode``/``decode`` per message, and the command table
  (:func:`render`);
* ``vectors/link/frames.txt``: frame test vectors for both codecs (:func:`render_vectors`);
* ``vectors/align/``: the alignment stage's shared vectors
  (:func:`tinyfed.features.align_vectors.render`), generated files too, so checked with the rest.

``--check`` writes nothing and exits 1 if any file differs from what it would write
(``scripts/check`` runs it).

One module of ~550 lines: the three renderings share the mapping of spec fields to Python and
C++ types (:class:`_Kind`) and are read side by side when the spec grows a new kind of field.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
import textwrap
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from tinyfed.features import align_vectors
from tinyfed.link import frame, messages as m, spec

ROOT = Path(__file__).resolve().parents[2]
HEADER_PATH = ROOT / "firmware" / "core" / "link_spec.h"
MESSAGES_PATH = ROOT / "tinyfed" / "link" / "messages.py"
VECTORS_PATH = ROOT / "vectors" / "link" / "frames.txt"
ALIGN_PATH = ROOT / "vectors" / "align"


# ----------------------------------------------------------------------------- field types


@dataclass(frozen=True)
class _Kind:
    """How one spec field maps to Python and C++: element type and count."""

    count: int  # elements (1 for a scalar; the byte count for ``Ns``)
    code: str  # struct code of one element: B H I f s

    @property
    def cpp(self) -> str:
        return {"B": "uint8_t", "H": "uint16_t", "I": "uint32_t", "f": "float", "s": "uint8_t"}[
            self.code
        ]

    @property
    def put(self) -> str:
        return {"B": "u8", "H": "u16", "I": "u32", "f": "f32", "s": "u8"}[self.code]

    @property
    def width(self) -> int:
        return struct.calcsize("<" + ("B" if self.code == "s" else self.code))

    @property
    def array(self) -> bool:
        return self.count > 1 or self.code == "s"


def _kind(fmt: str) -> _Kind:
    m = re.fullmatch(r"(\d*)([BHIfs])", fmt)
    assert m, fmt
    return _Kind(int(m.group(1) or "1"), m.group(2))


def _fmt_cpp(fmt: str) -> str:
    k = _kind(fmt)
    name = {"B": "u8", "H": "u16", "I": "u32", "f": "f32", "s": "bytes"}[k.code]
    return f"{name} x {k.count}" if k.array else name


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.lower().split("_"))


def _commands() -> list[spec.Message]:
    """The host-to-board messages (types below HELLO, spec.MsgType)."""
    return [m for m in spec.MESSAGES if m.type < spec.MsgType.HELLO]


# ----------------------------------------------------------------------------- Python

#: Hand-written mixins (tinyfed/link/views.py) a generated message class takes as its base.
VIEWS: dict[spec.MsgType, str] = {
    spec.MsgType.HELLO: "HelloView",
    spec.MsgType.LOSS: "LossView",
    spec.MsgType.LOG: "LogView",
}


def _py_type(f: spec.Field) -> str:
    k = _kind(f.fmt)
    if k.code == "s":
        return "bytes"
    one = "float" if k.code == "f" else "int"
    base = f"tuple[{', '.join([one] * k.count)}]" if k.count > 1 else one
    return f"{base} | None" if f.none is not None else base


def _py_doc(text: str) -> list[str]:
    """A class docstring within 100 columns."""
    if len(text) <= 100 - 10:
        return [f'    """{text}"""']
    return ['    """' + textwrap.fill(text, 96, subsequent_indent="    "), '    """']


def _py_class(msg: spec.Message) -> list[str]:
    name = _camel(msg.type.name)
    bases = ", ".join(["MessageBase"] + ([f"views.{VIEWS[msg.type]}"] if msg.type in VIEWS else []))
    lines = [
        "",
        "",
        "@dataclass(frozen=True, kw_only=True)",
        f"class {name}({bases}):",
        *_py_doc(f"{msg.type.name} (0x{msg.type.value:02X}): {msg.doc}"),
        "",
        f"    TYPE: ClassVar[MsgType] = MsgType.{msg.type.name}",
        f'    STRUCT: ClassVar[struct.Struct] = struct.Struct("{msg.fixed_format}")',
        f"    FIXED_SIZE: ClassVar[int] = {msg.fixed_size}",
    ]
    if msg.tail is not None:
        lines.append(f'    TAIL: ClassVar[str | None] = "{msg.tail}"')
        lines.append(f"    TAIL_MAX: ClassVar[int] = {msg.tail_max}")
    if msg.fields or msg.tail is not None:
        lines.append("")
    for f in msg.fields:
        default = f" = {f.default}" if f.default is not None else ""
        doc = f"  #: {f.doc}" if f.doc else ""
        lines.append(f"    {f.name}: {_py_type(f)}{default}{doc}")
    if msg.tail is not None:
        kind = "str" if msg.tail == "text" else "bytes"
        empty = '""' if msg.tail == "text" else 'b""'
        lines.append(f"    tail: {kind} = {empty}  #: {msg.tail}, at most {msg.tail_max} bytes")
    # payload()
    args: list[str] = []
    for f in msg.fields:
        k = _kind(f.fmt)
        if f.none is not None:
            args.append(f"{f.none} if self.{f.name} is None else self.{f.name}")
        elif k.array and k.code != "s":
            args.append(f"*self.{f.name}")
        else:
            args.append(f"self.{f.name}")
    tail = {"text": " + _text(self.tail)", "bytes": " + self._data(self.tail)"}.get(
        msg.tail or "", ""
    )
    lines += ["", "    def payload(self) -> bytes:"]
    one_line = f"        return self.STRUCT.pack({', '.join(args)}){tail}"
    if len(one_line) <= 100:
        lines.append(one_line)
    else:  # one argument a line, as ruff format lays it out
        assert not tail, "a long message with a tail: lay it out like ruff format"
        lines += ["        return self.STRUCT.pack("]
        lines += [f"            {a}," for a in args]
        lines.append("        )")
    # from_payload()
    lines += [
        "",
        "    @classmethod",
        f"    def from_payload(cls, payload: bytes) -> {name}:",
    ]
    kwargs: list[str] = []
    i = 0
    for f in msg.fields:
        k = _kind(f.fmt)
        if k.array and k.code != "s":
            value = "(" + ", ".join(f"v[{j}]" for j in range(i, i + k.count)) + ")"
            i += k.count
        else:
            value = f"v[{i}]"
            i += 1
        if f.none is not None:
            value = f"None if {value} == {f.none} else {value}"
        kwargs.append(f"{f.name}={value}")
    if msg.tail == "text":
        kwargs.append('tail=payload[cls.FIXED_SIZE :].decode("utf-8", errors="replace")')
    elif msg.tail == "bytes":
        kwargs.append("tail=bytes(payload[cls.FIXED_SIZE :])")
    if msg.fields:
        lines.append("        v = cls.STRUCT.unpack_from(payload)")
    if kwargs:
        lines.append("        return cls(")
        lines += [f"            {kw}," for kw in kwargs]
        lines.append("        )")
    else:
        lines.append("        return cls()")
    return lines


def render_python() -> str:
    """The text of tinyfed/link/messages.py."""
    names = [_camel(m.type.name) for m in spec.MESSAGES]
    out = [
        '"""The link messages as typed classes, with their payload codecs and the dispatch table.',
        "",
        "GENERATED from :mod:`tinyfed.link.spec` by ``python -m tinyfed.link.gen``: do not edit.",
        "One frozen dataclass per frame type, its fields named and ordered as in the spec;",
        ":func:`tinyfed.link.frame.pack` and :func:`tinyfed.link.frame.unpack` build and read "
        "frames",
        "through them. The drift check (``--check``) fails when this file differs from the spec.",
        "It is long (one class per frame type, ~600 lines) because it is generated: read the",
        "spec for the protocol, views.py for the few hand-written properties.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import struct",
        "from dataclasses import dataclass",
        "from typing import ClassVar, TypeAlias",
        "",
        "from tinyfed.link import views",
        "from tinyfed.link.spec import MAX_TEXT, MsgType",
        "",
        "",
        "def _text(text: str) -> bytes:",
        '    """UTF-8, cut at MAX_TEXT bytes (a cut character is replaced when read)."""',
        '    return text.encode("utf-8")[:MAX_TEXT]',
        "",
        "",
        "class MessageBase:",
        '    """What every message class below has: its type, layout, and payload codec."""',
        "",
        "    TYPE: ClassVar[MsgType]",
        "    STRUCT: ClassVar[struct.Struct]",
        "    FIXED_SIZE: ClassVar[int]",
        "    TAIL: ClassVar[str | None] = None  #: the variable tail: None, bytes or text",
        "    TAIL_MAX: ClassVar[int] = 0",
        "",
        "    def payload(self) -> bytes:",
        '        """The payload bytes (fixed fields, then the tail)."""',
        "        raise NotImplementedError",
        "",
        "    @classmethod",
        "    def _data(cls, tail: bytes) -> bytes:",
        "        if len(tail) > cls.TAIL_MAX:",
        '            raise ValueError(f"{cls.TYPE.name}: tail of {len(tail)} > {cls.TAIL_MAX} B")',
        "        return tail",
    ]
    for msg in spec.MESSAGES:
        out += _py_class(msg)
    out += [
        "",
        "",
        "#: Any message.",
        "Message: TypeAlias = (",
        f"    {names[0]}",
        *[f"    | {n}" for n in names[1:]],
        ")",
        "",
        "#: The dispatch table: frame type -> its message class.",
        "BY_TYPE: dict[int, type[Message]] = {",
    ]
    out += [f"    MsgType.{m.type.name}: {_camel(m.type.name)}," for m in spec.MESSAGES]
    out += ["}", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- C++


def _enum(cls: type[IntEnum], doc: str) -> list[str]:
    lines = [f"// {doc} (spec.py {cls.__name__})", f"enum class {cls.__name__} : uint8_t {{"]
    for member in cls:
        lines.append(f"  k{_camel(member.name)} = {member.value},")
    lines.append("};")
    lines.append("")
    lines.append(f"// The name spec.py gives a {cls.__name__}, or nullptr for a value not in it.")
    lines.append(f"inline const char* name_of({cls.__name__} v) {{")
    lines.append("  switch (v) {")
    for member in cls:
        lines.append(f'    case {cls.__name__}::k{_camel(member.name)}: return "{member.name}";')
    lines += ["  }", "  return nullptr;", "}", ""]
    return lines


def _cpp_codec(msg: spec.Message) -> list[str]:
    """Fields struct, encode and decode of one message (none for a message without fields)."""
    if not msg.fields:
        return []
    lines = ["// The fields, in wire order.", "struct Fields {"]
    for f in msg.fields:
        k = _kind(f.fmt)
        doc = f"  // {f.doc}" if f.doc else ""
        dim = f"[{k.count}]" if k.array else ""
        lines.append(f"  {k.cpp} {f.name}{dim};{doc}")
    lines.append("};")
    puts: list[str] = []
    gets: list[str] = []
    for f in msg.fields:
        k = _kind(f.fmt)
        off = f"k{_camel(f.name)}"
        if k.array:
            at = f"{off} + {k.width} * i" if k.width > 1 else f"{off} + i"
            loop = f"for (size_t i = 0; i < {k.count}; ++i) "
            puts.append(f"  {loop}put_{k.put}(p, {at}, m.{f.name}[i]);")
            gets.append(f"  {loop}m.{f.name}[i] = get_{k.put}(p, {at});")
        else:
            puts.append(f"  put_{k.put}(p, {off}, m.{f.name});")
            gets.append(f"  m.{f.name} = get_{k.put}(p, {off});")
    if msg.tail is None:
        lines += ["// Writes the payload into p (kFixedSize bytes); returns its length."]
        lines += ["inline size_t encode(const Fields& m, uint8_t* p) {", *puts]
        lines += ["  return kFixedSize;", "}"]
    else:
        what = "text" if msg.tail == "text" else "data"
        lines += [
            f"// Writes the payload into p: the fields, then n bytes of {what} (cut at kTailMax);",
            "// returns its length.",
            "inline size_t encode(const Fields& m, const uint8_t* tail, size_t n, uint8_t* p) {",
            *puts,
            "  if (n > kTailMax) n = kTailMax;",
            "  memcpy(p + kFixedSize, tail, n);",
            "  return kFixedSize + n;",
            "}",
        ]
        if msg.tail == "text":
            lines += [
                "inline size_t encode(const Fields& m, const char* text, uint8_t* p) {",
                "  return encode(m, reinterpret_cast<const uint8_t*>(text), strlen(text), p);",
                "}",
            ]
    lines += ["// Reads the fields of a payload of at least kFixedSize bytes."]
    lines += ["inline Fields decode(const uint8_t* p) {", "  Fields m{};", *gets]
    lines += ["  return m;", "}"]
    return lines


def render() -> str:
    """The header text."""
    out = [
        "// GENERATED by `python -m tinyfed.link.gen` from tinyfed/link/spec.py -- do not edit.",
        "// The link protocol between a board and its gateway; see tinyfed/link/spec.py for the",
        "// wire format. Every constant, enum and layout below is spec.py's, under the same name",
        "// (kMaxPayload is MAX_PAYLOAD, msg::Hello is MsgType.HELLO's payload); the drift check",
        "// (`python -m tinyfed.link.gen --check`) fails when this file differs from the spec.",
        "// It is long (~700 lines: per message its offsets, Fields, encode and decode) because it",
        "// is generated; read spec.py for the protocol.",
        "#pragma once",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#include <string.h>",
        "",
        '#include "le.h"  // put_u8 ... get_f32: the little-endian helpers the encoders use',
        "",
        "namespace tinyfed {",
        "namespace link {",
        "",
        f"constexpr uint8_t kProtocolVersion = {spec.PROTOCOL_VERSION};",
        f"constexpr size_t kHeaderBytes = {spec.HEADER_BYTES};  // version, type, seq, length",
        f"constexpr size_t kCrcBytes = {spec.CRC_BYTES};  // CRC-16/CCITT-FALSE",
        f"constexpr size_t kMaxFrameWire = {spec.MAX_FRAME_WIRE};  // COBS + delimiter included",
        f"constexpr size_t kMaxPayload = {spec.MAX_PAYLOAD};",
        f"constexpr size_t kChunkBytes = {spec.CHUNK_BYTES};",
        f"constexpr uint8_t kDefaultWindow = {spec.DEFAULT_WINDOW};",
        f"constexpr size_t kMaxText = {spec.MAX_TEXT};",
        f"constexpr uint8_t kNoClass = 0x{spec.NO_CLASS:02X};",
        f"constexpr uint16_t kUnknownSeq = 0x{spec.UNKNOWN_SEQ:04X};",
        f"constexpr uint32_t kXferTimeoutMs = {spec.XFER_TIMEOUT_MS};",
        f"constexpr uint32_t kBaudRate = {spec.BAUD_RATE};",
        f'constexpr const char* kBleServiceUuid = "{spec.BLE_SERVICE_UUID}";',
        f'constexpr const char* kBleRxCharUuid = "{spec.BLE_RX_CHAR_UUID}";  // host writes',
        f'constexpr const char* kBleTxCharUuid = "{spec.BLE_TX_CHAR_UUID}";  // board notifies',
        f'constexpr const char* kBleNamePrefix = "{spec.BLE_NAME_PREFIX}";',
        "",
    ]
    out += _enum(spec.MsgType, "Frame types: host-to-board 0x01-0x3F, board-to-host 0x40-0x7F.")
    out += _enum(spec.XferTarget, "What a host-to-board transfer carries.")
    out += _enum(spec.ErrorCode, "Codes carried by ERROR frames.")
    out += _enum(spec.State, "Device states (HELLO, STATE).")
    out += _enum(spec.Source, "Where a sample came from.")
    out += _enum(spec.ArchId, "Network architectures.")
    out += _enum(spec.PipelineId, "Feature pipelines.")
    out += [
        "// The name of a frame type as spec.py spells it, or nullptr for a type not in the table.",
        "inline const char* type_name(uint8_t type) {",
        "  return name_of(static_cast<MsgType>(type));",
        "}",
        "",
        "// Payload layouts: byte offsets of every field (little-endian), fixed size, the largest",
        "// variable tail (chunk data or UTF-8 text) after the fixed part, and for a message with",
        "// fields its Fields struct with encode() and decode().",
        "namespace msg {",
        "",
    ]
    for msg in spec.MESSAGES:
        ns = _camel(msg.type.name)
        out.append(f"namespace {ns} {{  // {msg.doc}")
        for f in msg.fields:
            doc = f"  // {_fmt_cpp(f.fmt)}" + (f": {f.doc}" if f.doc else "")
            out.append(f"constexpr size_t k{_camel(f.name)} = {msg.offset(f.name)};{doc}")
        out.append(f"constexpr size_t kFixedSize = {msg.fixed_size};")
        out.append(f"constexpr size_t kTailMax = {msg.tail_max};")
        out += _cpp_codec(msg)
        out.append(f"}}  // namespace {ns}")
        out.append("")
    out += [
        "}  // namespace msg",
        "",
        "// A host-to-board command's payload shape: fixed size and largest tail.",
        "struct CommandShape {",
        "  MsgType type;",
        "  size_t fixed;",
        "  size_t tail_max;",
        "};",
        "",
        "// The shape of command `type`, or nullptr if `type` is not a host-to-board command.",
        "inline const CommandShape* command_shape(uint8_t type) {",
        "  static constexpr CommandShape kCommands[] = {",
    ]
    for msg in _commands():
        ns = _camel(msg.type.name)
        out.append(f"      {{MsgType::k{ns}, msg::{ns}::kFixedSize, msg::{ns}::kTailMax}},")
    out += [
        "  };",
        "  for (const CommandShape& c : kCommands) {",
        "    if (static_cast<uint8_t>(c.type) == type) return &c;",
        "  }",
        "  return nullptr;",
        "}",
        "",
        "}  // namespace link",
        "}  // namespace tinyfed",
        "",
    ]
    return "\n".join(out)


def _corrupt(wire: bytes, index: int) -> bytes:
    body = bytearray(wire[:-1])
    body[index] ^= 0x01 if body[index] != 0x01 else 0x03
    return bytes(body) + b"\x00"


def _raw_frame(version: int, msg_type: int, seq: int, length: int, payload: bytes) -> bytes:
    raw = struct.pack(spec.HEADER_FORMAT, version, msg_type, seq, length) + payload
    raw += struct.pack("<H", frame.crc16(raw))
    return frame.cobs_encode(raw) + b"\x00"


def render_vectors() -> str:
    """Frame test vectors: wire bytes and the expected decoding, one case per line.

    Format: ``name wire_hex ok type seq payload_hex`` or ``name wire_hex error code``; a
    payload of ``-`` is empty. Read by tests/link/ and firmware/tests/test_link.cpp.
    """
    T = spec.MsgType
    ok_cases: list[tuple[str, bytes]] = [
        ("hello_req", frame.pack(m.HelloReq(), 0)),
        ("set_params", frame.pack(m.SetParams(lr=0.3, momentum=0.9, local_steps=10), 7)),
        (
            "xfer_begin_model",
            frame.pack(m.XferBegin(target=1, total_len=41868, crc32=0xDEADBEEF, meta=3), 65535),
        ),
        ("chunk_all_zero", frame.pack(m.XferChunk(offset=0, tail=bytes(spec.CHUNK_BYTES)), 2)),
        ("chunk_all_ff", frame.pack(m.XferChunk(offset=228, tail=b"\xff" * 228), 3)),
        ("chunk_ramp", frame.pack(m.XferChunk(offset=456, tail=bytes(range(228))), 4)),
        ("read", frame.pack(m.Read(offset=41796, count=8), 9)),
        ("ack", frame.pack(m.Ack(ref_seq=7, ref_type=2), 300)),
        ("error_text", frame.pack(m.Error(ref_seq=8, code=1, tail="frame CRC-16 mismatch"), 301)),
        (
            "loss",
            frame.pack(
                m.Loss(
                    step=11,
                    loss=0.25,
                    label=2,
                    outputs=(0.1, 0.2, 0.7),
                    model_round=4,
                    steps_since_global=1,
                    source=0,
                ),
                5,
            ),
        ),
    ]
    lines = [
        "# GENERATED by `python -m tinyfed.link.gen` from tinyfed/link/spec.py -- do not edit.",
        "# name wire_hex ok type seq payload_hex | name wire_hex error code",
    ]
    for name, wire in ok_cases:
        decoded = frame.decode_frame(wire[:-1])
        payload = decoded.payload.hex() or "-"
        lines.append(f"{name} {wire.hex()} ok {decoded.type} {decoded.seq} {payload}")
    E = spec.ErrorCode
    bad_cases: list[tuple[str, bytes, int]] = [
        ("bad_crc", _corrupt(frame.pack(m.Read(offset=0, count=8), 9), 4), E.BAD_CRC),
        ("bad_version", _raw_frame(2, T.HELLO_REQ, 1, 0, b""), E.BAD_VERSION),
        ("bad_length", _raw_frame(1, T.READ, 1, 4, b"\x00" * 5), E.BAD_LENGTH),
        ("too_short", frame.cobs_encode(b"\x01\x01\x00") + b"\x00", E.BAD_LENGTH),
        ("bad_cobs", b"\x20\x01\x01\x01\x00", E.BAD_ENCODING),
    ]
    for name, wire, code in bad_cases:
        try:
            frame.decode_frame(wire[:-1])
        except frame.FrameError as exc:
            if exc.code != code:
                raise AssertionError(f"vector {name}: {exc.code!r}, expected {code!r}") from exc
        else:
            raise AssertionError(f"vector {name} decodes")
        lines.append(f"{name} {wire.hex()} error {int(code)}")
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, bytes]:
    """Every generated file, by path, as the spec (and the alignment reference) make it."""
    files = {
        MESSAGES_PATH: render_python().encode(),
        HEADER_PATH: render().encode(),
        VECTORS_PATH: render_vectors().encode(),
    }
    files.update({ALIGN_PATH / name: data for name, data in align_vectors.render().items()})
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) every generated file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if an output is stale")
    args = parser.parse_args(argv)
    stale = 0
    for path, data in outputs().items():
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"{path} is stale: run `python -m tinyfed.link.gen`", file=sys.stderr)
                stale = 1
            continue
        if path.exists() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
