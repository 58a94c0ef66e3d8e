"""The int8 extractor against a plain scalar transcription of docs/learning.md, section 2."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.errors import ModelError
from tinyfed.model.dscnn import vectors
from tinyfed.model.dscnn.extractor import (
    LAYER_NAMES,
    OUTPUT_SHAPES,
    Extractor,
    Layer,
    forward_float_layers,
)

I8 = npt.NDArray[np.int8]


def _requant(acc: int, m: int, sh: int) -> int:
    return (acc * m + (1 << (sh - 1))) >> sh  # Python ints: exact, arithmetic shift


def _scalar_output(layer: Layer, x: I8, oy: int, ox: int, c: int) -> int:
    """One output value of one layer by the spec's loops (x is [H, W, C_in])."""
    zp = layer.in_zp
    if layer.kind == "pool":
        acc = sum(int(v) - zp for v in x[:, :, c].ravel())
        lo = -128
    else:
        acc = int(layer.bias[c])
        lo = layer.out_zp
        if layer.kind == "pw":
            for i in range(x.shape[2]):
                acc += int(layer.weights[c, i]) * (int(x[oy, ox, i]) - zp)
        else:
            for ky in range(3):
                for kx in range(3):
                    iy, ix = layer.stride * oy + ky - 1, layer.stride * ox + kx - 1
                    inside = 0 <= iy < x.shape[0] and 0 <= ix < x.shape[1]
                    ch = 0 if layer.kind == "conv" else c
                    v = int(x[iy, ix, ch]) if inside else zp
                    acc += int(layer.weights[c, ky, kx]) * (v - zp)
    out = layer.out_zp + _requant(acc, int(layer.m[c]), int(layer.sh[c]))
    return max(lo, min(127, out))


def test_every_layer_matches_the_scalar_definition(extractor: Extractor) -> None:
    inputs = vectors.random_inputs(2, 11)
    inputs[1] = np.random.default_rng(12).integers(-128, 128, (50, 40))
    outs = extractor.run_q(inputs)
    rng = np.random.default_rng(13)
    for n in range(2):
        x = inputs[n][..., None]
        for layer in extractor.layers:
            out = outs[layer.name][n]
            assert out.shape == OUTPUT_SHAPES[layer.name]
            if layer.kind == "pool":
                points = [(0, 0, c) for c in range(64)]
            else:
                h, w, _ = out.shape
                corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
                points = [(y, xx, int(rng.integers(64))) for y, xx in corners]
                points += [
                    (int(rng.integers(h)), int(rng.integers(w)), int(rng.integers(64)))
                    for _ in range(12)
                ]
            for oy, ox, c in points:
                want = _scalar_output(layer, x, oy, ox, c)
                got = out[c] if layer.kind == "pool" else out[oy, ox, c]
                assert got == want, (layer.name, n, oy, ox, c)
            x = out


def test_padding_reads_the_zero_point(extractor: Extractor) -> None:
    # An input of zeros is the input zero point everywhere: conv0's output is its bias alone.
    out = extractor.run_q(np.zeros((1, 50, 40), np.int8))["conv0"][0]
    layer = extractor.layer("conv0")
    for c in range(64):
        want = _scalar_output(layer, np.zeros((50, 40, 1), np.int8), 0, 0, c)
        assert (out[..., c] == want).all()


def test_outputs_respect_the_relu_clamp(extractor: Extractor) -> None:
    outs = extractor.run_q(vectors.random_inputs(3, 5))
    for name in LAYER_NAMES[:-1]:
        assert outs[name].min() >= extractor.layer(name).out_zp
    assert outs["pool"].dtype == np.int8


def test_embed_is_a_q_plus_b(extractor: Extractor) -> None:
    x = vectors.random_inputs(3, 6)
    q = extractor.embed_q_batch(x)
    e = extractor.embed_batch(x)
    assert e.dtype == np.float32
    np.testing.assert_array_equal(e, extractor.a * q.astype(np.float32) + extractor.b)
    np.testing.assert_array_equal(extractor.embed_q(x[1]), q[1])
    np.testing.assert_array_equal(extractor.embed(x[2]), e[2])


def test_int8_layers_track_the_float_network(
    model: tuple[Extractor, dict[str, npt.NDArray[np.float64]], I8],
) -> None:
    extractor, params, _ = model
    x = vectors.random_inputs(8, 21)
    q = extractor.run_q(x)
    f = forward_float_layers(params, x.astype(np.float64) / 16)
    for layer in extractor.layers:
        real = layer.out_scale * (q[layer.name].astype(np.float64) - layer.out_zp)
        err = np.abs(real - f[layer.name])
        # Each layer adds up to half a step of rounding to the errors of the layers before.
        assert np.percentile(err, 99) < 8 * layer.out_scale, layer.name


def test_bad_inputs_are_named(extractor: Extractor) -> None:
    with pytest.raises(ValueError, match=r"\(40, 50\)"):
        extractor.embed_q(np.zeros((40, 50), np.int8))
    with pytest.raises(ValueError, match="int16"):
        extractor.embed_q_batch(np.zeros((1, 50, 40), np.int16))
    with pytest.raises(ValueError, match=r"\(2, 50\)"):
        extractor.run_q(np.zeros((2, 50), np.int8))


def test_malformed_layers_are_refused(extractor: Extractor) -> None:
    layer = extractor.layers[0]
    with pytest.raises(ModelError, match=r"conv0: weights int8\[64, 9\]"):
        Layer(**{**layer.__dict__, "weights": layer.weights.reshape(64, 9)})
    with pytest.raises(ModelError, match="bias is int64"):
        Layer(**{**layer.__dict__, "bias": layer.bias.astype(np.int64)})
    with pytest.raises(ModelError, match="out_zp 200"):
        Layer(**{**layer.__dict__, "out_zp": 200})
    with pytest.raises(ModelError, match="expected"):
        Extractor(layers=extractor.layers[:-1], a=extractor.a, b=extractor.b)
