"""Aggregation strategies: pure functions on float32 parameter vectors, no I/O.

Every function takes and returns 1-D float32 arrays of one length (the paper's model has
10,467 values, the tests use a handful). Sums are carried in float64 so the order in which
updates arrive changes the result by float32 rounding at most.

* FedAvg: ``w = sum_i n_i x_i / sum_i n_i`` (``n_i`` the capped local steps of worker i).
* FedAvgM (server momentum, Hsu et al. 2019): ``d = g - fedavg``, ``v = beta v + d``,
  ``g' = g - eta v``.
* Coordinate-wise median and trimmed mean (Yin et al. 2018): unweighted, over the workers
  that did at least one step.
* Norm clipping, on top of any strategy: ``x_i = g + (x_i - g) min(1, C / ||x_i - g||_2)``,
  with a fixed ``C`` or (the service's default) ``C`` = the median update norm of the round
  (from 3 updates on): an update may pull the model no harder than the typical worker of its
  round does.

FedAvg and FedAvgM stream: :class:`WeightedSum` keeps one float64 sum (the memory of two
float32 models) however many updates arrive. Median and trimmed mean
need every value of a coordinate at once, so they hold the round's models (one per worker).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence, Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

StrategyName = Literal["fedavg", "fedavgm", "median", "trimmed-mean"]
STRATEGIES: tuple[StrategyName, ...] = ("fedavg", "fedavgm", "median", "trimmed-mean")
STREAMING: frozenset[str] = frozenset({"fedavg", "fedavgm"})
#: Fewest updates (with steps) in a round for clipping to their median norm to apply.
MEDIAN_CLIP_MIN = 3


def _vector(params: npt.ArrayLike, what: str = "model") -> F32:
    arr = np.asarray(params)
    if arr.ndim != 1 or arr.dtype != np.float32:
        raise ValueError(f"{what} must be a 1-D float32 array, got {arr.dtype} {arr.shape}")
    return arr


def _stack(models: Sequence[F32]) -> F32:
    if not models:
        raise ValueError("no models to aggregate")
    shapes = {np.shape(m) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"models differ in shape: {sorted(shapes)}")
    return np.stack([_vector(m) for m in models])


class WeightedSum:
    """Streaming weighted mean: one float64 sum, whatever the number of updates.

    The sum is allocated at the first update with a positive weight; products are formed
    in float64 through a small block buffer, so the memory is two float32 models plus 16 KB.

    Args:
        size: length of the parameter vectors.
    """

    BLOCK = 2048  #: values multiplied at a time (16 KB of float64 scratch)

    def __init__(self, size: int) -> None:
        self.size = size
        self._sum: F64 | None = None
        self._scratch: F64 | None = None
        self.total_weight = 0.0
        self.count = 0

    def add(self, params: F32, weight: float) -> None:
        """Add ``weight * params``; a weight of 0 is counted but changes nothing."""
        x = _vector(params)
        if x.shape != (self.size,):
            raise ValueError(f"model has shape {x.shape}, expected ({self.size},)")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        self.count += 1
        if weight == 0:
            return
        if self._sum is None or self._scratch is None:
            self._sum = np.zeros(self.size, np.float64)
            self._scratch = np.empty(min(self.BLOCK, self.size), np.float64)
        for start in range(0, self.size, self.BLOCK):
            stop = min(start + self.BLOCK, self.size)
            block = self._scratch[: stop - start]
            np.multiply(x[start:stop], weight, out=block, dtype=np.float64)
            self._sum[start:stop] += block
        self.total_weight += weight

    def mean(self) -> F32:
        """The weighted mean; ``ValueError`` if the total weight is 0."""
        if self._sum is None or self.total_weight <= 0:
            raise ValueError("weighted mean of no weight (every update did 0 steps)")
        out: F32 = np.empty(self.size, np.float32)
        with np.errstate(over="ignore"):  # an overflow to inf is the caller's to refuse
            np.divide(self._sum, self.total_weight, out=out, casting="same_kind")
        return out


def fedavg(models: Sequence[F32], weights: Sequence[float]) -> F32:
    """Weighted mean of ``models``: the paper's FedAvg with weights = local steps."""
    if len(models) != len(weights):
        raise ValueError(f"{len(models)} models but {len(weights)} weights")
    stack = _stack(models)
    acc = WeightedSum(stack.shape[1])
    for row, weight in zip(stack, weights, strict=True):
        acc.add(row, float(weight))
    return acc.mean()


