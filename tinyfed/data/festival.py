"""Synthesize a keyword corpus with Festival: a second engine, for held-out checks.

A model trained on espeak-ng's voices and scored on other espeak-ng voices still hears one
synthesizer's way of making speech. Festival makes speech in other ways (HTS statistical
parametric voices and diphone concatenation), with other lexicons and letter-to-sound rules, so
a corpus made here is a check on data no espeak-ng clip resembles. The layout, the manifest and
the augmentation are those of :mod:`tinyfed.data.synth`; only the speech differs.

A **voice** is one Festival voice (``ona``, the Catalan HTS voice, and the English and Italian
voices Debian packages) read at one of two pitches (``lo``, ``hi``): the voice's 16 kHz output
is played back 10 % slower or faster (resampled as if it had been recorded at 14.4 or 17.6 kHz),
which shifts its pitch and formants by about -1.8 / +1.7 semitones and its tempo with them.
Five voices x two pitches give ten voice names (``ona+lo`` ... ``pc+hi``). Per clip the speaking
rate is drawn too (Festival's ``Duration_Stretch`` for diphone voices, hts_engine's ``-r`` for
HTS voices), then the word is placed, levelled and noised exactly as in an espeak-ng corpus
(:func:`tinyfed.data.synth.place`). ``_silence`` clips hold noise only.

The split is by Festival voice (both pitches of a voice stay in one split), by the same seeded
shuffle as espeak-ng's variants. Every random draw comes from a generator seeded by
``(seed, word, clip index, stream, engine)``, so a Festival corpus never repeats the noise of an
espeak-ng corpus made with the same seed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.data import synth
from tinyfed.data._progress import Progress
from tinyfed.data.noise import make_noise, trim_silence
from tinyfed.data.synth import SILENCE_CLASS, SPLITS, ClipSpec, SynthConfig
from tinyfed.data.wav import CLIP_SAMPLES, SAMPLE_RATE, decode_wav, resample, to_int16, write_wav
from tinyfed.errors import UsageError

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

ENGINE = "festival"
_ENGINE_TAG = 0xFE57  #: mixed into every seed so Festival draws differ from espeak-ng's


@dataclass(frozen=True)
class FestivalVoice:
    """One Festival voice: our short name, Festival's voice function, its language, its kind."""

    name: str
    festival: str  #: ``(voice_NAME)`` in Festival
    language: str  #: what the voice speaks (ISO 639-1)
    hts: bool  #: an HTS voice (rate via hts_engine ``-r``), else diphone (``Duration_Stretch``)
    package: str  #: the Debian package that installs it


#: Festival voices Debian 12 packages for these languages (``apt-cache search festvox``).
VOICES = (
    FestivalVoice("ona", "upc_ca_ona_hts", "ca", True, "festvox-ca-ona-hts"),
    FestivalVoice("slt", "cmu_us_slt_arctic_hts", "en", True, "festvox-us-slt-hts"),
    FestivalVoice("kal", "kal_diphone", "en", False, "festvox-kallpc16k"),
    FestivalVoice("lp", "lp_diphone", "it", False, "festvox-italp16k"),
    FestivalVoice("pc", "pc_diphone", "it", False, "festvox-itapc16k"),
)

#: Pitch variants: the rate the 16 kHz output is taken to have before resampling to 16 kHz.
#: 14,400 Hz plays it 10 % slower (about -1.8 semitones), 17,600 Hz 10 % faster (+1.7).
PITCH_RATES = {"lo": 14_400, "hi": 17_600}
RATE_PERCENT = (85, 120)  #: speaking rate drawn per clip, % of the voice's own (tempo)
MAX_RATE_PERCENT = 250  #: the fastest rate asked for when a word must fit into one second


def find_festival() -> str:
    """Festival's ``text2wave`` on PATH, or a :class:`UsageError` saying how to install it."""
    exe = shutil.which("text2wave")
    if exe is None:
        raise UsageError(
            "Festival is not installed (text2wave not found on PATH); install it with "
            "`sudo apt-get install festival festvox-ca-ona-hts` "
            f"(more voices: {' '.join(v.package for v in VOICES[1:])})"
        )
    return exe


def installed_voices(text2wave: str) -> tuple[FestivalVoice, ...]:
    """The voices of :data:`VOICES` that Festival can load (one short test utterance each)."""
    found = []
    for v in VOICES:
        try:
            speak(text2wave, "a", v, rate_percent=100)
        except UsageError as exc:
            logger.debug("festival voice %s not usable: %s", v.name, exc)
            continue
        found.append(v)
    return tuple(found)


