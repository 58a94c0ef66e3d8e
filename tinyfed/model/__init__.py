"""The paper's network: 650 -> 16 -> 3, sigmoid, squared error, online SGD with momentum.

Parameters live in the board's layout, one flat float32 vector of :data:`N_PARAMS` values:

* hidden layer, ``(650 + 1) * 16`` floats: the weight from input ``j`` to hidden unit ``i`` at
  ``j * 16 + i``; the bias of unit ``i`` at ``650 * 16 + i``;
* output layer, ``(16 + 1) * 3`` floats: the weight from hidden ``j`` to output ``i`` at
  ``j * 3 + i``; the bias at ``16 * 3 + i``.

A model file is exactly those ``N_PARAMS`` float32 values, little-endian: 41,868 bytes, what
the board holds in RAM and sends over its link. The training step reproduces the original
C++ (see ``vectors/README.md``, "nn/"): the loss is computed before the update, hidden deltas
use the old output weights, and ``delta = lr * grad_term + momentum * delta_prev``.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.errors import ModelError

F32 = npt.NDArray[np.float32]

N_INPUTS = 650  #: 13 MFCC coefficients x 50 frames (docs/features.md)
N_HIDDEN = 16  #: the paper's hidden layer
N_OUTPUTS = 3  #: three keywords (or two keywords and silence)
N_HIDDEN_PARAMS = (N_INPUTS + 1) * N_HIDDEN  #: 10,416
N_OUTPUT_PARAMS = (N_HIDDEN + 1) * N_OUTPUTS  #: 51
N_PARAMS = N_HIDDEN_PARAMS + N_OUTPUT_PARAMS  #: 10,467
MODEL_BYTES = 4 * N_PARAMS  #: 41,868: the model file, the board's RAM copy, one link transfer

#: Identifies this architecture on the link and in the MQTT contract (650-16-3, sigmoid, MSE).
ARCH_ID = "fc650-16-3-sigmoid-v1"

DEFAULT_SEED = 12345  #: the paper's seed (vectors/README.md)
DEFAULT_LR = 0.3  #: the paper's default learning rate
DEFAULT_MOMENTUM = 0.9  #: the paper's momentum
ERROR_SCALE = 0.33333  #: the original's per-output error constant (a double, not 1/3)
DETECTION_THRESHOLD = 0.6  #: an output must exceed this to light its LED (the paper)


#: Initialisation schemes of :func:`init_params`: the paper's uniform [-0.5, 0.5] (every
#: reproduction and the shared vectors), and uniform +-sqrt(3 / fan_in) per layer with zero biases
#: (unit-variance pre-activations for unit-variance inputs: what new fleets start from).
INIT_SCHEMES = ("paper", "scaled")


def init_params(seed: int = DEFAULT_SEED, scheme: str = "paper") -> F32:
    """An initial model from one ``np.random`` stream, hidden layer first.

    ``scheme="paper"``: every parameter uniform in [-0.5, 0.5] (the paper's model, bit for bit).
    ``scheme="scaled"``: weights uniform in +-sqrt(3 / fan_in) (fan_in 650 for the hidden layer,
    16 for the output layer), biases 0; the same stream draws the same count of values in the
    same order (biases' draws are discarded), so a seed means the same thing in both schemes.
    """
    if scheme not in INIT_SCHEMES:
        raise ModelError(f"init scheme {scheme!r} is not one of {', '.join(INIT_SCHEMES)}")
    rng = np.random.RandomState(seed)
    hidden = rng.uniform(-0.5, 0.5, N_HIDDEN_PARAMS).astype(np.float32)
    output = rng.uniform(-0.5, 0.5, N_OUTPUT_PARAMS).astype(np.float32)
    if scheme == "scaled":
        # u in [-0.5, 0.5] times 2 sqrt(3 / fan_in): uniform +-sqrt(3 / fan_in), sd 1/sqrt(fan_in)
        hidden = (hidden * np.float32(2 * np.sqrt(3 / N_INPUTS))).astype(np.float32)
        output = (output * np.float32(2 * np.sqrt(3 / N_HIDDEN))).astype(np.float32)
        hidden[N_INPUTS * N_HIDDEN :] = 0.0  # the hidden biases
        output[N_HIDDEN * N_OUTPUTS :] = 0.0  # the output biases
    return np.concatenate([hidden, output])


def check_params(params: npt.NDArray[np.generic], n_params: int | None = N_PARAMS) -> F32:
    """Return ``params`` as a float32 vector, or raise :class:`ModelError` naming the problem.

    ``n_params`` is the length expected (the paper's network by default; None: any length of a
    non-empty vector, for code that serves every family, see :mod:`tinyfed.model.families`).
    """
    arr = np.asarray(params)
    if n_params is None:
        if arr.ndim != 1 or arr.size == 0:
            raise ModelError(f"model has shape {arr.shape}, expected a non-empty vector")
    elif arr.shape != (n_params,):
        raise ModelError(f"model has shape {arr.shape}, expected ({n_params},)")
    if arr.dtype != np.float32:
        raise ModelError(f"model has dtype {arr.dtype}, expected float32")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ModelError(f"model has {bad.size} non-finite values (first at index {bad[0]})")
    return arr.astype(np.float32, copy=False)


def _le_view(params: F32, n_params: int | None = N_PARAMS) -> F32:
    """The checked parameters as contiguous little-endian float32 (no copy where possible)."""
    arr = check_params(params, n_params)
    return np.ascontiguousarray(arr, dtype="<f4")


def to_bytes(params: F32, n_params: int | None = N_PARAMS) -> bytes:
    """Serialise a model to the board's little-endian layout (41,868 bytes for the paper's)."""
    return _le_view(params, n_params).tobytes()


def from_bytes(data: bytes, n_params: int | None = N_PARAMS) -> F32:
    """Parse a model of ``n_params`` float32 (the paper's 41,868 bytes by default; None: any
    whole number of float32); raise :class:`ModelError` on a wrong size or non-finite value.

    On a little-endian host the result is a read-only view of ``data`` (no copy: the aggregator
    decodes thousands of these); copy it before changing it in place.
    """
    if n_params is None:
        if not data or len(data) % 4:
            raise ModelError(f"model is {len(data)} bytes, expected a non-zero multiple of 4")
    elif len(data) != 4 * n_params:
        raise ModelError(f"model is {len(data)} bytes, expected {4 * n_params}")
    arr = np.frombuffer(data, dtype="<f4")
    if arr.dtype != np.float32:  # a big-endian host: convert to native order
        arr = arr.astype(np.float32)
    return check_params(arr, n_params)


def save(params: F32, path: str | Path, n_params: int | None = N_PARAMS) -> None:
    """Write a model file atomically (a crash never leaves half a model at ``path``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(to_bytes(params, n_params))
    tmp.replace(path)


def load(path: str | Path, n_params: int | None = N_PARAMS) -> F32:
    """Read a model file of ``n_params`` float32 (None: any), naming the file in any error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}") from exc
    try:
        return from_bytes(data, n_params)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def crc32(params: F32) -> int:
    """CRC-32 (IEEE, as zlib) of the model bytes (any family): the link's end-to-end checksum."""
    return zlib.crc32(_le_view(params, None).data.cast("B")) & 0xFFFFFFFF


def sha256(params: F32) -> str:
    """Hex SHA-256 of the model bytes (any family): the MQTT contract's checksum (no copy)."""
    return hashlib.sha256(_le_view(params, None).data.cast("B")).hexdigest()


def _split(params: F32) -> tuple[F32, F32]:
    hidden = params[:N_HIDDEN_PARAMS].reshape(N_INPUTS + 1, N_HIDDEN)
    output = params[N_HIDDEN_PARAMS:].reshape(N_HIDDEN + 1, N_OUTPUTS)
    return hidden, output


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(over="ignore"):  # exp(-z) = inf for z < -709 gives exactly 0, as wanted
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
    return out


def forward(params: F32, x: npt.NDArray[np.floating]) -> F32:
    """Outputs for one input ``[650]`` or a batch ``[n, 650]``: float32 ``[3]`` or ``[n, 3]``."""
    hidden, output = _split(params)
    xs = np.asarray(x, dtype=np.float64)
    h = _sigmoid(xs @ hidden[:N_INPUTS].astype(np.float64) + hidden[N_INPUTS]).astype(np.float32)
    o = _sigmoid(h.astype(np.float64) @ output[:N_HIDDEN] + output[N_HIDDEN]).astype(np.float32)
    return o


def predict(outputs: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
    """Class index per row: the highest output (the LED rule's threshold is separate)."""
    idx: npt.NDArray[np.int64] = np.argmax(np.atleast_2d(outputs), axis=1).astype(np.int64)
    return idx


def one_hot(label: int) -> npt.NDArray[np.float64]:
    """Target vector for class ``label``; raises ``ValueError`` outside 0..2."""
    if not 0 <= label < N_OUTPUTS:
        raise ValueError(f"label {label} outside 0..{N_OUTPUTS - 1}")
    t = np.zeros(N_OUTPUTS)
    t[label] = 1.0
    return t


@dataclass(frozen=True)
class StepResult:
    """What one training step reports (the board's per-step loss event)."""

    loss: float  #: squared error of the step, before its update
    outputs: F32  #: the outputs the step saw (before its update)


@dataclass
class Trainer:
    """Online SGD with momentum on one model, as a board does it.

    ``params`` is updated in place; ``velocity`` is the momentum buffer (``delta_w_prev``),
    starting at zero.
    """

    params: F32
    lr: float = DEFAULT_LR
    momentum: float = DEFAULT_MOMENTUM
    velocity: F32 = field(default_factory=lambda: np.zeros(N_PARAMS, np.float32))
    steps: int = 0

    def __post_init__(self) -> None:
        self.params = check_params(self.params).copy()
        if not np.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        if not np.isfinite(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def step(self, x: npt.NDArray[np.floating], label: int) -> StepResult:
        """Train on one sample ``x[650]`` of class ``label``; return the loss before the update."""
        xv = np.asarray(x, dtype=np.float32)
        if xv.shape != (N_INPUTS,):
            raise ValueError(f"input has shape {xv.shape}, expected ({N_INPUTS},)")
        target = one_hot(label)
        hidden, output = _split(self.params)
        vh, vo = _split(self.velocity)
        x64 = xv.astype(np.float64)
        h = _sigmoid(x64 @ hidden[:N_INPUTS] + hidden[N_INPUTS]).astype(np.float32)
        o = _sigmoid(h.astype(np.float64) @ output[:N_HIDDEN] + output[N_HIDDEN]).astype(np.float32)
        o64 = o.astype(np.float64)
        od = (target - o64) * o64 * (1.0 - o64)
        loss = float(np.sum(ERROR_SCALE * (target - o64) ** 2))
        h64 = h.astype(np.float64)
        hd = (output[:N_HIDDEN].astype(np.float64) @ od) * h64 * (1.0 - h64)
        lr = np.float32(self.lr)
        mom = np.float32(self.momentum)
        x_aug = np.append(x64, 1.0)
        h_aug = np.append(h64, 1.0)
        new_vh = (lr * np.outer(x_aug, hd) + mom * vh.astype(np.float64)).astype(np.float32)
        new_vo = (lr * np.outer(h_aug, od) + mom * vo.astype(np.float64)).astype(np.float32)
        vh[...] = new_vh
        vo[...] = new_vo
        hidden += new_vh
        output += new_vo
        self.steps += 1
        return StepResult(loss=loss, outputs=o)

    def reset_momentum(self) -> None:
        """Zero the momentum buffer (what a board does when a new global model arrives)."""
        self.velocity[...] = 0.0
