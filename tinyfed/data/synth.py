"""Synthesize a keyword corpus with espeak-ng, in the Speech Commands layout.

(About 570 lines: the voices, the plan and the rendering are one pipeline whose seeded choices
must stay in one order for a corpus to be reproducible; the noise and the trimming of a rendered
word are in :mod:`tinyfed.data.noise`.) Every clip is one second of 16 kHz mono int16, as a
board records it. What varies from clip to
clip: the voice (an espeak-ng language such as ``ca``, ``es`` or ``en`` plus one of its ~100
voice variants), the speaking speed and pitch, the position of the word in the second, its
level, and background noise (white, pink, brown or mains hum) at several signal-to-noise ratios.
``_silence`` clips hold noise only.

The split is by **variant**: a variant (``m3``, ``Demonic``, ...) sets the timbre of a voice in
every language, so all voices of a test variant are kept out of training and validation, which
makes the corpus speaker-disjoint in the strictest sense (and therefore disjoint by voice, the
``language+variant`` pair, too).

Every random choice comes from a generator seeded by ``(seed, word, clip index)``, so a corpus
is byte-for-byte reproducible for a seed whatever the number of worker threads, and the
manifest row of a clip is enough to make it again. Output::

    DIR/classes.txt            class names, in label order (the --words order, then _silence)
    DIR/WORD/VOICE_nohash_N.wav
    DIR/validation_list.txt    relative paths of the validation clips
    DIR/testing_list.txt       relative paths of the test clips
    DIR/manifest.csv           one row per clip with all its generation parameters
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.data._progress import Progress
from tinyfed.data.noise import make_noise, trim_silence
from tinyfed.data.wav import CLIP_SAMPLES, SAMPLE_RATE, decode_wav, resample, to_int16, write_wav
from tinyfed.errors import UsageError

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

SILENCE_CLASS = "_silence"  #: the class of noise-only clips (the paper's third "keyword")
SPLITS = ("train", "validation", "test")
CLASSES_FILE = "classes.txt"
MANIFEST_FILE = "manifest.csv"
VALIDATION_LIST = "validation_list.txt"  #: Speech Commands' name
TESTING_LIST = "testing_list.txt"  #: Speech Commands' name

DEFAULT_LANGUAGES = ("ca", "es", "en")  #: the paper's words are Catalan; espeak-ng has all three
EXCLUDED_VARIANTS = ("whisper", "whisperf")  #: whispered speech drowns in noise at 5 dB SNR
DEFAULT_PER_WORD = 100
MAX_PER_WORD = 100_000
DEFAULT_VALIDATION_PERCENT = 10.0
DEFAULT_TESTING_PERCENT = 10.0

SPEED_WPM = (120, 200)  #: espeak-ng speed range drawn from, words per minute (default 175)
PITCH = (25, 75)  #: espeak-ng pitch adjustment range drawn from, 0..99 (default 50)
MAX_SPEED_WPM = 450  #: espeak-ng's fastest speed, used when a word must fit into one second
GAIN_DB = (-20.0, -1.0)  #: the word's peak level, dB below full scale
NOISES = ("none", "white", "pink", "brown", "hum")  #: drawn with equal probability
SNR_DB = (5.0, 10.0, 20.0, 30.0)  #: speech RMS over the word vs. noise RMS
SILENCE_LEVEL_DB = (-65.0, -25.0)  #: RMS level of a ``_silence`` clip, dB below full scale

#: Columns of ``manifest.csv``, in order.
MANIFEST_COLUMNS = (
    "path",
    "word",
    "label",
    "split",
    "voice",
    "language",
    "variant",
    "speed",
    "pitch",
    "offset_ms",
    "duration_ms",
    "gain_db",
    "noise",
    "snr_db",
    "fit",
    "seed",
    "index",
)

# Latin letters of Catalan, Spanish, English (and their neighbours), with ' - and the Catalan
# middle dot between letters. Anything else (digits, symbols, emoji) espeak-ng would spell out.
_LETTERS = "a-zà-öø-ÿß\u0100-\u017f"
_WORD_RE = re.compile(rf"[{_LETTERS}]+(?:['\-·][{_LETTERS}]+)*")


def default_jobs() -> int:
    """espeak-ng processes to run at once: the CPU count, at most 4."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class SynthConfig:
    """What ``tinyfed data synth`` makes.

    Attributes:
        words: the keywords, in label order.
        out: the corpus folder.
        per_word: clips per keyword (and for ``_silence``).
        seed: the corpus seed; equal seeds give equal bytes.
        silence: also make a ``_silence`` class.
        languages: espeak-ng languages to speak in.
        variants: espeak-ng voice variants; empty means all installed but :data:`EXCLUDED_VARIANTS`.
        validation_percent: share of variants (and clips) for validation.
        testing_percent: share of variants (and clips) for test.
        jobs: espeak-ng processes run in parallel.
        force: replace a previous corpus in ``out``.
    """

    words: tuple[str, ...]
    out: Path
    per_word: int = DEFAULT_PER_WORD
    seed: int = 0
    silence: bool = False
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    variants: tuple[str, ...] = ()
    validation_percent: float = DEFAULT_VALIDATION_PERCENT
    testing_percent: float = DEFAULT_TESTING_PERCENT
    jobs: int = field(default_factory=default_jobs)
    force: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order."""
        return self.words + ((SILENCE_CLASS,) if self.silence else ())


@dataclass(frozen=True)
class ClipSpec:
    """Everything drawn for one clip before synthesis.

    Attributes:
        word: the keyword, or :data:`SILENCE_CLASS`.
        label: the class index.
        index: the clip's number within its class.
        split: ``train``, ``validation`` or ``test``.
        voice: ``language+variant`` (``noiseNNNN`` for silence).
        language: espeak-ng language ("" for silence).
        variant: espeak-ng variant ("" for silence).
        speed: words per minute.
        pitch: 0..99.
        offset_frac: where the word starts, as a fraction of the free room in the second.
        gain_db: peak level of the word (RMS level of the noise for silence), dBFS.
        noise: one of :data:`NOISES`.
        snr_db: signal-to-noise ratio, ``None`` without noise (or for silence).
        seed: the corpus seed.
    """

    word: str
    label: int
    index: int
    split: str
    voice: str
    language: str
    variant: str
    speed: int
    pitch: int
    offset_frac: float
    gain_db: float
    noise: str
    snr_db: float | None
    seed: int

    @property
    def relpath(self) -> str:
        """The clip's path relative to the corpus folder (Speech Commands naming)."""
        return f"{self.word}/{self.voice}_nohash_{self.index}.wav"


