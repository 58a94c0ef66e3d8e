"""The frozen int8 extractor of the ``dscnn`` family (docs/learning.md, section 2), its float twin.

:class:`Extractor` holds the quantised network; :meth:`Extractor.embed_q` runs the int8 path
with integers only (bit-exact with ``firmware/core/dscnn.*``), :meth:`Extractor.embed` maps the
int8 embedding to the head's float32 input ``a * q + b``. :func:`forward_float` is the float
network the int8 one approximates (batch norm folded, ReLU, average pool), used for calibration
and to check a PyTorch export.

Activations are NHWC: ``[n, H = time, W = frequency, C]``. The integer sums of the convolutions
are computed with float64 matrix products, which are exact here: every partial sum is an integer
below ``64 * 255 * 127 + |bias| < 2^53``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tinyfed.errors import ModelError
from tinyfed.features import logmel
from tinyfed.model.dscnn.quant import requant

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

CHANNELS = 64  #: width of every layer (docs/learning.md, section 2)
N_BLOCKS = 4  #: depthwise-separable blocks ds1..ds4
INPUT_SHAPE = logmel.SHAPE  #: (50, 40): frames x bands, one input channel
POOL_SIZE = 13 * 10  #: positions averaged by the pool: the 13 x 10 map after ds1.dw

#: (name, kind, stride) of the ten layers in order; kinds: conv (3x3, 1 -> 64), dw (depthwise
#: 3x3), pw (pointwise 64 -> 64), pool (average over the 130 positions). docs/learning.md.
LAYERS: tuple[tuple[str, str, int], ...] = (
    ("conv0", "conv", 2),
    ("ds1.dw", "dw", 2),
    ("ds1.pw", "pw", 1),
    ("ds2.dw", "dw", 1),
    ("ds2.pw", "pw", 1),
    ("ds3.dw", "dw", 1),
    ("ds3.pw", "pw", 1),
    ("ds4.dw", "dw", 1),
    ("ds4.pw", "pw", 1),
    ("pool", "pool", 1),
)
LAYER_NAMES = tuple(name for name, _, _ in LAYERS)
#: Output shape (H, W, C) of each layer for one input; the pool's is (C,).
OUTPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "conv0": (25, 20, CHANNELS),
    "ds1.dw": (13, 10, CHANNELS),
    **{f"ds{i}.{k}": (13, 10, CHANNELS) for i in range(1, 5) for k in ("dw", "pw")},
    "pool": (CHANNELS,),
}

#: Multiply-accumulates per utterance: conv0 25*20*64*9, ds1.dw 13*10*64*9, 4 pointwise
#: 130*64*64, ds2..ds4.dw 130*64*9 each: 2,717,440 ("about 2.7 M", docs/learning.md).
MACS = 25 * 20 * CHANNELS * 9 + 4 * 130 * CHANNELS * CHANNELS + 4 * 130 * CHANNELS * 9


def weight_shape(kind: str) -> tuple[int, ...]:
    """The int8 weight array of a layer kind: conv/dw ``[64, 3, 3]`` (out, kh, kw), pw
    ``[64, 64]`` (out, in), pool none (``[0]``)."""
    return {"conv": (CHANNELS, 3, 3), "dw": (CHANNELS, 3, 3), "pw": (CHANNELS, CHANNELS)}.get(
        kind, (0,)
    )


@dataclass(frozen=True)
class Layer:
    """One quantised layer: int8 weights, int32 bias, per-channel ``m``/``sh``, zero points.

    The scales are for reference (the int8 path uses only ``m``, ``sh`` and the zero points):
    the real value of an output ``q`` is ``out_scale * (q - out_zp)``.
    """

    name: str
    kind: str
    stride: int
    weights: I8
    bias: I32
    m: I32
    sh: I8
    in_zp: int
    out_zp: int
    in_scale: float
    out_scale: float
    w_scale: F32

    def __post_init__(self) -> None:
        want = weight_shape(self.kind)
        if self.weights.shape != want or self.weights.dtype != np.int8:
            raise ModelError(
                f"layer {self.name}: weights {self.weights.dtype}{list(self.weights.shape)}, "
                f"expected int8{list(want)}"
            )
        for field, arr, dtype in (
            ("bias", self.bias, np.int32),
            ("m", self.m, np.int32),
            ("sh", self.sh, np.int8),
            ("w_scale", self.w_scale, np.float32),
        ):
            if arr.shape != (CHANNELS,) or arr.dtype != dtype:
                raise ModelError(
                    f"layer {self.name}: {field} is {arr.dtype}{list(arr.shape)}, "
                    f"expected {np.dtype(dtype)}[{CHANNELS}]"
                )
        for field, zp in (("in_zp", self.in_zp), ("out_zp", self.out_zp)):
            if not -128 <= zp <= 127:
                raise ModelError(f"layer {self.name}: {field} {zp} outside [-128, 127]")

    @property
    def lo(self) -> int:
        """Lower clamp: ``out_zp`` (ReLU) after a convolution, -128 after the pool."""
        return -128 if self.kind == "pool" else self.out_zp


@dataclass(frozen=True)
class Extractor:
    """The int8 network (ten :class:`Layer` in :data:`LAYERS` order) and the embedding's
    float32 ``a``, ``b`` (``e = a * q + b``)."""

    layers: tuple[Layer, ...]
    a: F32
    b: F32

    def __post_init__(self) -> None:
        names = tuple(layer.name for layer in self.layers)
        if names != LAYER_NAMES:
            raise ModelError(f"extractor layers are {list(names)}, expected {list(LAYER_NAMES)}")
        for field, arr in (("a", self.a), ("b", self.b)):
            if arr.shape != (CHANNELS,) or arr.dtype != np.float32:
                raise ModelError(f"embedding {field} is {arr.dtype}{list(arr.shape)}")
        if self.layers[0].in_zp != logmel.INPUT_ZERO_POINT:
            raise ModelError(f"conv0 input zero point {self.layers[0].in_zp}, expected 0")

    def layer(self, name: str) -> Layer:
        """The layer called ``name`` (``conv0``, ``ds1.dw``, ..., ``pool``)."""
        return self.layers[LAYER_NAMES.index(name)]

    def run_q(self, x: npt.NDArray[np.integer]) -> dict[str, I8]:
        """Every layer's int8 output for int8 inputs ``[n, 50, 40]``: name -> ``[n, ...]``."""
        h: I8 | I64 = _check_input(x)[..., None]  # [n, 50, 40, 1]
        outputs: dict[str, I8] = {}
        for layer in self.layers:
            out = _layer_q(layer, h)
            outputs[layer.name] = out
            h = out
        return outputs

    def embed_q_batch(self, x: npt.NDArray[np.integer]) -> I8:
        """The int8 embeddings ``[n, 64]`` of int8 inputs ``[n, 50, 40]``."""
        return self.run_q(x)["pool"]

    def embed_q(self, x: npt.NDArray[np.integer]) -> I8:
        """The int8 embedding ``[64]`` of one int8 input ``[50, 40]`` (integers only)."""
        arr = np.asarray(x)
        if arr.shape != INPUT_SHAPE:
            raise ValueError(f"input has shape {arr.shape}, expected {INPUT_SHAPE}")
        out: I8 = self.embed_q_batch(arr[None])[0]
        return out

    def dequantise(self, q: npt.NDArray[np.integer]) -> F32:
        """The head's input ``e = a * q + b`` (float32: one product, one sum), ``[..., 64]``."""
        out: F32 = (self.a * np.asarray(q).astype(np.float32) + self.b).astype(np.float32)
        return out

    def embed(self, x: npt.NDArray[np.integer]) -> F32:
        """The float32 embedding ``[64]`` of one int8 input: ``a * embed_q(x) + b``."""
        return self.dequantise(self.embed_q(x))

    def embed_batch(self, x: npt.NDArray[np.integer]) -> F32:
        """The float32 embeddings ``[n, 64]`` of int8 inputs ``[n, 50, 40]``."""
        return self.dequantise(self.embed_q_batch(x))


