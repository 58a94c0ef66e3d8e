"""``tinyfed data import`` of Edge Impulse data-acquisition files (JSON and CBOR): small files
made here in the documented format; good ones become 16 kHz int16 clips in the corpus layout,
bad ones give an error naming the file and the field, and nothing is imported."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.cli import main
from tinyfed.data import edge_impulse
from tinyfed.data.dataset import load
from tinyfed.data.wav import read_wav, resample

AUDIO = [{"name": "audio", "units": "wav"}]


def _tone(freq: float, rate: int, n: int, amp: float = 8000.0) -> npt.NDArray[np.int16]:
    t = np.arange(n) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _doc(
    values: list[Any], interval_ms: float = 0.0625, sensors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A data-acquisition file as Edge Impulse documents it."""
    return {
        "protected": {"ver": "v1", "alg": "none", "iat": 1_600_000_000},
        "signature": "0" * 64,
        "payload": {
            "device_name": "ac:87:a3:0a:2d:1b",
            "device_type": "ARDUINO_NANO33BLE",
            "interval_ms": interval_ms,
            "sensors": AUDIO if sensors is None else sensors,
            "values": values,
        },
    }


def _write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".cbor":
        path.write_bytes(cbor2.dumps(doc))
    else:
        path.write_text(json.dumps(doc))
    return path