# ---------------------------------------------------------------------------------------------
# Validation of the user's choices


def parse_words(text: str | Sequence[str]) -> tuple[str, ...]:
    """Check a keyword list (``"montserrat,pedraforca"`` or a sequence) and return it.

    Words are lower-cased. Raises :class:`UsageError` for an empty list, an empty word, a
    duplicate, or characters espeak-ng would not speak as a word.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    words = tuple(w.strip().lower() for w in items)
    if not words or words == ("",):
        raise UsageError("no keywords given; example: --words montserrat,pedraforca")
    seen: set[str] = set()
    for i, w in enumerate(words, 1):
        if not w:
            raise UsageError(f"keyword {i} of {len(words)} is empty (a stray comma?)")
        if not _WORD_RE.fullmatch(w):
            raise UsageError(
                f"keyword {w!r} cannot be spoken as a word: use letters (a-z, accented letters, "
                "and ' - · between letters), no digits, spaces or symbols"
            )
        if w in seen:
            raise UsageError(f"keyword {w!r} is given twice")
        seen.add(w)
    return words


def check_per_word(n: int) -> int:
    """Return ``n`` if it is a sensible clip count, else raise :class:`UsageError`."""
    if not 1 <= n <= MAX_PER_WORD:
        raise UsageError(f"--per-word must be between 1 and {MAX_PER_WORD}, got {n}")
    return n


def find_espeak() -> str:
    """The espeak-ng executable on PATH, or a :class:`UsageError` saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise UsageError(
            "espeak-ng is not installed (not found on PATH); install it with "
            "`sudo apt-get install espeak-ng` (macOS: `brew install espeak-ng`)"
        )
    return exe


def list_variants(espeak: str) -> tuple[str, ...]:
    """The voice variants espeak-ng has (``espeak-ng --voices=variant``), sorted."""
    out = _run([espeak, "--voices=variant"]).stdout.decode("utf-8", "replace")
    names = {m.group(1) for m in re.finditer(r"!v/(\S+)", out)}
    return tuple(sorted(names))


def default_variants(installed: Sequence[str]) -> tuple[str, ...]:
    """The variants used when none are given: all installed but :data:`EXCLUDED_VARIANTS`."""
    return tuple(v for v in installed if v not in EXCLUDED_VARIANTS)


