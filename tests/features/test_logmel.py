"""The ``logmel40`` features (docs/learning.md, section 1): table, stages, quantiser, errors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.features import align, logmel, mfcc

I16 = npt.NDArray[np.int16]


def _tone(freq: float, amplitude: float = 8000.0, start: int = 0, length: int = 16000) -> I16:
    n = np.arange(length)
    x = np.zeros(16000)
    x[start : start + length] = amplitude * np.sin(2 * np.pi * freq * n / 16000)
    return np.round(x).astype(np.int16)


def _band_centres_hz() -> npt.NDArray[np.float64]:
    edges = logmel.mel_edges_hz()
    out: npt.NDArray[np.float64] = edges[1:-1]
    return out


def test_mel_edges_follow_the_htk_scale() -> None:
    edges = logmel.mel_edges_hz()
    assert edges.shape == (42,)
    assert edges[0] == pytest.approx(20.0)
    assert edges[-1] == pytest.approx(8000.0)
    steps = np.diff(logmel.hz_to_mel(edges))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert logmel.hz_to_mel(700.0) == pytest.approx(2595.0 * np.log10(2.0))
    np.testing.assert_allclose(logmel.mel_to_hz(logmel.hz_to_mel(edges)), edges)


def test_mel_table_is_triangular_and_covers_every_band() -> None:
    table = logmel.mel_table()
    assert table.shape == (40, 129)
    assert table.dtype == np.float32
    assert not table.flags.writeable
    assert (table >= 0).all()
    assert (table <= 1).all()
    assert (table.sum(axis=1) > 0).all(), "a band with no bin would always be at the floor"
    # Bin 40 is 2,500 Hz: in band m's support exactly when edge m < 2500 < edge m + 2.
    edges = logmel.mel_edges_hz()
    k, f = 40, 2500.0
    for m in range(40):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        expected = (f - lo) / (mid - lo) if lo <= f <= mid else (hi - f) / (hi - mid)
        assert table[m, k] == pytest.approx(max(expected, 0.0) if lo <= f <= hi else 0.0)
    # Each row is one triangle: non-zero on one contiguous run of bins.
    for row in table:
        nz = np.flatnonzero(row)
        assert (np.diff(nz) == 1).all()


def test_band_energy_sums_ascending_in_float32() -> None:
    rng = np.random.default_rng(1)
    power = rng.exponential(1.0, (50, 129)).astype(np.float32)
    got = logmel.band_energies(power)
    table = logmel.mel_table()
    for t, m in [(0, 0), (17, 23), (49, 39)]:
        acc = np.float32(0.0)
        for k in range(129):
            acc = np.float32(acc + np.float32(table[m, k] * power[t, k]))
        assert got[t, m] == acc


def test_a_tone_lands_in_its_band() -> None:
    centres = _band_centres_hz()
    for freq in (500.0, 1000.0, 3000.0, 6000.0):
        x = logmel.logmel40(_tone(freq))
        assert x.shape == (50, 40)
        assert x.dtype == np.float32
        loudest = int(np.argmax(x.mean(axis=0)))
        assert abs(loudest - int(np.argmin(np.abs(centres - freq)))) <= 1, freq


def test_normalisation_gives_zero_mean_unit_sd() -> None:
    rng = np.random.default_rng(2)
    audio = rng.normal(0, 3000, 16000).astype(np.int16)
    x = logmel.logmel40(audio)
    assert abs(float(x.mean())) < 1e-5
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_normalisation_floors_the_sd() -> None:
    flat = np.full((50, 40), 3.0, np.float32)
    flat[0, 0] = 3.0 + 1e-4  # sd ~ 2e-6, below the 1e-3 floor
    out = logmel.normalise(flat)
    mean = np.float32(flat.sum(dtype=np.float64) / 2000)
    assert out[0, 0] == pytest.approx((flat[0, 0] - mean) / 1e-3, rel=1e-3)


def test_silence_is_a_constant_near_zero() -> None:
    # Every band sits at fast_log(1e-10); the sequential float32 mean of 2,000 equal values is
    # a few ulp off, and the floored sd (1e-3) turns that into a small constant.
    x = logmel.logmel40(np.zeros(16000, np.int16))
    assert (x == x[0, 0]).all()
    assert abs(float(x[0, 0])) < 0.5
    q = logmel.features_int8(np.zeros(16000, np.int16))
    assert (q == q[0, 0]).all()
    assert abs(int(q[0, 0])) <= 8


def test_stages_compose_with_the_alignment_and_the_paper_spectrum() -> None:
    audio = _tone(800.0, start=1000, length=4000)
    aligned, shift = align.align(audio)
    assert shift != 0
    power = mfcc.power_spectrum(mfcc.preemphasis(aligned))
    by_hand = logmel.normalise(logmel.log_energies(logmel.band_energies(power)))
    np.testing.assert_array_equal(logmel.logmel40(audio), by_hand)


def test_batch_equals_single() -> None:
    rng = np.random.default_rng(3)
    batch = rng.normal(0, 2000, (3, 16000)).astype(np.int16)
    got = logmel.logmel40_batch(batch)
    for i in range(3):
        np.testing.assert_array_equal(got[i], logmel.logmel40(batch[i]))
    np.testing.assert_array_equal(logmel.features_int8(batch), logmel.quantise_input(got))


def test_quantiser_rounds_half_away_and_saturates() -> None:
    x = np.zeros((50, 40), np.float32)
    values = [0.5 / 16, -0.5 / 16, 1.5 / 16, -1.5 / 16, 0.49 / 16, 8.0, -8.0, 7.97, 100.0, -100.0]
    x[0, : len(values)] = values
    x[1, 0] = np.nextafter(np.float32(0.5 / 16), np.float32(0))  # just below a half
    q = logmel.quantise_input(x)
    assert q.dtype == np.int8
    assert q.shape == (50, 40)
    assert q[0, : len(values)].tolist() == [1, -1, 2, -2, 0, 127, -128, 127, 127, -128]
    assert q[1, 0] == 0
    np.testing.assert_allclose(
        logmel.dequantise_input(q)[0, :4], [1 / 16, -1 / 16, 2 / 16, -2 / 16]
    )


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(15999, np.int16), r"\(15999,\)"),
        (np.zeros((2, 16000), np.int16), r"\(2, 16000\)"),
        (np.zeros(16000, np.float32), "float32"),
    ],
)
def test_bad_audio_is_named(audio: npt.NDArray[np.generic], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logmel.logmel40(audio)


def test_bad_batches_and_features_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(3, 100\)"):
        logmel.logmel40_batch(np.zeros((3, 100), np.int16))
    with pytest.raises(ValueError, match="int32"):
        logmel.logmel40_batch(np.zeros((1, 16000), np.int32))
    with pytest.raises(ValueError, match=r"\(40, 50\)"):
        logmel.quantise_input(np.zeros((40, 50), np.float32))
    bad = np.zeros((50, 40), np.float32)
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="nan at flat index 83"):
        logmel.quantise_input(bad)