def _import(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["data", "import", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_and_cbor_recordings_become_a_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the paper's kind of files, 16 kHz int16, two in JSON and one in CBOR
    src = tmp_path / "export"
    red = _tone(440, 16_000, 16_000)
    green = _tone(880, 16_000, 12_000)
    blue = _tone(660, 16_000, 20_000)
    _write(src / "vermell.s1a2.json", _doc(red.tolist()))
    _write(src / "verd.s3b4.json", _doc([[int(v)] for v in green]))  # one-element rows
    _write(src / "blau.s5c6.cbor", _doc(blue.tolist()))
    out = tmp_path / "corpus"

    # Execute
    code, stdout, err = _import(capsys, str(src), "--out", str(out))

    # Assert
    assert code == 0, err
    assert "imported 3 Edge Impulse recordings (blau, verd, vermell" in stdout
    assert "1 longer than 1 s, cut to the first second" in stdout
    assert "1 shorter than 1 s, padded with zeros" in stdout
    np.testing.assert_array_equal(read_wav(out / "vermell" / "s1a2_nohash_0.wav"), red)
    got_green = read_wav(out / "verd" / "s3b4_nohash_0.wav")
    np.testing.assert_array_equal(got_green[:12_000], green)
    assert not got_green[12_000:].any()
    np.testing.assert_array_equal(read_wav(out / "blau" / "s5c6_nohash_0.wav"), blue[:16_000])
    ds = load(out)
    assert ds.classes == ("blau", "verd", "vermell")
    assert len(ds) == 3
    with (out / "manifest.csv").open() as f:
        rows = {r["word"]: r for r in csv.DictReader(f)}
    assert rows["blau"]["length_ms"] == "1250"
    assert rows["blau"]["source_rate_hz"] == "16000"
    assert rows["vermell"]["device_type"] == "ARDUINO_NANO33BLE"
    assert rows["verd"]["source"] == str(src / "verd.s3b4.json")


def test_other_rates_are_resampled_to_16_khz(tmp_path: Path) -> None:
    tone8k = _tone(440, 8_000, 8_000)
    tone44k = _tone(440, 44_100, 44_100)
    a = _write(tmp_path / "a.x.json", _doc(tone8k.tolist(), interval_ms=0.125))
    b = _write(tmp_path / "b.y.cbor", _doc(tone44k.tolist(), interval_ms=1000 / 44_100))
    c = _write(tmp_path / "c.z.json", _doc([0] * 100, interval_ms=0.0227))  # 44052.9 Hz

    rec_a = edge_impulse.read_recording(a)
    rec_b = edge_impulse.read_recording(b)

    assert (rec_a.rate, rec_b.rate) == (8_000, 44_100)
    assert edge_impulse.read_recording(c).rate == 44_053  # the nearest whole Hz
    assert rec_a.audio.shape == (16_000,)
    assert rec_b.audio.shape == (16_000,)
    expected = np.rint(resample(tone8k.astype(np.float64), 8_000, 16_000)).astype(np.int16)
    np.testing.assert_array_equal(rec_a.audio, expected)
    for rec in (rec_a, rec_b):  # still a 440 Hz tone
        spectrum = np.abs(np.fft.rfft(rec.audio.astype(np.float64)))
        assert int(np.argmax(spectrum)) == 440


def test_export_folders_give_the_split_and_options_choose_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "ei"
    word = _tone(500, 16_000, 16_000).tolist()
    _write(src / "training" / "yes.1.json", _doc(word))
    _write(src / "training" / "no.2.json", _doc(word))
    _write(src / "testing" / "yes.3.json", _doc(word))
    _write(src / "testing" / "noise.4.json", _doc(word))

    code, _, err = _import(capsys, str(src), "--words", "no,yes", "--out", str(tmp_path / "o"))
    code2, _, err2 = _import(
        capsys, str(src / "testing" / "yes.3.json"), "--label", "sí", "--out", str(tmp_path / "p")
    )

    assert code == 0, err
    ds = load(tmp_path / "o")
    assert ds.classes == ("no", "yes")
    assert sorted(zip(ds.paths, ds.split.tolist(), strict=True)) == [
        ("no/2_nohash_0.wav", "train"),
        ("yes/1_nohash_0.wav", "train"),
        ("yes/3_nohash_0.wav", "test"),
    ]
    assert code2 == 0, err2
    assert load(tmp_path / "p").classes == ("sí",)


def _truncated_cbor(path: Path) -> Path:
    path.write_bytes(cbor2.dumps(_doc(_tone(300, 16_000, 16_000).tolist()))[:-100])
    return path


BAD: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "accelerometer": (
        "wave.bad.json",
        _doc([1.0, 2.0], interval_ms=10, sensors=[{"name": "accX", "units": "m/s2"}]),
        ("payload.sensors[0]", "accX", "not audio"),
    ),
    "multi-axis": (
        "wave.bad.json",
        _doc(
            [[1, 2, 3]],
            interval_ms=10,
            sensors=[{"name": n, "units": "m/s2"} for n in ("accX", "accY", "accZ")],
        ),
        ("payload.sensors' has 3 axes (accX, accY, accZ)", "single-axis audio"),
    ),
    "NaN": ("verd.bad.json", _doc([0, 1, 2, 3, 4, math.nan]), ("payload.values[5]", "not finite")),
    "NaN in CBOR": ("verd.bad.cbor", _doc([0, math.inf]), ("payload.values[1]", "not finite")),
    "huge": ("verd.bad.json", _doc([0, 1e12]), ("payload.values[1]", "outside the int16 range")),
    "not a number": ("verd.bad.json", _doc([0, "7"]), ("payload.values[1]", "not a number")),
    "zero interval": ("verd.bad.json", _doc([0, 1], interval_ms=0), ("payload.interval_ms",)),
    "not an audio rate": (
        "verd.bad.json",
        _doc([0, 1], interval_ms=5),
        ("payload.interval_ms", "a sample rate of 200 Hz"),
    ),
    "no payload": ("verd.bad.json", {"protected": {}, "signature": ""}, ("field 'payload'",)),
    "no values": ("verd.bad.json", _doc([]), ("payload.values",)),
    "bad JSON": ("verd.bad.json", None, ("not valid JSON",)),
    "truncated CBOR": ("verd.bad.cbor", None, ("CBOR ends too early",)),
    "bad label": ("a b.bad.json", _doc([0, 1]), ("label 'a b'", "--label")),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_named_and_nothing_is_imported(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: one good file, one bad
    name, doc, expected = BAD[case]
    src = tmp_path / "src"
    _write(src / "vermell.good.json", _doc(_tone(440, 16_000, 16_000).tolist()))
    bad = src / name
    if case == "bad JSON":
        bad.write_text('{"payload": {"values": [1, 2')
    elif case == "truncated CBOR":
        _truncated_cbor(bad)
    else:
        _write(bad, doc)
    out = tmp_path / "corpus"

    # Execute
    code, stdout, err = _import(capsys, str(src), "--out", str(out))

    # Assert
    assert code == 2
    assert "1 of 2 files cannot be imported, so nothing was imported" in err
    assert str(bad) in err
    for text in expected:
        assert text in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no staging folder left
    assert stdout == ""


def test_files_of_the_wrong_kind_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "x.txt"
    wav.write_text("hello")
    good = _write(tmp_path / "verd.1.json", _doc([0, 1]))

    code, _, err = _import(
        capsys, str(good), str(wav), "--format", "edge-impulse", "--out", str(tmp_path / "o")
    )
    code2, _, err2 = _import(capsys, str(good), "--silence", "3", "--out", str(tmp_path / "o"))
    code3, _, err3 = _import(capsys, str(good), "--words", "blau", "--out", str(tmp_path / "o"))

    assert code == 2
    assert f"{wav}: not a .json or .cbor data-acquisition file" in err
    assert code2 == 2
    assert "--silence" in err2
    assert code3 == 2
    assert "--words blau: no such label in the files (labels: verd)" in err3
    assert not (tmp_path / "o").exists()
