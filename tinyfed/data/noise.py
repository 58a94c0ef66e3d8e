"""The signal side of the synthesized corpus: background noise and trimming a rendered word."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tinyfed.data.wav import SAMPLE_RATE

F64 = npt.NDArray[np.float64]

HUM_HZ = (50.0, 60.0)  #: mains frequencies
TRIM_DB = -40.0  #: leading/trailing audio quieter than this (relative to the peak) is silence


def make_noise(kind: str, n: int, rng: np.random.Generator) -> F64:
    """``n`` samples of unit-RMS noise: ``white``, ``pink`` (1/f), ``brown`` (1/f^2) or ``hum``."""
    if kind == "none":
        return np.zeros(n)
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        f0 = HUM_HZ[int(rng.integers(len(HUM_HZ)))]
        phases = rng.uniform(0, 2 * np.pi, 5)
        k = np.arange(1, 6)[:, None]
        harmonics = np.sin(2 * np.pi * f0 * k * t + phases[:, None]) / k
        x = harmonics.sum(axis=0) + 0.03 * rng.standard_normal(n)
    elif kind == "white":
        x = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)  # no rumble below 20 Hz
        spec /= np.sqrt(f) if kind == "pink" else f
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    rms = float(np.sqrt(np.mean(x**2)))
    out: F64 = x / rms
    return out


def trim_silence(x: F64, threshold_db: float = TRIM_DB) -> F64:
    """Drop leading and trailing samples quieter than ``threshold_db`` relative to the peak."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) >= peak * 10 ** (threshold_db / 20))
    return x[loud[0] : loud[-1] + 1]