def _check_input(x: npt.NDArray[np.integer]) -> I64:
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[1:] != INPUT_SHAPE:
        raise ValueError(f"input batch has shape {arr.shape}, expected (n, 50, 40)")
    if arr.dtype != np.int8:
        raise ValueError(f"input has dtype {arr.dtype}, expected int8")
    return arr.astype(np.int64)


def _taps(xp: npt.NDArray[np.generic], stride: int, out_h: int, out_w: int) -> list[np.ndarray]:
    """The nine 3x3 taps ``xp[:, s*i + dy, s*j + dx]`` of a padded map, (dy, dx) row-major."""
    taps = []
    for dy in range(3):
        for dx in range(3):
            taps.append(
                xp[
                    :,
                    dy : dy + stride * (out_h - 1) + 1 : stride,
                    dx : dx + stride * (out_w - 1) + 1 : stride,
                ]
            )
    return taps


def _out_size(size: int, stride: int) -> int:
    return (size + 2 - 3) // stride + 1


def _layer_q(layer: Layer, h: I8 | I64) -> I8:
    """One int8 layer on ``[n, H, W, C]`` (conv0: C = 1); returns int8 ``[n, H', W', 64]``."""
    x = np.asarray(h, np.int64) - layer.in_zp  # real zero is 0 from here on
    if layer.kind == "pool":
        acc = x.sum(axis=(1, 2))
    elif layer.kind == "pw":
        w = layer.weights.astype(np.float64)
        acc = np.rint(x.astype(np.float64) @ w.T).astype(np.int64) + layer.bias
    else:
        n, hh, ww, _ = x.shape
        oh, ow = _out_size(hh, layer.stride), _out_size(ww, layer.stride)
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # pads with in_zp: a real 0
        taps = _taps(xp, layer.stride, oh, ow)
        w9 = layer.weights.reshape(CHANNELS, 9).astype(np.int64)
        if layer.kind == "conv":
            patches = np.concatenate(taps, axis=-1).astype(np.float64)  # [n, oh, ow, 9]
            acc = np.rint(patches @ w9.T.astype(np.float64)).astype(np.int64)
        else:
            acc = np.zeros((n, oh, ow, CHANNELS), np.int64)
            for t, tap in enumerate(taps):
                acc += tap * w9[:, t]
        acc = acc + layer.bias
    y = layer.out_zp + requant(acc, layer.m.astype(np.int64), layer.sh.astype(np.int64))
    out: I8 = np.clip(y, layer.lo, 127).astype(np.int8)
    return out


