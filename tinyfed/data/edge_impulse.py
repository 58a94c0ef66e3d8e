"""Edge Impulse data-acquisition files (JSON or CBOR) as 16 kHz mono int16 clips.

Edge Impulse's "Data acquisition format" is one object, in JSON or CBOR::

    {"protected": {"ver": "v1", "alg": "HS256" | "none", "iat": 1564128599},
     "signature": "b0ee0572...",
     "payload": {"device_name": "...", "device_type": "ARDUINO_NANO33BLE",
                 "interval_ms": 0.0625,
                 "sensors": [{"name": "audio", "units": "wav"}],
                 "values": [12, -40, ...]}}

``interval_ms`` is the time between two values (0.0625 ms is 16 kHz), ``sensors`` names the
axes and ``values`` holds one sample per interval: a number for one axis (or a one-element
list), a list per sample for several. The paper's recordings are such files (16 kHz int16
audio). The signature is not checked: the key is the Edge Impulse project's, not ours.

Only single-axis audio is read (units ``wav``, or the sensor called ``audio``); anything else
raises :class:`EdgeImpulseError` naming the file and the field. The label is the file name up
to its first dot (``vermell.s1a2b.json`` is ``vermell``), as Edge Impulse's own uploader reads
it, unless the caller gives one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import numpy.typing as npt

from tinyfed.data.wav import SAMPLE_RATE, resample
from tinyfed.errors import UsageError

SUFFIXES = (".json", ".cbor")
AUDIO_UNITS = "wav"
MIN_RATE, MAX_RATE = 1_000, 384_000  #: sample rates (Hz) accepted from interval_ms
INT16_MIN, INT16_MAX = -32768, 32767
#: a label: letters, digits, '_', '-', "'" or the Catalan middle dot; not a hidden name
LABEL = re.compile(r"^[\w][\w'·-]*$")
RESERVED_LABELS = frozenset({"_background_noise_"})


class EdgeImpulseError(UsageError):
    """A file is not an Edge Impulse audio recording tinyfed can import; says which and why."""


@dataclass(frozen=True)
class Recording:
    """One recording read from a data-acquisition file."""

    path: Path
    label: str
    audio: npt.NDArray[np.int16]  #: at 16 kHz, the whole recording
    rate: int  #: the file's sample rate (1000 / interval_ms)
    device_type: str
    split: str | None  #: "train" / "test" when the file sits under training/ or testing/


def label_of(path: Path) -> str:
    """The label Edge Impulse reads from a file name: the part before the first dot."""
    return path.name.split(".", 1)[0]


def sample_id_of(path: Path) -> str:
    """What follows the label in the file name, without the suffix (``s1a2b``), made safe."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    rest = stem.split(".", 1)[1] if "." in stem else ""
    return re.sub(r"[^\w-]+", "-", rest).strip("-")


def check_label(label: str, where: str) -> str:
    if not LABEL.match(label) or label in RESERVED_LABELS:
        raise EdgeImpulseError(
            f"{where}: label {label!r} cannot be a class folder (use letters, digits, _ - ' ·; "
            "or give --label)"
        )
    return label


def split_of(path: Path) -> str | None:
    """Edge Impulse exports put files under ``training/`` and ``testing/``."""
    parts = {p.lower() for p in path.parent.parts}
    if "testing" in parts:
        return "test"
    if "training" in parts:
        return "train"
    return None


def find_files(sources: list[Path]) -> list[Path]:
    """The ``.json`` / ``.cbor`` files among ``sources`` (files, or folders searched deeply)."""
    found: list[Path] = []
    for src in sources:
        if src.is_dir():
            found += sorted(p for p in src.rglob("*") if p.suffix.lower() in SUFFIXES)
        elif src.is_file():
            if src.suffix.lower() not in SUFFIXES:
                raise EdgeImpulseError(f"{src}: not a .json or .cbor data-acquisition file")
            found.append(src)
        else:
            raise EdgeImpulseError(f"{src}: no such file or folder")
    return found


def is_edge_impulse(sources: list[Path]) -> bool:
    """Whether ``sources`` look like Edge Impulse files: a .json/.cbor file, or a folder with
    such files and no WAV file."""
    for src in sources:
        if src.is_file() and src.suffix.lower() in SUFFIXES:
            return True
        if src.is_dir():
            files = [p for p in src.rglob("*") if p.is_file()]
            if any(p.suffix.lower() in SUFFIXES for p in files) and not any(
                p.suffix.lower() == ".wav" for p in files
            ):
                return True
    return False


