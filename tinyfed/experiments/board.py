"""``tinyfed experiment fig5|fig6``: the paper's single-board experiments on synthesized words.

One board is simulated by the reference network (:mod:`tinyfed.model`, bit-for-bit the board's
training step): it starts from the paper's seeded model and is trained online, one utterance per
step, with the keywords spoken in turn (1, 2, 3, 1, 2, 3...) by the training voices of a
synthesized corpus. After the run, its accuracy is measured on the test voices, which it never
heard. The same network trained offline for many epochs on the whole training split gives the
ceiling. Every experiment runs once per feature pipeline and repeats over several speaking
orders, since a 60-step run on a few dozen utterances is noisy.

Outputs in ``--out``: ``losses.json`` (every step's loss), ``summary.json`` (accuracies), and
``<fig>.png`` (loss against step, in the style of the paper's figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinyfed import model
from tinyfed.data import dataset as ds, synth
from tinyfed.errors import UsageError
from tinyfed.features import pipelines
from tinyfed.fleet.report import pyplot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    """One of the paper's single-board figures."""

    name: str
    title: str
    words: tuple[str, ...]
    silence: bool
    steps: int
    lr: float
    momentum: float = model.DEFAULT_MOMENTUM


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "fig5",
            "Fig. 5: one board, Montserrat / Pedraforca / silence, lr 0.1",
            ("montserrat", "pedraforca"),
            silence=True,
            steps=130,
            lr=0.1,
        ),
        Experiment(
            "fig6",
            "Fig. 6: one board, vermell / verd / blau, lr 0.3",
            ("vermell", "verd", "blau"),
            silence=False,
            steps=60,
            lr=0.3,
        ),
    )
}


@dataclass(frozen=True)
class PipelineResult:
    """One pipeline's results on one experiment."""

    pipeline: str
    losses: list[list[float]]  #: per repeat, per step
    test_accuracy: list[float]  #: per repeat, after the online run
    ceiling_accuracy: float  #: offline, many epochs over the training split
    ceiling_epochs: int
    train_clips: int
    test_clips: int


def corpus_for(exp: Experiment, root: Path, per_word: int, seed: int) -> Path:
    """The experiment's corpus folder, synthesized on first use and reused afterwards."""
    folder = root / f"{exp.name}-n{per_word}-s{seed}"
    if (folder / synth.MANIFEST_FILE).is_file():
        log.info("reusing the corpus in %s", folder)
        return folder
    log.info("synthesizing the %s corpus into %s", exp.name, folder)
    synth.synthesize(
        synth.SynthConfig(
            words=exp.words,
            out=folder,
            per_word=per_word,
            seed=seed,
            silence=exp.silence,
            force=True,
        )
    )
    return folder


def accuracy(params: model.F32, x: model.F32, y: npt.NDArray[np.int64]) -> float:
    """Fraction of samples whose highest output is their class."""
    return float(np.mean(model.predict(model.forward(params, x)) == y)) if len(y) else 0.0


def online_run(
    x: model.F32, y: npt.NDArray[np.int64], exp: Experiment, order_seed: int
) -> tuple[model.F32, list[float]]:
    """Train one simulated board as the paper did; return the model and each step's loss."""
    order = ds.alternating_order(y, steps=exp.steps, seed=order_seed)
    trainer = model.Trainer(model.init_params(), lr=exp.lr, momentum=exp.momentum)
    losses = [trainer.step(x[i], int(y[i])).loss for i in order]
    return trainer.params, losses


def offline_ceiling(
    x: model.F32, y: npt.NDArray[np.int64], exp: Experiment, epochs: int, seed: int
) -> model.F32:
    """The same network and step, trained for ``epochs`` shuffled passes over ``(x, y)``."""
    rng = np.random.default_rng(seed)
    trainer = model.Trainer(model.init_params(), lr=exp.lr, momentum=exp.momentum)
    for _ in range(epochs):
        for i in rng.permutation(len(y)):
            trainer.step(x[i], int(y[i]))
    return trainer.params


