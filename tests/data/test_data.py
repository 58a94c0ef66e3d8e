"""The keyword corpus: WAV reading, espeak-ng synthesis, the Speech Commands reader, the CLI."""

from __future__ import annotations

import csv
import re
import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tinyfed.cli import main
from tinyfed.data import synth
from tinyfed.data.dataset import Dataset, alternating_order, load, which_set
from tinyfed.data.synth import MANIFEST_COLUMNS, SILENCE_CLASS, SynthConfig, synthesize
from tinyfed.data.wav import read_wav, resample, write_wav
from tinyfed.errors import UsageError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

WORDS = ("pedraforca", "montserrat")  # not alphabetical: the label order must follow --words
PER_WORD = 6


def _config(out: Path, seed: int = 3) -> SynthConfig:
    return SynthConfig(words=WORDS, out=out, per_word=PER_WORD, seed=seed, silence=True, jobs=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    synthesize(_config(out), progress=False)
    return out


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _pcm_wav(
    path: Path,
    data: bytes,
    rate: int,
    channels: int,
    bits: int,
    *,
    tag: int = 1,
    extensible: bool = False,
) -> None:
    """Write a WAV header by hand (the stdlib cannot write float, 24-bit tags or A-law)."""
    block = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack(
            "<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0
        )
        fmt += guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> npt.NDArray[np.float64]:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def _peak_hz(x: npt.NDArray[np.int16]) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.fft.rfftfreq(len(x), 1 / 16000)[np.argmax(spec)])


# --- wav.py -----------------------------------------------------------------------------------


