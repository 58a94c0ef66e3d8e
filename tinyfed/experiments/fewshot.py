"""``tinyfed experiment fewshot``: accuracy against utterances per word, on voices never heard.

A user teaches a board a few utterances per word. This experiment measures what each model
family (docs/learning.md) makes of 3, 5, 10 and 20 of them, for both keyword sets of the paper
(vermell / verd / blau; Montserrat / Pedraforca / silence), in a fleet of 3 boards federated by
FedAvg, in two settings, against one board alone:

* ``single``: one board hears every word, no federation (the baseline: what one user gets);
* ``iid``: every board hears every word; in each round each board records one utterance of each
  word (in turn), trains as the board does, and the server averages the 3 models;
* ``noniid``: board ``k`` hears only word ``k``; in each round it records one utterance of it.

``n`` utterances per word is ``n`` rounds. Training clips come from the training voices of an
espeak-ng corpus; each board gets its own clips (seeded by the repeat). The global model after
the last round is scored on (a) the held-out espeak-ng voice variants (the corpus's test split)
and (b) a Festival corpus (another synthesizer, never used in training;
:mod:`tinyfed.data.festival`).
The rejection rule (the highest output must reach the threshold, 0.6 by default, else "unknown")
is measured as the keyword accept rate (a keyword clip accepted as its own word) and the
false-accept rate on other words (everyday Catalan words spoken by the held-out espeak-ng voices
and by Festival, accepted as any keyword).

Families: ``paper`` (the 650-16-3 network trained online, one step per utterance, with the
``centroid`` features, the paper's learning rates, momentum reset when a global model arrives)
and ``dscnn`` (the frozen int8 extractor with the on-board head trained by replay with
augmentation, exactly :class:`tinyfed.model.dscnn.head.Learner`).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.data import dataset as ds, festival, synth
from tinyfed.errors import UsageError
from tinyfed.experiments import board, fewshot_plots
from tinyfed.features import logmel, pipelines
from tinyfed.model.dscnn import head, modelfile
from tinyfed.model.dscnn.extractor import Extractor

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

KEYWORD_SETS = ("fig6", "fig5")  #: the paper's two keyword sets (tinyfed.experiments.board)
#: Everyday Catalan words that are neither keywords nor in the extractor's pre-training
#: vocabulary (tinyfed/pretrain/words.txt): what the rejection rule must refuse, never heard.
OTHER_WORDS = ("formiga", "papallona", "cargol", "xocolata", "pissarra", "espelma")
SHOTS = (3, 5, 10, 20)  #: utterances per word a user speaks (= rounds)
BOARDS = 3  #: one board per word in the non-IID setting
SETTINGS = ("single", "iid", "noniid")
THRESHOLD = 0.6  #: the rejection threshold (docs/learning.md "Decision"; the paper's LED rule)
SWEEP = (0.6, 0.8, 0.9, 0.95, 0.99)  #: thresholds the accept rates are also measured at (JSON)
PAPER_PIPELINE = pipelines.CENTROID  #: the paper family's features here (docs/features.md)
#: The pre-trained extractor (branch ``pretrain``; docs/learning.md section 2).
EXTRACTOR = Path(__file__).resolve().parents[1] / "model/dscnn/weights/extractor-v1.bin"


@dataclass(frozen=True)
class Scale:
    """How much data and how many repeats: the full run, or ``--quick`` for the tests."""

    espeak_per_word: int  #: clips per class of the espeak-ng corpus (80 % train, 10 % test)
    festival_per_word: int  #: clips per class of the Festival corpus (all evaluated)
    other_per_word: int  #: clips per other word, per synthesizer
    other_words: tuple[str, ...]
    shots: tuple[int, ...]
    repeats: int


FULL = Scale(300, 60, 20, OTHER_WORDS, SHOTS, 5)
QUICK = Scale(60, 6, 6, OTHER_WORDS[:2], (3, 20), 1)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class EvalSet:
    """Clips to score: labels are class indices, or -1 for other words."""

    name: str
    audio: npt.NDArray[np.int16]
    labels: I64


@dataclass(frozen=True)
class KeywordData:
    """One keyword set's training clips and its evaluation sets."""

    exp: board.Experiment
    classes: tuple[str, ...]
    train: ds.Dataset
    evals: tuple[EvalSet, ...]  #: espeak (held-out voices), festival; then their other words


