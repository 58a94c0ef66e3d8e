"""The integer rules of the int8 extractor (docs/learning.md, section 2), exactly.

* :func:`requant`: ``(acc * m + 2^(sh-1)) >> sh`` on int64 with an arithmetic (flooring) shift,
  the only rounding rule of the int8 path;
* :func:`choose_multiplier`: the ``(m, sh)`` pair with ``m`` in ``[2^30, 2^31)`` and ``sh`` in
  ``[1, 62]`` such that ``m / 2^sh`` is a real multiplier, ``m`` rounded half away from zero;
* :func:`quantise_weights`: per-output-channel symmetric int8 weights (zero point 0).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tinyfed.errors import ModelError
from tinyfed.features.logmel import round_half_away

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

M_MIN = 1 << 30  #: smallest multiplier mantissa (docs/learning.md: m in [2^30, 2^31))
M_MAX = (1 << 31) - 1  #: largest multiplier mantissa: m fits an int32
SH_MIN = 1  #: smallest shift (docs/learning.md: sh in [1, 62])
SH_MAX = 62  #: largest shift: acc * m + 2^(sh-1) stays inside int64 for an int32 acc
INT32_MIN = -(1 << 31)  #: the accumulator is an int32 on the board
INT32_MAX = (1 << 31) - 1
W_MAX = 127  #: symmetric int8 weights use [-127, 127] (zero point 0)

__all__ = [
    "choose_multiplier",
    "choose_multipliers",
    "quantise_weights",
    "requant",
    "round_half_away",
]


def requant(acc: npt.ArrayLike, m: npt.ArrayLike, sh: npt.ArrayLike) -> I64:
    """``(acc * m + 2^(sh-1)) >> sh`` in int64, broadcasting (``m``, ``sh`` per channel).

    Raises :class:`ModelError` if ``acc`` leaves int32 or ``m``/``sh`` leave their ranges, as
    the board's int32 accumulator and int64 product could not hold them.
    """
    a = np.asarray(acc, np.int64)
    mm = np.asarray(m, np.int64)
    ss = np.asarray(sh, np.int64)
    if a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX):
        bad = a.min() if a.min() < INT32_MIN else a.max()
        raise ModelError(f"accumulator {bad} does not fit an int32")
    if mm.size and (mm.min() < M_MIN or mm.max() > M_MAX):
        raise ModelError(f"multiplier {mm.min()}..{mm.max()} outside [2^30, 2^31)")
    if ss.size and (ss.min() < SH_MIN or ss.max() > SH_MAX):
        raise ModelError(f"shift {ss.min()}..{ss.max()} outside [{SH_MIN}, {SH_MAX}]")
    out: I64 = (a * mm + (np.int64(1) << (ss - 1))) >> ss
    return out


def choose_multiplier(real: float) -> tuple[int, int]:
    """``(m, sh)`` with ``m / 2^sh`` closest to ``real`` (``m`` rounded half away from zero).

    ``real = f * 2^e`` with ``f`` in ``[0.5, 1)``; ``m = round(f * 2^31)``, ``sh = 31 - e``; a
    mantissa that rounds up to ``2^31`` becomes ``2^30`` with one shift less. Raises
    :class:`ModelError` for a non-positive or non-finite ``real`` or a shift outside [1, 62].
    """
    if not math.isfinite(real) or real <= 0:
        raise ModelError(f"real multiplier {real} is not a positive finite number")
    f, e = math.frexp(real)
    m = int(round_half_away(f * 2.0**31))
    sh = 31 - e
    if m == 1 << 31:
        m, sh = 1 << 30, sh - 1
    if not SH_MIN <= sh <= SH_MAX:
        raise ModelError(f"real multiplier {real} needs shift {sh}, outside [{SH_MIN}, {SH_MAX}]")
    return m, sh


def choose_multipliers(real: npt.ArrayLike) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int8]]:
    """:func:`choose_multiplier` per channel: int32 ``m[c]`` and int8 ``sh[c]``."""
    pairs = [choose_multiplier(float(r)) for r in np.asarray(real, np.float64).ravel()]
    m = np.array([p[0] for p in pairs], np.int32)
    sh = np.array([p[1] for p in pairs], np.int8)
    return m, sh


def quantise_weights(w: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.int8], F64]:
    """Symmetric per-output-channel int8 weights: ``(q, scale)``, ``w ~ scale[c] * q``.

    ``w`` is ``[C_out, ...]``; ``scale[c] = max |w[c]| / 127`` (float32-rounded, returned as
    float64; a channel of zeros gets scale ``1/127``) and ``q = round_half_away(w / scale)``.
    """
    wf = np.asarray(w, np.float64)
    peak = np.abs(wf.reshape(wf.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / W_MAX, 1.0 / W_MAX).astype(np.float32).astype(np.float64)
    shape = (-1,) + (1,) * (wf.ndim - 1)
    q = np.clip(round_half_away(wf / scale.reshape(shape)), -W_MAX, W_MAX).astype(np.int8)
    return q, scale