def test_read_wav_mixes_down_and_resamples_44k1_stereo(tmp_path: Path) -> None:
    # Prepare: 1 kHz in both channels, opposite 3 kHz in each (cancels in the mix-down)
    left = _sine(1000, 44100, 1.0) + _sine(3000, 44100, 1.0, 0.25)
    right = _sine(1000, 44100, 1.0) - _sine(3000, 44100, 1.0, 0.25)
    frames = np.round(np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(frames.tobytes())
    # Execute
    x = read_wav(tmp_path / "s.wav")
    # Assert
    assert x.dtype == np.int16
    assert x.shape == (16000,)
    assert _peak_hz(x) == pytest.approx(1000, abs=1)
    mid = x[2000:14000].astype(np.float64) / 32768
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    spec = np.abs(np.fft.rfft(x.astype(np.float64)))
    assert spec[3000] < spec[1000] * 1e-3  # the 3 kHz halves cancelled


def test_resample_matches_scipy_resample_poly() -> None:
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(0).standard_normal(22050 + 17)
    for src, dst in ((22050, 16000), (44100, 16000), (8000, 16000), (48000, 16000)):
        np.testing.assert_allclose(
            resample(x, src, dst), signal.resample_poly(x, dst, src), atol=1e-9
        )


def test_read_wav_upsamples_8k_8bit(tmp_path: Path) -> None:
    # Prepare: 8-bit WAV is unsigned, 128 is zero
    u8 = np.clip(np.round(_sine(440, 8000, 0.5) * 127 + 128), 0, 255).astype(np.uint8)
    _pcm_wav(tmp_path / "u8.wav", u8.tobytes(), 8000, 1, 8)
    # Execute
    x = read_wav(tmp_path / "u8.wav")
    # Assert
    assert x.shape == (8000,)
    assert _peak_hz(np.concatenate([x, np.zeros(8000, np.int16)])) == pytest.approx(440, abs=2)
    assert abs(int(x[2000:6000].max()) - 0.5 * 32768 * 127 / 128) < 400


def test_read_wav_24bit_keeps_the_top_16_bits(tmp_path: Path) -> None:
    # Prepare: 24-bit samples whose low byte is zero map exactly onto int16
    values = np.array([0, 1, -1, 32767, -32768, 1234, -4321], dtype=np.int32) * 256
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)
    _pcm_wav(tmp_path / "a.wav", raw, 16000, 1, 24)
    _pcm_wav(tmp_path / "b.wav", raw, 16000, 1, 24, extensible=True)
    # Execute / Assert
    for name in ("a.wav", "b.wav"):
        assert read_wav(tmp_path / name).tolist() == (values // 256).tolist()


def test_read_wav_32bit_float_and_int(tmp_path: Path) -> None:
    f = np.array([0.0, 0.5, -0.5, 1.0, -1.0], dtype="<f4")
    _pcm_wav(tmp_path / "f.wav", f.tobytes(), 16000, 1, 32, tag=3)
    i = (np.array([0, 16384, -16384, 32767, -32768], dtype=np.int64) << 16).astype("<i4")
    _pcm_wav(tmp_path / "i.wav", i.tobytes(), 16000, 1, 32)
    assert read_wav(tmp_path / "f.wav").tolist() == [0, 16384, -16384, 32767, -32768]
    assert read_wav(tmp_path / "i.wav").tolist() == [0, 16384, -16384, 32767, -32768]


def test_write_then_read_is_identity(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(-32768, 32768, 16000).astype(np.int16)
    write_wav(tmp_path / "x.wav", x)
    assert np.array_equal(read_wav(tmp_path / "x.wav"), x)
    assert (tmp_path / "x.wav").stat().st_size == 44 + 32000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"hello, not audio", "not a WAV"),
        (b"", "not a WAV"),
        ("empty", "empty (0 samples)"),
        ("alaw", "unsupported WAV format (A-law)"),
        ("12bit", "unsupported WAV format (12-bit PCM)"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
    ],
)
def test_read_wav_errors_name_the_file(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    # Prepare
    path = tmp_path / "bad.wav"
    if content == "empty":
        _pcm_wav(path, b"", 16000, 1, 16)
    elif content == "alaw":
        _pcm_wav(path, b"\x55" * 100, 8000, 1, 8, tag=6)
    elif content == "12bit":
        _pcm_wav(path, b"\x00" * 100, 8000, 1, 12)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    # Execute / Assert
    with pytest.raises(UsageError, match=re.escape(message)) as err:
        read_wav(path)
    assert str(path) in str(err.value)


# --- synth.py ---------------------------------------------------------------------------------


def test_synth_same_seed_gives_same_bytes(corpus: Path, tmp_path: Path) -> None:
    # Execute: the same seed with another number of workers, and another seed
    synthesize(SynthConfig(**{**_config(tmp_path / "again").__dict__, "jobs": 1}), progress=False)
    synthesize(_config(tmp_path / "other", seed=4), progress=False)
    # Assert
    first, again = _files(corpus), _files(tmp_path / "again")
    assert len(first) == 3 * PER_WORD + 4
    assert first == again
    other = _files(tmp_path / "other")
    assert sum(first.get(k) != v for k, v in other.items() if k.endswith(".wav")) >= 3 * PER_WORD


def test_split_is_disjoint_by_voice_and_variant(corpus: Path) -> None:
    rows = [r for r in _manifest(corpus) if r["word"] != SILENCE_CLASS]
    voices = {s: {r["voice"] for r in rows if r["split"] == s} for s in synth.SPLITS}
    variants = {s: {r["variant"] for r in rows if r["split"] == s} for s in synth.SPLITS}
    assert all(voices[s] for s in synth.SPLITS)
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not voices[a] & voices[b]
        assert not variants[a] & variants[b]
    # the variant split is fixed for a seed, whatever the words
    installed = synth.list_variants(synth.find_espeak())
    parts = synth.split_variants(synth.default_variants(installed), seed=3)
    assert all(r["variant"] in parts[r["split"]] for r in rows)


def test_split_lists_match_the_manifest(corpus: Path) -> None:
    rows = _manifest(corpus)
    for name, split in (("validation_list.txt", "validation"), ("testing_list.txt", "test")):
        listed = (corpus / name).read_text().splitlines()
        assert listed == sorted(r["path"] for r in rows if r["split"] == split)
    counts = {s: sum(r["split"] == s for r in rows) for s in synth.SPLITS}
    assert counts == {"train": 4 * 3, "validation": 3, "test": 3}


def test_manifest_records_how_each_clip_was_made(corpus: Path) -> None:
    rows = _manifest(corpus)
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert [r["word"] for r in rows] == [
        w for w in (*WORDS, SILENCE_CLASS) for _ in range(PER_WORD)
    ]
    for r in rows:
        x = read_wav(corpus / r["path"]).astype(np.float64)
        assert r["path"] == f"{r['word']}/{r['voice']}_nohash_{r['index']}.wav"
        assert r["seed"] == "3"
        if r["word"] == SILENCE_CLASS:
            assert r["noise"] in {"white", "pink", "brown", "hum"}
            rms_db = 20 * np.log10(np.sqrt(np.mean((x / 32768) ** 2)))
            assert rms_db == pytest.approx(float(r["gain_db"]), abs=0.5)
            continue
        assert r["voice"] == f"{r['language']}+{r['variant']}"
        assert r["language"] in synth.DEFAULT_LANGUAGES
        assert r["fit"] in {"ok", "faster", "cut"}
        assert synth.SPEED_WPM[0] <= int(r["speed"]) <= synth.MAX_SPEED_WPM
        assert synth.PITCH[0] <= int(r["pitch"]) <= synth.PITCH[1]
        start = round(float(r["offset_ms"]) * 16)
        end = start + round(float(r["duration_ms"]) * 16)
        assert end <= 16000
        word = x[start:end]
        peak_db = 20 * np.log10(np.max(np.abs(word)) / 32768)
        if r["noise"] == "none":
            assert r["snr_db"] == ""
            assert not x[:start].any()
            assert not x[end:].any()
            assert peak_db == pytest.approx(float(r["gain_db"]), abs=0.1)
        else:
            assert float(r["snr_db"]) in synth.SNR_DB
            assert x[:start].any() or x[end:].any() or end - start == 16000


def test_clips_are_one_second_16k_mono_int16(corpus: Path) -> None:
    wavs = sorted(corpus.rglob("*.wav"))
    assert len(wavs) == 3 * PER_WORD
    for p in wavs:
        with wave.open(str(p)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
                1,
                2,
                16000,
                16000,
            )


def test_silence_class_is_last_and_holds_noise_only(corpus: Path) -> None:
    assert (corpus / "classes.txt").read_text().splitlines() == [*WORDS, SILENCE_CLASS]
    assert len(list((corpus / SILENCE_CLASS).glob("*.wav"))) == PER_WORD


def test_a_word_longer_than_a_second_is_sped_up_or_cut(tmp_path: Path) -> None:
    word = "supercalifragilisticexpialidocious"
    rows = synthesize(
        SynthConfig(words=(word,), out=tmp_path / "long", per_word=3, languages=("en",)),
        progress=False,
    )
    assert {r["fit"] for r in rows} <= {"faster", "cut"}
    assert all(float(r["duration_ms"]) <= 1000 for r in rows)


def test_missing_espeak_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a PATH without espeak-ng
    monkeypatch.setenv("PATH", str(tmp_path))
    # Execute / Assert
    with pytest.raises(UsageError, match=r"sudo apt-get install espeak-ng"):
        synthesize(_config(tmp_path / "c"), progress=False)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("", "no keywords"),
        ("montserrat,,pedraforca", "keyword 2 of 3 is empty"),
        ("verd,Verd", "given twice"),
        ("hola!", "cannot be spoken"),
        ("r2d2", "cannot be spoken"),
        ("two words", "cannot be spoken"),
        ("😀", "cannot be spoken"),
        ("_silence", "cannot be spoken"),
    ],
)
def test_bad_word_lists_are_refused(words: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        synth.parse_words(words)


def test_catalan_and_spanish_letters_are_accepted() -> None:
    assert synth.parse_words("Camí, col·lecció,l'aigua,niño") == (
        "camí",
        "col·lecció",
        "l'aigua",
        "niño",
    )


@pytest.mark.parametrize("per_word", ["0", "-3", "1000001"])
def test_cli_refuses_bad_per_word(
    per_word: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["data", "synth", "--words", "verd", "--per-word", per_word, "--out", str(tmp_path / "c")]
    )
    assert code == 2
    assert "--per-word must be between 1 and" in capsys.readouterr().err


def test_cli_refuses_unknown_language_and_variant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data", "synth", "--words", "verd", "--per-word", "2"]
    assert main([*args, "--languages", "xx", "--out", str(tmp_path / "a")]) == 2
    assert "no voice for language 'xx'" in capsys.readouterr().err
    assert main([*args, "--variants", "m3,nosuchvoice", "--out", str(tmp_path / "b")]) == 2
    assert "unknown espeak-ng variant(s) nosuchvoice" in capsys.readouterr().err


def test_synth_refuses_a_non_empty_folder_unless_forced(corpus: Path, tmp_path: Path) -> None:
    # Prepare: a copy of the corpus, plus a stranger's file
    out = tmp_path / "c"
    shutil.copytree(corpus, out)
    # Execute / Assert
    with pytest.raises(UsageError, match="--force"):
        synthesize(SynthConfig(words=("verd",), out=out, per_word=3), progress=False)
    synthesize(SynthConfig(words=("verd",), out=out, per_word=3, force=True), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.txt",
        "manifest.csv",
        "testing_list.txt",
        "validation_list.txt",
        "verd",
    ]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="refusing"):
        synthesize(SynthConfig(words=("verd",), out=tmp_path / "mine", per_word=3, force=True))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --- dataset.py -------------------------------------------------------------------------------