def _festival_corpus(
    root: Path, tag: str, *, words: Sequence[str], silence: bool, per_word: int, seed: int
) -> Path:
    folder = root / f"festival-{tag}-n{per_word}-s{seed}"
    if not (folder / synth.MANIFEST_FILE).is_file():
        log.info("synthesizing the Festival corpus %s", folder)
        cfg = synth.SynthConfig(
            words=tuple(words),
            out=folder,
            per_word=per_word,
            seed=seed,
            silence=silence,
            validation_percent=0,
            testing_percent=0,
            force=True,
        )
        festival.synthesize(cfg, progress=False)
    return folder


def _other_espeak(root: Path, words: Sequence[str], per_word: int, seed: int) -> Path:
    """Other words, spoken only by the test variants of the keyword corpora (same seed)."""
    folder = root / f"other-{_tag(words)}-n{per_word}-s{seed}"
    if not (folder / synth.MANIFEST_FILE).is_file():
        espeak = synth.find_espeak()
        held_out = synth.split_variants(synth.default_variants(synth.list_variants(espeak)), seed)[
            "test"
        ]
        cfg = synth.SynthConfig(
            words=tuple(words),
            out=folder,
            per_word=per_word,
            seed=seed,
            variants=held_out,
            validation_percent=0,
            testing_percent=0,
            force=True,
        )
        synth.synthesize(cfg, progress=False)
    return folder


def prepare(scale: Scale, corpus_dir: Path, seed: int) -> list[KeywordData]:
    """Synthesize (or reuse) every corpus and read the clips of both keyword sets."""
    other = [
        EvalSet(
            "espeak",
            *_audio_labels(
                _other_espeak(corpus_dir, scale.other_words, scale.other_per_word, seed), -1
            ),
        ),
        EvalSet(
            "festival",
            *_audio_labels(
                _festival_corpus(
                    corpus_dir,
                    f"other-{_tag(scale.other_words)}",
                    words=scale.other_words,
                    silence=False,
                    per_word=scale.other_per_word,
                    seed=seed,
                ),
                -1,
            ),
        ),
    ]
    out = []
    for name in KEYWORD_SETS:
        exp = board.EXPERIMENTS[name]
        classes = (*exp.words, *([synth.SILENCE_CLASS] if exp.silence else []))
        data = ds.load(
            board.corpus_for(exp, corpus_dir, scale.espeak_per_word, seed),
            classes=classes,
            splits=("train", "test"),
            progress=False,
        )
        test = data.select("test")
        fest = ds.load(
            _festival_corpus(
                corpus_dir,
                name,
                words=exp.words,
                silence=exp.silence,
                per_word=scale.festival_per_word,
                seed=seed,
            ),
            classes=classes,
            progress=False,
        )
        evals = (
            EvalSet("espeak", test.audio, test.labels),
            EvalSet("festival", fest.audio, fest.labels),
            *(EvalSet(f"other-{o.name}", o.audio, o.labels) for o in other),
        )
        out.append(KeywordData(exp, classes, data.select("train"), evals))
    return out


def _tag(words: Sequence[str]) -> str:
    """A short name for a word list (its cached corpora are named after it)."""
    return hashlib.sha256(",".join(words).encode("utf-8")).hexdigest()[:8]


def _audio_labels(folder: Path, label: int) -> tuple[npt.NDArray[np.int16], I64]:
    data = ds.load(folder, progress=False)
    return np.asarray(data.audio), np.full(len(data), label, np.int64)


