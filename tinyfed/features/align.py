"""The alignment stage: re-centre one second of audio on its energy centroid (beyond the paper).

The paper's features depend on where the word falls in the second, and a network of 10k
parameters trained on a few dozen utterances cannot learn that invariance. Moving the word to
the middle of the second before the MFCC removes most of that variation for the price of two
passes over the samples on the board.

The algorithm is defined on integers only, so that this reference and the firmware's C++
(``firmware/core/align.cpp``) give bit-identical results:

1. **Block energies:** ``e[b] = sum(x[n]^2)`` over 100 blocks of 160 samples (10 ms), in
   int64 (at most ``160 * 32768^2 < 2^38``).
2. **Noise floor:** the ``FLOOR_RANK``-th smallest block energy (rank 0 = the minimum); the
   weights are ``w[b] = max(e[b] - floor, 0)``.
3. **Centroid:** ``c = round(sum(w[b] * (160 b + 80)) / sum(w[b]))`` in samples, in int64
   with round-half-up integer division (numerator below ``2^38 * 100 * 16000 < 2^59``).
   If every weight is 0 (digital silence, a constant level) the shift is 0.
4. **Shift:** ``s = 8000 - c``; ``out[n] = x[n - s]`` where ``0 <= n - s < 16000``, else 0:
   the samples move, the vacated end is zero-filled, nothing wraps around.

The output is int16 audio of the same length; the paper's MFCC then runs on it unchanged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I16 = npt.NDArray[np.int16]
I64 = npt.NDArray[np.int64]

N_SAMPLES = 16_000  #: one second at 16 kHz
BLOCK = 160  #: 10 ms blocks at 16 kHz: fine enough for a 20 ms MFCC frame
N_BLOCKS = N_SAMPLES // BLOCK  #: 100
CENTRE = N_SAMPLES // 2  #: the centroid is moved to sample 8000
#: Rank of the block energy used as noise floor: 10 = the 10th percentile of 100 blocks.
#: Chosen on held-out voices against the minimum (rank 0); see docs/features.md.
FLOOR_RANK = 10


def block_energies(audio: npt.NDArray[np.integer]) -> I64:
    """Step 1: int64 sums of squares over 10 ms blocks, ``[..., 16000]`` -> ``[..., 100]``."""
    x = np.asarray(audio).astype(np.int64)
    blocks = x.reshape(*x.shape[:-1], N_BLOCKS, BLOCK)
    out: I64 = np.einsum("...i,...i->...", blocks, blocks)
    return out


def noise_floor(energies: I64, rank: int = FLOOR_RANK) -> I64:
    """Step 2: the ``rank``-th smallest block energy (0 = the minimum).

    ``[..., 100]`` -> ``[...]``.
    """
    if not 0 <= rank < N_BLOCKS:
        raise ValueError(f"floor rank {rank} outside 0..{N_BLOCKS - 1}")
    out: I64 = np.partition(energies, rank, axis=-1)[..., rank]
    return out


def centroid(energies: I64, floor: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Step 3: energy centroid in samples (int64) and whether it is defined (some weight > 0).

    Where no block rises above the floor the returned centroid is :data:`CENTRE`.
    """
    weights = np.maximum(energies - np.asarray(floor)[..., None], 0)
    positions = np.arange(N_BLOCKS, dtype=np.int64) * BLOCK + BLOCK // 2
    num = (weights * positions).sum(axis=-1)
    den = weights.sum(axis=-1)
    defined = den > 0
    safe = np.where(defined, den, 1)
    c = np.where(defined, (2 * num + safe) // (2 * safe), CENTRE).astype(np.int64)
    return c, defined


def alignment_shift(audio: npt.NDArray[np.integer], rank: int = FLOOR_RANK) -> I64:
    """Steps 1-3: the shift in samples (positive = later) for ``[..., 16000]`` audio."""
    energies = block_energies(audio)
    c, _ = centroid(energies, noise_floor(energies, rank))
    out: I64 = (CENTRE - c).astype(np.int64)
    return out


def shift_audio(audio: npt.NDArray[np.integer], shift: npt.ArrayLike) -> I16:
    """Step 4: ``out[n] = x[n - s]`` with zero fill, no wrap-around; batch-aware."""
    x = np.asarray(audio, dtype=np.int16)
    s = np.asarray(shift, dtype=np.int64)
    if s.shape != x.shape[:-1]:
        raise ValueError(f"shift has shape {s.shape}, expected {x.shape[:-1]}")
    src = np.arange(N_SAMPLES, dtype=np.int64) - s[..., None]
    valid = (src >= 0) & (src < N_SAMPLES)
    taken = np.take_along_axis(x, np.clip(src, 0, N_SAMPLES - 1), axis=-1)
    out: I16 = np.where(valid, taken, np.int16(0)).astype(np.int16)
    return out


def align_batch(audio: npt.NDArray[np.integer], rank: int = FLOOR_RANK) -> tuple[I16, I64]:
    """Centre every clip of ``[n, 16000]`` int16 audio; returns ``(aligned, shifts)``."""
    x = np.asarray(audio)
    if x.ndim != 2 or x.shape[1] != N_SAMPLES:
        raise ValueError(f"audio batch has shape {x.shape}, expected (n, {N_SAMPLES})")
    if x.dtype != np.int16:
        raise ValueError(f"audio has dtype {x.dtype}, expected int16")
    shifts = alignment_shift(x, rank)
    return shift_audio(x, shifts), shifts


def align(audio: npt.NDArray[np.integer], rank: int = FLOOR_RANK) -> tuple[I16, int]:
    """Centre one int16 ``[16000]`` clip on its energy centroid; returns ``(aligned, shift)``."""
    x = np.asarray(audio)
    if x.shape != (N_SAMPLES,):
        raise ValueError(f"audio has shape {x.shape}, expected ({N_SAMPLES},)")
    out, shifts = align_batch(x[None, :], rank)
    return out[0], int(shifts[0])
