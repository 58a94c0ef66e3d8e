"""The ``tinyfed data`` command: make, inspect and import keyword corpora."""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinyfed.data import edge_impulse, festival, synth
from tinyfed.data.dataset import BACKGROUND_NOISE_DIR, Dataset, load, which_set
from tinyfed.data.synth import (
    CLASSES_FILE,
    MANIFEST_FILE,
    SILENCE_CLASS,
    SPLITS,
    TESTING_LIST,
    VALIDATION_LIST,
)
from tinyfed.data.wav import CLIP_SAMPLES, SAMPLE_RATE, read_wav, write_wav
from tinyfed.errors import UsageError

logger = logging.getLogger(__name__)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


DATA_EPILOG = """\
A corpus is a folder in the Speech Commands layout: WORD/SPEAKER_nohash_N.wav, one folder per
class, with validation_list.txt and testing_list.txt naming the clips held out. tinyfed writes
every clip as the board records it: 1 s, 16 kHz, mono, 16-bit.

examples:
  tinyfed data synth --words montserrat,pedraforca --silence --out corpus/
  tinyfed data info corpus/
  tinyfed data import ~/speech_commands_v0.02 --words yes,no --silence 300 --out sc/
  tinyfed data import edge-impulse-export/ --out paper/
"""

_SNRS = "/".join(f"{s:g}" for s in synth.SNR_DB)
SYNTH_EPILOG = f"""\
Each clip varies the espeak-ng voice (a language and one of ~100 voice variants), speed
({synth.SPEED_WPM[0]}-{synth.SPEED_WPM[1]} wpm), pitch ({synth.PITCH[0]}-{synth.PITCH[1]}), the \
word's position in the second, its level ({synth.GAIN_DB[0]:g} to {synth.GAIN_DB[1]:g} dBFS peak)
and background noise (none, white, pink, brown or mains hum at {_SNRS} dB SNR).
The split is by voice variant: no variant of the test (or validation) split is heard in
training, in any language. The same --seed gives the same bytes. manifest.csv records every
clip's parameters; classes.txt the label order (--words, then _silence).

examples:
  # the paper's Fig. 5 words, plus a silence class, 100 clips each
  tinyfed data synth --words montserrat,pedraforca --silence --out corpus/
  # the paper's Fig. 6 colours, Catalan voices only, another seed
  tinyfed data synth --words vermell,verd,blau --languages ca --seed 7 --out colours/
  # a quick small corpus
  tinyfed data synth --words sí,no --per-word 10 --out /tmp/tiny
  # the same words from another synthesizer (Festival's Catalan, English and Italian voices,
  # two pitches each), for checks on speech no espeak-ng voice made
  tinyfed data synth --engine festival --words vermell,verd,blau --out colours-festival/
"""

INFO_EPILOG = """\
Reads every WAV (so a broken file is found now, not in the middle of training), then prints the
classes, clip counts per split, voices per split and whether any voice is in two splits.

examples:
  tinyfed data info corpus/
  tinyfed data info ~/speech_commands_v0.02 --classes yes,no
"""

