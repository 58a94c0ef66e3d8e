"""The alignment stage: integer-exact definition, properties, and the shared C++ vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.features import align, align_vectors, mfcc
from tinyfed.features.pipelines import get_pipeline
from tinyfed.testbed import vectors

CASES = (vectors.vectors_dir() / "align" / align_vectors.CASES_FILE).read_text().split()


def _word(length: int = 5000) -> npt.NDArray[np.float64]:
    """A word-like burst (two syllables of a harmonic tone), peak 10,000."""
    t = np.arange(length) / 16000
    x = sum(np.sin(2 * np.pi * k * 140 * t) / k for k in range(1, 6))
    env = np.sin(np.pi * np.linspace(0, 2, length)) ** 2
    y = x * env
    out: npt.NDArray[np.float64] = y / np.abs(y).max() * 10_000
    return out


def _clip(start: int, noise_std: float = 0.0, seed: int = 0) -> npt.NDArray[np.int16]:
    word = _word()
    x = np.zeros(16000)
    x[start : start + len(word)] = word
    x += np.random.default_rng(seed).normal(0, noise_std, 16000) if noise_std else 0.0
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


# --- the shared vectors: Python and C++ must both reproduce them -------------------------


def _load(name: str, suffix: str, dtype: str) -> npt.NDArray[np.generic]:
    return vectors.load(f"align/{name}{suffix}", dtype=dtype)


@pytest.mark.parametrize("name", CASES)
def test_reference_still_reproduces_the_shared_vectors(name: str) -> None:
    # Prepare
    audio = _load(name, ".i16", "<i2").astype(np.int16)
    # Execute
    aligned, shift = align.align(audio)
    # Assert: any change of the algorithm shows here (regenerate the files and the C++ test
    # will tell whether the firmware still agrees).
    np.testing.assert_array_equal(align.block_energies(audio), _load(name, "_energies.i64", "<i8"))
    assert shift == int(_load(name, "_shift.i32", "<i4")[0])
    np.testing.assert_array_equal(aligned, _load(name, "_aligned.i16", "<i2"))


def test_shared_vectors_list_every_generated_case() -> None:
    generated = align_vectors.make_cases()
    assert list(generated) == CASES
    for name, audio in generated.items():
        np.testing.assert_array_equal(audio, _load(name, ".i16", "<i2"), err_msg=name)


def test_vectors_written_by_the_generator_equal_the_stored_files(tmp_path: Path) -> None:
    align_vectors.write(tmp_path)
    stored = vectors.vectors_dir() / "align"
    names = sorted(p.name for p in stored.iterdir() if p.name != "README.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for name in names:
        assert (tmp_path / name).read_bytes() == (stored / name).read_bytes(), name


# --- exact integer definition -------------------------------------------------------------


def test_block_energies_are_exact_int64_sums_of_squares() -> None:
    audio = np.full(16000, -32768, np.int16)
    audio[160:320] = 32767
    energies = align.block_energies(audio)
    assert energies.dtype == np.int64
    assert int(energies[0]) == 160 * 32768**2
    assert int(energies[1]) == 160 * 32767**2
    assert energies.shape == (100,)


def test_noise_floor_is_the_ranked_block_energy() -> None:
    energies = np.random.default_rng(3).integers(0, 10**12, (4, 100), dtype=np.int64)
    for rank in (0, 10, 99):
        np.testing.assert_array_equal(
            align.noise_floor(energies, rank), np.sort(energies, axis=-1)[:, rank]
        )
    with pytest.raises(ValueError, match="rank"):
        align.noise_floor(energies, 100)


def test_centroid_rounds_half_up_in_integers() -> None:
    # Energies 63 and 1 in blocks 0 and 1: (63 * 80 + 1 * 240) / 64 = 82.5 -> 83.
    energies = np.zeros(100, np.int64)
    energies[0], energies[1] = 63, 1
    c, defined = align.centroid(energies, np.array(0, np.int64))
    assert bool(defined)
    assert int(c) == 83


def test_shift_moves_samples_with_zero_fill_and_no_wrap_around() -> None:
    audio = np.arange(1, 16001, dtype=np.int64).astype(np.int16)
    later = align.shift_audio(audio, 3)
    np.testing.assert_array_equal(later[:3], 0)
    np.testing.assert_array_equal(later[3:], audio[:-3])
    earlier = align.shift_audio(audio, -5)
    np.testing.assert_array_equal(earlier[:-5], audio[5:])
    np.testing.assert_array_equal(earlier[-5:], 0)
    assert np.all(align.shift_audio(audio, 16000) == 0)


def test_centroid_is_moved_to_sample_8000() -> None:
    # A single loud block anywhere ends up on the block around 8000.
    for block in (0, 17, 50, 99):
        audio = np.zeros(16000, np.int16)
        audio[block * 160 : block * 160 + 160] = 20_000
        aligned, shift = align.align(audio)
        assert shift == 8000 - (block * 160 + 80)
        assert np.all(aligned[7920:8080] == 20_000)


# --- properties --------------------------------------------------------------------------


def test_a_word_moved_by_whole_blocks_aligns_to_the_same_audio() -> None:
    early, _ = align.align(_clip(1600))
    late, _ = align.align(_clip(9600))
    np.testing.assert_array_equal(early, late)


def test_a_word_moved_in_time_gives_nearly_the_same_aligned_features() -> None:
    # Prepare: the same word early and late in the second (not on block boundaries).
    early, late = _clip(700), _clip(10_100)
    paper, centroid = get_pipeline("paper"), get_pipeline("centroid")
    # Execute
    paper_gap = np.abs(paper.compute(early) - paper.compute(late)).mean()
    centroid_gap = np.abs(centroid.compute(early) - centroid.compute(late)).mean()
    shifts = align.alignment_shift(np.stack([early, late]))
    # Assert: the shifts differ by the move (to within a block), the features barely differ.
    assert abs(int(shifts[0] - shifts[1]) - 9400) <= 160
    assert centroid_gap < 0.1 * paper_gap


def test_a_word_moved_in_noise_keeps_its_aligned_frames_alike() -> None:
    # Prepare: fresh noise in each clip, so only the word's frames can agree.
    early, late = _clip(700, 30.0, seed=1), _clip(10_100, 30.0, seed=2)
    word_frames = slice(17, 34)  # 5,000 samples around the centre: frames 17..33

    def correlation(name: str) -> float:
        pipeline = get_pipeline(name)
        a = pipeline.compute(early).reshape(50, 13)[word_frames].ravel()
        b = pipeline.compute(late).reshape(50, 13)[word_frames].ravel()
        return float(np.corrcoef(a, b)[0, 1])

    # Execute
    paper, centroid = correlation("paper"), correlation("centroid")
    # Assert
    assert centroid > 0.75
    assert centroid > paper + 0.5


@pytest.mark.parametrize("level", [0, -1234, 32767])
def test_silence_and_constant_levels_are_left_alone(level: int) -> None:
    audio = np.full(16000, level, np.int16)
    aligned, shift = align.align(audio)
    assert shift == 0
    np.testing.assert_array_equal(aligned, audio)


def test_alignment_of_zeros_keeps_the_papers_features() -> None:
    zeros = np.zeros(16000, np.int16)
    np.testing.assert_array_equal(get_pipeline("centroid").compute(zeros), mfcc.mfcc(zeros))


def test_batch_alignment_equals_one_clip_at_a_time() -> None:
    batch = np.stack([_clip(s, 20.0, seed=s) for s in (0, 3000, 11_000)])
    aligned, shifts = align.align_batch(batch)
    for i, clip in enumerate(batch):
        one, shift = align.align(clip)
        np.testing.assert_array_equal(aligned[i], one)
        assert shift == shifts[i]


def test_align_rejects_wrong_shape_and_dtype() -> None:
    with pytest.raises(ValueError, match="shape"):
        align.align(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="int16"):
        align.align_batch(np.zeros((1, 16000), np.int32))
