"""The on-board part of the ``dscnn`` family (docs/learning.md, section 3), step by step.

* the float32 softmax head: parameters ``W[K][64]`` row-major then ``b[K]`` (``K * 65`` floats),
  :func:`logits`, :func:`softmax`, :func:`sgd_step`, :func:`decide`;
* the replay store (:class:`ReplayStore`): a ring of 320 int8 embeddings with their labels;
* the 4 augmented copies of an int8 input (:func:`augment`) and the pass order
  (:func:`pass_order`), both driven by :func:`xorshift32`;
* :class:`Learner`: ``record(x, label)`` stores the 5 embeddings of a recording, then trains one
  pass over the store.

Every float operation is a float32 operation in the order a C loop does it (one rounding per
``+`` or ``*``), so a C++ port matches step by step up to ``expf``/``logf`` and FMA contraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tinyfed.errors import ModelError
from tinyfed.model.dscnn.extractor import CHANNELS, INPUT_SHAPE, Extractor

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]

EMBED = CHANNELS  #: 64 inputs of the head
DEFAULT_LR = 0.01  #: head learning rate; |e|^2 ~ 64 for a standardised embedding (lr*|e|^2 < 2)
STORE_CAPACITY = 320  #: replay ring: 20 utterances of 3 words with their 4 copies (20 KB)
COPIES = 4  #: augmented copies per recording (docs/learning.md, "Replay with augmentation")
SHIFT_FRAMES = 3  #: copies 1 and 2 shift the frames by -3 and +3
NOISE_SEEDS = (3, 4)  #: xorshift32 seeds of copies 3 and 4
ORDER_SEED = 0x9E3779B9  #: the pass order's seed is this ^ recordings (2^32 / golden ratio)
P_FLOOR = np.float32(1e-12)  #: the loss is -log(max(p[y], 1e-12))
DEFAULT_THRESHOLD = 0.6  #: rejection threshold of the decision (the paper's LED threshold)
_MASK32 = 0xFFFFFFFF


def n_params(k: int) -> int:
    """``K * 64 + K``: the head's parameter count for ``k`` classes."""
    return k * EMBED + k


def zeros(k: int) -> F32:
    """A new head: all ``K * 65`` parameters zero."""
    if k < 2:
        raise ValueError(f"a head needs at least 2 classes, got {k}")
    return np.zeros(n_params(k), np.float32)


def check_head(params: npt.NDArray[np.generic]) -> int:
    """The number of classes of a flat float32 head, or :class:`ModelError` naming the problem."""
    arr = np.asarray(params)
    if arr.ndim != 1 or arr.size == 0 or arr.size % (EMBED + 1):
        raise ModelError(f"head has shape {arr.shape}, expected (K * {EMBED + 1},)")
    if arr.dtype != np.float32:
        raise ModelError(f"head has dtype {arr.dtype}, expected float32")
    return arr.size // (EMBED + 1)


def _split(params: F32) -> tuple[F32, F32]:
    k = check_head(params)
    return params[: k * EMBED].reshape(k, EMBED), params[k * EMBED :]


def logits(params: F32, e: F32) -> F32:
    """``z[k] = b[k] + W[k][0] e[0] + ... + W[k][63] e[63]``, float32, left to right."""
    w, b = _split(params)
    ev = np.asarray(e, np.float32)
    if ev.shape != (EMBED,):
        raise ValueError(f"embedding has shape {ev.shape}, expected ({EMBED},)")
    terms = np.concatenate([b[:, None], w * ev], axis=1)  # float32 products
    out: F32 = np.add.accumulate(terms, axis=1, dtype=np.float32)[:, -1]
    return out


def softmax(z: F32) -> F32:
    """``exp(z - max) / sum``, float32, the sum in ascending class order."""
    # exp and log in float64, rounded once to float32: the correctly rounded expf/logf nearly
    # always, and independent of which SIMD kernel numpy's float32 exp picks on this CPU.
    ez = np.exp((z - z.max()).astype(np.float32).astype(np.float64)).astype(np.float32)
    total = np.add.accumulate(ez, dtype=np.float32)[-1]
    out: F32 = (ez / total).astype(np.float32)
    return out