def fedavgm(
    global_params: F32,
    averaged: F32,
    velocity: F32 | None,
    *,
    server_lr: float,
    server_momentum: float,
) -> tuple[F32, F32]:
    """One FedAvgM server step; returns ``(new global, new velocity)``.

    ``velocity`` is the previous round's server momentum (None or zeros at the start).
    """
    g = _vector(global_params, "global model").astype(np.float64)
    pseudo_gradient = g - _vector(averaged, "averaged model")
    v = pseudo_gradient if velocity is None else server_momentum * velocity + pseudo_gradient
    with np.errstate(over="ignore"):  # an overflow to inf is the caller's to refuse
        new_global: F32 = (g - server_lr * v).astype(np.float32)
    new_velocity: F32 = np.asarray(v, np.float32)
    return new_global, new_velocity


def median(models: Sequence[F32]) -> F32:
    """Coordinate-wise median (an even count averages the two middle values)."""
    out: F32 = np.median(_stack(models), axis=0).astype(np.float32)
    return out


def trim_count(n: int, fraction: float) -> int:
    """How many values trimmed mean drops at *each* end of a coordinate among ``n``."""
    return math.floor(fraction * n)


def trimmed_mean(models: Sequence[F32], fraction: float) -> F32:
    """Coordinate-wise mean after dropping ``floor(fraction * n)`` lowest and highest values."""
    if not 0 <= fraction < 0.5:
        raise ValueError(f"trim fraction must be in [0, 0.5), got {fraction}")
    stack = np.sort(_stack(models), axis=0)
    k = trim_count(stack.shape[0], fraction)
    kept = stack[k : stack.shape[0] - k]
    with np.errstate(over="ignore"):
        out: F32 = kept.mean(axis=0, dtype=np.float64).astype(np.float32)
    return out


def clip_to_norm(params: F32, reference: F32, max_norm: float) -> F32:
    """Scale ``params - reference`` down to L2 norm ``max_norm`` if it is longer."""
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"clip norm must be a positive number, got {max_norm}")
    x, ref = _vector(params), _vector(reference, "reference")
    delta = x.astype(np.float64) - ref
    norm = float(np.linalg.norm(delta))
    if norm <= max_norm:
        return x
    out: F32 = (ref + delta * (max_norm / norm)).astype(np.float32)
    return out


def distance(params: F32, reference: F32) -> float:
    """L2 norm of ``params - reference`` (the size of a worker's update), in float64.

    float64 keeps the norm finite for any finite float32 input (values near 3.4e38 would
    overflow a float32 norm to inf).
    """
    x, ref = _vector(params), _vector(reference, "reference")
    total = 0.0
    for start in range(0, x.shape[0], WeightedSum.BLOCK):  # 16 KB of float64 at a time
        stop = start + WeightedSum.BLOCK
        delta = x[start:stop].astype(np.float64) - ref[start:stop]
        total += float(np.dot(delta, delta))
    return math.sqrt(total)


