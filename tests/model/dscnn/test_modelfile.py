"""The extractor's file: round trip, manifest, and errors that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyfed.errors import ModelError
from tinyfed.model.dscnn import modelfile, vectors
from tinyfed.model.dscnn.extractor import Extractor


def test_round_trip_keeps_every_field(extractor: Extractor, tmp_path: Path) -> None:
    path = modelfile.save(extractor, tmp_path / "ex.bin", {"corpus": "test", "seed": 1})
    assert path == tmp_path / "ex.bin"
    assert path.stat().st_size == modelfile.FILE_BYTES == 28_272
    loaded, manifest = modelfile.load(tmp_path / "ex")
    assert manifest["corpus"] == "test"
    assert manifest["bytes"] == 28_272
    assert manifest["arch"] == "dscnn64-head-v1"
    assert manifest["sizes"] == {
        "int8_weights": 5 * 576 + 4 * 4096,
        "int32_biases": 9 * 64,
        "embedding": 64,
        "macs_per_utterance": 2_717_440,
    }
    assert int(manifest["crc32"], 16) == modelfile.crc32(path.read_bytes())
    for a, b in zip(extractor.layers, loaded.layers, strict=True):
        for field in ("name", "kind", "stride", "in_zp", "out_zp", "in_scale", "out_scale"):
            assert getattr(a, field) == getattr(b, field)
        for field in ("weights", "bias", "m", "sh", "w_scale"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert getattr(a, field).dtype == getattr(b, field).dtype
    np.testing.assert_array_equal(loaded.a, extractor.a)
    np.testing.assert_array_equal(loaded.b, extractor.b)
    x = vectors.random_inputs(2, 3)
    np.testing.assert_array_equal(loaded.embed_batch(x), extractor.embed_batch(x))


def test_layout_of_the_first_layer(extractor: Extractor) -> None:
    data = modelfile.to_bytes(extractor)
    assert data[:4] == b"TFDX"
    assert np.frombuffer(data, "<u4", 3, 4).tolist() == [1, 64, 10]
    conv0 = extractor.layer("conv0")
    assert np.frombuffer(data, "<i4", 2, 16).tolist() == [0, -128]
    bias_at = 16 + 16 + 256
    np.testing.assert_array_equal(np.frombuffer(data, "<i4", 64, bias_at), conv0.bias)
    w_at = bias_at + 256 + 256 + 64
    np.testing.assert_array_equal(np.frombuffer(data, "i1", 576, w_at), conv0.weights.ravel())
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", 64, len(data) - 256), extractor.b)


def _saved(extractor: Extractor, tmp_path: Path) -> tuple[Path, Path]:
    path = modelfile.save(extractor, tmp_path / "m", {})
    return path, path.with_suffix(".json")


def test_truncated_file_is_named(extractor: Extractor, tmp_path: Path) -> None:
    path, js = _saved(extractor, tmp_path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ModelError, match="28268 bytes, the manifest says 28272"):
        modelfile.load(path)
    manifest = json.loads(js.read_text())
    manifest["bytes"] = 28268
    js.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="CRC-32"):
        modelfile.load(path)
    with pytest.raises(ModelError, match="28268 bytes, expected 28272"):
        modelfile.from_bytes(path.read_bytes())


def test_corrupted_byte_fails_the_crc(extractor: Extractor, tmp_path: Path) -> None:
    path, _ = _saved(extractor, tmp_path)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"CRC-32 [0-9a-f]{8}, the manifest says '[0-9a-f]{8}'"):
        modelfile.load(path)


def test_wrong_versions_are_named(extractor: Extractor, tmp_path: Path) -> None:
    path, js = _saved(extractor, tmp_path)
    manifest = json.loads(js.read_text())
    js.write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(ModelError, match="version is 2, expected 1"):
        modelfile.load(path)
    data = bytearray(modelfile.to_bytes(extractor))
    data[4] = 7
    with pytest.raises(ModelError, match="format version 7, expected 1"):
        modelfile.from_bytes(bytes(data))
    with pytest.raises(ModelError, match="starts with b'XXXX'"):
        modelfile.from_bytes(b"XXXX" + bytes(data[4:]))


def test_missing_or_bad_manifest(extractor: Extractor, tmp_path: Path) -> None:
    path, js = _saved(extractor, tmp_path)
    js.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        modelfile.load(path)
    js.unlink()
    with pytest.raises(ModelError, match=r"cannot read extractor .*m\.json"):
        modelfile.load(path)
    with pytest.raises(ModelError, match=r"\['crc32'\] are written by save"):
        modelfile.save(extractor, tmp_path / "n", {"crc32": "0"})
