"""The keyword-free pre-training corpus: the word list, the exclusion rule, and its rendering.

The extractor of the ``dscnn`` family (docs/learning.md, section 2) is pre-trained on words that
are never a fleet's keywords, so that a board's head learns its user's words from an embedding
that has never seen them. The words come from :data:`WORDS_FILE` (package data: common words of
seven espeak-ng languages, written by hand); each is spoken by voices of its own language.

**The exclusion rule.** A vocabulary word ``w`` is dropped when, for some excluded word ``k``
(by default :data:`DEFAULT_EXCLUDE`: every keyword tinyfed ships and their translations), after
:func:`fold` (lower case, accents stripped)

* ``w == k``, or
* ``w`` and ``k`` start with the same three letters (``verano`` for ``verd``, ``mona`` for
  ``montserrat``; a shorter word compares all its letters), or
* their edit distance (Levenshtein: insertions, deletions, substitutions) is at most 2
  (``bed`` and ``read`` for ``red``, ``vent`` for ``vert``).

**Rendering** reuses :mod:`tinyfed.data.synth` unchanged: its voices and variants, speed, pitch,
placement, gain and noise (its :func:`~tinyfed.data.synth.plan` per language, its
:func:`~tinyfed.data.synth.render` per clip), and its split by voice **variant**, so that the
validation clips are spoken by variants no training clip has (the test share is 0: the keyword
evaluation is the test). On top, a share of the clips gets a synthetic room reverberation
(:func:`reverberate`). A ``_silence`` class (noise only) is added, as the fleets have one.
The clips become the extractor's int8 input with the reference :func:`tinyfed.features.logmel.
features_int8`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.data import synth
from tinyfed.data.wav import CLIP_SAMPLES, SAMPLE_RATE
from tinyfed.errors import UsageError
from tinyfed.features import logmel

I8 = npt.NDArray[np.int8]
I16 = npt.NDArray[np.int16]

WORDS_FILE = "words.txt"  #: the vocabulary, package data of tinyfed.pretrain
LANGUAGES = ("ca", "es", "en", "fr", "it", "pt", "de")  #: the sections of WORDS_FILE, in order

#: The keyword sets tinyfed knows (the paper's colours, the demo's mountains: README, demo).
KEYWORD_SETS: dict[str, tuple[str, ...]] = {
    "colours": ("vermell", "verd", "blau"),
    "mountains": ("montserrat", "pedraforca"),
}
#: Translations of the colours into the vocabulary's languages (and common feminine/plural
#: forms); the mountains are names, the same in every language.
TRANSLATIONS: tuple[str, ...] = (
    *("vermella", "roig", "roja", "vermells", "verda", "verds", "blava", "blaus"),  # ca
    *("rojo", "roja", "colorado", "verde", "azul"),  # es
    *("red", "green", "blue"),  # en
    *("rouge", "vert", "verte", "bleu", "bleue"),  # fr
    *("rosso", "rossa", "verde", "blu"),  # it
    *("vermelho", "vermelha", "verde", "azul"),  # pt
    *("rot", "grün", "blau"),  # de
)
DEFAULT_EXCLUDE: tuple[str, ...] = tuple(
    dict.fromkeys([w for ws in KEYWORD_SETS.values() for w in ws] + list(TRANSLATIONS))
)
PREFIX_LETTERS = 3  #: same first three letters = a look-alike (the brief's rule)
MAX_EDIT_DISTANCE = 2  #: edit distance at most this = a look-alike (the brief's rule)

VALIDATION_PERCENT = 15.0  #: share of voice variants held out for validation
REVERB_SHARE = 1 / 3  #: share of clips given a synthetic room (cheap, and boards hear rooms)
RT60_S = (0.15, 0.6)  #: reverberation time range drawn from, seconds (living rooms to halls)
REVERB_STREAM = 5  #: the reverb's random stream (synth uses 0..4 for a clip)
RENDER_CHUNK = 256  #: clips rendered before their features are computed (memory bound)


# ---------------------------------------------------------------------------------------------
# The vocabulary and the exclusion rule


def fold(word: str) -> str:
    """Lower case, accents stripped (``"Grün"`` -> ``"grun"``, ``"fenêtre"`` -> ``"fenetre"``)."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each costing 1."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def lookalike(word: str, keyword: str) -> str | None:
    """Why ``word`` is a look-alike of ``keyword`` (the module's rule), or ``None``."""
    w, k = fold(word), fold(keyword)
    if w == k:
        return "the same word"
    if w[:PREFIX_LETTERS] == k[:PREFIX_LETTERS]:
        return f"same first {PREFIX_LETTERS} letters as {keyword!r}"
    d = edit_distance(w, k)
    if d <= MAX_EDIT_DISTANCE:
        return f"edit distance {d} to {keyword!r}"
    return None


