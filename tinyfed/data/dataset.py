"""Read a keyword corpus in the Speech Commands layout into memory.

The layout (Warden 2018, ``speech_commands_v0.02``) serves synthetic and real recordings alike::

    ROOT/WORD/SPEAKER_nohash_N.wav   one folder per class; SPEAKER names the voice
    ROOT/validation_list.txt         optional, relative paths of validation clips
    ROOT/testing_list.txt            optional, relative paths of test clips
    ROOT/classes.txt                 optional (tinyfed's own), class names in label order

Without the two lists, clips are split as Speech Commands' ``which_set`` does: by a SHA-1 hash
of the speaker part of the file name, so a speaker lands in one split for every word. Without
``classes.txt``, classes are the folder names sorted, those starting with ``_`` (such as
``_silence``) last; ``_background_noise_`` is never a class.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from tinyfed.data._progress import Progress
from tinyfed.data.synth import CLASSES_FILE, SPLITS, TESTING_LIST, VALIDATION_LIST
from tinyfed.data.wav import CLIP_SAMPLES, read_wav
from tinyfed.errors import UsageError

logger = logging.getLogger(__name__)

BACKGROUND_NOISE_DIR = "_background_noise_"  #: Speech Commands' long noise recordings
_MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  #: the constant of Speech Commands' ``which_set``


@dataclass(frozen=True, eq=False)
class Dataset:
    """Clips of one second at 16 kHz with their labels, split and voice (arrays read-only).

    Attributes:
        audio: int16 ``[n, 16000]``, each clip padded with zeros or cut to one second.
        labels: int64 ``[n]``, indices into ``classes``.
        classes: class names in label order.
        split: ``[n]`` of ``"train"``, ``"validation"`` or ``"test"``.
        voice: ``[n]`` speaker / voice id (the file name before ``_nohash_``).
        paths: relative paths (``WORD/NAME.wav``) under ``root``.
        lengths: int64 ``[n]``, each file's length in samples at 16 kHz before padding/cutting.
        root: the folder read.
    """

    audio: npt.NDArray[np.int16]
    labels: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    split: npt.NDArray[np.str_]
    voice: npt.NDArray[np.str_]
    paths: tuple[str, ...]
    lengths: npt.NDArray[np.int64]
    root: Path

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer]) -> Dataset:
        """The clips at ``indices`` (in that order, repeats allowed), same classes."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            audio=_frozen(self.audio[idx]),
            labels=_frozen(self.labels[idx]),
            classes=self.classes,
            split=_frozen(self.split[idx]),
            voice=_frozen(self.voice[idx]),
            paths=tuple(self.paths[i] for i in idx),
            lengths=_frozen(self.lengths[idx]),
            root=self.root,
        )

    def select(self, split: str) -> Dataset:
        """The clips of one split: ``"train"``, ``"validation"`` or ``"test"``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.subset(np.flatnonzero(self.split == split))

    def alternating(
        self,
        steps: int | None = None,
        classes: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Dataset:
        """The clips reordered as a user speaks them to a board: class 1, 2, 3, 1, 2, 3...

        See :func:`alternating_order`; ``classes`` are names here.
        """
        order = None
        if classes is not None:
            unknown = [c for c in classes if c not in self.classes]
            if unknown:
                raise UsageError(f"unknown class(es) {', '.join(unknown)}; have {self.classes}")
            order = [self.classes.index(c) for c in classes]
        return self.subset(alternating_order(self.labels, steps=steps, order=order, seed=seed))

    def counts(self) -> dict[str, dict[str, int]]:
        """Clip counts: ``{split: {class: n}}``."""
        return {
            s: {
                c: int(np.sum((self.split == s) & (self.labels == i)))
                for i, c in enumerate(self.classes)
            }
            for s in SPLITS
        }


_T = TypeVar("_T", bound=np.generic)


def _frozen(a: npt.NDArray[_T]) -> npt.NDArray[_T]:
    a.setflags(write=False)
    return a


def alternating_order(
    labels: npt.NDArray[np.integer] | Sequence[int],
    steps: int | None = None,
    order: Sequence[int] | None = None,
    seed: int | None = None,
) -> npt.NDArray[np.int64]:
    """Indices that visit the classes in turn (1, 2, 3, 1, 2, 3...), as the paper trains a board.

    Args:
        labels: each clip's label.
        steps: how many indices to return. ``None``: as many full rounds as the rarest class
            allows. More than that: a class's clips are reused from its first once used up.
        order: the labels to alternate, in turn order; default every label present, ascending.
        seed: shuffle each class's clips with this seed; ``None`` keeps their order.

    Returns:
        int64 indices into ``labels``.

    Raises:
        UsageError: a label in ``order`` has no clips, or ``steps`` is negative.
    """
    lab = np.asarray(labels)
    turn = sorted({int(x) for x in lab}) if order is None else [int(x) for x in order]
    if not turn:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed) if seed is not None else None
    members = []
    for c in turn:
        idx = np.flatnonzero(lab == c)
        if len(idx) == 0:
            raise UsageError(f"label {c} has no clips to alternate")
        members.append(rng.permutation(idx) if rng is not None else idx)
    if steps is None:
        steps = len(turn) * min(len(m) for m in members)
    if steps < 0:
        raise UsageError(f"steps must not be negative, got {steps}")
    k = np.arange(steps)
    rounds, which = k // len(turn), k % len(turn)
    out = np.array(
        [members[w][r % len(members[w])] for w, r in zip(which, rounds, strict=True)],
        dtype=np.int64,
    )
    return out


def which_set(
    filename: str, validation_percent: float = 10.0, testing_percent: float = 10.0
) -> str:
    """Speech Commands' split of a file by the hash of its speaker (``NAME_nohash_N.wav``).

    The same arithmetic as ``which_set`` in TensorFlow's ``speech_commands/input_data.py``, so
    a Speech Commands folder without its lists splits the same way as with them.
    """
    hash_name = re.sub(r"_nohash_.*$", "", Path(filename).name)
    hashed = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    pct = (hashed % (_MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_percent:
        return "validation"
    if pct < testing_percent + validation_percent:
        return "test"
    return "train"


def voice_of(filename: str) -> str:
    """The speaker / voice id of a clip: its file name before ``_nohash_`` (else the stem)."""
    name = Path(filename).name
    cut = name.find("_nohash_")
    return name[:cut] if cut >= 0 else Path(name).stem


def find_classes(root: Path) -> tuple[str, ...]:
    """The class names of a corpus folder, in label order (see the module docstring)."""
    listed = root / CLASSES_FILE
    if listed.is_file():
        names = tuple(
            line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()
        )
        if not names:
            raise UsageError(f"{listed} is empty")
        return names
    dirs = [
        d.name
        for d in root.iterdir()
        if d.is_dir() and d.name != BACKGROUND_NOISE_DIR and any(_wavs(d))
    ]
    return tuple(sorted(dirs, key=lambda n: (n.startswith("_"), n)))


def _wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()}


def load(
    root: str | Path,
    classes: Sequence[str] | None = None,
    splits: Iterable[str] | None = None,
    jobs: int = 4,
    progress: bool | None = None,
) -> Dataset:
    """Read a Speech Commands-layout folder: every clip as 1 s of 16 kHz mono int16.

    Args:
        root: the corpus folder.
        classes: read only these classes, labelled in this order; default all (see
            :func:`find_classes`).
        splits: read only these splits; default all.
        jobs: files read in parallel.
        progress: draw a progress bar on stderr (default: when stderr is a terminal).

    Raises:
        UsageError: not a folder, no WAV files, an unknown class, or a WAV that does not read
            (the message names the file).
    """
    base = Path(root)
    if not base.is_dir():
        raise UsageError(f"{base}: no such folder")
    names = tuple(classes) if classes is not None else find_classes(base)
    if len(set(names)) != len(names):
        raise UsageError(f"a class is given twice in {', '.join(names)}")
    files: list[tuple[str, int]] = []
    for label, name in enumerate(names):
        folder = base / name
        if not folder.is_dir():
            raise UsageError(f"{base}: class {name!r} has no folder {folder}")
        files += [(f"{name}/{p.name}", label) for p in _wavs(folder)]
    if not files:
        raise UsageError(
            f"{base}: no WAV files found; expected the Speech Commands layout WORD/NAME.wav"
        )
    validation, testing = _read_list(base / VALIDATION_LIST), _read_list(base / TESTING_LIST)
    have_lists = (base / VALIDATION_LIST).is_file() or (base / TESTING_LIST).is_file()
    if not have_lists:
        logger.info("%s: no split lists; splitting by speaker hash like Speech Commands", base)

    def split_of(rel: str) -> str:
        if not have_lists:
            return which_set(rel)
        return "validation" if rel in validation else "test" if rel in testing else "train"

    wanted = set(SPLITS if splits is None else splits)
    bad = wanted - set(SPLITS)
    if bad:
        raise UsageError(f"unknown split(s) {', '.join(sorted(bad))}; expected {SPLITS}")
    files = [(rel, lab) for rel, lab in files if split_of(rel) in wanted]
    audio = np.zeros((len(files), CLIP_SAMPLES), dtype=np.int16)
    lengths = np.zeros(len(files), dtype=np.int64)

    with Progress(len(files), "read", enabled=progress) as bar:

        def read(i: int) -> None:
            x = read_wav(base / files[i][0])
            lengths[i] = len(x)
            n = min(len(x), CLIP_SAMPLES)
            audio[i, :n] = x[:n]
            bar.advance()

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(read, range(len(files))))
    cut = int(np.sum(lengths > CLIP_SAMPLES))
    if cut:
        logger.warning("%s: %d clip(s) longer than 1 s were cut to their first second", base, cut)
    rels = tuple(rel for rel, _ in files)
    return Dataset(
        audio=_frozen(audio),
        labels=_frozen(np.array([lab for _, lab in files], dtype=np.int64)),
        classes=names,
        split=_frozen(np.array([split_of(r) for r in rels], dtype=np.str_)),
        voice=_frozen(np.array([voice_of(r) for r in rels], dtype=np.str_)),
        paths=rels,
        lengths=_frozen(lengths),
        root=base,
    )