@dataclass(frozen=True)
class Strategy:
    """Which aggregation a round uses, with its options (validated)."""

    name: StrategyName = "fedavg"
    clip_norm: float | None = None  #: clip every update's distance from the global to this
    clip_median: bool = False  #: clip every update's distance to the round's median distance
    server_lr: float = 1.0  #: FedAvgM: server learning rate (1 and momentum 0 = FedAvg)
    server_momentum: float = 0.9  #: FedAvgM: server momentum
    trim_fraction: float = 0.2  #: trimmed mean: share dropped at each end of a coordinate

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}: choose one of {STRATEGIES}")
        if self.clip_norm is not None and not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
        ):
            raise ValueError(f"clip norm must be a positive number, got {self.clip_norm}")
        if self.clip_norm is not None and self.clip_median:
            raise ValueError("clip to a fixed norm or to the median norm, not both")
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ValueError(f"server learning rate must be > 0, got {self.server_lr}")
        if not (math.isfinite(self.server_momentum) and 0 <= self.server_momentum < 1):
            raise ValueError(f"server momentum must be in [0, 1), got {self.server_momentum}")
        if not (math.isfinite(self.trim_fraction) and 0 <= self.trim_fraction < 0.5):
            raise ValueError(f"trim fraction must be in [0, 0.5), got {self.trim_fraction}")

    @property
    def streaming(self) -> bool:
        """True if the round keeps a running sum instead of every model."""
        return self.name in STREAMING

    def describe(self) -> str:
        """A short label for logs and round events, e.g. ``fedavg+clip(5)``."""
        label: str = self.name
        if self.name == "fedavgm":
            label += f"(lr={self.server_lr:g},beta={self.server_momentum:g})"
        elif self.name == "trimmed-mean":
            label += f"({self.trim_fraction:g})"
        if self.clip_norm is not None:
            label += f"+clip({self.clip_norm:g})"
        elif self.clip_median:
            label += "+clip(median)"
        return label


#: Reads a round's accepted updates again, in accepted order, as ``(index, params, weight)``;
#: ``only`` (None: all) names the indices wanted, so the others' parameters are not read.
UpdateSource = Callable[[AbstractSet[int] | None], Iterable[tuple[int, F32, float]]]
#: norms within a factor of this share a bin of the median-clipping sums. Updates' norms
#: cluster (10,000 simulated updates: within ±2 %), and the bin holding the median is read back
#: from the store at the close: with 1.1 that was half the round (0.4-1.2 s at W = 10,000),
#: with 1.001 about 5 % of it (`bench/fleet.py`, docs/scale.md).
BIN_RATIO = 1.001
#: at most this many bins (2 float64 models each): 16 MB whatever the fleet; a norm that would
#: open one more joins the nearest bin (still exact, only wider)
MAX_BINS = 96


@dataclass
class _Bin:
    """Updates of similar norm: their weighted sum, and their norm-scaled weighted deltas."""

    lo: float
    hi: float
    total: F64  #: sum of w_i x_i
    scaled: F64  #: sum of (w_i / n_i) (x_i - g)
    weight: float = 0.0
    members: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RoundResult:
    """What closing a round produced."""

    params: F32
    velocity: F32 | None
    clip: float | None  #: the clip norm applied (fixed or the round's median), None if none
    clipped: int  #: updates scaled down by it
    excluded: tuple[int, ...] = ()  #: indices (accepted order) left out because non-finite