def test_dataset_reads_the_synth_corpus_in_label_order(corpus: Path) -> None:
    # Execute
    ds = load(corpus, progress=False)
    # Assert
    rows = _manifest(corpus)
    assert ds.classes == (*WORDS, SILENCE_CLASS)
    assert ds.audio.shape == (3 * PER_WORD, 16000)
    assert ds.audio.dtype == np.int16
    by_path = {r["path"]: r for r in rows}
    for i, p in enumerate(ds.paths):
        assert ds.classes[ds.labels[i]] == by_path[p]["word"]
        assert ds.split[i] == by_path[p]["split"]
        assert ds.voice[i] == by_path[p]["voice"]
        assert np.array_equal(ds.audio[i], read_wav(corpus / p))
    test = ds.select("test")
    assert len(test) == 3
    assert set(test.split.tolist()) == {"test"}
    assert not set(test.voice.tolist()) & set(ds.select("train").voice.tolist())
    with pytest.raises(ValueError, match="read-only"):
        ds.audio[0, 0] = 1


def _speech_commands_tree(root: Path) -> None:
    """yes/no by three speakers at mixed formats, a too-short and a too-long clip, noise."""
    rng = np.random.default_rng(0)
    for word in ("yes", "no"):
        (root / word).mkdir(parents=True)
        for spk in ("0a7c2a8d", "0b09edd3", "1a673010"):
            for k in range(2):
                x = np.round(rng.uniform(-0.5, 0.5, 16000) * 32767).astype(np.int16)
                write_wav(root / word / f"{spk}_nohash_{k}.wav", x)
    stereo = np.round(np.tile(_sine(500, 44100, 0.5)[:, None], 2) * 32767).astype("<i2")
    _pcm_wav(root / "yes" / "ffff0000_nohash_0.wav", stereo.tobytes(), 44100, 2, 16)
    write_wav(root / "no" / "ffff0000_nohash_0.wav", np.ones(20000, dtype=np.int16))
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_" / "white.wav", np.ones(48000, dtype=np.int16))