def speak(text2wave: str, word: str, voice: FestivalVoice, *, rate_percent: int) -> F64:
    """``word`` read by ``voice`` at ``rate_percent`` of its speed; float 16 kHz, trimmed."""
    if voice.hts:
        r = f'(list "-r" {rate_percent / 100:.3f})'
        rate = f"(set! hts_engine_params (append hts_engine_params (list {r})))"
    else:
        rate = f"(Parameter.set 'Duration_Stretch {100 / rate_percent:.4f})"
    # A file, not stdout: text2wave writes a WAV header with a zero data size to a pipe.
    with tempfile.TemporaryDirectory(prefix="tinyfed-festival-") as tmp:
        out = Path(tmp) / "word.wav"
        cmd = [text2wave, "-eval", f"(voice_{voice.festival})", "-eval", rate, "-o", str(out)]
        try:
            res = subprocess.run(
                cmd,
                input=word.encode("latin-1", "replace"),  # Festival's lexicons are ISO-8859-1
                capture_output=True,
                check=False,
                timeout=60,
            )
        except OSError as exc:
            raise UsageError(f"cannot run {text2wave}: {exc}") from exc
        data = out.read_bytes() if out.is_file() else b""
    err = res.stderr.decode("utf-8", "replace").strip()
    if res.returncode != 0 or not data.startswith(b"RIFF"):
        raise UsageError(
            f"festival voice {voice.name} ({voice.festival}) failed on {word!r} "
            f"(exit {res.returncode}): {err or 'no audio'}"
        )
    samples, fmt = decode_wav(data, f"festival output for {word!r} ({voice.name})")
    trimmed = trim_silence(resample(samples.mean(axis=1), fmt.rate, SAMPLE_RATE))
    if len(trimmed) == 0:
        raise UsageError(f"festival produced no speech for {word!r} with voice {voice.name}")
    return trimmed


def shift_pitch(x: F64, variant: str) -> F64:
    """Play ``x`` (16 kHz) as if recorded at the variant's rate: pitch and tempo change."""
    return resample(x, PITCH_RATES[variant], SAMPLE_RATE)


def _rng(seed: int, word: str, index: int, stream: int) -> np.random.Generator:
    """Stream 0: a clip's parameters; 1: its noise; 2..4: a word's voice order per split."""
    key = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, key, index, stream, _ENGINE_TAG])


def plan(config: SynthConfig, voices: Sequence[FestivalVoice]) -> list[ClipSpec]:
    """Draw every clip's parameters; a pure function of ``config`` and ``voices``.

    A :class:`ClipSpec` of this engine has ``language`` = the voice's language, ``variant`` =
    the pitch variant, ``voice`` = ``NAME+VARIANT``, ``speed`` = rate in % of the voice's own
    and ``pitch`` = the playback rate in % (90 or 110).
    """
    by_name = {v.name: v for v in voices}
    by_split = synth.split_variants(
        list(by_name), config.seed, config.validation_percent, config.testing_percent
    )
    for s in SPLITS:
        share = {"validation": config.validation_percent, "test": config.testing_percent}
        if not by_split[s] and share.get(s, 100.0) > 0:
            raise UsageError(
                f"{len(by_name)} festival voices are too few to give the {s} split one; "
                "install more voices (docs/data.md) or pass --validation-percent 0 "
                "--testing-percent 0"
            )
    sizes = synth.split_sizes(config.per_word, config.validation_percent, config.testing_percent)
    split_of = [s for s, k in zip(SPLITS, sizes, strict=True) for _ in range(k)]
    specs: list[ClipSpec] = []
    for label, word in enumerate(config.words):
        pairs_of = {}
        for s in SPLITS:
            pairs = [(by_name[n], p) for n in by_split[s] for p in PITCH_RATES]
            perm = _rng(config.seed, word, 0, 2 + SPLITS.index(s)).permutation(len(pairs))
            pairs_of[s] = [pairs[i] for i in perm]
        seen = dict.fromkeys(SPLITS, 0)
        for index, split in enumerate(split_of):
            voice, variant = pairs_of[split][seen[split] % len(pairs_of[split])]
            seen[split] += 1
            rng = _rng(config.seed, word, index, 0)
            rate = int(rng.integers(RATE_PERCENT[0], RATE_PERCENT[1] + 1))
            offset_frac = float(rng.random())
            gain_db = round(float(rng.uniform(*synth.GAIN_DB)), 1)
            noise = synth.NOISES[int(rng.integers(len(synth.NOISES)))]
            snr = synth.SNR_DB[int(rng.integers(len(synth.SNR_DB)))]
            specs.append(
                ClipSpec(
                    word=word,
                    label=label,
                    index=index,
                    split=split,
                    voice=f"{voice.name}+{variant}",
                    language=voice.language,
                    variant=variant,
                    speed=rate,
                    pitch=round(PITCH_RATES[variant] * 100 / SAMPLE_RATE),
                    offset_frac=offset_frac,
                    gain_db=gain_db,
                    noise=noise,
                    snr_db=None if noise == "none" else snr,
                    seed=config.seed,
                )
            )
    if config.silence:
        specs += synth.silence_specs(
            config, split_of, lambda index: _rng(config.seed, SILENCE_CLASS, index, 0)
        )
    return specs


