"""The paper's MFCC against the original's reference vectors, stage by stage; pipelines; CLI."""

from __future__ import annotations

import logging
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import scipy.fft

from tinyfed.cli import main
from tinyfed.data.synth import CLASSES_FILE
from tinyfed.data.wav import write_wav
from tinyfed.errors import UsageError
from tinyfed.features import align, mfcc
from tinyfed.features.pipelines import (
    DEFAULT_PIPELINE,
    PAPER,
    PIPELINES,
    fit_length,
    get_pipeline,
    get_pipeline_by_id,
)
from tinyfed.testbed import vectors

SIGNALS = ["sine1k_noise", "white_noise", "silence_tiny_noise", "chirp", "zeros"]
#: The tolerances on the final features (docs/features.md); zeros is checked for sanity only.
FEATURE_ATOL = {
    "sine1k_noise": 3e-4,
    "chirp": 3e-4,
    "white_noise": 1e-4,
    "silence_tiny_noise": 1e-4,
}


def _audio(name: str) -> npt.NDArray[np.int16]:
    return vectors.load(f"mfcc/{name}.i16", dtype="<i2").astype(np.int16)


def _stage(name: str, stage: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    return vectors.load(f"mfcc/{name}_{stage}.f32", shape=shape).astype(np.float32)


def _assert_relative(actual: np.ndarray, expected: np.ndarray, rtol: float, floor: float) -> None:
    """|a - e| <= rtol * |e| + floor * max|e| per frame: relative, with a floor for empty bins."""
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    err = np.abs(actual.astype(np.float64) - expected)
    bound = rtol * np.abs(expected) + floor * scale
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"at {worst}: {actual[worst]} vs {expected[worst]}"


# --- stage by stage against the original --------------------------------------------------


def test_filterbank_matches_reference_matrix() -> None:
    expected = vectors.load("mfcc/filterbank.f32", shape=(32, 129))
    np.testing.assert_array_equal(mfcc.filterbank(), expected)


def test_filterbank_edges_have_speechpys_130_quirk() -> None:
    # The edge bins of stage 6 (docs/features.md): covering FFT bins 2..64 only.
    expected = [2, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 11, 12, 13, 14, 16, 17, 19, 20, 22, 24, 26, 28]
    expected += [31, 33, 36, 38, 42, 45, 48, 52, 56, 60, 64]
    assert mfcc.filterbank_edges().tolist() == expected


def test_dct_matrix_is_scipys_orthonormal_dct_ii() -> None:
    rows = np.random.default_rng(0).normal(size=(7, 32))
    expected = scipy.fft.dct(rows, type=2, norm="ortho", axis=-1)[:, :13]
    np.testing.assert_allclose(rows @ mfcc.dct_matrix().T, expected, atol=1e-12)


@pytest.mark.parametrize("name", SIGNALS)
def test_preemphasis_matches_reference(name: str) -> None:
    expected = _stage(name, "preemph", (16000,))
    np.testing.assert_allclose(mfcc.preemphasis(_audio(name)), expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", SIGNALS)
def test_power_spectrum_matches_reference(name: str) -> None:
    expected = _stage(name, "power_spectrum", (50, 129))
    actual = mfcc.power_spectrum(_stage(name, "preemph", (16000,)))
    # float32 rounding inside the original FFT: relative 1e-4, and nearly empty bins 1e-5 of
    # the frame's largest bin.
    _assert_relative(actual, expected, rtol=1e-4, floor=1e-5)


@pytest.mark.parametrize("name", SIGNALS)
def test_frame_energy_matches_reference(name: str) -> None:
    expected = _stage(name, "frame_energy", (50,))
    actual = mfcc.frame_energy(_stage(name, "power_spectrum", (50, 129)))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=0)


def test_frame_energy_of_silence_is_flt_epsilon() -> None:
    assert np.all(mfcc.frame_energy(np.zeros((50, 129), np.float32)) == np.float32(1.1920929e-07))


@pytest.mark.parametrize("name", SIGNALS)
def test_mel_energies_match_reference(name: str) -> None:
    expected = _stage(name, "mfe_power", (50, 32))
    actual = mfcc.mel_energies(_stage(name, "power_spectrum", (50, 129)))
    _assert_relative(actual, expected, rtol=1e-5, floor=1e-6)


@pytest.mark.parametrize("name", SIGNALS)
def test_log_mel_reproduces_the_originals_fast_log_bit_for_bit(name: str) -> None:
    expected = _stage(name, "log_mel", (50, 32))
    np.testing.assert_array_equal(mfcc.log_mel(_stage(name, "mfe_power", (50, 32))), expected)


def test_fast_log_is_within_its_documented_error_of_logf() -> None:
    x = np.geomspace(1e-30, 1e30, 200_001).astype(np.float32)
    np.testing.assert_allclose(mfcc.fast_log(x), np.log(x), atol=1.6e-5, rtol=0)


@pytest.mark.parametrize("name", SIGNALS)
def test_cepstra_match_reference(name: str) -> None:
    expected = _stage(name, "mfcc_raw", (50, 13))
    log_mels = _stage(name, "log_mel", (50, 32))
    actual = mfcc.cepstra(log_mels, _stage(name, "frame_energy", (50,)))
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    # Coefficient 0 is the (fast) log of the frame energy, not the DCT's DC term.
    np.testing.assert_array_equal(actual[:, 0], expected[:, 0])


@pytest.mark.parametrize("name", SIGNALS)
def test_normalisation_reproduces_reference_bit_for_bit(name: str) -> None:
    raw = _stage(name, "mfcc_raw", (50, 13))
    expected = _stage(name, "features", (650,))
    np.testing.assert_array_equal(mfcc.flatten(mfcc.normalise(raw)), expected)


@pytest.mark.parametrize("name", [s for s in SIGNALS if s != "zeros"])
def test_whole_pipeline_matches_reference_features(name: str) -> None:
    # Prepare
    expected = _stage(name, "features", (650,))
    # Execute
    actual = mfcc.mfcc(_audio(name))
    # Assert
    assert actual.dtype == np.float32
    assert actual.shape == (650,)
    np.testing.assert_allclose(actual, expected, atol=FEATURE_ATOL[name], rtol=0)


@pytest.mark.parametrize("name", [s for s in SIGNALS if s != "zeros"])
def test_whole_pipeline_intermediates_stay_close_to_reference(name: str) -> None:
    # End to end from the audio: errors of earlier stages carry into the later ones.
    pre = mfcc.preemphasis(_audio(name))
    power = mfcc.power_spectrum(pre)
    log_mels = mfcc.log_mel(mfcc.mel_energies(power))
    raw = mfcc.cepstra(log_mels, mfcc.frame_energy(power))
    atol = 1e-4 if FEATURE_ATOL[name] == 1e-4 else 1e-3  # the sine and chirp's empty bands
    np.testing.assert_allclose(log_mels, _stage(name, "log_mel", (50, 32)), atol=atol, rtol=0)
    np.testing.assert_allclose(raw, _stage(name, "mfcc_raw", (50, 13)), atol=atol, rtol=0)


def test_zeros_give_finite_features() -> None:
    features = mfcc.mfcc(np.zeros(16000, np.int16))
    assert np.all(np.isfinite(features))
    # The ill-conditioned column divisions still follow the original here.
    np.testing.assert_allclose(features, _stage("zeros", "features", (650,)), atol=1e-6)


def test_batch_equals_one_clip_at_a_time() -> None:
    batch = np.stack([_audio(name) for name in SIGNALS])
    expected = np.stack([mfcc.mfcc(clip) for clip in batch])
    np.testing.assert_array_equal(mfcc.mfcc_batch(batch), expected)


def test_features_are_frame_major() -> None:
    # A loud burst in frame 10 only changes coefficient 0 (log energy) of frame 10 the most.
    audio = np.zeros(16000, np.int16)
    audio[3200:3520] = np.random.default_rng(1).integers(-20000, 20000, 320)
    features = mfcc.mfcc(audio).reshape(50, 13)
    assert int(np.argmax(features[:, 0])) == 10


@pytest.mark.parametrize("shape", [(15999,), (2, 16000), (16000, 1)])
def test_mfcc_rejects_wrong_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected"):
        mfcc.mfcc(np.zeros(shape, np.int16))


# --- pipelines ---------------------------------------------------------------------------


def test_paper_pipeline_is_the_papers_mfcc() -> None:
    clip = _audio("white_noise")
    pipeline = get_pipeline(PAPER)
    assert pipeline.id == 1
    np.testing.assert_array_equal(pipeline.compute(clip), mfcc.mfcc(clip))


def test_centroid_pipeline_is_alignment_then_mfcc() -> None:
    clip = np.zeros(16000, np.int16)
    clip[1000:4000] = _audio("sine1k_noise")[1000:4000]
    pipeline = get_pipeline("centroid")
    aligned, shift = align.align(clip)
    assert pipeline.id == 2
    assert shift != 0
    np.testing.assert_array_equal(pipeline.compute(clip), mfcc.mfcc(aligned))


def test_pipeline_ids_and_names_are_unique_and_default_exists() -> None:
    ids = [p.id for p in PIPELINES.values()]
    assert len(set(ids)) == len(ids)
    assert all(name == p.name for name, p in PIPELINES.items())
    assert DEFAULT_PIPELINE in PIPELINES
    assert get_pipeline_by_id(2) is PIPELINES["centroid"]


def test_every_pipeline_maps_a_batch_to_float32_650() -> None:
    batch = np.stack([_audio(name) for name in SIGNALS])
    for pipeline in PIPELINES.values():
        out = pipeline.compute_batch(batch)
        assert out.shape == (len(SIGNALS), 650), pipeline.name
        assert out.dtype == np.float32, pipeline.name
        assert np.all(np.isfinite(out)), pipeline.name
        np.testing.assert_array_equal(out[1], pipeline.compute(batch[1]))


def test_unknown_pipeline_names_the_value_and_the_valid_ones() -> None:
    with pytest.raises(UsageError, match=r"'mel'.*centroid, paper"):
        get_pipeline("mel")
    with pytest.raises(UsageError, match="99"):
        get_pipeline_by_id(99)


def test_pipeline_rejects_float_audio() -> None:
    with pytest.raises(ValueError, match="int16"):
        get_pipeline(PAPER).compute_batch(np.zeros((1, 16000), np.float32))


@pytest.mark.parametrize(("length", "note"), [(16000, None), (12000, "padded"), (20000, "cut")])
def test_fit_length_pads_or_cuts_to_one_second(length: int, note: str | None) -> None:
    # Prepare
    audio = np.arange(length, dtype=np.int64).astype(np.int16)
    # Execute
    out, message = fit_length(audio)
    # Assert
    assert out.shape == (16000,)
    assert out.dtype == np.int16
    keep = min(length, 16000)
    np.testing.assert_array_equal(out[:keep], audio[:keep])
    assert np.all(out[keep:] == 0)
    if note is None:
        assert message is None
    else:
        assert message is not None
        assert note in message
        assert str(length) in message


# --- the command ---------------------------------------------------------------------------


def _write_wav(path: Path, audio: npt.NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(audio.astype("<i2").tobytes())


def test_features_command_writes_one_row_per_clip_in_order(tmp_path: Path) -> None:
    # Prepare
    names = ["white_noise", "chirp", "sine1k_noise"]
    wavs = [str(vectors.vectors_dir() / "mfcc" / f"{n}.wav") for n in names]
    out = tmp_path / "X.npy"
    # Execute
    code = main(["features", *wavs, "--out", str(out), "--pipeline", "paper"])
    # Assert
    assert code == 0
    features = np.load(out)
    assert features.dtype == np.float32
    assert features.shape == (3, 650)
    for row, name in zip(features, names, strict=True):
        np.testing.assert_allclose(row, _stage(name, "features", (650,)), atol=3e-4, rtol=0)


def test_features_command_uses_the_default_pipeline(tmp_path: Path) -> None:
    wav = str(vectors.vectors_dir() / "mfcc" / "chirp.wav")
    out = tmp_path / "X.npy"
    assert main(["features", wav, "--out", str(out)]) == 0
    expected = get_pipeline(DEFAULT_PIPELINE).compute(_audio("chirp"))
    np.testing.assert_array_equal(np.load(out)[0], expected)


def test_features_command_pads_and_cuts_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    clip = _audio("white_noise")
    short, long_ = tmp_path / "short.wav", tmp_path / "long.wav"
    _write_wav(short, clip[:8000])
    _write_wav(long_, np.concatenate([clip, clip[:4000]]))
    out = tmp_path / "X.npy"
    # Execute
    with caplog.at_level(logging.INFO):
        code = main(["features", str(short), str(long_), "--out", str(out), "--pipeline", "paper"])
    # Assert
    assert code == 0
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{short}: 8000 samples (0.500 s), padded" in messages
    assert f"{long_}: 20000 samples (1.250 s), cut" in messages
    features = np.load(out)
    padded = np.concatenate([clip[:8000], np.zeros(8000, np.int16)])
    np.testing.assert_array_equal(features[0], mfcc.mfcc(padded))
    np.testing.assert_array_equal(features[1], mfcc.mfcc(clip))


def test_features_command_unknown_pipeline_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = str(vectors.vectors_dir() / "mfcc" / "chirp.wav")
    out = tmp_path / "X.npy"
    code = main(["features", wav, "--out", str(out), "--pipeline", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err
    assert "centroid, paper" in err
    assert not out.exists()


def test_features_command_unreadable_wav_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    assert main(["features", str(bad), "--out", str(tmp_path / "X.npy")]) == 2
    assert "bad.wav" in capsys.readouterr().err


def test_features_command_runs_as_a_program(tmp_path: Path) -> None:
    # The installed entry point, through a real process: the log line reaches stderr.
    short = tmp_path / "short.wav"
    _write_wav(short, _audio("chirp")[:4000])
    out = tmp_path / "X.npy"
    result = subprocess.run(
        [sys.executable, "-m", "tinyfed.cli", "features", str(short), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "short.wav: 4000 samples (0.250 s), padded with zeros to 1 s" in result.stderr
    assert np.load(out).shape == (1, 650)


def _tiny_corpus(root: Path) -> None:
    """Three words, three clips each, in the Speech Commands layout (all in the train split)."""
    rng = np.random.default_rng(4)
    for w, word in enumerate(("vermell", "verd", "blau")):
        (root / word).mkdir(parents=True)
        for k in range(3):
            tone = np.sin(2 * np.pi * (300 + 200 * w) * np.arange(16000) / 16000)
            clip = (tone * 8000 + rng.normal(0, 300, 16000)).astype(np.int16)
            write_wav(root / word / f"v{k}_nohash_{k}.wav", clip)
    (root / "validation_list.txt").write_text("")
    (root / "testing_list.txt").write_text("")
    (root / CLASSES_FILE).write_text("vermell\nverd\nblau\n")  # the words' button order


def test_features_of_a_corpus_come_with_labels_in_an_order_that_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    _tiny_corpus(tmp_path / "corpus")
    x, y = tmp_path / "X.npy", tmp_path / "Y.npy"
    # Execute
    code = main(
        ["features", "--corpus", str(tmp_path / "corpus"), "--out", str(x), "--labels-out", str(y)]
    )
    # Assert: one clip of each word in turn, labels row for row, the classes named
    assert code == 0
    labels = np.load(y)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert np.load(x).shape == (9, 650)
    assert "classes: 0 vermell, 1 verd, 2 blau" in capsys.readouterr().out
    assert (
        main(["train", "--features", str(x), "--labels", str(y), "--out", str(tmp_path / "m.bin")])
        == 0
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give either WAV clips or --corpus DIR"),
        (["a.wav", "--corpus", "c"], "give either WAV clips or --corpus DIR"),
        (["a.wav", "--labels-out", "Y.npy"], "--labels-out goes with --corpus"),
    ],
)
def test_features_refuses_a_muddled_request(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "--out", str(tmp_path / "X.npy"), *extra]) == 2
    assert message in capsys.readouterr().err