def _decode(path: Path) -> Any:
    data = path.read_bytes()
    if path.suffix.lower() == ".cbor":
        try:
            return cbor2.loads(data)
        except cbor2.CBORDecodeEOF as exc:
            raise EdgeImpulseError(f"{path}: CBOR ends too early (truncated file?): {exc}") from exc
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise EdgeImpulseError(f"{path}: not valid CBOR: {exc}") from exc
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgeImpulseError(f"{path}: not valid JSON: {exc}") from exc


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_recording(path: Path, label: str | None = None) -> Recording:
    """Read one data-acquisition file; :class:`EdgeImpulseError` names the file and field."""
    doc = _decode(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        raise EdgeImpulseError(
            f"{path}: field 'payload' missing: not an Edge Impulse data-acquisition file "
            "(expected {protected, signature, payload})"
        )
    payload: dict[str, Any] = doc["payload"]

    sensors = payload.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        raise EdgeImpulseError(f"{path}: field 'payload.sensors' missing or empty")
    if len(sensors) != 1:
        names = ", ".join(str(s.get("name")) if isinstance(s, dict) else "?" for s in sensors)
        raise EdgeImpulseError(
            f"{path}: field 'payload.sensors' has {len(sensors)} axes ({names}); only "
            "single-axis audio can be imported"
        )
    sensor = sensors[0]
    if not isinstance(sensor, dict):
        raise EdgeImpulseError(f"{path}: field 'payload.sensors[0]' is not an object")
    name, units = str(sensor.get("name", "")), str(sensor.get("units", ""))
    if units.lower() != AUDIO_UNITS and name.lower() != "audio":
        raise EdgeImpulseError(
            f"{path}: field 'payload.sensors[0]' is {{name: {name!r}, units: {units!r}}}, not "
            f"audio (units {AUDIO_UNITS!r})"
        )

    interval: Any = payload.get("interval_ms")
    if not _number(interval) or not math.isfinite(interval) or interval <= 0:
        raise EdgeImpulseError(
            f"{path}: field 'payload.interval_ms' is {interval!r}; expected a positive number "
            "of milliseconds (0.0625 for 16 kHz)"
        )
    exact = 1000.0 / float(interval)
    rate = round(exact)
    if not MIN_RATE <= rate <= MAX_RATE:  # a rate off a whole Hz is taken as the nearest one
        raise EdgeImpulseError(
            f"{path}: field 'payload.interval_ms' {interval!r} is a sample rate of {exact:.6g} "
            f"Hz; expected audio, {MIN_RATE} to {MAX_RATE} Hz"
        )

    values = payload.get("values")
    if not isinstance(values, list) or not values:
        raise EdgeImpulseError(f"{path}: field 'payload.values' missing or empty")
    flat: list[float] = []
    for i, item in enumerate(values):
        v = item
        if isinstance(item, list):
            if len(item) != 1:
                raise EdgeImpulseError(
                    f"{path}: field 'payload.values[{i}]' has {len(item)} values for 1 sensor"
                )
            v = item[0]
        if not _number(v):
            raise EdgeImpulseError(
                f"{path}: field 'payload.values[{i}]' is {v!r}, not a number"[:300]
            )
        f = float(v)
        if not math.isfinite(f):
            raise EdgeImpulseError(f"{path}: field 'payload.values[{i}]' is {f} (not finite)")
        if not INT16_MIN <= f <= INT16_MAX:
            raise EdgeImpulseError(
                f"{path}: field 'payload.values[{i}]' is {v!r}, outside the int16 range "
                f"{INT16_MIN}..{INT16_MAX} of Edge Impulse audio"
            )
        flat.append(f)

    x = np.asarray(flat, dtype=np.float64)
    if rate != SAMPLE_RATE:
        x = resample(x, rate, SAMPLE_RATE)
    audio = np.clip(np.rint(x), INT16_MIN, INT16_MAX).astype(np.int16)
    chosen = label if label is not None else label_of(path)
    where = f"{path}: --label" if label is not None else f"{path}: file name"
    return Recording(
        path=path,
        label=check_label(chosen, where),
        audio=audio,
        rate=rate,
        device_type=str(payload.get("device_type", "")),
        split=split_of(path),
    )
