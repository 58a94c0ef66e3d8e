"""Shared test vectors of the alignment stage (``vectors/align/``), made by the Python reference.

The C++ (``firmware/tests/test_align.cpp``) and the Python tests (``tests/features/test_align.py``)
read the same files, so the two implementations cannot drift apart. The link generator writes
them with the other generated files and its drift check compares them byte for byte::

    .venv/bin/python -m tinyfed.link.gen           # writes vectors/align/ (and the rest)
    .venv/bin/python -m tinyfed.link.gen --check   # exit 1 if a file differs

(``python -m tinyfed.features.align_vectors OUT_DIR`` writes them into another folder.) It sits
in the library beside the alignment it describes so that the drift check can run it.

Files per case ``NAME`` (raw little-endian, no header): ``NAME.i16`` [16000] the input,
``NAME_energies.i64`` [100] the block energies, ``NAME_shift.i32`` [1] the shift and
``NAME_aligned.i16`` [16000] the output; ``cases.txt`` lists the case names, one per line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.features import align

I16 = npt.NDArray[np.int16]

CASES_FILE = "cases.txt"
_SEED = 2024


def _word(rng: np.random.Generator, length: int, peak: float) -> npt.NDArray[np.float64]:
    """A word-like burst: two voiced syllables (harmonics of a gliding pitch) and a fricative."""
    t = np.arange(length) / align.N_SAMPLES
    f0 = 120 + 60 * t / t[-1]
    phase = 2 * np.pi * np.cumsum(f0) / align.N_SAMPLES
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.sin(np.pi * np.linspace(0, 2, length)) ** 2  # two syllables
    fricative = rng.normal(0, 0.3, length) * (t > 0.7 * t[-1])
    x = voiced * envelope + fricative
    out: npt.NDArray[np.float64] = x / np.abs(x).max() * peak
    return out


def _place(word: npt.NDArray[np.float64], start: int) -> npt.NDArray[np.float64]:
    out = np.zeros(align.N_SAMPLES)
    out[start : start + len(word)] = word
    return out


def _int16(x: npt.NDArray[np.float64]) -> I16:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def make_cases() -> dict[str, I16]:
    """The inputs, by case name (deterministic for a numpy version)."""
    rng = np.random.default_rng(_SEED)
    word = _word(rng, 6000, 12000.0)
    noise = rng.normal(0, 40, align.N_SAMPLES)
    loud_noise = rng.normal(0, 2000, align.N_SAMPLES)
    square = np.where(np.arange(align.N_SAMPLES) % 40 < 20, -32768.0, 32767.0)
    return {
        "word_early": _int16(_place(word, 300) + noise),
        "word_late": _int16(_place(word, 9700) + noise),
        "word_centre_noisy": _int16(_place(word, 5000) + loud_noise),
        "word_clipped_full_scale": _int16(_place(word * 4, 1200)),  # clipped to +-32767/-32768
        "full_scale_square_start": _int16(square * (np.arange(align.N_SAMPLES) < 4000)),
        "tiny_noise": _int16(rng.integers(-3, 4, align.N_SAMPLES).astype(np.float64)),
        "zeros": np.zeros(align.N_SAMPLES, np.int16),
        "constant": np.full(align.N_SAMPLES, -1234, np.int16),
        "impulse_last_sample": _int16(_place(np.array([30000.0]), align.N_SAMPLES - 1)),
        "centroid_half_rounds_up": _half_case(),
    }


def _half_case() -> I16:
    """Block energies 63 and 1 in blocks 0 and 1: centroid (63*80 + 240) / 64 = 82.5 -> 83."""
    x = np.zeros(align.N_SAMPLES, np.int16)
    x[:63] = 1
    x[align.BLOCK] = -1
    return x


def render() -> dict[str, bytes]:
    """Every file of the folder, by name: each case's input, block energies, shift, output."""
    cases = make_cases()
    files: dict[str, bytes] = {}
    for name, audio in cases.items():
        aligned, shift = align.align(audio)
        files[f"{name}.i16"] = audio.astype("<i2").tobytes()
        files[f"{name}_energies.i64"] = align.block_energies(audio).astype("<i8").tobytes()
        files[f"{name}_shift.i32"] = np.array([shift], "<i4").tobytes()
        files[f"{name}_aligned.i16"] = aligned.astype("<i2").tobytes()
    files[CASES_FILE] = "".join(f"{name}\n" for name in cases).encode()
    return files


def write(folder: Path) -> None:
    """Write :func:`render`'s files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in render().items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m tinyfed.features.align_vectors OUT_DIR", file=sys.stderr)
        sys.exit(2)
    write(Path(sys.argv[1]))