def exclusion_reason(word: str, exclude: Iterable[str]) -> str | None:
    """The first rule that drops ``word`` given the excluded words, or ``None`` to keep it."""
    for k in exclude:
        why = lookalike(word, k)
        if why is not None:
            return why
    return None


def parse_exclude(text: str) -> tuple[str, ...]:
    """``--exclude`` (comma-separated) as checked words; :class:`UsageError` names a bad one."""
    return synth.parse_words(text)


def load_vocabulary(text: str | None = None) -> list[tuple[str, str]]:
    """``(language, word)`` pairs of :data:`WORDS_FILE` (or of ``text``), in file order."""
    if text is None:
        text = resources.files("tinyfed.pretrain").joinpath(WORDS_FILE).read_text("utf-8")
    pairs: list[tuple[str, str]] = []
    lang = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            lang = line[1:-1]
            continue
        if not lang:
            raise ValueError(f"{WORDS_FILE} line {n}: words before the first [language]")
        pairs.extend((lang, w) for w in synth.parse_words(line.split()))
    return pairs


@dataclass(frozen=True)
class Selection:
    """The corpus words and what was left out.

    Attributes:
        words: ``(language, word)`` of the corpus, language by language in file order.
        excluded: ``(word, reason)`` of the vocabulary words the rule dropped.
        duplicates: vocabulary words dropped because an earlier language has them.
    """

    words: tuple[tuple[str, str], ...]
    excluded: tuple[tuple[str, str], ...]
    duplicates: tuple[str, ...]


def select_words(
    vocabulary: Sequence[tuple[str, str]],
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    words_per_language: int | None = None,
) -> Selection:
    """Apply the exclusion rule, drop repeats, keep the first ``words_per_language`` each."""
    if words_per_language is not None and words_per_language < 1:
        raise UsageError(f"--words-per-language must be at least 1, got {words_per_language}")
    kept: list[tuple[str, str]] = []
    excluded: list[tuple[str, str]] = []
    duplicates: list[str] = []
    seen: set[str] = set()
    per_lang: dict[str, int] = {}
    for lang, word in vocabulary:
        if word in seen:
            duplicates.append(word)
            continue
        seen.add(word)
        why = exclusion_reason(word, exclude)
        if why is not None:
            excluded.append((word, why))
            continue
        if words_per_language is not None and per_lang.get(lang, 0) >= words_per_language:
            continue
        per_lang[lang] = per_lang.get(lang, 0) + 1
        kept.append((lang, word))
    return Selection(tuple(kept), tuple(excluded), tuple(duplicates))


# ---------------------------------------------------------------------------------------------
# Planning and rendering


@dataclass(frozen=True)
class CorpusConfig:
    """What the corpus is made of.

    Attributes:
        words: ``(language, word)`` pairs, in label order (``_silence`` comes last).
        clips_per_word: clips of each word (and of ``_silence``), validation included.
        seed: the corpus seed (synth's): equal seeds give equal clips.
        validation_percent: share of voice variants (and clips) held out for validation.
        jobs: espeak-ng processes at once.
    """

    words: tuple[tuple[str, str], ...]
    clips_per_word: int
    seed: int
    validation_percent: float = VALIDATION_PERCENT
    jobs: int = field(default_factory=synth.default_jobs)

    @property
    def classes(self) -> tuple[str, ...]:
        return (*(w for _, w in self.words), synth.SILENCE_CLASS)


def plan_corpus(config: CorpusConfig, variants: Sequence[str]) -> list[synth.ClipSpec]:
    """Every clip's parameters: synth's plan per language, relabelled into one class list."""
    if not config.words:
        raise UsageError("the corpus has no words (all excluded?)")
    synth.check_per_word(config.clips_per_word)
    label = {w: i for i, w in enumerate(config.classes)}
    base = synth.SynthConfig(
        words=(),
        out=Path("."),
        per_word=config.clips_per_word,
        seed=config.seed,
        validation_percent=config.validation_percent,
        testing_percent=0.0,
    )
    specs: list[synth.ClipSpec] = []
    for lang in dict.fromkeys(lang for lang, _ in config.words):
        words = tuple(w for wl, w in config.words if wl == lang)
        specs += synth.plan(replace(base, words=words, languages=(lang,)), variants)
    specs += synth.plan(replace(base, silence=True), variants)
    return [replace(s, label=label[s.word]) for s in specs]