# --- the float network -------------------------------------------------------------------------

#: Keys and shapes of the float parameters (batch norm folded): the contract with the
#: pre-training (tinyfed/pretrain). conv/dw weights are (out, kh, kw); pw weights (out, in).
#: From PyTorch (input ``[n, 1, 50, 40]``, ``Conv2d(padding=1)``, cross-correlation as here):
#: ``conv0.w = weight[:, 0]``, ``dsI.dw.w = weight[:, 0]`` (``groups=64``),
#: ``dsI.pw.w = weight[:, :, 0, 0]``; the pool is the mean over the 13 x 10 positions.
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv0.w": (CHANNELS, 3, 3),
    "conv0.b": (CHANNELS,),
    **{
        f"ds{i}.{k}.{p}": ((CHANNELS, 3, 3) if k == "dw" else (CHANNELS, CHANNELS))
        if p == "w"
        else (CHANNELS,)
        for i in range(1, N_BLOCKS + 1)
        for k in ("dw", "pw")
        for p in ("w", "b")
    },
    "embed.mean": (CHANNELS,),
    "embed.sd": (CHANNELS,),
}


def check_params(params: Mapping[str, npt.NDArray[np.floating]]) -> dict[str, F64]:
    """The float parameters as float64 arrays, or :class:`ModelError` naming the bad key."""
    missing = sorted(set(PARAM_SHAPES) - set(params))
    extra = sorted(set(params) - set(PARAM_SHAPES))
    if missing or extra:
        raise ModelError(f"float parameters: missing {missing}, unexpected {extra}")
    out: dict[str, F64] = {}
    for key, shape in PARAM_SHAPES.items():
        arr = np.asarray(params[key], np.float64)
        if arr.shape != shape:
            raise ModelError(f"float parameter {key} has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            raise ModelError(f"float parameter {key} has non-finite values")
        out[key] = arr
    if (out["embed.sd"] <= 0).any():
        raise ModelError(f"embed.sd has non-positive values: {out['embed.sd'].min()}")
    return out


def _layer_float(kind: str, stride: int, w: F64, b: F64, x: F64) -> F64:
    if kind == "pw":
        out: F64 = np.maximum(x @ w.T + b, 0.0)
        return out
    n, hh, ww, _ = x.shape
    oh, ow = _out_size(hh, stride), _out_size(ww, stride)
    taps = _taps(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), stride, oh, ow)
    w9 = w.reshape(CHANNELS, 9)
    if kind == "conv":
        acc = np.concatenate(taps, axis=-1) @ w9.T
    else:
        acc = sum((tap * w9[:, t] for t, tap in enumerate(taps)), np.zeros((n, oh, ow, CHANNELS)))
    out = np.maximum(acc + b, 0.0)
    return out


def forward_float_layers(
    params: Mapping[str, npt.NDArray[np.floating]], x: npt.NDArray[np.floating]
) -> dict[str, F64]:
    """Every layer's float64 output (after ReLU; ``pool`` the average) for ``[n, 50, 40]``."""
    p = check_params(params)
    arr = np.asarray(x, np.float64)
    if arr.ndim != 3 or arr.shape[1:] != INPUT_SHAPE:
        raise ValueError(f"input batch has shape {arr.shape}, expected (n, 50, 40)")
    h = arr[..., None]
    outputs: dict[str, F64] = {}
    for name, kind, stride in LAYERS:
        if kind == "pool":
            h = h.mean(axis=(1, 2))
        else:
            h = _layer_float(kind, stride, p[f"{name}.w"], p[f"{name}.b"], h)
        outputs[name] = h
    return outputs


def forward_float(
    params: Mapping[str, npt.NDArray[np.floating]], x: npt.NDArray[np.floating]
) -> F32:
    """The float network's pooled embedding ``[n, 64]`` (before standardisation)."""
    return forward_float_layers(params, x)["pool"].astype(np.float32)


def standardise(params: Mapping[str, npt.NDArray[np.floating]], pooled: npt.ArrayLike) -> F32:
    """``(pooled - embed.mean) / embed.sd``: the float counterpart of :meth:`Extractor.embed`."""
    mean = np.asarray(params["embed.mean"], np.float64)
    sd = np.asarray(params["embed.sd"], np.float64)
    out: F32 = ((np.asarray(pooled, np.float64) - mean) / sd).astype(np.float32)
    return out
