"""The paper's features: Edge Impulse MFCC version 2, stage by stage (docs/features.md).

Every stage is a pure function on numpy arrays so that tests can compare each one against the
intermediate files in ``vectors/mfcc/``. Every function accepts a single clip or a batch: the
leading axes are batch axes, the trailing ones are the stage's own (``[..., 16000]`` audio,
``[..., 50, 129]`` spectra, ...). Stage outputs are float32, as on the board; inside a stage
numpy may work in float64, which keeps us within the tolerances of the original listed in
docs/features.md ("The MFCC, stage by stage").

:func:`mfcc` runs the whole pipeline: ``int16 [16000]`` -> ``float32 [650]``, and
:func:`mfcc_batch` does ``[n, 16000]`` -> ``[n, 650]`` in one vectorised pass.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

SAMPLE_RATE = 16_000  #: Hz, the board's PDM microphone setting (docs/features.md)
N_SAMPLES = 16_000  #: one second of audio
FRAME_LENGTH = 320  #: 0.02 s frame length at 16 kHz
FRAME_STRIDE = 320  #: 0.02 s frame stride: frames do not overlap
N_FRAMES = 50  #: 16000 / 320
FFT_LENGTH = 256  #: only the first 256 samples of each 320-sample frame are transformed
N_BINS = FFT_LENGTH // 2 + 1  #: 129 power-spectrum bins
N_FILTERS = 32  #: mel filters
N_COEFFS = 13  #: cepstral coefficients kept
N_FEATURES = N_FRAMES * N_COEFFS  #: 650
LOW_FREQ = 300.0  #: Hz, lowest filter edge
HIGH_FREQ = 8000.0  #: Hz, Nyquist (the block's "high frequency 0")
PREEMPH_COEF = np.float32(0.98)  #: pre-emphasis coefficient, shift 1
NORM_WINDOW = 101  #: cepstral mean/variance normalisation window, frames
FLT_EPSILON = np.float32(np.finfo(np.float32).eps)  #: 1.1920929e-07, replaces exact zeros
#: speechpy's bin formula uses (number of bins + 1) = 130 where the FFT length + 1 is meant.
FILTERBANK_BIN_SCALE = 130


def preemphasis(audio: npt.NDArray[np.integer]) -> F32:
    """Stages 1-2: scale to [-1, 1) and pre-emphasise circularly over the whole second.

    ``y[n] = x[n] - 0.98 x[n-1]`` with ``x[-1] = x[N-1]`` (the last sample).
    """
    x = np.asarray(audio).astype(np.float32) / np.float32(32768.0)
    prev = np.roll(x, 1, axis=-1)
    return (x - PREEMPH_COEF * prev).astype(np.float32, copy=False)


def frames(signal: F32) -> F32:
    """Stage 3: ``[..., 16000]`` -> ``[..., 50, 320]``, non-overlapping, no padding."""
    lead = signal.shape[:-1]
    return signal[..., : N_FRAMES * FRAME_STRIDE].reshape(*lead, N_FRAMES, FRAME_LENGTH)


def power_spectrum(signal: F32) -> F32:
    """Stage 4: ``[..., 16000]`` pre-emphasised signal -> ``[..., 50, 129]`` power spectra.

    No window; only the first 256 samples of each frame enter the FFT; ``|X|^2 / 256``.
    """
    spectrum = np.fft.rfft(frames(signal)[..., :FFT_LENGTH].astype(np.float64), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2) / FFT_LENGTH
    return power.astype(np.float32)


def frame_energy(power: F32) -> F32:
    """Stage 5: ``[..., 50, 129]`` -> ``[..., 50]``, sum of all bins, 0 -> FLT_EPSILON."""
    energy = power.astype(np.float64).sum(axis=-1).astype(np.float32)
    return np.where(energy == 0, FLT_EPSILON, energy).astype(np.float32)


def _hz_to_mel(hz: float) -> float:
    return 1127.0 * math.log1p(hz / 700.0)


def _mel_to_hz(mel: F64) -> F64:
    out: F64 = 700.0 * np.expm1(mel / 1127.0)
    return out


def filterbank_edges() -> npt.NDArray[np.int64]:
    """The 34 edge bins of the 32 triangular filters (stage 6 in docs/features.md)."""
    mels = np.linspace(_hz_to_mel(LOW_FREQ), _hz_to_mel(HIGH_FREQ), N_FILTERS + 2)
    hz = np.clip(_mel_to_hz(mels), LOW_FREQ, HIGH_FREQ)
    hz[-1] -= 0.001
    return np.floor(FILTERBANK_BIN_SCALE * hz / SAMPLE_RATE).astype(np.int64)


@functools.cache
def _filterbank() -> F32:
    edges = filterbank_edges()
    fb = np.zeros((N_FILTERS, N_BINS), np.float64)
    k = np.arange(N_BINS)
    for m in range(N_FILTERS):
        left, centre, right = int(edges[m]), int(edges[m + 1]), int(edges[m + 2])
        if left == centre == right:
            fb[m, centre] = 1.0
            continue
        if centre > left:
            rising = (k >= left) & (k <= centre)
            fb[m, rising] = (k[rising] - left) / (centre - left)
        if right > centre:
            falling = (k >= centre) & (k <= right)
            fb[m, falling] = (right - k[falling]) / (right - centre)
        fb[m, centre] = 1.0
    out = fb.astype(np.float32)
    out.setflags(write=False)
    return out


def filterbank() -> F32:
    """Stage 6: the mel filterbank, float32 ``[32, 129]`` (read-only, cached)."""
    return _filterbank()


def mel_energies(power: F32) -> F32:
    """Stage 6: ``[..., 50, 129]`` -> ``[..., 50, 32]``, ``P @ FB.T``, 0 -> FLT_EPSILON."""
    mel = (power.astype(np.float64) @ filterbank().T.astype(np.float64)).astype(np.float32)
    return np.where(mel == 0, FLT_EPSILON, mel).astype(np.float32)


def _fmaf(a: F32, b: F32 | np.float32, c: F32 | np.float32) -> F32:
    # The float32 inputs multiply exactly in float64; one rounding to float32 afterwards
    # (a double rounding that matched fmaf on every reference value).
    out: F32 = (a.astype(np.float64) * np.float64(b) + np.asarray(c, np.float64)).astype(np.float32)
    return out


def fast_log(x: npt.NDArray[np.floating]) -> F32:
    """The original's fast natural log (Edge Impulse ``numpy::log``), bit for bit.

    Splits ``x`` into exponent and a mantissa in [2/3, 4/3] and evaluates a degree-5 polynomial
    for ``log1p`` with fused multiply-adds; max error 1.6e-5 against ``logf``. Defined for
    positive finite float32 values (the pipeline never passes anything else).
    """
    a = np.ascontiguousarray(x, dtype=np.float32)
    g = a.view(np.int32)
    e = (g - np.int32(0x3F2AAAAB)) & np.int32(-0x800000)  # 0xff800000
    m = (g - e).astype(np.int32).view(np.float32)
    i = e.astype(np.float32) * np.float32(1.19209290e-7)  # 2^-23
    f = m - np.float32(1.0)
    s = f * f
    r = _fmaf(f, np.float32(0.230836749), np.float32(-0.279208571))
    t = _fmaf(f, np.float32(0.331826031), np.float32(-0.498910338))
    r = _fmaf(r, s, t)
    r = _fmaf(r, s, f)
    return _fmaf(i, np.float32(0.693147182), r)  # ln 2


def log_mel(mel: F32) -> F32:
    """Stage 7: natural log of the mel energies with the original's :func:`fast_log`."""
    return fast_log(mel)


