"""The integer rules: requantisation rounds half up exactly, multipliers are in range."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tinyfed.errors import ModelError
from tinyfed.model.dscnn import quant


def _exact(acc: int, m: int, sh: int) -> int:
    """floor(acc * m / 2^sh + 1/2): round half up, in exact rationals."""
    value = Fraction(acc * m, 1 << sh) + Fraction(1, 2)
    return value.numerator // value.denominator


def test_requant_rounds_half_up() -> None:
    m, sh = 1 << 30, 31  # multiplier 0.5
    got = quant.requant(np.array([1, -1, 3, -3, 0, 2]), m, sh)
    assert got.tolist() == [1, 0, 2, -1, 0, 1]


def test_requant_matches_exact_rationals() -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(1 << 31), 1 << 31, 2000)
    m = rng.integers(1 << 30, 1 << 31, 2000)
    sh = rng.integers(1, 63, 2000)
    got = quant.requant(acc, m, sh)
    for i in range(0, 2000, 7):
        assert got[i] == _exact(int(acc[i]), int(m[i]), int(sh[i]))


def test_requant_refuses_what_the_board_cannot_hold() -> None:
    with pytest.raises(ModelError, match="2147483648 does not fit an int32"):
        quant.requant(np.array([1 << 31]), 1 << 30, 10)
    with pytest.raises(ModelError, match="multiplier"):
        quant.requant(np.array([1]), 5, 10)
    with pytest.raises(ModelError, match="shift 0"):
        quant.requant(np.array([1]), 1 << 30, 0)


@pytest.mark.parametrize("real", [1.0, 0.5, 0.3, 1e-3, 7.7e-6, 3.0, 2.0**-30, 1000.0])
def test_choose_multiplier_is_in_range_and_close(real: float) -> None:
    m, sh = quant.choose_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    assert 1 <= sh <= 62
    assert abs(m / 2.0**sh - real) <= real * 2.0**-31


def test_choose_multiplier_rounds_half_away_and_carries() -> None:
    # f * 2^31 = 2^31 - 0.5 rounds away from zero to 2^31, which carries into 2^30, sh - 1.
    real = (2.0**31 - 0.5) / 2.0**31
    assert quant.choose_multiplier(real) == (1 << 30, 30)
    assert quant.choose_multiplier(0.75) == (3 << 29, 31)


@pytest.mark.parametrize(
    ("real", "message"), [(0.0, "0.0"), (-1.0, "-1.0"), (2.0**-40, "shift 70")]
)
def test_choose_multiplier_errors_name_the_value(real: float, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        quant.choose_multiplier(real)


def test_choose_multipliers_per_channel() -> None:
    m, sh = quant.choose_multipliers([0.5, 0.25])
    assert m.dtype == np.int32
    assert sh.dtype == np.int8
    assert m.tolist() == [1 << 30, 1 << 30]
    assert sh.tolist() == [31, 32]


def test_weights_are_symmetric_per_channel() -> None:
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.00787]])
    q, scale = quant.quantise_weights(w)
    assert q.dtype == np.int8
    assert q[0].tolist() == [64, -127, 32]  # 63.5 rounds away from zero
    assert q[1].tolist() == [0, 0, 0]
    assert scale[1] == pytest.approx(1 / 127)
    assert q[2].tolist() == [127, 64, 0]
    assert np.abs(q).max() <= 127
    assert scale[0] == np.float32(1.0 / 127)


def test_round_half_away() -> None:
    got = quant.round_half_away([0.5, -0.5, 1.5, -2.5, 0.49999999999999994])
    assert got.tolist() == [1, -1, 2, -3, 0]