IMPORT_EPILOG = """\
Copies a Speech Commands-layout folder (for example Google's speech_commands_v0.02, or your own
recordings at any rate, channels and bit depth) as 1 s, 16 kHz, mono int16 clips, writing the
split lists explicitly (from the source's lists, or its speaker-hash split) and classes.txt.

It also reads Edge Impulse data-acquisition files (.json or .cbor: files, or folders such as an
Edge Impulse export with training/ and testing/): single-axis audio, any interval_ms (resampled
to 16 kHz); the label is the file name up to its first dot (vermell.s1a2.json) unless --label
is given. Every file is checked before anything is written: one bad file names itself and the
field, and nothing is imported (docs/data.md).

examples:
  tinyfed data import ~/speech_commands_v0.02 --words yes,no --silence 300 --out sc/
  tinyfed data import my_recordings/ --out mine/
  tinyfed data import ei-export/ --out paper/                 # Edge Impulse JSON / CBOR
  tinyfed data import take1.cbor take2.cbor --label verd --out more/
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tinyfed data`` and its subcommands to ``sub``."""
    data = sub.add_parser(
        "data",
        help="make, inspect and import keyword corpora (Speech Commands layout)",
        description="Keyword corpora: synthesize one with espeak-ng, check one, import one (Speech "
        "Commands folders, Edge Impulse JSON / CBOR files).",
        epilog=DATA_EPILOG,
        formatter_class=_Formatter,
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = data_sub.add_parser(
        "synth",
        help="synthesize keyword clips with espeak-ng",
        description="Synthesize a keyword corpus with espeak-ng, split by voice.",
        epilog=SYNTH_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("--words", required=True, help="comma-separated keywords, in label order")
    p.add_argument(
        "--engine",
        choices=("espeak-ng", festival.ENGINE),
        default="espeak-ng",
        help="the synthesizer; festival makes a corpus for held-out checks (docs/data.md)",
    )
    p.add_argument(
        "--voices",
        default="all",
        help="festival only: comma-separated voices of "
        + ", ".join(v.name for v in festival.VOICES)
        + "; 'all' means every installed one",
    )
    p.add_argument("--silence", action="store_true", help="add a _silence class of noise clips")
    p.add_argument("--out", required=True, type=Path, help="the corpus folder to create")
    p.add_argument("--per-word", type=int, default=synth.DEFAULT_PER_WORD, help="clips per class")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument(
        "--languages",
        help="espeak-ng languages (see `espeak-ng --voices`); default "
        + ",".join(synth.DEFAULT_LANGUAGES),
    )
    p.add_argument(
        "--variants",
        default="all",
        help="comma-separated espeak-ng voice variants (see `espeak-ng --voices=variant`); "
        "'all' means all but " + ", ".join(synth.EXCLUDED_VARIANTS),
    )
    p.add_argument(
        "--validation-percent",
        type=float,
        default=synth.DEFAULT_VALIDATION_PERCENT,
        help="share of voice variants and clips for validation",
    )
    p.add_argument(
        "--testing-percent",
        type=float,
        default=synth.DEFAULT_TESTING_PERCENT,
        help="share of voice variants and clips for test",
    )
    p.add_argument("--jobs", type=int, default=synth.default_jobs(), help="workers")
    p.add_argument("--force", action="store_true", help="replace a corpus already in --out")
    p.set_defaults(func=_synth)

    p = data_sub.add_parser(
        "info",
        help="check a corpus folder and count its clips",
        description="Check a Speech Commands-layout folder and count its clips.",
        epilog=INFO_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="the corpus folder")
    p.add_argument("--classes", default="all", help="only these classes (comma-separated)")
    p.set_defaults(func=_info)

    p = data_sub.add_parser(
        "import",
        help="copy a Speech Commands folder or Edge Impulse files as 16 kHz mono 1 s clips",
        description=(
            "Copy a Speech Commands-layout folder, or Edge Impulse data-acquisition files "
            "(JSON / CBOR), as 1 s, 16 kHz, mono int16 clips."
        ),
        epilog=IMPORT_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "src",
        type=Path,
        nargs="+",
        metavar="SRC",
        help="a Speech Commands folder, or Edge Impulse .json/.cbor files and folders",
    )
    p.add_argument(
        "--format",
        choices=("auto", "speech-commands", "edge-impulse"),
        default="auto",
        help="what SRC is; auto: Edge Impulse if SRC has .json/.cbor files and no WAV",
    )
    p.add_argument(
        "--label", help="Edge Impulse files: the class of every file (default: its file name)"
    )
    p.add_argument("--out", required=True, type=Path, help="the corpus folder to create")
    p.add_argument("--words", default="all", help="only these classes, in this label order")
    p.add_argument(
        "--silence",
        type=int,
        default=0,
        metavar="N",
        help=f"also cut N one-second {SILENCE_CLASS} clips from SRC/{BACKGROUND_NOISE_DIR}/",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for where silence clips are cut")
    p.set_defaults(func=_import)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _synth(args: argparse.Namespace) -> int:
    languages = synth.DEFAULT_LANGUAGES if args.languages is None else _csv(args.languages)
    config = synth.SynthConfig(
        words=synth.parse_words(args.words),
        out=args.out,
        per_word=synth.check_per_word(args.per_word),
        seed=args.seed,
        silence=args.silence,
        languages=languages,
        variants=() if args.variants == "all" else _csv(args.variants),
        validation_percent=args.validation_percent,
        testing_percent=args.testing_percent,
        jobs=args.jobs,
        force=args.force,
    )
    if args.engine == festival.ENGINE:
        if args.languages is not None or args.variants != "all":
            raise UsageError(
                "--languages and --variants choose espeak-ng voices; with --engine festival "
                "use --voices (" + ", ".join(v.name for v in festival.VOICES) + ")"
            )
        voices = () if args.voices == "all" else _csv(args.voices)
        rows = festival.synthesize(config, voices)
    else:
        if args.voices != "all":
            raise UsageError("--voices chooses festival voices; add --engine festival")
        rows = synth.synthesize(config)
    per_split = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    summary = ", ".join(f"{s} {n}" for s, n in per_split.items())
    print(f"wrote {len(rows)} clips to {args.out} ({summary}); next: tinyfed data info {args.out}")
    return 0


def describe(ds: Dataset) -> str:
    """A human-readable summary of a dataset: counts per class and split, voices per split."""
    counts = ds.counts()
    width = max(12, *(len(c) for c in ds.classes))
    lines = [f"{ds.root}: {len(ds)} clips, {len(ds.classes)} classes"]
    lines.append(f"  {'class':<{width}} " + " ".join(f"{s:>10}" for s in SPLITS))
    for c in ds.classes:
        lines.append(f"  {c:<{width}} " + " ".join(f"{counts[s][c]:>10}" for s in SPLITS))
    lines.append(
        f"  {'total':<{width}} " + " ".join(f"{sum(counts[s].values()):>10}" for s in SPLITS)
    )
    voices = {s: set(ds.voice[ds.split == s].tolist()) for s in SPLITS}
    lines.append("  voices: " + ", ".join(f"{s} {len(voices[s])}" for s in SPLITS))
    shared = [
        f"{a}/{b}: {len(voices[a] & voices[b])}"
        for i, a in enumerate(SPLITS)
        for b in SPLITS[i + 1 :]
        if voices[a] & voices[b]
    ]
    lines.append(
        "  voices in two splits: " + ", ".join(shared)
        if shared
        else "  every voice is in one split only"
    )
    short = int(np.sum(ds.lengths < CLIP_SAMPLES))
    long = int(np.sum(ds.lengths > CLIP_SAMPLES))
    lines.append(f"  {short} clip(s) shorter than 1 s (zero-padded), {long} longer (cut)")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    ds = load(args.dir, classes=None if args.classes == "all" else _csv(args.classes))
    print(describe(ds))
    print(f"  all {len(ds)} WAV files read")
    return 0


def _import(args: argparse.Namespace) -> int:
    sources: list[Path] = args.src
    out: Path = args.out
    edge = args.format == "edge-impulse" or (
        args.format == "auto" and edge_impulse.is_edge_impulse(sources)
    )
    if edge:
        return _import_edge_impulse(args)
    if args.label is not None:
        raise UsageError("--label is for Edge Impulse files (.json / .cbor)")
    if len(sources) != 1:
        raise UsageError("a Speech Commands import takes one folder (SRC)")
    src = sources[0]
    if args.silence < 0:
        raise UsageError(f"--silence must not be negative, got {args.silence}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; choose a new one")
    ds = load(src, classes=None if args.words == "all" else _csv(args.words))
    classes = ds.classes
    rows: list[dict[str, str]] = []
    for i, rel in enumerate(ds.paths):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(out / rel, ds.audio[i])
        rows.append(
            {
                "path": rel,
                "word": classes[ds.labels[i]],
                "label": str(ds.labels[i]),
                "split": str(ds.split[i]),
                "voice": str(ds.voice[i]),
                "source": str(src / rel),
                "length_ms": f"{ds.lengths[i] * 1000 / SAMPLE_RATE:g}",
            }
        )
    if args.silence:
        if SILENCE_CLASS in classes:
            raise UsageError(f"{src} already has a {SILENCE_CLASS} class; drop --silence")
        classes = (*classes, SILENCE_CLASS)
        rows += _cut_silence(src, out, args.silence, args.seed, len(classes) - 1)
    (out / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    for name, split in ((VALIDATION_LIST, "validation"), (TESTING_LIST, "test")):
        paths = sorted(r["path"] for r in rows if r["split"] == split)
        (out / name).write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    with (out / MANIFEST_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"imported {len(rows)} clips ({', '.join(classes)}) into {out}")
    return 0


def _cut_silence(src: Path, out: Path, n: int, seed: int, label: int) -> list[dict[str, str]]:
    """Cut ``n`` random one-second clips from ``src/_background_noise_/*.wav``."""
    folder = src / BACKGROUND_NOISE_DIR
    files = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not files:
        raise UsageError(f"--silence needs WAV files in {folder}")
    noises = [(f, read_wav(f)) for f in files]
    noises = [(f, x) for f, x in noises if len(x) >= CLIP_SAMPLES]
    if not noises:
        raise UsageError(f"no file in {folder} lasts one second or more")
    rng = np.random.default_rng(seed)
    sizes = synth.split_sizes(n, synth.DEFAULT_VALIDATION_PERCENT, synth.DEFAULT_TESTING_PERCENT)
    split_of = [s for s, k in zip(SPLITS, sizes, strict=True) for _ in range(k)]
    (out / SILENCE_CLASS).mkdir(parents=True, exist_ok=True)
    rows = []
    for k, split in enumerate(split_of):
        f, x = noises[int(rng.integers(len(noises)))]
        start = int(rng.integers(len(x) - CLIP_SAMPLES + 1))
        rel = f"{SILENCE_CLASS}/{f.stem}-{k:05d}_nohash_0.wav"
        write_wav(out / rel, x[start : start + CLIP_SAMPLES])
        rows.append(
            {
                "path": rel,
                "word": SILENCE_CLASS,
                "label": str(label),
                "split": split,
                "voice": f"{f.stem}-{k:05d}",
                "source": f"{f}@{start}",
                "length_ms": "1000",
            }
        )
    return rows


def _import_edge_impulse(args: argparse.Namespace) -> int:
    """Edge Impulse data-acquisition files -> a corpus; every file is read before any write."""
    out: Path = args.out
    if args.silence:
        raise UsageError(
            "--silence cuts noise from a Speech Commands folder, not Edge Impulse files"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; choose a new one")
    files = edge_impulse.find_files(args.src)
    if not files:
        raise UsageError(
            "no .json or .cbor file in "
            + ", ".join(str(s) for s in args.src)
            + "; nothing imported"
        )
    recordings: list[edge_impulse.Recording] = []
    errors: list[str] = []
    for path in files:
        try:
            recordings.append(edge_impulse.read_recording(path, args.label))
        except edge_impulse.EdgeImpulseError as exc:
            errors.append(str(exc))
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise UsageError(
            f"{len(errors)} of {len(files)} files cannot be imported, so nothing was imported:"
            f"\n  {shown}{more}"
        )
    labels = sorted({r.label for r in recordings}, key=lambda w: (w.startswith("_"), w))
    if args.words == "all":
        classes = tuple(labels)
    else:
        classes = _csv(args.words)
        missing = [w for w in classes if w not in labels]
        if missing:
            raise UsageError(
                f"--words {', '.join(missing)}: no such label in the files "
                f"(labels: {', '.join(labels)})"
            )
    kept = [r for r in recordings if r.label in classes]
    rows: list[dict[str, str]] = []
    clips: list[tuple[str, npt.NDArray[np.int16]]] = []
    used: set[str] = set()
    for i, rec in enumerate(kept):
        voice = edge_impulse.sample_id_of(rec.path) or f"clip{i:05d}"
        rel = f"{rec.label}/{voice}_nohash_0.wav"
        n = 1
        while rel in used:
            rel = f"{rec.label}/{voice}_nohash_{n}.wav"
            n += 1
        used.add(rel)
        audio = np.zeros(CLIP_SAMPLES, np.int16)
        audio[: min(CLIP_SAMPLES, len(rec.audio))] = rec.audio[:CLIP_SAMPLES]
        clips.append((rel, audio))
        rows.append(
            {
                "path": rel,
                "word": rec.label,
                "label": str(classes.index(rec.label)),
                "split": rec.split or which_set(rel),
                "voice": voice,
                "source": str(rec.path),
                "length_ms": f"{len(rec.audio) * 1000 / SAMPLE_RATE:g}",
                "source_rate_hz": str(rec.rate),
                "device_type": rec.device_type,
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        for rel, audio in clips:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            write_wav(staging / rel, audio)
        _write_corpus_index(staging, classes, rows)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    skipped = len(recordings) - len(kept)
    cut = sum(len(r.audio) > CLIP_SAMPLES for r in kept)
    short = sum(len(r.audio) < CLIP_SAMPLES for r in kept)
    resampled = sum(r.rate != SAMPLE_RATE for r in kept)
    notes = [
        f"{n} {what}"
        for n, what in (
            (resampled, "resampled to 16 kHz"),
            (cut, "longer than 1 s, cut to the first second"),
            (short, "shorter than 1 s, padded with zeros"),
            (skipped, "of other labels skipped (--words)"),
        )
        if n
    ]
    per_split = ", ".join(f"{s} {sum(r['split'] == s for r in rows)}" for s in SPLITS)
    print(
        f"imported {len(rows)} Edge Impulse recordings ({', '.join(classes)}; {per_split}) "
        f"into {out}" + (f"; {'; '.join(notes)}" if notes else "")
    )
    return 0


def _write_corpus_index(out: Path, classes: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """classes.txt, the two split lists and manifest.csv of an imported corpus."""
    (out / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    for name, split in ((VALIDATION_LIST, "validation"), (TESTING_LIST, "test")):
        paths = sorted(r["path"] for r in rows if r["split"] == split)
        (out / name).write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    with (out / MANIFEST_FILE).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
