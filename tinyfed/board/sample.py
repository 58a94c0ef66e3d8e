"""The host sample a self-test trains one step on: a WAV, a corpus folder, or a synthesized word."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.data.wav import CLIP_SAMPLES, SAMPLE_RATE, read_wav
from tinyfed.errors import TinyfedError, UsageError
from tinyfed.features import fit_length


@dataclass(frozen=True)
class Sample:
    """One second of audio to train on, and where it came from."""

    audio: npt.NDArray[np.int16]
    description: str


def synthesized_word(seed: int = 2021) -> npt.NDArray[np.int16]:
    """A deterministic 'word': a chirp with a harmonic under an envelope, in a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    centre, length, f0, f1 = 0.45, 0.35, 400.0, 900.0
    env = np.exp(-0.5 * ((t - centre) / (length / 4)) ** 2)
    sweep = f0 + (f1 - f0) * np.clip((t - centre + length / 2) / length, 0, 1)
    phase = 2 * np.pi * np.cumsum(sweep) / SAMPLE_RATE
    x = env * (0.5 * np.sin(phase) + 0.2 * np.sin(2.1 * phase)) + 0.003 * rng.standard_normal(
        t.size
    )
    return np.clip(np.rint(x * 32767 * 0.8), -32768, 32767).astype(np.int16)


def load_sample(path: Path | None) -> Sample:
    """The host sample: a WAV file, the first clip of a corpus folder, or a synthesized word."""
    if path is None:
        return Sample(synthesized_word(), "a synthesized word (400-900 Hz chirp)")
    if path.is_dir():
        wavs = sorted(p for p in path.rglob("*.wav") if "_background_noise_" not in p.parts)
        if not wavs:
            raise UsageError(f"--sample {path}: no WAV file in that folder")
        path = wavs[0]
    if not path.is_file():
        raise UsageError(f"--sample {path}: no such file or folder")
    try:
        audio = read_wav(path)
    except (TinyfedError, OSError, ValueError) as exc:
        raise UsageError(f"--sample {path}: {exc}") from exc
    fitted, note = fit_length(audio)
    return Sample(fitted, f"{path}" + (f" ({note})" if note else ""))


# ----------------------------------------------------------------------------- events