def render(spec: ClipSpec, text2wave: str) -> tuple[npt.NDArray[np.int16], dict[str, str]]:
    """Make one clip: its samples and its manifest row (the columns of an espeak-ng corpus)."""
    n = CLIP_SAMPLES
    noise_rng = _rng(spec.seed, spec.word, spec.index, 1)
    row = dict.fromkeys(synth.MANIFEST_COLUMNS, "")
    row.update(
        path=spec.relpath,
        word=spec.word,
        label=str(spec.label),
        split=spec.split,
        voice=spec.voice,
        language=spec.language,
        variant=spec.variant,
        gain_db=f"{spec.gain_db:.1f}",
        noise=spec.noise,
        snr_db="" if spec.snr_db is None else f"{spec.snr_db:g}",
        seed=str(spec.seed),
        index=str(spec.index),
    )
    if spec.word == SILENCE_CLASS:
        audio = make_noise(spec.noise, n, noise_rng) * 10 ** (spec.gain_db / 20)
        return to_int16(audio), row
    voice = next(v for v in VOICES if spec.voice.startswith(v.name + "+"))
    rate, fit = spec.speed, "ok"
    word = shift_pitch(speak(text2wave, spec.word, voice, rate_percent=rate), spec.variant)
    if len(word) > n:  # longer than a second: read faster, then cut if still too long
        rate = min(MAX_RATE_PERCENT, math.ceil(rate * len(word) / n * 1.1))
        word = shift_pitch(speak(text2wave, spec.word, voice, rate_percent=rate), spec.variant)
        fit = "faster"
        if len(word) > n:
            logger.warning("%s: %r lasts %.2f s at rate %d %%; cut to 1 s", spec.relpath,
                           spec.word, len(word) / SAMPLE_RATE, rate)  # fmt: skip
            word, fit = word[:n], "cut"
    audio, offset = synth.place(spec, word, noise_rng)
    row.update(
        speed=str(rate),
        pitch=str(spec.pitch),
        offset_ms=f"{offset * 1000 / SAMPLE_RATE:g}",
        duration_ms=f"{len(word) * 1000 / SAMPLE_RATE:g}",
        fit=fit,
    )
    return to_int16(audio), row


def check_voices(
    names: Sequence[str], available: Sequence[FestivalVoice]
) -> tuple[FestivalVoice, ...]:
    """The voices called ``names`` (all available ones if empty); :class:`UsageError` otherwise."""
    if not names:
        if not available:
            raise UsageError(
                "Festival has none of its voices installed; install them with "
                f"`sudo apt-get install {' '.join(v.package for v in VOICES)}`"
            )
        return tuple(available)
    known = {v.name: v for v in VOICES}
    have = {v.name for v in available}
    out = []
    for name in names:
        if name not in known:
            raise UsageError(f"unknown festival voice {name!r}; known voices: {', '.join(known)}")
        if name not in have:
            raise UsageError(
                f"festival voice {name!r} is not installed: `sudo apt-get install "
                f"{known[name].package}`"
            )
        out.append(known[name])
    if len(set(names)) != len(names):
        raise UsageError(f"a festival voice is given twice in {','.join(names)}")
    return tuple(out)


def synthesize(
    config: SynthConfig, voices: Sequence[str] = (), progress: bool | None = None
) -> list[dict[str, str]]:
    """Make the corpus described by ``config`` with Festival; return the manifest rows.

    ``config.languages`` and ``config.variants`` (espeak-ng's) are ignored; ``voices`` names
    Festival voices of :data:`VOICES` (default: every installed one).

    Raises:
        UsageError: Festival or a voice missing, a bad word list or count, or an output folder
            that holds something else.
    """
    words = synth.parse_words(config.words)
    synth.check_per_word(config.per_word)
    if config.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {config.seed}")
    if config.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {config.jobs}")
    for name, pct in (("validation", config.validation_percent), ("test", config.testing_percent)):
        if not 0 <= pct < 50:
            raise UsageError(f"the {name} share must be in [0, 50) percent, got {pct:g}")
    text2wave = find_festival()
    chosen = check_voices(voices, installed_voices(text2wave))
    cfg = replace(config, words=words)
    specs = plan(cfg, chosen)
    synth._prepare_out(cfg.out, cfg.force)
    for c in cfg.classes:
        (cfg.out / c).mkdir(parents=True, exist_ok=True)
    logger.info(
        "synthesizing %d clips (%s) with %d festival voices x %d pitches into %s",
        len(specs),
        ", ".join(cfg.classes),
        len(chosen),
        len(PITCH_RATES),
        cfg.out,
    )

    def job(spec: ClipSpec) -> dict[str, str]:
        audio, row = render(spec, text2wave)
        write_wav(cfg.out / spec.relpath, audio)
        bar.advance()
        return row

    with (
        Progress(len(specs), "festival", enabled=progress) as bar,
        ThreadPoolExecutor(cfg.jobs) as pool,
    ):
        rows = list(pool.map(job, specs))
    synth._write_index(cfg.out, cfg.classes, rows)
    logger.info("wrote %d clips in %.1f s to %s", len(rows), bar.elapsed, cfg.out)
    return rows