def check_languages(espeak: str, languages: Sequence[str]) -> tuple[str, ...]:
    """Check that espeak-ng has a voice for each language; raise :class:`UsageError` if not."""
    if not languages:
        raise UsageError("no languages given; example: --languages ca,es,en")
    for lang in languages:
        if not re.fullmatch(r"[a-z]{2,3}(?:-[a-z0-9]+)*", lang):
            raise UsageError(f"{lang!r} is not an espeak-ng language code (e.g. ca, es, en-us)")
        res = _run([espeak, "-v", lang, "--stdout", "a"], check=False)
        if res.returncode != 0 or not res.stdout:
            raise UsageError(
                f"espeak-ng has no voice for language {lang!r}; "
                "`espeak-ng --voices` lists the installed ones"
            )
    if len(set(languages)) != len(languages):
        raise UsageError(f"a language is given twice in {','.join(languages)}")
    return tuple(languages)


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        res = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    except OSError as exc:
        raise UsageError(f"cannot run {cmd[0]}: {exc}") from exc
    if check and res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace").strip()
        raise UsageError(f"{' '.join(cmd)} failed (exit {res.returncode}): {err}")
    return res


# ---------------------------------------------------------------------------------------------
# Planning: all random draws, before any audio is made


def _rng(seed: int, word: str, index: int, stream: int) -> np.random.Generator:
    """Stream 0: a clip's parameters; 1: its noise; 2..4: a word's voice order per split."""
    key = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, key, index, stream])


def split_sizes(n: int, validation_percent: float, testing_percent: float) -> tuple[int, ...]:
    """Train/validation/test counts out of ``n``; a split with a share gets at least one.

    Example: ``split_sizes(100, 10, 10) == (80, 10, 10)``, ``split_sizes(5, 10, 10) == (3, 1, 1)``.
    """
    sizes = []
    for pct in (validation_percent, testing_percent):
        k = round(n * pct / 100)
        sizes.append(max(k, 1) if pct > 0 else 0)
    if n - sum(sizes) < 1:  # too few to give every split one: plain rounding
        sizes = [math.floor(n * p / 100) for p in (validation_percent, testing_percent)]
    return (n - sum(sizes), sizes[0], sizes[1])


def split_variants(
    variants: Sequence[str],
    seed: int,
    validation_percent: float = DEFAULT_VALIDATION_PERCENT,
    testing_percent: float = DEFAULT_TESTING_PERCENT,
) -> dict[str, tuple[str, ...]]:
    """Assign each voice variant to one split, by a seeded shuffle of the sorted names.

    Returns:
        ``{"train": (...), "validation": (...), "test": (...)}``, each sorted.
    """
    names = sorted(set(variants))
    order = [names[i] for i in np.random.default_rng([seed, 0x5917]).permutation(len(names))]
    n_train, n_val, _ = split_sizes(len(names), validation_percent, testing_percent)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return {s: tuple(sorted(p)) for s, p in zip(SPLITS, parts, strict=True)}


def plan(config: SynthConfig, variants: Sequence[str]) -> list[ClipSpec]:
    """Draw every clip's parameters; a pure function of ``config`` and ``variants``."""
    by_split = split_variants(
        variants, config.seed, config.validation_percent, config.testing_percent
    )
    for s in SPLITS:
        share = {"validation": config.validation_percent, "test": config.testing_percent}
        if not by_split[s] and share.get(s, 100.0) > 0:
            raise UsageError(
                f"{len(set(variants))} voice variants are too few to give the {s} split one; "
                "use more --variants"
            )
    sizes = split_sizes(config.per_word, config.validation_percent, config.testing_percent)
    split_of = [s for s, k in zip(SPLITS, sizes, strict=True) for _ in range(k)]
    specs: list[ClipSpec] = []
    for label, word in enumerate(config.words):
        # Cycle through a shuffled list of each split's voices, so all of them get used.
        voices = {}
        for s in SPLITS:
            pairs = [(lang, v) for lang in config.languages for v in by_split[s]]
            perm = _rng(config.seed, word, 0, 2 + SPLITS.index(s)).permutation(len(pairs))
            voices[s] = [pairs[i] for i in perm]
        seen = dict.fromkeys(SPLITS, 0)
        for index, split in enumerate(split_of):
            lang, variant = voices[split][seen[split] % len(voices[split])]
            seen[split] += 1
            rng = _rng(config.seed, word, index, 0)
            speed = int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1))
            pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
            offset_frac = float(rng.random())
            gain_db = round(float(rng.uniform(*GAIN_DB)), 1)
            noise = NOISES[int(rng.integers(len(NOISES)))]
            snr = SNR_DB[int(rng.integers(len(SNR_DB)))]
            specs.append(
                ClipSpec(
                    word=word,
                    label=label,
                    index=index,
                    split=split,
                    voice=f"{lang}+{variant}",
                    language=lang,
                    variant=variant,
                    speed=speed,
                    pitch=pitch,
                    offset_frac=offset_frac,
                    gain_db=gain_db,
                    noise=noise,
                    snr_db=None if noise == "none" else snr,
                    seed=config.seed,
                )
            )
    if config.silence:
        specs += silence_specs(
            config, split_of, lambda index: _rng(config.seed, SILENCE_CLASS, index, 0)
        )
    return specs