def run(
    exp: Experiment,
    data: ds.Dataset,
    pipeline_names: list[str],
    repeats: int,
    ceiling_epochs: int,
) -> list[PipelineResult]:
    """Run ``exp`` on ``data`` once per pipeline; pure computation, no files written."""
    train, test = data.select("train"), data.select("test")
    if not len(train) or not len(test):
        raise UsageError(f"the corpus in {data.root} needs train and test clips")
    results = []
    for name in pipeline_names:
        pipe = pipelines.get_pipeline(name)
        t0 = time.perf_counter()
        x_train, x_test = pipe.compute_batch(train.audio), pipe.compute_batch(test.audio)
        log.info("%s features for %d clips in %.1f s", name, len(data), time.perf_counter() - t0)
        losses, accs = [], []
        for r in range(repeats):
            params, run_losses = online_run(x_train, train.labels, exp, order_seed=r)
            losses.append(run_losses)
            accs.append(accuracy(params, x_test, test.labels))
        ceiling = offline_ceiling(x_train, train.labels, exp, ceiling_epochs, seed=0)
        results.append(
            PipelineResult(
                pipeline=name,
                losses=losses,
                test_accuracy=accs,
                ceiling_accuracy=accuracy(ceiling, x_test, test.labels),
                ceiling_epochs=ceiling_epochs,
                train_clips=len(train),
                test_clips=len(test),
            )
        )
    return results


def plot(exp: Experiment, results: list[PipelineResult], path: Path) -> None:
    """Loss against step, one curve per pipeline (first order, and the mean over orders)."""
    plt = pyplot()  # imported on use: ~0.3 s, an optional extra

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    for res, color in zip(results, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        arr = np.asarray(res.losses)
        steps = np.arange(1, arr.shape[1] + 1)
        ax.plot(steps, arr[0], color=color, lw=1.0, label=f"{res.pipeline} (one run)")
        if len(arr) > 1:
            ax.plot(
                steps,
                arr.mean(axis=0),
                color=color,
                lw=2.2,
                alpha=0.6,
                label=f"{res.pipeline} (mean of {len(arr)} orders)",
            )
    ax.set_xlabel("step (one utterance)")
    ax.set_ylabel("loss (squared error)")
    ax.set_title(exp.title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _summary(exp: Experiment, results: list[PipelineResult], corpus: Path) -> dict[str, Any]:
    return {
        "experiment": asdict(exp),
        "corpus": str(corpus),
        "pipelines": {
            r.pipeline: {
                "test_accuracy_mean": float(np.mean(r.test_accuracy)),
                "test_accuracy_std": float(np.std(r.test_accuracy)),
                "test_accuracy": r.test_accuracy,
                "ceiling_accuracy": r.ceiling_accuracy,
                "ceiling_epochs": r.ceiling_epochs,
                "final_loss_mean_last10": float(np.mean(np.asarray(r.losses)[:, -10:])),
                "train_clips": r.train_clips,
                "test_clips": r.test_clips,
            }
            for r in results
        },
    }


def command(args: argparse.Namespace) -> int:
    """Run ``tinyfed experiment fig5|fig6`` on the reference network (parsed by
    :mod:`tinyfed.experiments.cli`)."""
    exp = EXPERIMENTS[args.name]
    names = [n.strip() for n in args.pipeline.split(",") if n.strip()]
    for n in names:
        pipelines.get_pipeline(n)
    if args.repeats < 1 or args.ceiling_epochs < 1:
        raise UsageError("--repeats and --ceiling-epochs must be at least 1")
    out: Path = args.out or Path("runs") / exp.name
    out.mkdir(parents=True, exist_ok=True)
    corpus = corpus_for(exp, args.corpus_dir, args.per_word, args.seed)
    classes = [*exp.words, *([synth.SILENCE_CLASS] if exp.silence else [])]
    data = ds.load(corpus, classes=classes, splits=("train", "test"))
    results = run(exp, data, names, args.repeats, args.ceiling_epochs)
    (out / "losses.json").write_text(
        json.dumps({r.pipeline: r.losses for r in results}, separators=(",", ":"))
    )
    summary = _summary(exp, results, corpus)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(exp, results, out / f"{exp.name}.png")
    print(exp.title)
    print(
        f"{'pipeline':<10} {'held-out accuracy':>22} {'offline ceiling':>16} {'last-10 loss':>13}"
    )
    for name, s in summary["pipelines"].items():
        acc = f"{s['test_accuracy_mean']:.3f} ± {s['test_accuracy_std']:.3f}"
        print(
            f"{name:<10} {acc:>22} {s['ceiling_accuracy']:>16.3f} "
            f"{s['final_loss_mean_last10']:>13.4f}"
        )
    print(f"wrote {out / 'losses.json'}, {out / 'summary.json'}, {out / (exp.name + '.png')}")
    return 0