def probabilities(params: F32, e: F32) -> F32:
    """The head's class probabilities for one float32 embedding."""
    return softmax(logits(params, e))


def sgd_step(params: F32, e: F32, y: int, lr: float = DEFAULT_LR) -> float:
    """One step on ``(e, y)`` in place; returns the loss ``-log(max(p[y], 1e-12))`` (before).

    ``g[k] = p[k] - [k == y]``; ``W[k][j] -= (lr * g[k]) * e[j]``; ``b[k] -= lr * g[k]``.
    """
    k = check_head(params)
    if not 0 <= y < k:
        raise ValueError(f"label {y} outside 0..{k - 1}")
    p = probabilities(params, e)
    loss = np.float32(-np.log(np.float64(np.maximum(p[y], P_FLOOR))))
    g = p.copy()
    g[y] = np.float32(g[y] - np.float32(1.0))
    step = (np.float32(lr) * g).astype(np.float32)  # lr * g[k], one rounding
    w, b = _split(params)
    w -= (step[:, None] * np.asarray(e, np.float32)[None, :]).astype(np.float32)
    b -= step
    return float(loss)


def decide(p: npt.ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """The class with the highest probability (the first on a tie) if it is at least
    ``threshold``, else ``None`` ("unknown")."""
    arr = np.asarray(p, np.float32)
    best = int(np.argmax(arr))
    return best if arr[best] >= np.float32(threshold) else None


# --- deterministic randomness --------------------------------------------------------------------


def xorshift32(x: int) -> int:
    """One step of Marsaglia's xorshift32: ``x ^= x << 13; x ^= x >> 17; x ^= x << 5``."""
    x ^= (x << 13) & _MASK32
    x ^= x >> 17
    x ^= (x << 5) & _MASK32
    return x


def noise(seed: int, count: int) -> npt.NDArray[np.int64]:
    """``count`` values ``(x >> 28) - 8`` in [-8, 7], stepping the state before each value."""
    out = np.empty(count, np.int64)
    x = seed & _MASK32
    for i in range(count):
        x = xorshift32(x)
        out[i] = (x >> 28) - 8
    return out


_NOISE = {
    seed: noise(seed, INPUT_SHAPE[0] * INPUT_SHAPE[1]).reshape(INPUT_SHAPE) for seed in NOISE_SEEDS
}


def augment(x: npt.NDArray[np.integer]) -> I8:
    """The 4 augmented copies ``[4, 50, 40]`` of an int8 input ``[50, 40]``.

    Copy 1: ``out[t] = x[min(t + 3, 49)]`` (shift by -3 frames, the last frame repeats);
    copy 2: ``out[t] = x[max(t - 3, 0)]`` (shift by +3, the first frame repeats);
    copies 3 and 4: ``clamp(x + n, -128, 127)`` with the :func:`noise` of seeds 3 and 4 in
    frame-major order.
    """
    q = np.asarray(x)
    if q.shape != INPUT_SHAPE or q.dtype != np.int8:
        raise ValueError(f"input is {q.dtype}{list(q.shape)}, expected int8{list(INPUT_SHAPE)}")
    t = np.arange(INPUT_SHAPE[0])
    last = INPUT_SHAPE[0] - 1
    copies = [
        q[np.minimum(t + SHIFT_FRAMES, last)],
        q[np.maximum(t - SHIFT_FRAMES, 0)],
        *(np.clip(q.astype(np.int64) + _NOISE[s], -128, 127) for s in NOISE_SEEDS),
    ]
    return np.stack(copies).astype(np.int8)


def pass_order(n: int, recordings: int) -> npt.NDArray[np.int64]:
    """The Fisher-Yates order of a pass over ``n`` store slots.

    ``order = [0, 1, ..., n-1]``; state ``x = 0x9E3779B9 ^ recordings``; for ``i`` from
    ``n - 1`` down to 1: step ``x``, ``j = x % (i + 1)``, swap ``order[i]`` and ``order[j]``.
    """
    order = np.arange(n, dtype=np.int64)
    x = (ORDER_SEED ^ recordings) & _MASK32
    for i in range(n - 1, 0, -1):
        x = xorshift32(x)
        j = x % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


# --- replay and the recording step ----------------------------------------------------------------


@dataclass
class ReplayStore:
    """A ring of int8 embeddings and labels; when full, the oldest slot is overwritten.

    Slot ``s`` holds the ``s``-th added embedding modulo the capacity; ``added`` counts every
    embedding ever added, the next one goes to slot ``added % capacity``.
    """

    capacity: int = STORE_CAPACITY
    embeddings: I8 = field(init=False)
    labels: npt.NDArray[np.int32] = field(init=False)
    added: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"store capacity must be at least 1, got {self.capacity}")
        self.embeddings = np.zeros((self.capacity, EMBED), np.int8)
        self.labels = np.zeros(self.capacity, np.int32)

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, q: npt.NDArray[np.integer], label: int) -> None:
        """Store one int8 embedding ``[64]`` with its label."""
        slot = self.added % self.capacity
        self.embeddings[slot] = np.asarray(q, np.int8)
        self.labels[slot] = label
        self.added += 1


