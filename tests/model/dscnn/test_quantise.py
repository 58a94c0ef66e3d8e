"""Post-training quantisation: calibration, biases, multipliers, and how close int8 gets."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.errors import ModelError
from tinyfed.features import logmel
from tinyfed.model.dscnn import quant, vectors
from tinyfed.model.dscnn.extractor import (
    POOL_SIZE,
    Extractor,
    forward_float,
    forward_float_layers,
    standardise,
)
from tinyfed.model.dscnn.quantise import PERCENTILE, cosine, quantise, round_range

Model = tuple[Extractor, dict[str, npt.NDArray[np.float64]], npt.NDArray[np.int8]]


def test_int8_embedding_is_close_to_the_float_one(model: Model) -> None:
    extractor, params, _ = model
    x = vectors.random_inputs(64, 99)  # not the calibration inputs
    pooled_float = forward_float(params, logmel.dequantise_input(x))
    pool = extractor.layer("pool")
    q = extractor.embed_q_batch(x).astype(np.float64)
    pooled_int8 = pool.out_scale * (q - pool.out_zp)
    raw = cosine(pooled_int8, pooled_float)
    std = cosine(extractor.embed_batch(x), standardise(params, pooled_float))
    print(f"cosine int8 vs float: pooled min {raw.min():.5f}, standardised mean {std.mean():.4f}")
    assert raw.min() > 0.999
    # Random inputs to a random model differ little, so the standardisation (divide by a small
    # sd) magnifies the int8 embedding's step; a trained model's embeddings spread much wider.
    assert std.mean() > 0.85


def test_scales_come_from_the_calibration_percentile(model: Model) -> None:
    extractor, params, calibration = model
    acts = forward_float_layers(params, logmel.dequantise_input(calibration))
    in_scale = 1 / 16
    for layer in extractor.layers:
        want = round_range(float(np.percentile(acts[layer.name], PERCENTILE))) / 255
        assert layer.out_scale == pytest.approx(want, rel=1e-7)
        assert layer.out_zp == -128
        assert layer.in_scale == pytest.approx(in_scale, rel=1e-7)
        if layer.kind == "pool":
            pool_real = layer.in_scale / (POOL_SIZE * layer.out_scale)
            got = layer.m / 2.0 ** layer.sh.astype(np.float64)
            np.testing.assert_allclose(got, pool_real, rtol=1e-9)
        else:
            real = layer.in_scale * layer.w_scale.astype(np.float64) / layer.out_scale
            np.testing.assert_allclose(
                layer.m / 2.0 ** layer.sh.astype(np.float64), real, rtol=1e-9
            )
            bias = quant.round_half_away(
                params[f"{layer.name}.b"] / (layer.in_scale * layer.w_scale.astype(np.float64))
            )
            np.testing.assert_array_equal(layer.bias, bias)
        in_scale = layer.out_scale


def test_embedding_folds_scale_zero_point_and_statistics(model: Model) -> None:
    extractor, params, _ = model
    pool = extractor.layer("pool")
    q = np.arange(-128, 128, 4, dtype=np.float64)[:64]
    real = pool.out_scale * (q - pool.out_zp)
    want = (real - params["embed.mean"]) / params["embed.sd"]
    np.testing.assert_allclose(extractor.dequantise(q.astype(np.int8)), want, rtol=1e-5, atol=1e-5)


def test_round_range() -> None:
    assert round_range(1.0) == 1.0
    assert round_range(1.001) == 1.015625  # 7 significant bits: steps of 1/64 in [1, 2)
    assert round_range(0.0) == pytest.approx(1e-3, rel=1e-2)  # the floor, rounded up
    assert round_range(3.2189) == 3.25


def test_bad_parameters_and_calibration_are_named(model: Model) -> None:
    _, params, calibration = model
    with pytest.raises(ModelError, match=r"missing \['ds4.pw.b'\]"):
        quantise({k: v for k, v in params.items() if k != "ds4.pw.b"}, calibration)
    with pytest.raises(ModelError, match=r"ds2.pw.w has shape \(64, 9\)"):
        quantise({**params, "ds2.pw.w": np.zeros((64, 9))}, calibration)
    with pytest.raises(ModelError, match=r"embed\.sd"):
        quantise({**params, "embed.sd": np.zeros(64)}, calibration)
    with pytest.raises(ModelError, match=r"shape \(3, 40, 50\)"):
        quantise(params, np.zeros((3, 40, 50), np.int8))
    with pytest.raises(ModelError, match="float32"):
        quantise(params, calibration.astype(np.float32))
    huge = dict(params)
    huge["conv0.b"] = np.full(64, 1e6)
    with pytest.raises(ModelError, match="conv0: bias of channel"):
        quantise(huge, calibration)