def silence_specs(
    config: SynthConfig, split_of: Sequence[str], rng_of: Callable[[int], np.random.Generator]
) -> list[ClipSpec]:
    """The ``_silence`` clips of a corpus (noise only), one per entry of ``split_of``; each
    clip's level and noise come from ``rng_of(index)`` (every engine seeds its own)."""
    specs = []
    label = len(config.words)
    for index, split in enumerate(split_of):
        rng = rng_of(index)
        specs.append(
            ClipSpec(
                word=SILENCE_CLASS,
                label=label,
                index=index,
                split=split,
                voice=f"noise{index:04d}",
                language="",
                variant="",
                speed=0,
                pitch=0,
                offset_frac=0.0,
                gain_db=round(float(rng.uniform(*SILENCE_LEVEL_DB)), 1),
                noise=NOISES[1 + int(rng.integers(len(NOISES) - 1))],
                snr_db=None,
                seed=config.seed,
            )
        )
    return specs


# ---------------------------------------------------------------------------------------------
# Rendering one clip


def speak(espeak: str, word: str, language: str, variant: str, *, speed: int, pitch: int) -> F64:
    """Synthesize ``word`` with espeak-ng; float samples at 16 kHz, silence trimmed."""
    cmd = [espeak, "-b", "1", "-v", f"{language}+{variant}", "-s", str(speed), "-p", str(pitch)]
    res = _run([*cmd, "--stdout", word])
    voice = f"{language}+{variant}"
    samples, fmt = decode_wav(res.stdout, f"espeak-ng output for {word!r} ({voice})")
    x = resample(samples.mean(axis=1), fmt.rate, SAMPLE_RATE)
    trimmed = trim_silence(x)
    if len(trimmed) == 0:
        raise UsageError(f"espeak-ng produced no speech for {word!r} with voice {voice}")
    return trimmed


def render(spec: ClipSpec, espeak: str) -> tuple[npt.NDArray[np.int16], dict[str, str]]:
    """Make one clip: its samples and its manifest row."""
    n = CLIP_SAMPLES
    noise_rng = _rng(spec.seed, spec.word, spec.index, 1)
    row = {
        "path": spec.relpath,
        "word": spec.word,
        "label": str(spec.label),
        "split": spec.split,
        "voice": spec.voice,
        "language": spec.language,
        "variant": spec.variant,
        "speed": "",
        "pitch": "",
        "offset_ms": "",
        "duration_ms": "",
        "gain_db": f"{spec.gain_db:.1f}",
        "noise": spec.noise,
        "snr_db": "" if spec.snr_db is None else f"{spec.snr_db:g}",
        "fit": "",
        "seed": str(spec.seed),
        "index": str(spec.index),
    }
    if spec.word == SILENCE_CLASS:
        audio = make_noise(spec.noise, n, noise_rng) * 10 ** (spec.gain_db / 20)
        return to_int16(audio), row
    speed, fit = spec.speed, "ok"
    word = speak(espeak, spec.word, spec.language, spec.variant, speed=speed, pitch=spec.pitch)
    if len(word) > n:  # longer than a second: speak faster, then cut if still too long
        speed = min(MAX_SPEED_WPM, math.ceil(speed * len(word) / n * 1.1))
        word = speak(espeak, spec.word, spec.language, spec.variant, speed=speed, pitch=spec.pitch)
        fit = "faster"
        if len(word) > n:
            logger.warning(
                "%s: %r lasts %.2f s even at %d wpm; cut to 1 s",
                spec.relpath,
                spec.word,
                len(word) / SAMPLE_RATE,
                speed,
            )
            word, fit = word[:n], "cut"
        else:
            logger.debug("%s: spoken at %d wpm to fit in 1 s", spec.relpath, speed)
    audio, offset = place(spec, word, noise_rng)
    row.update(
        speed=str(speed),
        pitch=str(spec.pitch),
        offset_ms=f"{offset * 1000 / SAMPLE_RATE:g}",
        duration_ms=f"{len(word) * 1000 / SAMPLE_RATE:g}",
        fit=fit,
    )
    return to_int16(audio), row