@dataclass(frozen=True)
class Recording:
    """What one :meth:`Learner.record` did: the pass order over store slots and its losses."""

    order: npt.NDArray[np.int64]  #: slots in the order the pass visited them
    losses: F32  #: each step's loss (before its update), in pass order
    mean_loss: float  #: the float32 mean: sequential float32 sum of ``losses``, divided by n


@dataclass
class Learner:
    """A board's learning state: the frozen extractor, the head, the replay store."""

    extractor: Extractor
    classes: int
    lr: float = DEFAULT_LR
    params: F32 = field(init=False)
    store: ReplayStore = field(default_factory=ReplayStore)
    recordings: int = 0  #: recordings since boot (the pass order's seed)

    def __post_init__(self) -> None:
        self.params = zeros(self.classes)
        if not np.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")

    def record(self, x: npt.NDArray[np.integer], label: int) -> Recording:
        """Store the embeddings of ``x`` and its 4 copies (that order), then train one pass.

        ``recordings`` is incremented first, so the first recording's order uses seed
        ``0x9E3779B9 ^ 1``.
        """
        if not 0 <= label < self.classes:
            raise ValueError(f"label {label} outside 0..{self.classes - 1}")
        q = np.asarray(x)
        batch = np.concatenate([q[None], augment(q)])
        for emb in self.extractor.embed_q_batch(batch):
            self.store.add(emb, label)
        self.recordings += 1
        return self.train_pass()

    def train_pass(self) -> Recording:
        """One SGD step on every stored embedding, in :func:`pass_order` (seeded by
        ``recordings``)."""
        n = len(self.store)
        order = pass_order(n, self.recordings)
        losses = np.empty(n, np.float32)
        for i, slot in enumerate(order):
            e = self.extractor.dequantise(self.store.embeddings[slot])
            losses[i] = sgd_step(self.params, e, int(self.store.labels[slot]), self.lr)
        total = np.add.accumulate(losses, dtype=np.float32)[-1] if n else np.float32(0)
        mean = float(np.float32(total / np.float32(max(n, 1))))
        return Recording(order=order, losses=losses, mean_loss=mean)

    def probabilities(self, x: npt.NDArray[np.integer]) -> F32:
        """The head's probabilities for one int8 input ``[50, 40]``."""
        return probabilities(self.params, self.extractor.embed(x))

    def decide(
        self, x: npt.NDArray[np.integer], threshold: float = DEFAULT_THRESHOLD
    ) -> int | None:
        """:func:`decide` on the probabilities of one int8 input."""
        return decide(self.probabilities(x), threshold)