def reverberate(audio: I16, rng: np.random.Generator) -> I16:
    """A synthetic room: convolve with exponentially decaying noise, keeping the peak level.

    The impulse response is a direct path of 1 followed by white noise decaying by 60 dB over
    an RT60 drawn from :data:`RT60_S`, scaled so the reverberant energy is at most the direct's.
    """
    rt60 = float(rng.uniform(*RT60_S))
    n_tail = int(rt60 * SAMPLE_RATE)
    t = np.arange(1, n_tail + 1) / SAMPLE_RATE
    tail = rng.standard_normal(n_tail) * np.exp(-6.9 * t / rt60)  # ln(1000) = 6.9: -60 dB
    tail *= float(rng.uniform(0.3, 1.0)) / max(float(np.sqrt(np.sum(tail**2))), 1e-12)
    ir = np.concatenate(([1.0], tail))
    x = audio.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(x) + len(ir))))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    peak_in, peak_out = float(np.max(np.abs(x))), float(np.max(np.abs(wet)))
    if peak_out > 0:
        wet *= peak_in / peak_out
    out: I16 = np.clip(np.round(wet), -32768, 32767).astype(np.int16)
    return out


def render_clip(spec: synth.ClipSpec, espeak: str) -> I16:
    """One clip as synth renders it, reverberated for :data:`REVERB_SHARE` of the clips."""
    audio, _ = synth.render(spec, espeak)
    rng = synth._rng(spec.seed, spec.word, spec.index, REVERB_STREAM)
    if spec.word != synth.SILENCE_CLASS and rng.random() < REVERB_SHARE:
        audio = reverberate(audio, rng)
    assert audio.shape == (CLIP_SAMPLES,)
    return audio


@dataclass(frozen=True)
class Corpus:
    """The rendered corpus as the extractor sees it.

    Attributes:
        x: int8 features ``[n, 50, 40]`` (docs/learning.md, section 1).
        y: class index per clip.
        validation: ``True`` for the clips of held-out voice variants.
        classes: class names in label order.
        variants: voice variants by split.
    """

    x: I8
    y: npt.NDArray[np.int64]
    validation: npt.NDArray[np.bool_]
    classes: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]

    def split(self, validation: bool) -> tuple[I8, npt.NDArray[np.int64]]:
        mask = self.validation == validation
        return self.x[mask], self.y[mask]


def installed_variants() -> tuple[str, tuple[str, ...]]:
    """espeak-ng's executable and the variants synth uses by default."""
    espeak = synth.find_espeak()
    return espeak, synth.default_variants(synth.list_variants(espeak))


def build(config: CorpusConfig, progress: Callable[[int, int], None] | None = None) -> Corpus:
    """Render every clip of ``config`` and compute its int8 features.

    Args:
        config: the corpus.
        progress: called with ``(done, total)`` after each chunk of clips.
    """
    if config.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {config.jobs}")
    espeak, variants = installed_variants()
    synth.check_languages(espeak, tuple(dict.fromkeys(lang for lang, _ in config.words)))
    specs = plan_corpus(config, variants)
    x = np.empty((len(specs), *logmel.SHAPE), np.int8)
    with ThreadPoolExecutor(config.jobs) as pool:
        for start in range(0, len(specs), RENDER_CHUNK):
            chunk = specs[start : start + RENDER_CHUNK]
            audio = np.stack(list(pool.map(lambda s: render_clip(s, espeak), chunk)))
            x[start : start + len(chunk)] = logmel.features_int8(audio)
            if progress is not None:
                progress(start + len(chunk), len(specs))
    by_split = synth.split_variants(variants, config.seed, config.validation_percent, 0.0)
    return Corpus(
        x=x,
        y=np.array([s.label for s in specs], np.int64),
        validation=np.array([s.split == "validation" for s in specs]),
        classes=config.classes,
        variants={k: v for k, v in by_split.items() if v},
    )
