"""The ``logmel40`` features of the ``dscnn`` family (docs/learning.md, section 1), stage by stage.

One second of int16 audio at 16 kHz -> float32 ``[50 frames][40 bands]`` -> the extractor's
int8 input:

1. align on the energy centroid (:mod:`tinyfed.features.align`, as the ``centroid`` pipeline);
2. pre-emphasis, framing and the 129-bin power spectrum of the paper's MFCC
   (:func:`tinyfed.features.mfcc.preemphasis`, :func:`~tinyfed.features.mfcc.power_spectrum`);
3. 40 triangular HTK-mel bands (:func:`mel_table`), each band energy a float32 sum over the bins
   in ascending order of ``weight * power``;
4. ``fast_log(max(energy, 1e-10))`` (:func:`tinyfed.features.mfcc.fast_log`);
5. per-utterance normalisation over all 2,000 values: ``(v - mean) / sd`` in float32, with
   sequential (frame-major) float32 sums, the population ``sd`` and a floor of ``1e-3``;
6. :func:`quantise_input`: ``clamp(round_half_away(16 x), -128, 127)`` as int8.

Stages 3 and 5 sum sequentially in float32, the order a C loop uses, so the firmware agrees
with this reference to the last bit in most cases (the spec tolerates 0.5 % of int8 inputs
off by one).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from tinyfed.features import align, mfcc

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]

N_SAMPLES = mfcc.N_SAMPLES  #: one second at 16 kHz
N_FRAMES = mfcc.N_FRAMES  #: 50 frames of 320 samples (the paper's framing)
N_BINS = mfcc.N_BINS  #: 129 power bins of the 256-point FFT
N_BANDS = 40  #: mel bands (docs/learning.md, section 1, step 3)
SHAPE = (N_FRAMES, N_BANDS)  #: the feature map: [50 frames][40 bands], frame-major
MEL_LOW_HZ = 20.0  #: lowest filter edge (docs/learning.md, step 3)
MEL_HIGH_HZ = 8000.0  #: highest filter edge: Nyquist at 16 kHz
ENERGY_FLOOR = np.float32(1e-10)  #: band energies below this are floored before the log (step 4)
SD_FLOOR = np.float32(1e-3)  #: floor of the per-utterance standard deviation (step 5)
INPUT_SCALE_INV = 16  #: the int8 input's scale is 1/16, zero point 0: +-8 sd (step 6)
INPUT_ZERO_POINT = 0  #: the int8 input's zero point (step 6)


def hz_to_mel(hz: npt.ArrayLike) -> F64:
    """HTK mel scale: ``2595 log10(1 + f / 700)``, float64."""
    out: F64 = 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)
    return out


def mel_to_hz(mel: npt.ArrayLike) -> F64:
    """Inverse of :func:`hz_to_mel`, float64."""
    out: F64 = 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)
    return out


def mel_edges_hz() -> F64:
    """The 42 filter edges in Hz, equally spaced in mel from 20 Hz to 8,000 Hz."""
    mels = np.linspace(float(hz_to_mel(MEL_LOW_HZ)), float(hz_to_mel(MEL_HIGH_HZ)), N_BANDS + 2)
    return mel_to_hz(mels)


@functools.cache
def _mel_table() -> F32:
    edges = mel_edges_hz()
    freqs = np.arange(N_BINS, dtype=np.float64) * mfcc.SAMPLE_RATE / mfcc.FFT_LENGTH
    table = np.zeros((N_BANDS, N_BINS), np.float64)
    for m in range(N_BANDS):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs >= lo) & (freqs <= mid)
        falling = (freqs > mid) & (freqs <= hi)
        table[m, rising] = (freqs[rising] - lo) / (mid - lo)
        table[m, falling] = (hi - freqs[falling]) / (hi - mid)
    out = table.astype(np.float32)
    out.setflags(write=False)
    return out


def mel_table() -> F32:
    """The mel filterbank, float32 ``[40 bands][129 bins]`` (read-only, cached).

    Filter ``m`` rises from edge ``m`` to edge ``m + 1`` and falls to edge ``m + 2``, evaluated
    at the bin frequencies ``k * 16000 / 256`` in float64, then stored as float32.
    """
    return _mel_table()


def band_energies(power: F32) -> F32:
    """Step 3: ``[..., 50, 129]`` power -> ``[..., 50, 40]`` band energies.

    Each energy is the float32 sum over bins ``k = 0..128`` in ascending order of
    ``weight[m][k] * power[k]`` (numpy's ``add.accumulate`` is sequential, like a C loop).
    """
    p = np.asarray(power, np.float32)
    products = p[..., None, :] * mel_table()  # [..., 50, 40, 129], float32 products
    out: F32 = np.add.accumulate(products, axis=-1, dtype=np.float32)[..., -1]
    return out


def log_energies(energies: F32) -> F32:
    """Step 4: ``fast_log(max(energy, 1e-10))``, float32."""
    return mfcc.fast_log(np.maximum(np.asarray(energies, np.float32), ENERGY_FLOOR))


def normalise(values: F32) -> F32:
    """Step 5: ``(v - mean) / sd`` over each utterance's 2,000 values, float32.

    ``mean = (sum v) / 2000`` and ``sd = sqrt((sum (v - mean)^2) / 2000)``, each sum sequential
    in frame-major order in float32; ``sd`` is floored at ``1e-3``.
    """
    v = np.asarray(values, np.float32)
    if v.shape[-2:] != SHAPE:
        raise ValueError(f"log-mel values have shape {v.shape}, expected (..., 50, 40)")
    flat = v.reshape(*v.shape[:-2], N_FRAMES * N_BANDS)
    n = np.float32(flat.shape[-1])
    mean = np.add.accumulate(flat, axis=-1, dtype=np.float32)[..., -1] / n
    dev = flat - mean[..., None]
    var = np.add.accumulate(dev * dev, axis=-1, dtype=np.float32)[..., -1] / n
    sd = np.maximum(np.sqrt(var).astype(np.float32), SD_FLOOR)
    out: F32 = ((v - mean[..., None, None]) / sd[..., None, None]).astype(np.float32)
    return out


def _check_batch(audio: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    arr = np.asarray(audio)
    if arr.ndim != 2 or arr.shape[1] != N_SAMPLES:
        raise ValueError(f"audio batch has shape {arr.shape}, expected (n, {N_SAMPLES})")
    if arr.dtype != np.int16:
        raise ValueError(f"audio has dtype {arr.dtype}, expected int16")
    return arr.astype(np.int16, copy=False)


def logmel40_batch(audio: npt.NDArray[np.generic]) -> F32:
    """Steps 1-5 on a batch: int16 ``[n, 16000]`` -> normalised float32 ``[n, 50, 40]``."""
    aligned, _ = align.align_batch(_check_batch(audio))
    power = mfcc.power_spectrum(mfcc.preemphasis(aligned))
    return normalise(log_energies(band_energies(power)))


def logmel40(audio: npt.NDArray[np.generic]) -> F32:
    """Steps 1-5 on one clip: int16 ``[16000]`` -> normalised float32 ``[50, 40]``."""
    arr = np.asarray(audio)
    if arr.shape != (N_SAMPLES,):
        raise ValueError(f"audio has shape {arr.shape}, expected ({N_SAMPLES},)")
    out: F32 = logmel40_batch(arr[None, :])[0]
    return out


def round_half_away(x: npt.ArrayLike) -> F64:
    """Round to the nearest integer, halves away from zero (C's ``round``), in float64."""
    v = np.asarray(x, np.float64)
    mag = np.abs(v)
    whole = np.floor(mag)
    # |v| - floor(|v|) is exact; |v| + 0.5 would round 0.49999999999999994 up to 1.
    out: F64 = np.sign(v) * (whole + (mag - whole >= 0.5))
    return out


def quantise_input(x: npt.NDArray[np.floating]) -> I8:
    """Step 6: ``[..., 50, 40]`` float -> int8, ``clamp(round_half_away(16 x), -128, 127)``.

    The product ``16 x`` is exact in float32; the rounding is done in float64 so that values
    just below a half are not rounded up by float32 addition.
    """
    v = np.asarray(x, np.float32)
    if v.shape[-2:] != SHAPE:
        raise ValueError(f"features have shape {v.shape}, expected (..., 50, 40)")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(
            f"features have {bad.size} non-finite values (first {v.flat[bad[0]]} at flat "
            f"index {bad[0]})"
        )
    q = round_half_away(v.astype(np.float64) * INPUT_SCALE_INV)
    out: I8 = np.clip(q, -128, 127).astype(np.int8)
    return out


def features_int8(audio: npt.NDArray[np.generic]) -> I8:
    """Steps 1-6: int16 ``[16000]`` (or ``[n, 16000]``) -> the extractor's int8 input."""
    arr = np.asarray(audio)
    if arr.ndim == 2:
        return quantise_input(logmel40_batch(arr))
    return quantise_input(logmel40(arr))


def dequantise_input(q: npt.NDArray[np.integer]) -> F32:
    """The real value of an int8 input: ``q / 16`` (float32)."""
    out: F32 = (np.asarray(q).astype(np.float32) / np.float32(INPUT_SCALE_INV)).astype(np.float32)
    return out
