"""The extractor's model file: ``NAME.bin`` (the int8 model) and ``NAME.json`` (its manifest).

``NAME.bin``, little-endian, no padding (every record is a multiple of 4 bytes):

======  ==========================  =====================================================
bytes   type                        content
======  ==========================  =====================================================
4       char[4]                     magic ``TFDX``
4       uint32                      format version, :data:`VERSION` (1)
4       uint32                      channels, 64
4       uint32                      layers, 10
------  --------------------------  -----------------------------------------------------
        *per layer, in order conv0, ds1.dw, ds1.pw, ..., ds4.dw, ds4.pw, pool:*
4       int32                       input zero point
4       int32                       output zero point
4       float32                     input scale (reference only)
4       float32                     output scale (reference only)
256     float32[64]                 weight scale per output channel (reference; pool: 1)
256     int32[64]                   bias per output channel (pool: 0)
256     int32[64]                   requantisation multiplier ``m`` per channel
64      int8[64]                    requantisation shift ``sh`` per channel
N       int8[N]                     weights: conv0 and ``dsI.dw`` ``[64][3][3]`` (out, kh, kw,
                                    N = 576); ``dsI.pw`` ``[64][64]`` (out, in, N = 4096);
                                    pool none (N = 0)
------  --------------------------  -----------------------------------------------------
256     float32[64]                 embedding ``a``
256     float32[64]                 embedding ``b``
======  ==========================  =====================================================

28,272 bytes in all (:data:`FILE_BYTES`). ``NAME.json`` is the manifest: ``format``
(``tinyfed-dscnn-extractor``), ``version``, ``arch`` (``dscnn64-head-v1``), ``bytes`` and
``crc32`` (IEEE, as zlib, of ``NAME.bin``), ``sizes`` (weight, bias and embedding counts, the
multiply-accumulates per utterance), plus what the producer adds (corpus, seed,
accuracy, ...). :func:`load` checks the size, the CRC and the version against both files.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tinyfed.errors import ModelError
from tinyfed.model.dscnn.extractor import CHANNELS, LAYERS, MACS, Extractor, Layer, weight_shape

MAGIC = b"TFDX"  #: first four bytes of an extractor file
VERSION = 1  #: format version; a reader refuses any other
FORMAT = "tinyfed-dscnn-extractor"  #: the manifest's ``format``
ARCH = "dscnn64-head-v1"  #: the family's arch string (docs/learning.md, the table)
_HEADER = struct.Struct("<4sIII")
_LAYER_HEAD = struct.Struct("<iiff")
_LAYER_FIXED = _LAYER_HEAD.size + 4 * CHANNELS * 3 + CHANNELS  #: 848 bytes before the weights


def _weight_count(kind: str) -> int:
    return int(np.prod(weight_shape(kind))) if kind != "pool" else 0


FILE_BYTES = (
    _HEADER.size
    + sum(_LAYER_FIXED + _weight_count(kind) for _, kind, _ in LAYERS)
    + 2 * 4 * CHANNELS
)  #: 28,272


def to_bytes(extractor: Extractor) -> bytes:
    """The ``NAME.bin`` bytes of an extractor."""
    parts = [_HEADER.pack(MAGIC, VERSION, CHANNELS, len(LAYERS))]
    for layer in extractor.layers:
        parts.append(_LAYER_HEAD.pack(layer.in_zp, layer.out_zp, layer.in_scale, layer.out_scale))
        parts.append(layer.w_scale.astype("<f4").tobytes())
        parts.append(layer.bias.astype("<i4").tobytes())
        parts.append(layer.m.astype("<i4").tobytes())
        parts.append(layer.sh.astype("i1").tobytes())
        parts.append(layer.weights.astype("i1").tobytes())
    parts.append(extractor.a.astype("<f4").tobytes())
    parts.append(extractor.b.astype("<f4").tobytes())
    data = b"".join(parts)
    assert len(data) == FILE_BYTES, len(data)
    return data


def from_bytes(data: bytes) -> Extractor:
    """Parse ``NAME.bin`` bytes; :class:`ModelError` names a wrong size, magic or version."""
    if len(data) != FILE_BYTES:
        raise ModelError(f"extractor file is {len(data)} bytes, expected {FILE_BYTES}")
    magic, version, channels, n_layers = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ModelError(f"extractor file starts with {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ModelError(f"extractor file has format version {version}, expected {VERSION}")
    if (channels, n_layers) != (CHANNELS, len(LAYERS)):
        raise ModelError(
            f"extractor file has {channels} channels and {n_layers} layers, "
            f"expected {CHANNELS} and {len(LAYERS)}"
        )
    pos = _HEADER.size

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(data, dtype, count, pos)
        pos += arr.nbytes
        return arr

    layers = []
    for name, kind, stride in LAYERS:
        in_zp, out_zp, in_scale, out_scale = _LAYER_HEAD.unpack_from(data, pos)
        pos += _LAYER_HEAD.size
        w_scale = take("<f4", CHANNELS).astype(np.float32)
        bias = take("<i4", CHANNELS).astype(np.int32)
        m = take("<i4", CHANNELS).astype(np.int32)
        sh = take("i1", CHANNELS).astype(np.int8)
        weights = take("i1", _weight_count(kind)).astype(np.int8).reshape(weight_shape(kind))
        layers.append(
            Layer(
                name,
                kind,
                stride,
                weights,
                bias,
                m,
                sh,
                in_zp,
                out_zp,
                in_scale,
                out_scale,
                w_scale,
            )
        )
    a = take("<f4", CHANNELS).astype(np.float32)
    b = take("<f4", CHANNELS).astype(np.float32)
    return Extractor(layers=tuple(layers), a=a, b=b)


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".bin", ".json") else p
    return stem.with_name(stem.name + ".bin"), stem.with_name(stem.name + ".json")


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE, as zlib) of the file bytes."""
    return zlib.crc32(data) & 0xFFFFFFFF


