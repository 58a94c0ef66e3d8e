"""Aggregation strategies as pure functions, on tiny arrays."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator, Set as AbstractSet

import numpy as np
import pytest

from tinyfed import model
from tinyfed.aggregator.strategies import (
    RoundAggregate,
    Strategy,
    StrategyName,
    UpdateSource,
    WeightedSum,
    clip_to_norm,
    fedavg,
    fedavgm,
    median,
    trimmed_mean,
)
from tinyfed.model import families


def f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def test_fedavg_weights_models_by_local_steps() -> None:
    # Prepare
    a, b = f32(1, 2), f32(3, 6)
    # Execute
    out = fedavg([a, b], [1, 3])
    # Assert: (1*1 + 3*3)/4 = 2.5, (1*2 + 3*6)/4 = 5
    np.testing.assert_array_equal(out, f32(2.5, 5))
    assert out.dtype == np.float32


def test_fedavg_gives_a_worker_with_zero_steps_no_weight() -> None:
    out = fedavg([f32(1, 1), f32(100, -100)], [4, 0])
    np.testing.assert_array_equal(out, f32(1, 1))


def test_fedavg_refuses_when_every_weight_is_zero() -> None:
    with pytest.raises(ValueError, match="no weight"):
        fedavg([f32(1), f32(2)], [0, 0])


def test_fedavg_refuses_models_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        fedavg([f32(1, 2), f32(1, 2, 3)], [1, 1])


def test_weighted_sum_does_not_depend_on_arrival_order() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    models = [rng.normal(size=5000).astype(np.float32) for _ in range(7)]
    weights = [3.0, 1.0, 10.0, 0.0, 7.0, 2.0, 5.0]
    forward, backward = WeightedSum(5000), WeightedSum(5000)
    # Execute
    for m, w in zip(models, weights, strict=True):
        forward.add(m, w)
    for m, w in reversed(list(zip(models, weights, strict=True))):
        backward.add(m, w)
    # Assert
    np.testing.assert_array_equal(forward.mean(), backward.mean())
    expected = np.average(np.stack(models).astype(np.float64), axis=0, weights=weights)
    np.testing.assert_allclose(forward.mean(), expected, rtol=1e-6, atol=1e-7)
    assert forward.count == 7
    assert forward.total_weight == sum(weights)


def test_weighted_sum_memory_stays_flat_with_the_number_of_updates() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    update = rng.normal(size=model.N_PARAMS).astype(np.float32)
    acc = WeightedSum(model.N_PARAMS)
    tracemalloc.start()
    # Execute
    for _ in range(300):
        acc.add(update, 2.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Assert: the float64 sum (2 models) and a small block, not 300 models
    assert peak < 3 * model.MODEL_BYTES


def test_fedavgm_applies_server_momentum_across_rounds() -> None:
    # Prepare
    g0, avg = f32(1.0), f32(0.0)  # pseudo-gradient g - avg = 1
    # Execute
    g1, v1 = fedavgm(g0, avg, None, server_lr=0.5, server_momentum=0.9)
    g2, v2 = fedavgm(g1, g1 - 1.0, v1, server_lr=0.5, server_momentum=0.9)
    # Assert: v1 = 1, g1 = 0.5; v2 = 0.9 + 1 = 1.9, g2 = 0.5 - 0.95 = -0.45
    np.testing.assert_allclose(v1, f32(1.0))
    np.testing.assert_allclose(g1, f32(0.5))
    np.testing.assert_allclose(v2, f32(1.9))
    np.testing.assert_allclose(g2, f32(-0.45), rtol=1e-6)


def test_fedavgm_with_unit_lr_and_no_momentum_is_fedavg() -> None:
    g, avg = f32(3, -1, 2), f32(1, 1, 1)
    out, _ = fedavgm(g, avg, None, server_lr=1.0, server_momentum=0.0)
    np.testing.assert_array_equal(out, avg)


def test_median_is_coordinate_wise_and_ignores_one_outlier() -> None:
    out = median([f32(1, 10), f32(2, 20), f32(1000, -1000)])
    np.testing.assert_array_equal(out, f32(2, 10))


def test_median_of_an_even_count_averages_the_middle_pair() -> None:
    out = median([f32(1), f32(2), f32(4), f32(100)])
    np.testing.assert_array_equal(out, f32(3))


def test_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    # Prepare: 5 workers, fraction 0.2 -> drop 1 lowest and 1 highest per coordinate
    models = [f32(1, 5), f32(2, 4), f32(3, 3), f32(4, 2), f32(-100, 100)]
    # Execute
    out = trimmed_mean(models, 0.2)
    # Assert: coordinate 0 keeps 1, 2, 3; coordinate 1 keeps 3, 4, 5
    np.testing.assert_allclose(out, f32(2, 4))


def test_trimmed_mean_of_too_few_models_to_trim_is_the_mean() -> None:
    out = trimmed_mean([f32(1), f32(3)], 0.2)  # floor(0.2 * 2) = 0
    np.testing.assert_array_equal(out, f32(2))


def test_trimmed_mean_refuses_a_fraction_of_a_half() -> None:
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        trimmed_mean([f32(1)], 0.5)


def test_clip_to_norm_shortens_a_long_update_toward_the_reference() -> None:
    # Prepare: an update 5 away from the reference (3-4-5 triangle)
    ref, x = f32(1, 1), f32(4, 5)
    # Execute
    out = clip_to_norm(x, ref, 1.0)
    # Assert
    np.testing.assert_allclose(out, f32(1.6, 1.8), rtol=1e-6)
    assert np.linalg.norm(out - ref) == pytest.approx(1.0, rel=1e-6)


def test_clip_to_norm_leaves_a_short_update_alone() -> None:
    x = f32(1.5, 1)
    assert clip_to_norm(x, f32(1, 1), 1.0) is x


def test_round_aggregate_clips_every_update_before_averaging() -> None:
    # Prepare: base 0; one honest small update, one huge one
    agg = RoundAggregate(Strategy("fedavg", clip_norm=1.0), f32(0, 0))
    # Execute
    agg.add(f32(0.5, 0), 1)
    agg.add(f32(0, 1000), 1)
    out, _ = agg.result(None)
    # Assert: the huge update counts as (0, 1)
    np.testing.assert_allclose(out, f32(0.25, 0.5))


def test_round_aggregate_keeps_the_base_when_nobody_trained() -> None:
    base = f32(7, 8)
    for name in ("fedavg", "median"):
        agg = RoundAggregate(Strategy(name), base)
        agg.add(f32(1, 1), 0)
        out, _ = agg.result(None)
        np.testing.assert_array_equal(out, base)


def test_round_aggregate_streams_fedavg_but_holds_models_for_median() -> None:
    # Prepare
    streaming = RoundAggregate(Strategy("fedavgm"), f32(0, 0))
    holding = RoundAggregate(Strategy("trimmed-mean"), f32(0, 0))
    # Execute
    for v in (1.0, 2.0, 3.0):
        streaming.add(f32(v, v), 1)
        holding.add(f32(v, v), 1)
    # Assert
    assert streaming.held_models == 0
    assert holding.held_models == 3


def test_round_aggregate_median_ignores_workers_without_steps() -> None:
    agg = RoundAggregate(Strategy("median"), f32(0))
    for v, w in ((1.0, 1), (2.0, 1), (50.0, 0), (60.0, 0)):
        agg.add(f32(v), w)
    out, _ = agg.result(None)
    np.testing.assert_array_equal(out, f32(1.5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "krum"}, "unknown strategy"),
        ({"clip_norm": 0.0}, "clip norm"),
        ({"server_momentum": 1.0}, "server momentum"),
        ({"trim_fraction": 0.6}, "trim fraction"),
    ],
)
def test_strategy_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Strategy(**kwargs)  # type: ignore[arg-type]


def reader(updates: list[tuple[np.ndarray, float]]) -> UpdateSource:
    """An update source over a list, as the store is one over its rows; it notes each read."""

    def read(only: AbstractSet[int] | None) -> Iterator[tuple[int, np.ndarray, float]]:
        for i, (x, w) in enumerate(updates):
            if only is None or i in only:
                reads.append(i)
                yield i, x, w

    reads: list[int] = []
    read.reads = reads  # type: ignore[attr-defined]
    return read


def test_median_clipping_reads_back_only_the_bin_that_holds_the_median() -> None:
    # Prepare: 40 updates of norms 1.0000 .. 1.0039 (clustered, as real updates' norms are:
    # several share each bin) in one direction each, plus two far ones
    rng = np.random.default_rng(3)
    updates: list[tuple[np.ndarray, float]] = []
    for k in range(40):
        d = rng.normal(0, 1, 50)
        norm = 1 + k / 10_000
        updates.append(((d * norm / np.linalg.norm(d)).astype(np.float32), 1.0 + k % 3))
    for far in (1e6, 2e6, 3e6):  # 43 updates: the median is the lowest norm of a bin
        d = rng.normal(0, 1, 50)
        updates.append(((d * far / np.linalg.norm(d)).astype(np.float32), 1.0))
    source = reader(updates)
    base = np.zeros(50, np.float32)
    agg = RoundAggregate(Strategy("fedavg", clip_median=True), base, source)
    # Execute
    for x, w in updates:
        agg.add(x, w)
    agg.mark_stored()
    result = agg.finish(None)
    # Assert: the same as clipping every update by hand, with a few models read back
    held = RoundAggregate(Strategy("fedavg", clip_median=True), base)  # holds every model
    for x, w in updates:
        held.add(x, w)
    np.testing.assert_allclose(result.params, held.finish(None).params, rtol=1e-5, atol=1e-6)
    norms = [1 + k / 10_000 for k in range(40)] + [1e6, 2e6, 3e6]
    assert result.clip == pytest.approx(float(np.median(norms)), rel=1e-6)
    assert 0 < len(source.reads) <= 12, source.reads  # type: ignore[attr-defined]


@pytest.mark.parametrize("with_source", [False, True])
def test_clipping_to_the_median_norm_scales_only_the_longer_updates(with_source: bool) -> None:
    # Prepare: base 0; updates of norms 1, 2, 3 and 100 (median 2.5), weights 1, 1, 2, 1
    updates = [(f32(1, 0), 1.0), (f32(0, 2), 1.0), (f32(3, 0), 2.0), (f32(0, 100), 1.0)]
    source = reader(updates) if with_source else None
    agg = RoundAggregate(Strategy("fedavg", clip_median=True), f32(0, 0), source)
    # Execute
    norms = [agg.add(x, w) for x, w in updates]
    result = agg.finish(None)
    # Assert: 3 -> 2.5 and 100 -> 2.5 along their directions; 1 and 2 unchanged
    expected = (f32(1, 0) + f32(0, 2) + 2 * f32(2.5, 0) + f32(0, 2.5)) / 5
    np.testing.assert_allclose(result.params, expected, rtol=1e-6)
    assert norms == [1.0, 2.0, 3.0, 100.0]
    assert (result.clip, result.clipped) == (2.5, 2)
    assert agg.held_models == (0 if with_source else 4)


def test_clipping_to_the_median_needs_three_updates() -> None:
    agg = RoundAggregate(Strategy("fedavg", clip_median=True), f32(0, 0))
    agg.add(f32(1, 0), 1.0)
    agg.add(f32(0, 100), 1.0)
    result = agg.finish(None)
    np.testing.assert_allclose(result.params, f32(0.5, 50))
    assert (result.clip, result.clipped) == (None, 0)


def test_an_excluded_update_leaves_the_sum_and_the_median() -> None:
    updates = [(f32(1, 0), 1.0), (f32(0, 1), 1.0), (f32(2, 0), 1.0), (f32(0, 1e30), 1.0)]
    agg = RoundAggregate(Strategy("fedavg", clip_median=True), f32(0, 0), reader(updates))
    for x, w in updates:
        agg.add(x, w)
    assert agg.largest() == 3
    result = agg.finish(None, exclude=[3])
    np.testing.assert_allclose(result.params, (f32(1, 0) + f32(0, 1) + f32(1, 0)) / 3, rtol=1e-6)
    assert result.excluded == (3,)


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "median", "trimmed-mean"])
@pytest.mark.parametrize("clip", ["median", "off"])
def test_every_strategy_aggregates_vectors_of_the_dscnn_family(
    name: StrategyName, clip: str
) -> None:
    """Nothing assumes the paper's 10,467 parameters: a round of 195-float heads."""
    rng = np.random.default_rng(7)
    base = families.DSCNN.init()
    heads = [(rng.normal(0, 0.1, 195)).astype(np.float32) for _ in range(5)]
    strategy = Strategy(name=name, clip_median=clip == "median", trim_fraction=0.2)
    agg = RoundAggregate(strategy, base)
    for h in heads:
        agg.add(h, 10.0)
    params, _ = agg.result(None)
    assert params.shape == (195,)
    assert params.dtype == np.float32
    assert np.isfinite(params).all()
    if name == "fedavg" and clip == "off":
        np.testing.assert_allclose(params, fedavg(heads, [10.0] * 5), atol=1e-7)
    with pytest.raises(ValueError, match=r"expected \(195,\)"):
        agg.add(families.PAPER.init(), 1.0)