def test_dataset_reads_a_speech_commands_tree_without_lists(tmp_path: Path) -> None:
    # Prepare
    _speech_commands_tree(tmp_path)
    # Execute
    ds = load(tmp_path, progress=False)
    # Assert
    assert ds.classes == ("no", "yes")  # sorted; _background_noise_ is not a class
    assert len(ds) == 14
    for i, p in enumerate(ds.paths):
        assert ds.split[i] == which_set(p)
        assert ds.voice[i] == Path(p).name.split("_nohash_")[0]
    for v in set(ds.voice.tolist()):  # a speaker sits in one split for every word
        assert len(set(ds.split[ds.voice == v].tolist())) == 1
    short = ds.paths.index("yes/ffff0000_nohash_0.wav")
    assert ds.lengths[short] == 8000
    assert not ds.audio[short, 8000:].any()
    assert ds.audio[short, :8000].any()
    long = ds.paths.index("no/ffff0000_nohash_0.wav")
    assert ds.lengths[long] == 20000
    assert (ds.audio[long] == 1).all()


def test_dataset_follows_lists_and_classes_txt(tmp_path: Path) -> None:
    _speech_commands_tree(tmp_path)
    (tmp_path / "testing_list.txt").write_text("yes/0a7c2a8d_nohash_0.wav\nyes/gone_nohash_0.wav\n")
    (tmp_path / "classes.txt").write_text("yes\nno\n")
    ds = load(tmp_path, progress=False)
    assert ds.classes == ("yes", "no")
    assert ds.paths[ds.labels.tolist().index(1)].startswith("no/")
    assert ds.select("test").paths == ("yes/0a7c2a8d_nohash_0.wav",)
    assert len(ds.select("validation")) == 0
    assert load(tmp_path, classes=["no"], splits=["train"], progress=False).classes == ("no",)


