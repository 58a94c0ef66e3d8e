"""The head, the replay store, augmentation and the pass order (docs/learning.md, section 3)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.errors import ModelError
from tinyfed.model.dscnn import head, vectors
from tinyfed.model.dscnn.extractor import Extractor

F32 = npt.NDArray[np.float32]
f32 = np.float32


def _scalar_step(params: F32, e: F32, y: int, lr: float) -> tuple[F32, float]:
    """The spec's step with one float32 rounding per operation, loop by loop."""
    k = params.size // 65
    w = params[: k * 64].reshape(k, 64).copy()
    b = params[k * 64 :].copy()
    z = []
    for r in range(k):
        acc = b[r]
        for j in range(64):
            acc = f32(acc + f32(w[r, j] * e[j]))
        z.append(acc)
    m = max(z)
    ez = [f32(np.exp(np.float64(f32(v - m)))) for v in z]
    total = f32(0)
    for v in ez:
        total = f32(total + v)
    p = [f32(v / total) for v in ez]
    loss = float(f32(-np.log(np.float64(max(p[y], f32(1e-12))))))
    for r in range(k):
        s = f32(f32(lr) * f32(p[r] - (1 if r == y else 0)))
        for j in range(64):
            w[r, j] = f32(w[r, j] - f32(s * e[j]))
        b[r] = f32(b[r] - s)
    return np.concatenate([w.ravel(), b]).astype(np.float32), loss


def test_sgd_step_is_the_scalar_float32_step() -> None:
    rng = np.random.default_rng(0)
    params = rng.normal(0, 0.3, 3 * 65).astype(np.float32)
    for y in (0, 2, 1):
        e = rng.normal(0, 1, 64).astype(np.float32)
        want, want_loss = _scalar_step(params, e, y, 0.05)
        loss = head.sgd_step(params, e, y, 0.05)
        np.testing.assert_array_equal(params, want)
        assert loss == want_loss


def test_gradient_is_the_cross_entropy_gradient() -> None:
    rng = np.random.default_rng(1)
    params = rng.normal(0, 0.1, 4 * 65).astype(np.float32)
    e = rng.normal(0, 1, 64).astype(np.float32)
    before = params.astype(np.float64)
    lr = 1e-3
    head.sgd_step(params, e, 2, lr)
    z = before[: 4 * 64].reshape(4, 64) @ e + before[4 * 64 :]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    g = p - np.eye(4)[2]
    want = before - lr * np.concatenate([np.outer(g, e).ravel(), g])
    np.testing.assert_allclose(params, want, atol=1e-6)


def test_loss_is_floored_and_a_new_head_is_uniform() -> None:
    params = head.zeros(3)
    assert params.shape == (195,)
    np.testing.assert_allclose(head.probabilities(params, np.ones(64, np.float32)), 1 / 3)
    assert head.sgd_step(head.zeros(3), np.zeros(64, np.float32), 0) == pytest.approx(math.log(3))
    big = head.zeros(2)
    big[-2:] = [0.0, 1000.0]  # p[0] = exp(-1000) = 0 -> floor 1e-12
    assert head.sgd_step(big, np.zeros(64, np.float32), 0) == pytest.approx(-math.log(1e-12))


def test_decide_rejects_below_the_threshold() -> None:
    assert head.decide([0.1, 0.7, 0.2]) == 1
    assert head.decide([0.3, 0.4, 0.3]) is None
    assert head.decide(np.array([0.6, 0.4], np.float32)) == 0
    assert head.decide([0.5, 0.5], threshold=0.5) == 0  # the first on a tie


def test_xorshift32_is_marsaglias() -> None:
    x = 1
    seq = []
    for _ in range(3):
        x = head.xorshift32(x)
        seq.append(x)
    assert seq == [270369, 67634689, 2647435461]