@functools.cache
def _dct_matrix() -> F64:
    n = np.arange(N_FILTERS)
    k = np.arange(N_COEFFS)[:, None]
    basis: F64 = np.cos(np.pi * k * (2 * n + 1) / (2 * N_FILTERS)) * np.sqrt(2.0 / N_FILTERS)
    basis[0] *= np.sqrt(0.5)
    basis.setflags(write=False)
    return basis


def dct_matrix() -> F64:
    """Orthonormal DCT-II rows 0..12 as a float64 ``[13, 32]`` matrix (scipy ``norm='ortho'``)."""
    return _dct_matrix()


def cepstra(log_mels: F32, energy: F32) -> F32:
    """Stages 8-9: DCT-II of the log-mel rows, keep 13, coefficient 0 := ln(frame energy).

    The log of the energy is the original's :func:`fast_log`, like the log-mel values.

    ``log_mels`` is ``[..., 50, 32]``, ``energy`` ``[..., 50]``; returns ``[..., 50, 13]``.
    """
    c = (log_mels.astype(np.float64) @ dct_matrix().T).astype(np.float32)
    c[..., 0] = fast_log(energy)
    return c


def normalise(cepstra_raw: F32) -> F32:
    """Stage 10: sliding cepstral mean and variance normalisation, window 101, per column.

    The 50 rows are padded symmetrically by 50 on each side; frame ``t`` uses padded rows
    ``t .. t+100``; ``out = (c - mean) / (population std + FLT_EPSILON)``. Computed like the
    original, in float32 with sequential sums over the window (mean first, then the squared
    deviations), which reproduces the reference bit for bit, the all-zeros input included.
    Vectorised over frames, columns and the batch; the loop runs over the 101 window rows.
    """
    half = NORM_WINDOW // 2
    c = np.asarray(cepstra_raw, dtype=np.float32)
    n = c.shape[-2]
    pad = [(0, 0)] * (c.ndim - 2) + [(half, half), (0, 0)]
    padded = np.pad(c, pad, mode="symmetric")
    total = np.zeros_like(c)
    for i in range(NORM_WINDOW):
        total += padded[..., i : i + n, :]
    mean = total / np.float32(NORM_WINDOW)
    squares = np.zeros_like(c)
    for i in range(NORM_WINDOW):
        dev = padded[..., i : i + n, :] - mean
        squares += dev * dev
    std = np.sqrt(squares / np.float32(NORM_WINDOW))
    out: F32 = (c - mean) / (std + FLT_EPSILON)
    return out


def flatten(normalised: F32) -> F32:
    """Stage 11: ``[..., 50, 13]`` -> ``[..., 650]``, frame-major (``13 * t + q``)."""
    return normalised.reshape(*normalised.shape[:-2], N_FEATURES)


def mfcc_batch(audio: npt.NDArray[np.integer]) -> F32:
    """The whole pipeline on a batch: int16 ``[n, 16000]`` -> float32 ``[n, 650]``."""
    arr = np.asarray(audio)
    if arr.ndim != 2 or arr.shape[1] != N_SAMPLES:
        raise ValueError(f"audio batch has shape {arr.shape}, expected (n, {N_SAMPLES})")
    power = power_spectrum(preemphasis(arr))
    raw = cepstra(log_mel(mel_energies(power)), frame_energy(power))
    return flatten(normalise(raw))


def mfcc(audio: npt.NDArray[np.integer]) -> F32:
    """The whole pipeline on one clip: int16 ``[16000]`` -> float32 ``[650]``."""
    arr = np.asarray(audio)
    if arr.shape != (N_SAMPLES,):
        raise ValueError(f"audio has shape {arr.shape}, expected ({N_SAMPLES},)")
    out: F32 = mfcc_batch(arr[None, :])[0]
    return out
