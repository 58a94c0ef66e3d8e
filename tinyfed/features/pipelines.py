"""Named, versioned feature pipelines: one second of int16 audio -> 650 float32 features.

A pipeline's id travels with models and datasets, so a model is never fed features it was not
trained on. Ids are never reused and a pipeline's definition never changes: an improvement
is a new pipeline with a new id.

* ``paper`` (id 1): the paper's Edge Impulse MFCC (:mod:`tinyfed.features.mfcc`), as the
  original boards compute it.
* ``centroid`` (id 2): the second is first re-centred on its energy centroid
  (:mod:`tinyfed.features.align`), then the paper's MFCC runs unchanged. Better on unseen
  voices (``docs/features.md``), hence the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tinyfed.errors import UsageError
from tinyfed.features import align, mfcc

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]

N_SAMPLES = mfcc.N_SAMPLES  #: 16,000: one second at 16 kHz
N_FEATURES = mfcc.N_FEATURES  #: 650: 13 coefficients x 50 frames


def _check_batch(audio: npt.ArrayLike) -> I16:
    arr = np.asarray(audio)
    if arr.ndim != 2 or arr.shape[1] != N_SAMPLES:
        raise ValueError(f"audio batch has shape {arr.shape}, expected (n, {N_SAMPLES})")
    if arr.dtype != np.int16:
        raise ValueError(f"audio has dtype {arr.dtype}, expected int16")
    return arr


def _paper(audio: I16) -> F32:
    return mfcc.mfcc_batch(audio)


def _centroid(audio: I16) -> F32:
    aligned, _ = align.align_batch(audio)
    return mfcc.mfcc_batch(aligned)


@dataclass(frozen=True)
class Pipeline:
    """One feature pipeline: a stable name, a stable numeric id, and how it computes."""

    name: str
    id: int
    description: str
    kernel: Callable[[I16], F32] = field(repr=False, compare=False)

    def compute_batch(self, audio: npt.ArrayLike) -> F32:
        """int16 ``[n, 16000]`` -> float32 ``[n, 650]``."""
        return self.kernel(_check_batch(audio))

    def compute(self, audio: npt.ArrayLike) -> F32:
        """int16 ``[16000]`` -> float32 ``[650]``."""
        arr = np.asarray(audio)
        if arr.shape != (N_SAMPLES,):
            raise ValueError(f"audio has shape {arr.shape}, expected ({N_SAMPLES},)")
        out: F32 = self.compute_batch(arr[None, :])[0]
        return out


PAPER = "paper"  #: the paper's pipeline, never changed
CENTROID = "centroid"  #: energy-centroid alignment, then the paper's MFCC

PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        Pipeline(PAPER, 1, "Edge Impulse MFCC v2 exactly as the paper's boards", _paper),
        Pipeline(
            CENTROID,
            2,
            "re-centre the second on its energy centroid (10 ms blocks, 10th-percentile "
            "noise floor, zero fill), then the paper's MFCC",
            _centroid,
        ),
    )
}

#: The better pipeline on held-out voices (docs/features.md).
DEFAULT_PIPELINE = CENTROID


def get_pipeline(name: str) -> Pipeline:
    """The pipeline called ``name``; :class:`UsageError` naming the valid ones otherwise."""
    try:
        return PIPELINES[name]
    except KeyError:
        valid = ", ".join(sorted(PIPELINES))
        raise UsageError(f"unknown feature pipeline {name!r}; valid pipelines: {valid}") from None


def get_pipeline_by_id(pipeline_id: int) -> Pipeline:
    """The pipeline with numeric id ``pipeline_id`` (as stored with a model or dataset)."""
    for p in PIPELINES.values():
        if p.id == pipeline_id:
            return p
    valid = ", ".join(f"{p.id} ({p.name})" for p in PIPELINES.values())
    raise UsageError(f"unknown feature pipeline id {pipeline_id}; valid ids: {valid}")


def fit_length(audio: npt.ArrayLike) -> tuple[I16, str | None]:
    """Pad with zeros at the end or cut to exactly 16,000 samples.

    Returns the int16 audio and ``None`` when it already had the right length, otherwise a
    short note saying what was done (for the caller to log with the file name).
    """
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise ValueError(f"audio has shape {arr.shape}, expected one channel")
    x = arr.astype(np.int16, copy=False)
    n = x.shape[0]
    if n == N_SAMPLES:
        return x, None
    seconds = n / mfcc.SAMPLE_RATE
    if n < N_SAMPLES:
        out = np.zeros(N_SAMPLES, np.int16)
        out[:n] = x
        return out, f"{n} samples ({seconds:.3f} s), padded with zeros to 1 s"
    return x[:N_SAMPLES].copy(), f"{n} samples ({seconds:.3f} s), cut to the first 1 s"