def test_noise_and_augmentation() -> None:
    n3 = head.noise(3, 2000)
    assert n3.min() >= -8
    assert n3.max() <= 7
    x3 = head.xorshift32(3)
    assert n3[0] == (x3 >> 28) - 8
    assert n3[1] == (head.xorshift32(x3) >> 28) - 8
    q = vectors.random_inputs(1, 4)[0]
    q[0, :3] = [127, -128, 0]
    copies = head.augment(q)
    assert copies.shape == (4, 50, 40)
    assert copies.dtype == np.int8
    np.testing.assert_array_equal(copies[0][:47], q[3:])
    np.testing.assert_array_equal(copies[0][47:], np.repeat(q[49:], 3, axis=0))
    np.testing.assert_array_equal(copies[1][3:], q[:47])
    np.testing.assert_array_equal(copies[1][:3], np.repeat(q[:1], 3, axis=0))
    want3 = np.clip(q.astype(int).ravel() + n3, -128, 127)
    np.testing.assert_array_equal(copies[2].ravel(), want3)
    np.testing.assert_array_equal(
        copies[3].ravel(), np.clip(q.astype(int).ravel() + head.noise(4, 2000), -128, 127)
    )
    with pytest.raises(ValueError, match=r"int16\[50, 40\]"):
        head.augment(q.astype(np.int16))


def test_pass_order_is_a_seeded_fisher_yates_permutation() -> None:
    order = head.pass_order(40, 7)
    assert sorted(order.tolist()) == list(range(40))
    np.testing.assert_array_equal(order, head.pass_order(40, 7))
    assert order.tolist() != head.pass_order(40, 8).tolist()
    # By hand for n = 3: i = 2 then i = 1.
    x = head.xorshift32(0x9E3779B9 ^ 5)
    ref = [0, 1, 2]
    j = x % 3
    ref[2], ref[j] = ref[j], ref[2]
    x = head.xorshift32(x)
    j = x % 2
    ref[1], ref[j] = ref[j], ref[1]
    assert head.pass_order(3, 5).tolist() == ref
    assert head.pass_order(1, 5).tolist() == [0]
    assert head.pass_order(0, 5).tolist() == []


def test_store_is_a_ring() -> None:
    store = head.ReplayStore(capacity=4)
    for i in range(6):
        store.add(np.full(64, i, np.int8), i % 3)
    assert len(store) == 4
    assert store.embeddings[:, 0].tolist() == [4, 5, 2, 3]  # slots 0, 1 overwritten
    assert store.labels.tolist() == [1, 2, 2, 0]
    assert head.ReplayStore().capacity == 320


def test_record_stores_five_embeddings_and_trains_one_pass(extractor: Extractor) -> None:
    learner = head.Learner(extractor, classes=3)
    x = vectors.random_inputs(2, 8)
    rec = learner.record(x[0], 2)
    assert len(learner.store) == 5
    want = extractor.embed_q_batch(np.concatenate([x[:1], head.augment(x[0])]))
    np.testing.assert_array_equal(learner.store.embeddings[:5], want)
    assert rec.order.tolist() == head.pass_order(5, 1).tolist()
    assert rec.losses[0] == pytest.approx(math.log(3), rel=1e-6)
    assert rec.mean_loss == pytest.approx(float(rec.losses.astype(np.float64).mean()), rel=1e-6)
    rec2 = learner.record(x[1], 0)
    assert len(rec2.order) == 10
    assert learner.recordings == 2
    for _ in range(20):
        learner.record(x[0], 2)
        learner.record(x[1], 0)
    assert learner.decide(x[0]) == 2
    assert learner.decide(x[1]) == 0


def test_head_errors_name_the_problem(extractor: Extractor) -> None:
    with pytest.raises(ModelError, match=r"shape \(100,\)"):
        head.check_head(np.zeros(100, np.float32))
    with pytest.raises(ModelError, match="float64"):
        head.check_head(np.zeros(130))
    with pytest.raises(ValueError, match=r"label 3 outside 0\.\.2"):
        head.sgd_step(head.zeros(3), np.zeros(64, np.float32), 3)
    with pytest.raises(ValueError, match=r"\(63,\)"):
        head.logits(head.zeros(3), np.zeros(63, np.float32))
    with pytest.raises(ValueError, match="at least 2 classes, got 1"):
        head.zeros(1)
    with pytest.raises(ValueError, match="learning rate"):
        head.Learner(extractor, classes=3, lr=-1.0)
    with pytest.raises(ValueError, match="label 5"):
        head.Learner(extractor, classes=3).record(np.zeros((50, 40), np.int8), 5)
