"""The Festival engine of ``tinyfed data synth``: real Festival, the espeak-ng corpus layout."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinyfed.cli import main
from tinyfed.data import festival
from tinyfed.data.dataset import load
from tinyfed.data.synth import MANIFEST_COLUMNS, SILENCE_CLASS, SynthConfig
from tinyfed.data.wav import CLIP_SAMPLES, read_wav

pytestmark = pytest.mark.skipif(
    shutil.which("text2wave") is None,
    reason="needs Festival (text2wave): sudo apt-get install festival festvox-ca-ona-hts "
    "(scripts/setup installs it with the other voices)",
)

WORDS = ("verd", "montserrat")


def _config(out: Path, seed: int = 5) -> SynthConfig:
    return SynthConfig(words=WORDS, out=out, per_word=4, seed=seed, silence=True, jobs=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("festival") / "c"
    festival.synthesize(_config(out), progress=False)
    return out


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_catalan_voice_is_installed() -> None:
    names = {v.name for v in festival.installed_voices(festival.find_festival())}
    assert "ona" in names  # the Catalan voice the paper's words need (scripts/setup)


def test_festival_corpus_has_the_speech_commands_layout(corpus: Path) -> None:
    rows = _manifest(corpus)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert (corpus / "classes.txt").read_text().split() == [*WORDS, SILENCE_CLASS]
    ds = load(corpus)
    assert ds.classes == (*WORDS, SILENCE_CLASS)
    assert len(ds) == 3 * 4
    assert ds.audio.shape == (12, CLIP_SAMPLES)
    # speaker-disjoint by Festival voice: both pitches of a voice stay in one split
    speakers = {
        s: {str(v).split("+")[0] for v in ds.voice[ds.split == s] if "+" in str(v)}
        for s in ("train", "validation", "test")
    }
    assert speakers["train"]
    assert speakers["test"]
    assert not speakers["train"] & (speakers["validation"] | speakers["test"])


def test_word_clips_hold_speech_and_record_their_voice(corpus: Path) -> None:
    rows = [r for r in _manifest(corpus) if r["word"] != SILENCE_CLASS]
    for r in rows:
        name, variant = r["voice"].split("+")
        assert name in {v.name for v in festival.VOICES}
        assert variant == r["variant"] in festival.PITCH_RATES
        assert r["pitch"] in {"90", "110"}
        assert r["fit"] in {"ok", "faster", "cut"}
        assert 0 < float(r["duration_ms"]) <= 1000
        x = read_wav(corpus / r["path"]).astype(np.float64)
        start = int(float(r["offset_ms"]) * 16)
        length = int(float(r["duration_ms"]) * 16)
        word_rms = np.sqrt(np.mean(x[start : start + length] ** 2))
        assert word_rms > 30  # the word is there (its peak sits at -20 dBFS or louder)


def test_silence_clips_are_noise_only_and_not_espeak_noise(corpus: Path) -> None:
    rows = [r for r in _manifest(corpus) if r["word"] == SILENCE_CLASS]
    assert len(rows) == 4
    assert all(r["voice"].startswith("noise") and r["language"] == "" for r in rows)
    # the same seed in espeak-ng's corpus draws other noise: never the same bytes twice
    from tinyfed.data import synth  # noqa: PLC0415

    spec = next(s for s in synth.plan(_config(corpus), ("a", "b", "c")) if s.word == SILENCE_CLASS)
    espeak_audio, _ = synth.render(spec, "")
    assert not np.array_equal(espeak_audio, read_wav(corpus / spec.relpath))


def test_same_seed_gives_same_bytes(corpus: Path, tmp_path: Path) -> None:
    rows = [r for r in _manifest(corpus) if r["word"] == "verd"]
    specs = [
        s
        for s in festival.plan(_config(corpus), festival.installed_voices(festival.find_festival()))
        if s.relpath == rows[0]["path"]
    ]
    audio, row = festival.render(specs[0], festival.find_festival())
    assert np.array_equal(audio, read_wav(corpus / rows[0]["path"]))
    assert row == rows[0]


def test_pitch_variants_shift_by_their_rate() -> None:
    x = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    lo, hi = festival.shift_pitch(x, "lo"), festival.shift_pitch(x, "hi")
    assert (len(lo), len(hi)) == (17778, 14546)  # ceil(16000 * 16000 / rate)
    # 200 Hz becomes 180 Hz (lo) and 220 Hz (hi): count zero crossings over the first 0.5 s
    for y, f in ((lo, 180), (hi, 220)):
        crossings = np.sum(np.diff(np.signbit(y[:8000])) != 0)
        assert abs(crossings / 2 / 0.5 - f) < 3


def test_cli_synth_festival_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    args = ["data", "synth", "--engine", "festival", "--words", "blau", "--per-word", "3"]
    no_split = ["--validation-percent", "0", "--testing-percent", "0"]
    assert main([*args, *no_split, "--voices", "ona,kal", "--out", str(out)]) == 0
    assert "wrote 3 clips" in capsys.readouterr().out
    voices = {r["voice"].split("+")[0] for r in _manifest(out)}
    assert voices <= {"ona", "kal"}
    assert main(["data", "info", str(out)]) == 0


def test_cli_refuses_mixed_engine_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["data", "synth", "--words", "blau", "--out", str(tmp_path / "x")]
    assert main([*base, "--engine", "festival", "--variants", "m3"]) == 2
    assert "--voices" in capsys.readouterr().err
    assert main([*base, "--voices", "ona"]) == 2
    assert "--engine festival" in capsys.readouterr().err
    assert main([*base, "--engine", "festival", "--voices", "nosuch"]) == 2
    assert "unknown festival voice 'nosuch'" in capsys.readouterr().err