def place(spec: ClipSpec, word: F64, noise_rng: np.random.Generator) -> tuple[F64, int]:
    """Scale a trimmed word (at most one second) to its level, place it and add the noise.

    Shared by every engine (:mod:`tinyfed.data.festival` too); returns the second and the
    sample where the word starts.
    """
    n = CLIP_SAMPLES
    word = word * (10 ** (spec.gain_db / 20) / np.max(np.abs(word)))
    offset = int(spec.offset_frac * (n - len(word) + 1))
    audio = np.zeros(n)
    audio[offset : offset + len(word)] = word
    if spec.snr_db is not None:
        speech_rms = float(np.sqrt(np.mean(word**2)))
        audio += make_noise(spec.noise, n, noise_rng) * speech_rms * 10 ** (-spec.snr_db / 20)
    return audio, offset


# ---------------------------------------------------------------------------------------------
# The whole corpus


def synthesize(config: SynthConfig, progress: bool | None = None) -> list[dict[str, str]]:
    """Make the corpus described by ``config``; return the manifest rows.

    Args:
        config: what to make.
        progress: draw a progress bar on stderr (default: when stderr is a terminal).

    Raises:
        UsageError: espeak-ng missing, a bad word list or count, an unknown language or
            variant, or an output folder that holds something else.
    """
    words = parse_words(config.words)
    check_per_word(config.per_word)
    if config.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {config.seed}")
    if config.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {config.jobs}")
    for name, pct in (("validation", config.validation_percent), ("test", config.testing_percent)):
        if not 0 <= pct < 50:
            raise UsageError(f"the {name} share must be in [0, 50) percent, got {pct:g}")
    espeak = find_espeak()
    languages = check_languages(espeak, config.languages)
    installed = list_variants(espeak)
    if config.variants:
        unknown = sorted(set(config.variants) - set(installed))
        if unknown:
            raise UsageError(
                f"unknown espeak-ng variant(s) {', '.join(unknown)}; "
                "`espeak-ng --voices=variant` lists them (the name after !v/)"
            )
        variants = tuple(config.variants)
    else:
        variants = default_variants(installed)
    cfg = replace(config, words=words, languages=languages)
    specs = plan(cfg, variants)
    _prepare_out(cfg.out, cfg.force)
    for c in cfg.classes:
        (cfg.out / c).mkdir(parents=True, exist_ok=True)

    def job(spec: ClipSpec) -> dict[str, str]:
        audio, row = render(spec, espeak)
        write_wav(cfg.out / spec.relpath, audio)
        bar.advance()
        return row

    logger.info(
        "synthesizing %d clips (%s) with %d voice variants x %d languages into %s",
        len(specs),
        ", ".join(cfg.classes),
        len(set(variants)),
        len(languages),
        cfg.out,
    )
    with (
        Progress(len(specs), "synth", enabled=progress) as bar,
        ThreadPoolExecutor(cfg.jobs) as pool,
    ):
        rows = list(pool.map(job, specs))
    _write_index(cfg.out, cfg.classes, rows)
    logger.info("wrote %d clips in %.1f s to %s", len(rows), bar.elapsed, cfg.out)
    return rows


def _prepare_out(out: Path, force: bool) -> None:
    """Make ``out`` ready: new or empty, or (with ``force``) a previous corpus, removed."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    manifest = out / MANIFEST_FILE
    if not force:
        raise UsageError(
            f"{out} is not empty; choose a new folder"
            + (", or pass --force to replace the corpus in it" if manifest.is_file() else "")
        )
    if not manifest.is_file():
        raise UsageError(f"{out} is not empty and holds no {MANIFEST_FILE}; refusing to replace it")
    with manifest.open(newline="", encoding="utf-8") as f:
        old = [row["path"] for row in csv.DictReader(f) if row.get("path")]
    for rel in old:
        (out / rel).unlink(missing_ok=True)
    for name in (MANIFEST_FILE, CLASSES_FILE, VALIDATION_LIST, TESTING_LIST):
        (out / name).unlink(missing_ok=True)
    for d in {(out / rel).parent for rel in old}:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _write_index(out: Path, classes: Iterable[str], rows: list[dict[str, str]]) -> None:
    (out / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    for name, split in ((VALIDATION_LIST, "validation"), (TESTING_LIST, "test")):
        paths = sorted(r["path"] for r in rows if r["split"] == split)
        (out / name).write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    with (out / MANIFEST_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