def test_dataset_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no WAV files"):
        load(tmp_path)
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "a_nohash_0.wav").write_bytes(b"not audio")
    with pytest.raises(UsageError, match=r"yes/a_nohash_0\.wav: not a WAV"):
        load(tmp_path)
    with pytest.raises(UsageError, match="no such folder"):
        load(tmp_path / "missing")


def test_alternating_order_cycles_through_the_classes() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert alternating_order(labels).tolist() == [0, 3, 5, 1, 4, 6]
    assert alternating_order(labels, steps=7).tolist() == [0, 3, 5, 1, 4, 6, 2]
    assert alternating_order(labels, steps=5, order=[2, 0]).tolist() == [5, 0, 6, 1, 7]
    shuffled = alternating_order(labels, seed=1)
    assert labels[shuffled].tolist() == [0, 1, 2, 0, 1, 2]
    assert sorted(shuffled[1::3].tolist()) == [3, 4]


def test_dataset_alternating_is_the_paper_order(corpus: Path) -> None:
    ds = load(corpus, progress=False).select("train")
    seq = ds.alternating(steps=9)
    assert [seq.classes[i] for i in seq.labels] == [*WORDS, SILENCE_CLASS] * 3
    two = ds.alternating(classes=["montserrat", SILENCE_CLASS])
    assert [two.classes[i] for i in two.labels] == ["montserrat", SILENCE_CLASS] * 4


# --- cli.py -----------------------------------------------------------------------------------


def test_cli_synth_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    code = main(
        ["data", "synth", "--words", "vermell,verd,blau", "--per-word", "3", "--out", str(out)]
    )
    assert code == 0
    assert "wrote 9 clips" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "9 clips, 3 classes" in text
    assert "every voice is in one split only" in text
    assert "all 9 WAV files read" in text


def test_cli_info_reports_a_broken_wav(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    shutil.copytree(corpus, out)
    victim = sorted((out / "montserrat").glob("*.wav"))[0]
    victim.write_bytes(victim.read_bytes()[:44])
    assert main(["data", "info", str(out)]) == 2
    assert f"{victim}: WAV file is empty" in capsys.readouterr().err


def test_cli_import_converts_to_board_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    _speech_commands_tree(tmp_path / "src")
    # Execute
    code = main(
        [
            "data",
            "import",
            str(tmp_path / "src"),
            "--words",
            "yes",
            "--silence",
            "5",
            "--out",
            str(tmp_path / "dst"),
        ]
    )
    # Assert
    assert code == 0
    ds: Dataset = load(tmp_path / "dst", progress=False)
    assert ds.classes == ("yes", SILENCE_CLASS)
    assert len(ds) == 7 + 5
    assert (ds.lengths == 16000).all()
    src = load(tmp_path / "src", classes=["yes"], progress=False)
    for i, p in enumerate(src.paths):
        j = ds.paths.index(p)
        assert np.array_equal(ds.audio[j], src.audio[i])
        assert ds.split[j] == src.split[i]
    with wave.open(str(tmp_path / "dst" / "yes" / "ffff0000_nohash_0.wav")) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 16000, 16000)