class RoundAggregate:
    """The models of one round, folded in as they arrive.

    FedAvg and FedAvgM keep a :class:`WeightedSum`; median and trimmed mean keep every model
    with a positive weight. A fixed clip norm is applied to each update on arrival, relative
    to the round's base model. Clipping to the round's median norm *M* can only be decided
    when the round closes, so FedAvg keeps its sums in bins of similar norm (a factor of
    :data:`BIN_RATIO` apart, at most :data:`MAX_BINS`): a bin wholly below *M* adds its sum
    Σ wᵢxᵢ, a bin wholly above adds (Σ wᵢ)g + M·Σ (wᵢ/nᵢ)(xᵢ − g), which is exactly its members
    clipped, and only the bin that holds *M* is read again from ``source`` (the store), one
    model at a time. Memory: two float64 models per bin. Without a ``source`` (tests,
    benchmarks) the models are held in memory instead.

    Args:
        strategy: the aggregation to use.
        base: the global model the round started from.
        source: reads the round's accepted updates again, in accepted order.
    """

    def __init__(self, strategy: Strategy, base: F32, source: UpdateSource | None = None) -> None:
        self.strategy = strategy
        self.base = _vector(base, "global model")
        self.source = source
        self._hold_all = not strategy.streaming or (strategy.clip_median and source is None)
        self._binned = strategy.streaming and strategy.clip_median and source is not None
        self._bins: dict[int, _Bin] = {}
        self._sum = (
            WeightedSum(self.base.shape[0]) if strategy.streaming and not self._binned else None
        )
        self._models: list[tuple[F32, float]] = []
        self._norms: list[float] = []  #: distance of every update from the base, float64
        self._weights: list[float] = []
        self._stored = 0  #: updates the source already holds (the first ones, in order)
        self._recent: list[tuple[F32, float]] = []  #: added since, not yet in the source
        self._scratch = np.empty(self.base.shape[0] if self._binned else 0, np.float64)

    @property
    def held_models(self) -> int:
        """How many whole models the aggregate holds (0 when streaming)."""
        return len(self._models)

    @property
    def count(self) -> int:
        """Updates added so far."""
        return len(self._norms)

    def add(self, params: F32, weight: float) -> float:
        """Fold one accepted update in (weight = the worker's capped local steps).

        Returns its distance from the base model (float64, before any clipping).
        """
        x = _vector(params)
        if x.shape != self.base.shape:
            raise ValueError(f"model has shape {x.shape}, expected {self.base.shape}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        norm = distance(x, self.base)
        if self._sum is not None:
            self._sum.add(self._fixed_clip(x), weight)
        if self._binned:
            self._bin(len(self._norms), x, weight, norm)
        if self._hold_all:
            self._models.append((x, weight))
        elif self.source is not None:
            self._recent.append((x, weight))
        self._norms.append(norm)
        self._weights.append(weight)
        return norm

    def _bin(self, index: int, x: F32, weight: float, norm: float) -> None:
        key = math.floor(math.log(norm) / math.log(BIN_RATIO)) if norm > 0 else -(10**9)
        if key not in self._bins and len(self._bins) >= MAX_BINS:
            key = min(self._bins, key=lambda k: abs(k - key))  # a wider bin: still exact
        b = self._bins.get(key)
        if b is None:
            size = self.base.shape[0]
            b = self._bins[key] = _Bin(norm, norm, np.zeros(size), np.zeros(size))
        b.lo, b.hi = min(b.lo, norm), max(b.hi, norm)
        b.weight += weight
        b.members.append(index)
        if weight > 0:
            scratch = self._scratch
            np.multiply(x, weight, out=scratch, dtype=np.float64)
            b.total += scratch
            if norm > 0:
                np.subtract(x, self.base, out=scratch, dtype=np.float64)
                scratch *= weight / norm
                b.scaled += scratch

    def mark_stored(self) -> None:
        """Every update added so far is now readable from the source (it was committed)."""
        self._stored = len(self._norms)
        self._recent.clear()

    def _fixed_clip(self, x: F32) -> F32:
        c = self.strategy.clip_norm
        return x if c is None else clip_to_norm(x, self.base, c)

    def median_norm(self) -> float | None:
        """The median distance from the base among updates with a positive weight."""
        norms = [n for n, w in zip(self._norms, self._weights, strict=True) if w > 0]
        return float(np.median(norms)) if norms else None

    def _updates(self, only: AbstractSet[int] | None = None) -> Iterable[tuple[int, F32, float]]:
        if self._hold_all:
            return ((i, x, w) for i, (x, w) in enumerate(self._models))
        if self.source is None:
            raise ValueError("the round's updates are not held and there is no source to re-read")
        # the source holds the first ones; the last may not be written yet (same transaction)
        stored = (t for t in self.source(only) if t[0] < self._stored)
        recent = (
            (self._stored + k, x, w)
            for k, (x, w) in enumerate(self._recent)
            if only is None or self._stored + k in only
        )
        return itertools.chain(stored, recent)

    def _binned_mean(self, clip: float | None) -> tuple[F64, float]:
        """``(Σ wᵢ yᵢ, Σ wᵢ)`` with yᵢ the updates clipped to ``clip``, from the bins."""
        acc = np.zeros(self.base.shape[0])
        total = 0.0
        reread: set[int] = set()
        for b in self._bins.values():
            if clip is None or b.hi <= clip:
                acc += b.total
            elif b.lo > clip:
                acc += b.weight * self.base.astype(np.float64) + clip * b.scaled
            else:
                reread.update(b.members)
                continue
            total += b.weight
        for i, x, w in self._updates(reread):
            norm = self._norms[i]
            y = x.astype(np.float64)
            if clip is not None and norm > clip:
                y = self.base + (y - self.base) * (clip / norm)
            acc += w * y
            total += w
        return acc, total

    def result(self, velocity: F32 | None) -> tuple[F32, F32 | None]:
        """``(new global, new server velocity)``; the base unchanged if nobody trained."""
        r = self.finish(velocity)
        return r.params, r.velocity

    def finish(self, velocity: F32 | None, exclude: Iterable[int] = ()) -> RoundResult:
        """The new global model (and server velocity); the base unchanged if nobody trained.

        ``exclude`` lists updates (by accepted order) to leave out.
        """
        s = self.strategy
        skip = frozenset(exclude)
        clip = s.clip_norm
        if s.clip_median:
            kept = [
                n
                for i, (n, w) in enumerate(zip(self._norms, self._weights, strict=True))
                if w > 0 and i not in skip
            ]
            # Below MEDIAN_CLIP_MIN updates a median cannot tell an outlier from the rest (of
            # two, it is their mean); a round whose updates all equal the base has no scale.
            enough = len(kept) >= MEDIAN_CLIP_MIN
            median_norm = float(np.median(kept)) if enough else None
            clip = median_norm if median_norm else None
        clipped = sum(
            1
            for i, n in enumerate(self._norms)
            if clip is not None and n > clip and self._weights[i] > 0 and i not in skip
        )
        exact_sum = self._sum is not None and not skip and (s.clip_median is False or not clipped)
        if self._binned and not skip:
            acc_sum, total = self._binned_mean(clip)
            if total <= 0:
                return RoundResult(self.base.copy(), velocity, clip, clipped)
            averaged = np.empty(self.base.shape[0], np.float32)
            with np.errstate(over="ignore"):  # an overflow to inf is the caller's to refuse
                np.divide(acc_sum, total, out=averaged, casting="same_kind")
        elif self._sum is not None and exact_sum:
            if self._sum.total_weight <= 0:
                return RoundResult(self.base.copy(), velocity, clip, 0)
            averaged = self._sum.mean()
        else:
            median_clip = clip if s.clip_median else None
            models: list[F32] = []
            acc = WeightedSum(self.base.shape[0]) if s.streaming else None
            for i, x, w in self._updates():
                if i in skip:
                    continue
                y = self._fixed_clip(x)
                norm = self._norms[i]
                if median_clip is not None and norm > median_clip:
                    # the norm is known: scale the update's delta without measuring it again
                    delta = y.astype(np.float64) - self.base
                    y = (self.base + delta * (median_clip / norm)).astype(np.float32)
                if acc is not None:
                    acc.add(y, w)
                elif w > 0:
                    models.append(y)
            if acc is not None:
                if acc.total_weight <= 0:
                    return RoundResult(self.base.copy(), velocity, clip, clipped, tuple(skip))
                averaged = acc.mean()
            elif not models:
                return RoundResult(self.base.copy(), velocity, clip, clipped, tuple(skip))
            elif s.name == "median":
                return RoundResult(median(models), velocity, clip, clipped, tuple(skip))
            else:
                out = trimmed_mean(models, s.trim_fraction)
                return RoundResult(out, velocity, clip, clipped, tuple(skip))
        if s.name == "fedavgm":
            new, v = fedavgm(
                self.base,
                averaged,
                velocity,
                server_lr=s.server_lr,
                server_momentum=s.server_momentum,
            )
            return RoundResult(new, v, clip, clipped, tuple(skip))
        return RoundResult(averaged, velocity, clip, clipped, tuple(skip))

    def largest(self, exclude: Iterable[int] = ()) -> int | None:
        """Index of the update farthest from the base (the first suspect of a non-finite sum)."""
        skip = frozenset(exclude)
        candidates = [(n, i) for i, n in enumerate(self._norms) if i not in skip]
        return max(candidates)[1] if candidates else None
