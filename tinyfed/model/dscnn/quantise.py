"""Post-training quantisation of the float extractor to the int8 :class:`Extractor`.

``quantise(params, calibration)``: the float parameters (batch norm folded, keys in
:data:`~tinyfed.model.dscnn.extractor.PARAM_SHAPES`) and int8 calibration inputs ``[n, 50, 40]``
(the ``logmel40`` features of utterances from the pre-training corpus) give the int8 model:

* weights: symmetric per output channel (:func:`~tinyfed.model.dscnn.quant.quantise_weights`);
* activations: the float network runs on the dequantised calibration inputs (``q / 16``); each
  layer's output range is the :data:`PERCENTILE`-th percentile of its ReLU outputs (all
  positions and channels), rounded up to :data:`RANGE_BITS` significant bits so that the result
  does not depend on the last bits of the float sums; ``scale = range / 255``, ``zp = -128``;
* biases: ``round_half_away(b / (in_scale * w_scale[c]))`` as int32;
* multipliers: ``in_scale * w_scale[c] / out_scale`` (pool: ``in_scale / (130 * out_scale)``)
  as ``(m, sh)``;
* embedding: ``a = scale / sd``, ``b = -(zp * scale + mean) / sd`` (float32).

Every scale is rounded to float32 first, so a saved and loaded model is the same model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from tinyfed.errors import ModelError
from tinyfed.features import logmel
from tinyfed.model.dscnn.extractor import (
    CHANNELS,
    INPUT_SHAPE,
    LAYERS,
    POOL_SIZE,
    Extractor,
    Layer,
    check_params,
    forward_float_layers,
)
from tinyfed.model.dscnn.quant import choose_multipliers, quantise_weights, round_half_away

PERCENTILE = 99.99  #: activation range: this percentile of a layer's float outputs (the brief)
RANGE_BITS = 7  #: the range is rounded up to this many significant bits (determinism)
MIN_RANGE = 1e-3  #: range of a layer whose calibration outputs are all (close to) zero
OUT_ZP = -128  #: every activation is non-negative (ReLU, average of ReLU): zp = -128
BIAS_LIMIT = 1 << 30  #: |bias| must leave room for the sum of products inside an int32


def round_range(r: float) -> float:
    """``r`` rounded up to :data:`RANGE_BITS` significant bits (at least :data:`MIN_RANGE`)."""
    r = max(float(r), MIN_RANGE)
    step = 2.0 ** (math.floor(math.log2(r)) - RANGE_BITS + 1)
    return math.ceil(r / step) * step


def _f32(x: float | npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Round to float32 and back: the stored precision of every scale."""
    return np.asarray(x, np.float32).astype(np.float64)


def quantise(
    params: Mapping[str, npt.NDArray[np.floating]], calibration: npt.NDArray[np.integer]
) -> Extractor:
    """The int8 extractor of the float ``params``, calibrated on int8 inputs ``[n, 50, 40]``."""
    p = check_params(params)
    cal = np.asarray(calibration)
    if cal.ndim != 3 or cal.shape[1:] != INPUT_SHAPE or cal.shape[0] == 0:
        raise ModelError(f"calibration inputs have shape {cal.shape}, expected (n > 0, 50, 40)")
    if cal.dtype != np.int8:
        raise ModelError(f"calibration inputs have dtype {cal.dtype}, expected int8")
    acts = forward_float_layers(p, logmel.dequantise_input(cal))

    in_scale = float(_f32(1.0 / logmel.INPUT_SCALE_INV))
    in_zp = logmel.INPUT_ZERO_POINT
    layers: list[Layer] = []
    for name, kind, stride in LAYERS:
        out_range = round_range(float(np.percentile(acts[name], PERCENTILE)))
        out_scale = float(_f32(out_range / 255.0))
        if kind == "pool":
            weights = np.zeros(0, np.int8)
            w_scale = np.ones(CHANNELS)
            bias = np.zeros(CHANNELS, np.int32)
            real = np.full(CHANNELS, in_scale / (POOL_SIZE * out_scale))
        else:
            weights, w_scale = quantise_weights(p[f"{name}.w"])
            bias_real = p[f"{name}.b"] / (in_scale * w_scale)
            bias_q = round_half_away(bias_real)
            worst = int(np.argmax(np.abs(bias_q)))
            if abs(bias_q[worst]) >= BIAS_LIMIT:
                raise ModelError(
                    f"layer {name}: bias of channel {worst} quantises to {bias_q[worst]:.0f}, "
                    f"beyond +-2^30 (weights of that channel are too small for its bias)"
                )
            bias = bias_q.astype(np.int32)
            real = in_scale * w_scale / out_scale
        m, sh = choose_multipliers(real)
        layers.append(
            Layer(
                name=name,
                kind=kind,
                stride=stride,
                weights=weights,
                bias=bias,
                m=m,
                sh=sh,
                in_zp=in_zp,
                out_zp=OUT_ZP,
                in_scale=in_scale,
                out_scale=out_scale,
                w_scale=w_scale.astype(np.float32),
            )
        )
        in_scale, in_zp = out_scale, OUT_ZP
    sd, mean = p["embed.sd"], p["embed.mean"]
    a = (in_scale / sd).astype(np.float32)
    b = (-(in_zp * in_scale + mean) / sd).astype(np.float32)
    return Extractor(layers=tuple(layers), a=a, b=b)


def cosine(u: npt.ArrayLike, v: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Row-wise cosine similarity of two ``[n, d]`` arrays (float64)."""
    a = np.asarray(u, np.float64)
    b = np.asarray(v, np.float64)
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    out: npt.NDArray[np.float64] = num / np.where(den > 0, den, 1.0)
    return out