def board_clips(
    labels: I64, k: int, shots: int, setting: str, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """Each board's recordings per round: ``[board][round * words + w] = (clip, label)``.

    Clips of a word are drawn without replacement across boards while the training split has
    enough, then cycle (only ``--quick``'s small corpus needs that).
    """
    perms = [rng.permutation(np.flatnonzero(labels == c)) for c in range(k)]
    if setting == "noniid":
        words_of = [[b % k] for b in range(BOARDS)]
    else:
        words_of = [list(range(k))] * (1 if setting == "single" else BOARDS)
    plans: list[list[tuple[int, int]]] = []
    for b, words in enumerate(words_of):
        seq = []
        for r in range(shots):
            for w in words:
                perm = perms[w]
                seq.append((int(perm[(b * shots + r) % len(perm)]), w))
        plans.append(seq)
    return plans


# ---------------------------------------------------------------------------------------------
# The two families: a board's training and the global model's outputs


class Family:
    """A model family as this experiment needs it (:class:`PaperFamily`, :class:`DscnnFamily`)."""

    name: str

    def features(self, audio: npt.NDArray[np.int16], train: bool) -> Any:
        """Whatever a board needs of the clips (computed once per keyword set)."""
        raise NotImplementedError

    def new_global(self, k: int, lr: float) -> F32:
        """The fleet's starting model."""
        raise NotImplementedError

    def new_board(self, k: int, lr: float) -> Any:
        """One board's learning state."""
        raise NotImplementedError

    def train_round(
        self, state: Any, global_params: F32, clips: Sequence[tuple[int, int]], feats: Any
    ) -> F32:
        """Receive the global model, record ``clips`` (index, label), return the board's model."""
        raise NotImplementedError

    def outputs(self, params: F32, feats: Any) -> F32:
        """Per-clip class scores ``[m, K]`` of the global model."""
        raise NotImplementedError

    def accept(self, top: F32, threshold: float) -> npt.NDArray[np.bool_]:
        """The rejection rule on the top score."""
        return np.asarray(top >= np.float32(threshold))


@dataclass
class PaperFamily(Family):
    """The 650-16-3 network, online SGD (tinyfed.model.Trainer), ``centroid`` features."""

    init: str = "paper"  #: ``paper``, or ``scaled`` when tinyfed.model.init_params has it
    name: str = "paper"

    def features(self, audio: npt.NDArray[np.int16], train: bool) -> F32:
        return pipelines.get_pipeline(PAPER_PIPELINE).compute_batch(audio)

    def new_global(self, k: int, lr: float) -> F32:
        if self.init == "paper":
            return model.init_params()
        init: Callable[..., F32] = model.init_params
        return init(scheme=self.init)

    def new_board(self, k: int, lr: float) -> model.Trainer:
        return model.Trainer(model.init_params(), lr=lr)

    def train_round(
        self, state: Any, global_params: F32, clips: Sequence[tuple[int, int]], feats: Any
    ) -> F32:
        trainer: model.Trainer = state
        trainer.params[...] = global_params
        trainer.reset_momentum()  # what a board does when a new global model arrives
        for i, y in clips:
            trainer.step(feats[i], y)
        return trainer.params.copy()

    def outputs(self, params: F32, feats: Any) -> F32:
        return model.forward(params, feats)

    def accept(self, top: F32, threshold: float) -> npt.NDArray[np.bool_]:
        return np.asarray(top > np.float32(threshold))  # the paper: an output must exceed it


@dataclass
class DscnnFamily(Family):
    """The frozen extractor and the head trained by replay (tinyfed.model.dscnn.head.Learner)."""

    extractor: Extractor
    name: str = "dscnn"
    _cache: dict[int, Any] = field(default_factory=dict)

    def features(self, audio: npt.NDArray[np.int16], train: bool) -> npt.NDArray[np.int8]:
        """Training clips: the int8 embeddings of the clip and its 4 copies ``[n, 5, 64]``
        (what ``Learner.record`` stores); evaluation clips: their embeddings ``[n, 64]``."""
        x = logmel.features_int8(audio)
        if not train:
            return self.extractor.embed_q_batch(x)
        batch = np.concatenate([np.concatenate([q[None], head.augment(q)]) for q in x])
        return self.extractor.embed_q_batch(batch).reshape(len(x), 1 + head.COPIES, -1)

    def new_global(self, k: int, lr: float) -> F32:
        return head.zeros(k)

    def new_board(self, k: int, lr: float) -> head.Learner:
        return head.Learner(self.extractor, k)

    def train_round(
        self, state: Any, global_params: F32, clips: Sequence[tuple[int, int]], feats: Any
    ) -> F32:
        learner: head.Learner = state
        learner.params[...] = global_params
        for i, y in clips:  # Learner.record(x, y), with the embeddings computed once
            for emb in feats[i]:
                learner.store.add(emb, y)
            learner.recordings += 1
            learner.train_pass()
        return learner.params.copy()

    def outputs(self, params: F32, feats: Any) -> F32:
        e = self.extractor.dequantise(feats)
        if not len(e):
            return np.zeros((0, head.check_head(params)), np.float32)
        return np.stack([head.probabilities(params, row) for row in e])


def families(names: Sequence[str], extractor_path: Path) -> list[Family]:
    """The families to run; ``paper-scaled`` only if ``init_params`` has a ``scheme``."""
    out: list[Family] = []
    for n in names:
        if n == "paper":
            out.append(PaperFamily())
            if "scheme" in inspect.signature(model.init_params).parameters:
                out.append(PaperFamily(init="scaled", name="paper-scaled"))
        elif n == "dscnn":
            if not extractor_path.with_suffix(".bin").is_file():
                raise UsageError(
                    f"the dscnn family needs the pre-trained extractor {extractor_path} "
                    "(tinyfed model pretrain); or run --families paper"
                )
            out.append(DscnnFamily(modelfile.load(extractor_path)[0]))
        else:
            raise UsageError(f"unknown model family {n!r}; valid: paper, dscnn")
    return out


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclass(frozen=True)
class Row:
    """One table row: a family, keyword set, setting and shot count, averaged over repeats."""

    family: str
    keywords: str
    setting: str
    shots: int
    accuracy: dict[str, float]  #: per eval corpus (espeak, festival): mean over repeats
    accuracy_sd: dict[str, float]
    keyword_accept: dict[str, float]  #: keyword clips accepted as their own word
    false_accept: dict[str, float]  #: other words accepted as a keyword
    sweep: dict[str, dict[str, dict[str, float]]]  #: threshold -> the two rates, as above
    repeats: int


def score(
    fam: Family, params: F32, feats: Any, ev: EvalSet, *, k_words: int, thresholds: Sequence[float]
) -> dict[str, float]:
    """Accuracy, and accept rates at each threshold (``keyword_accept@0.6``, ...), of one global
    model on one evaluation set."""
    out = fam.outputs(params, feats)
    best = np.argmax(out, axis=1)
    top = out[np.arange(len(out)), best]
    res = {}
    for t in thresholds:
        accepted = fam.accept(top, t)
        if ev.labels.size and ev.labels[0] < 0:  # other words: accepted as a keyword, not silence
            res[f"false_accept@{t:g}"] = float(np.mean(accepted & (best < k_words)))
        else:
            words = ev.labels < k_words
            res[f"keyword_accept@{t:g}"] = float(np.mean((accepted & (best == ev.labels))[words]))
    if not (ev.labels.size and ev.labels[0] < 0):
        res["accuracy"] = float(np.mean(best == ev.labels))
    return res


def run_set(
    fam: Family,
    data: KeywordData,
    scale: Scale,
    *,
    seed: int,
    threshold: float,
    progress: Callable[[str], None],
) -> list[Row]:
    """Every setting and shot count of one family on one keyword set."""
    k = len(data.classes)
    k_words = len(data.exp.words)
    t0 = time.perf_counter()
    train_feats = fam.features(np.asarray(data.train.audio), train=True)
    eval_feats = [fam.features(ev.audio, train=False) for ev in data.evals]
    log.info("%s %s: features in %.1f s", fam.name, data.exp.name, time.perf_counter() - t0)
    rows = []
    for setting in SETTINGS:
        for shots in scale.shots:
            scores: list[dict[str, float]] = []
            for rep in range(scale.repeats):
                rng = np.random.default_rng([seed, rep, KEYWORD_SETS.index(data.exp.name)])
                plans = board_clips(np.asarray(data.train.labels), k, shots, setting, rng)
                params = fam.new_global(k, data.exp.lr)
                states = [fam.new_board(k, data.exp.lr) for _ in plans]
                # a fleet averages after every round; a single board never gets a global model
                rounds = 1 if setting == "single" else shots
                per_round = len(plans[0]) // rounds
                for r in range(rounds):
                    models, weights = [], []
                    for st, plan in zip(states, plans, strict=True):
                        clips = plan[r * per_round : (r + 1) * per_round]
                        models.append(fam.train_round(st, params, clips, train_feats))
                        weights.append(len(clips))
                    # FedAvg: the mean of the boards' models weighted by their new recordings
                    params = np.average(np.stack(models), axis=0, weights=weights).astype(
                        np.float32
                    )
                merged: dict[str, float] = {}
                for ev, feats in zip(data.evals, eval_feats, strict=True):
                    thresholds = sorted({threshold, *SWEEP})
                    for key, v in score(
                        fam, params, feats, ev, k_words=k_words, thresholds=thresholds
                    ).items():
                        merged[f"{key}:{ev.name}"] = v
                scores.append(merged)
            row = _row(fam.name, data.exp.name, setting, shots, scores, threshold=threshold)
            progress(format_row(row))
            rows.append(row)
    return rows


def _row(
    family: str,
    keywords: str,
    setting: str,
    shots: int,
    scores: list[dict[str, float]],
    *,
    threshold: float,
) -> Row:
    def mean(key: str) -> float:
        return float(np.mean([s[key] for s in scores]))

    def metric(name: str) -> dict[str, float]:
        got = {k.split(":", 1)[1]: mean(k) for k in scores[0] if k.startswith(name + ":")}
        return {k.removeprefix("other-"): v for k, v in got.items()}

    ts = sorted({threshold, *SWEEP})

    return Row(
        family=family,
        keywords=keywords,
        setting=setting,
        shots=shots,
        accuracy=metric("accuracy"),
        accuracy_sd={
            k.split(":", 1)[1]: float(np.std([s[k] for s in scores]))
            for k in scores[0]
            if k.startswith("accuracy:")
        },
        keyword_accept=metric(f"keyword_accept@{threshold:g}"),
        false_accept=metric(f"false_accept@{threshold:g}"),
        sweep={
            f"{t:g}": {
                "keyword_accept": metric(f"keyword_accept@{t:g}"),
                "false_accept": metric(f"false_accept@{t:g}"),
            }
            for t in ts
        },
        repeats=len(scores),
    )


HEADER = (
    f"{'family':<13}{'keywords':<9}{'setting':<8}{'n':>3}  {'acc espeak':>10} {'acc festival':>12}"
    f"  {'kw-acc espeak':>13} {'kw-acc fest':>11}  {'FA espeak':>9} {'FA fest':>8}"
)


def format_row(r: Row) -> str:
    """One line of the results table."""
    a, ka, fa = r.accuracy, r.keyword_accept, r.false_accept
    return (
        f"{r.family:<13}{r.keywords:<9}{r.setting:<8}{r.shots:>3}  {a['espeak']:>10.3f} "
        f"{a['festival']:>12.3f}  {ka['espeak']:>13.3f} {ka['festival']:>11.3f}  "
        f"{fa['espeak']:>9.3f} {fa['festival']:>8.3f}"
    )


def run(
    scale: Scale,
    corpus_dir: Path,
    *,
    seed: int,
    family_names: Sequence[str],
    extractor: Path = EXTRACTOR,
    threshold: float = THRESHOLD,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """The whole experiment; pure computation apart from the cached corpora."""
    say = progress or (lambda _: None)
    fams = families(family_names, extractor)
    data = prepare(scale, corpus_dir, seed)
    rows: list[Row] = []
    for fam in fams:
        for d in data:
            rows += run_set(fam, d, scale, seed=seed, threshold=threshold, progress=say)
    return rows


def command(args: argparse.Namespace) -> int:
    """Run ``tinyfed experiment fewshot`` (parsed by :mod:`tinyfed.experiments.cli`)."""
    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    full = {**asdict(FULL), "repeats": args.repeats, "espeak_per_word": args.per_word}
    scale = QUICK if args.quick else Scale(**full)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    out: Path = args.out or Path("runs") / "fewshot"
    out.mkdir(parents=True, exist_ok=True)

    print(HEADER, flush=True)
    t0 = time.perf_counter()
    rows = run(
        scale,
        args.corpus_dir,
        seed=args.seed,
        family_names=names,
        extractor=args.extractor,
        threshold=args.threshold,
        progress=lambda line: print(line, flush=True),
    )
    summary = {
        "command": " ".join(sys.argv),
        "scale": asdict(scale),
        "seed": args.seed,
        "threshold": args.threshold,
        "boards": BOARDS,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": [asdict(r) for r in rows],
    }
    (out / "fewshot.json").write_text(json.dumps(summary, indent=2))
    fewshot_plots.plot_accuracy(summary["rows"], out / "fewshot.png")
    fewshot_plots.plot_rejection(summary["rows"], out / "fewshot-rejection.png", args.threshold)
    print(
        f"wrote {out / 'fewshot.json'}, {out / 'fewshot.png'} and "
        f"{out / 'fewshot-rejection.png'} ({summary['seconds']} s)"
    )
    return 0