def manifest_of(data: bytes, extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest of ``NAME.bin`` bytes: the fixed keys, then ``extra``'s."""
    fixed = {"format": FORMAT, "version": VERSION, "arch": ARCH}
    clash = sorted(set(extra) & {*fixed, "bytes", "crc32", "sizes"})
    if clash:
        raise ModelError(f"manifest keys {clash} are written by save() itself")
    sizes = {
        "int8_weights": sum(_weight_count(kind) for _, kind, _ in LAYERS),
        "int32_biases": sum(CHANNELS for _, kind, _ in LAYERS if kind != "pool"),
        "embedding": CHANNELS,
        "macs_per_utterance": MACS,
    }
    return {**fixed, "bytes": len(data), "crc32": f"{crc32(data):08x}", "sizes": sizes, **extra}


def save(extractor: Extractor, path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``NAME.bin`` and ``NAME.json`` (``path`` is either, or the stem); returns the bin."""
    bin_path, json_path = _paths(path)
    data = to_bytes(extractor)
    text = json.dumps(manifest_of(data, manifest), indent=2, sort_keys=False) + "\n"
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    for target, content in ((bin_path, data), (json_path, text.encode())):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(target)
    return bin_path


def load(path: str | Path) -> tuple[Extractor, dict[str, Any]]:
    """Read ``NAME.bin`` and ``NAME.json``; :class:`ModelError` names the file and the problem."""
    bin_path, json_path = _paths(path)
    try:
        data = bin_path.read_bytes()
        manifest = json.loads(json_path.read_text())
    except OSError as exc:
        raise ModelError(f"cannot read extractor {exc.filename}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ModelError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{json_path}: the manifest is not a JSON object")
    for key, want in (("format", FORMAT), ("version", VERSION)):
        if manifest.get(key) != want:
            raise ModelError(f"{json_path}: {key} is {manifest.get(key)!r}, expected {want!r}")
    if manifest.get("bytes") != len(data):
        raise ModelError(
            f"{bin_path}: {len(data)} bytes, the manifest says {manifest.get('bytes')!r}"
        )
    crc = f"{crc32(data):08x}"
    if manifest.get("crc32") != crc:
        raise ModelError(f"{bin_path}: CRC-32 {crc}, the manifest says {manifest.get('crc32')!r}")
    try:
        return from_bytes(data), manifest
    except ModelError as exc:
        raise ModelError(f"{bin_path}: {exc}") from exc
