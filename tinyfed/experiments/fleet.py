"""The paper's Fig. 5 to Fig. 8 through the full stack: boards, gateways, broker, aggregator.

Every run is a real fleet (:mod:`tinyfed.fleet.runner`): the firmware's core trains on the
virtual boards, pressed by scripted users who speak the synthesized words of their own training
voices in turn (1, 2, 3, 1, 2, 3... as in the paper); each gateway forwards the losses, uploads
its board's model every ``local_steps`` steps, the aggregator averages and publishes the global
model, and the gateways push it back. A scripted user speaks the next ``local_steps`` words
only once its board holds the new global model, so a run is reproducible to the step.

Each run is then **replayed in Python** (:func:`simulate`: the reference network
:class:`tinyfed.model.Trainer` and the aggregator's own strategy functions, momentum reset at
every new global model as the board does it): the largest difference between a loss the fleet
published and the replay's is reported, which checks the whole stack (features and training on
the board, link transfers, rounds, averaging) against the reference.

* ``fig5``, ``fig6``: one board, one round of all the steps (a single board's FedAvg is the
  identity, and one round keeps the board's momentum as in the paper), so the run is the
  single-board experiment of ``tinyfed experiment fig5|fig6`` (its first speaking order) on
  a real board stack.
* ``fig7``: two boards, IID, averaging every 10 steps.
* ``fig8``: two boards, non-IID (:mod:`tinyfed.fleet.scenario`: each keyword spoken to one
  board only, silence to both), FedAvg against FedAvgM (server momentum).

Outputs in ``--out`` (default ``runs/fleet-NAME``): one report folder per run
(``PIPELINE-STRATEGY-sSEED/``), ``summary.json``, ``NAME.png`` (loss against step, the paper's
figure) and, for fig7 and fig8, ``NAME-accuracy.png`` (held-out accuracy of the global model per
round).

Run through ``tinyfed experiment fig7`` (``fig5``/``fig6`` with ``--full-stack``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyfed import model
from tinyfed.aggregator import strategies as agg
from tinyfed.data import dataset as ds
from tinyfed.errors import UsageError
from tinyfed.features import pipelines
from tinyfed.fleet import report
from tinyfed.fleet import scenario as sc
from tinyfed.fleet.corpus import DEFAULT_CORPUS_DIR, classes_of
from tinyfed.fleet.runner import Prepared, RunPlan, execute, prepare

log = logging.getLogger(__name__)

FEDAVGM_ARGS = ("--server-lr", "1.0", "--server-momentum", "0.5")  #: FedAvgM's server step
RECORD_MS = 20  #: recording time of the experiments' virtual boards (the result ignores it)


@dataclass(frozen=True)
class FleetExperiment:
    """One of the paper's figures, as a fleet run."""

    name: str
    title: str
    words: tuple[str, ...]
    silence: bool
    boards: int
    steps: int  #: per board
    local_steps: int
    lr: float
    non_iid: bool = False
    strategies: tuple[str, ...] = ("fedavg",)
    corpus: str = "fig5"  #: reuse ``tinyfed experiment``'s corpus cache of this figure

    @property
    def rounds(self) -> int:
        return self.steps // self.local_steps


MOUNTAINS = ("montserrat", "pedraforca")
COLOURS = ("vermell", "verd", "blau")

FIGURES: dict[str, FleetExperiment] = {
    e.name: e
    for e in (
        FleetExperiment(
            "fig5",
            "Fig. 5, full stack: one board, Montserrat / Pedraforca / silence, lr 0.1",
            MOUNTAINS,
            True,
            boards=1,
            steps=130,
            local_steps=130,
            lr=0.1,
        ),
        FleetExperiment(
            "fig6",
            "Fig. 6, full stack: one board, vermell / verd / blau, lr 0.3",
            COLOURS,
            False,
            boards=1,
            steps=60,
            local_steps=60,
            lr=0.3,
            corpus="fig6",
        ),
        FleetExperiment(
            "fig7",
            "Fig. 7, full stack: two boards, IID, averaging every 10 steps",
            MOUNTAINS,
            True,
            boards=2,
            steps=100,
            local_steps=10,
            lr=0.3,
        ),
        FleetExperiment(
            "fig8",
            "Fig. 8, full stack: two boards, non-IID, averaging every 10 steps",
            MOUNTAINS,
            True,
            boards=2,
            steps=100,
            local_steps=10,
            lr=0.3,
            non_iid=True,
            strategies=("fedavg", "fedavgm"),
        ),
    )
}


def aggregator_args(strategy: str) -> tuple[str, ...]:
    """Extra ``tinyfed aggregator`` flags of a strategy."""
    return FEDAVGM_ARGS if strategy == "fedavgm" else ()


# ----------------------------------------------------------------------------- the replay


@dataclass(frozen=True)
class Replay:
    """A fleet run replayed in Python."""

    losses: list[list[float]]  #: per board, per step
    globals: list[model.F32]  #: global model 0..rounds
    board_models: list[list[model.F32]]  #: per round, per board (before averaging)


def simulate(
    scenario: sc.Scenario,
    features: dict[str, model.F32],
    *,
    lr: float,
    momentum: float = model.DEFAULT_MOMENTUM,
    strategy: str = "fedavg",
    server_lr: float = 1.0,
    server_momentum: float = 0.0,
) -> Replay:
    """Replay ``scenario`` with the reference network: what the fleet should compute.

    Args:
        scenario: who says what.
        features: each clip's features (by its path in the corpus), in the fleet's pipeline.
        lr, momentum: the boards' SGD.
        strategy: ``fedavg`` or ``fedavgm`` (the aggregator's functions, weights = steps).
        server_lr, server_momentum: FedAvgM's server step.
    """
    if strategy not in ("fedavg", "fedavgm"):
        raise UsageError(f"the replay knows fedavg and fedavgm, not {strategy!r}")
    k = scenario.local_steps
    g = model.init_params()
    velocity: model.F32 | None = None
    losses: list[list[float]] = [[] for _ in scenario.boards]
    globals_ = [g]
    board_models: list[list[model.F32]] = []
    for r in range(scenario.rounds):
        models = []
        for b, plan in enumerate(scenario.boards):
            trainer = model.Trainer(g, lr=lr, momentum=momentum)  # momentum restarts at zero
            for press in plan.presses[r * k : (r + 1) * k]:
                losses[b].append(trainer.step(features[press.clip], press.label).loss)
            models.append(trainer.params.copy())
        board_models.append(models)
        averaged = agg.fedavg(models, [float(k)] * len(models))
        if strategy == "fedavgm":
            g, velocity = agg.fedavgm(
                g, averaged, velocity, server_lr=server_lr, server_momentum=server_momentum
            )
        else:
            g = averaged
        globals_.append(g)
    return Replay(losses, globals_, board_models)


def clip_features(data: ds.Dataset, pipeline: str) -> dict[str, model.F32]:
    """Each clip's features under ``pipeline``, by its corpus path."""
    x = pipelines.get_pipeline(pipeline).compute_batch(data.audio)
    return {path: x[i] for i, path in enumerate(data.paths)}


# ----------------------------------------------------------------------------- running


def loss_jump(losses: Sequence[float], labels: Sequence[int], k: int) -> float | None:
    """Mean rise of the loss at the first step after an averaging.

    Each round's first loss is compared with the loss of the same class's last step in the
    round before, so the alternation of easy and hard classes does not count as a jump.
    Positive: the board's loss jumps up when a global model replaces its own (the paper's
    non-IID Fig. 8).
    """
    jumps = []
    for i in range(k, len(losses), k):
        before = [j for j in range(i - k, i) if labels[j] == labels[i]]
        if before:
            jumps.append(losses[i] - losses[before[-1]])
    return float(np.mean(jumps)) if jumps else None


def run_one(
    exp: FleetExperiment,
    pipeline: str,
    strategy: str,
    seed: int,
    out: Path,
    *,
    corpus_dir: Path,
    per_word: int,
    corpus_seed: int,
) -> dict[str, Any]:
    """One fleet run of ``exp``, its replay, and its numbers."""
    plan = RunPlan(
        title=f"{exp.name} ({pipeline}, {strategy}, order {seed})",
        words=exp.words,
        silence=exp.silence,
        boards=exp.boards,
        rounds=exp.rounds,
        local_steps=exp.local_steps,
        non_iid=exp.non_iid,
        strategy=strategy,
        aggregator_args=aggregator_args(strategy),
        pipeline=pipeline,
        lr=exp.lr,
        corpus_dir=corpus_dir,
        corpus_name=f"{exp.corpus}-n{per_word}-s{corpus_seed}",
        per_word=per_word,
        seed=corpus_seed,
        record_ms=RECORD_MS,
        fleet=f"{exp.name}-{pipeline}-{strategy}-s{seed}",
    )
    prepared = prepare(plan)
    if seed != corpus_seed:  # another speaking order (and voice split) on the same corpus
        prepared = _reseeded(prepared, seed)
    folder = out / f"{pipeline}-{strategy}-s{seed}"
    result = execute(prepared, folder, dashboard=False, plots=True)
    if not result.completed:
        raise UsageError(f"{folder}: the run did not complete; see {folder / 'work' / 'logs'}")
    snap = result.snapshot
    data = ds.load(prepared.corpus, classes=classes_of(exp.words, exp.silence), splits=("train",))
    server = dict(zip(FEDAVGM_ARGS[::2], FEDAVGM_ARGS[1::2], strict=True))
    replay = simulate(
        prepared.scenario,
        clip_features(data, pipeline),
        lr=exp.lr,
        strategy=strategy,
        server_lr=float(server["--server-lr"]) if strategy == "fedavgm" else 1.0,
        server_momentum=float(server["--server-momentum"]) if strategy == "fedavgm" else 0.0,
    )
    by_worker = {w.worker_id: w.losses for w in snap.workers}
    events = [by_worker.get(prepared.worker_id(b), ()) for b in prepared.scenario.boards]
    fleet_losses = [[e.loss for e in ev] for ev in events]
    fleet_labels = [[e.label for e in ev] for ev in events]
    diffs = [
        float(np.max(np.abs(np.subtract(f, r)))) if len(f) == len(r) else float("inf")
        for f, r in zip(fleet_losses, replay.losses, strict=True)
    ]
    final = snap.latest_global
    assert final is not None
    replay_final_diff = float(np.max(np.abs(final.params - replay.globals[-1])))
    last_round = exp.rounds - 1
    boards = []
    for b, plan_b in enumerate(prepared.scenario.boards):
        wid = prepared.worker_id(plan_b)
        upd = next(
            (u for u in snap.updates if u.worker_id == wid and u.base_round == last_round), None
        )
        boards.append(
            {
                "name": plan_b.name,
                "words": list(prepared.scenario.words_of(plan_b)),
                "accuracy": upd.accuracy if upd else None,
                "loss_last10": float(np.mean(fleet_losses[b][-10:])) if fleet_losses[b] else None,
                "loss_jump": (
                    loss_jump(fleet_losses[b], fleet_labels[b], exp.local_steps)
                    if exp.boards > 1
                    else None
                ),
            }
        )
    return {
        "pipeline": pipeline,
        "strategy": strategy,
        "order": seed,
        "folder": str(folder),
        "wall_time_s": round(result.wall_time_s, 1),
        "global_accuracy": final.accuracy,
        "global_accuracy_per_round": [g.accuracy for g in snap.globals],
        "boards": boards,
        "losses": fleet_losses,
        "labels": fleet_labels,
        "replay_max_loss_diff": max(diffs) if diffs else None,
        "replay_max_param_diff": replay_final_diff,
        "held_out_clips": len(prepared.held_out),
    }


def _reseeded(prepared: Prepared, seed: int) -> Prepared:
    data = ds.load(
        prepared.corpus,
        classes=list(prepared.scenario.classes),
        splits=("train",),
    )
    s = prepared.scenario
    scenario = sc.build(
        data,
        boards=len(s.boards),
        rounds=s.rounds,
        local_steps=s.local_steps,
        non_iid=s.non_iid,
        seed=seed,
    )
    return Prepared(prepared.plan, prepared.corpus, scenario, prepared.held_out)


def run_experiment(
    name: str,
    *,
    out: Path | None = None,
    pipeline_names: Sequence[str] = (pipelines.PAPER, pipelines.CENTROID),
    strategies: Sequence[str] | None = None,
    orders: Sequence[int] = (0,),
    corpus_dir: Path = DEFAULT_CORPUS_DIR,
    per_word: int = 300,
    corpus_seed: int = 0,
) -> dict[str, Any]:
    """Run one figure through the full stack for every pipeline, strategy and speaking order.

    Writes the run folders, ``summary.json`` and the figures into ``out`` (default
    ``runs/fleet-NAME``) and returns the summary.
    """
    if name not in FIGURES:
        raise UsageError(f"unknown figure {name!r}; full-stack figures: {', '.join(FIGURES)}")
    exp = FIGURES[name]
    folder = out or Path("runs") / f"fleet-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for pipeline in pipeline_names:
        pipelines.get_pipeline(pipeline)
        for strategy in strategies or exp.strategies:
            for seed in orders:
                t0 = time.monotonic()
                res = run_one(
                    exp,
                    pipeline,
                    strategy,
                    seed,
                    folder,
                    corpus_dir=corpus_dir,
                    per_word=per_word,
                    corpus_seed=corpus_seed,
                )
                log.info(
                    "%s %s %s order %d: global accuracy %.3f, replay max |dloss| %.2g (%.0f s)",
                    name,
                    pipeline,
                    strategy,
                    seed,
                    res["global_accuracy"] or 0.0,
                    res["replay_max_loss_diff"] or 0.0,
                    time.monotonic() - t0,
                )
                runs.append(res)
    summary = {
        "experiment": asdict(exp),
        "rounds": exp.rounds,
        "groups": aggregate(runs),
        "runs": runs,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(exp, runs, folder / f"{name}.png")
    if exp.boards > 1:
        reference = None
        if exp.non_iid:  # the IID run of the same boards, if it was made beside this one
            iid = folder.parent / "fleet-fig7" / "summary.json"
            if iid.is_file():
                reference = json.loads(iid.read_text())["runs"]
        plot_accuracy(exp, runs, folder / f"{name}-accuracy.png", reference=reference)
        if reference:
            plot_jump(exp, runs, reference, folder / f"{name}-jump.png")
    return summary


def _mean_sd(values: Sequence[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None}
    return {"mean": float(np.mean(vals)), "sd": float(np.std(vals))}


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over speaking orders, per pipeline and strategy."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["pipeline"], r["strategy"]), []).append(r)
    out = []
    for (pipeline, strategy), rs in groups.items():
        n_boards = len(rs[0]["boards"])
        out.append(
            {
                "pipeline": pipeline,
                "strategy": strategy,
                "orders": len(rs),
                "global_accuracy": _mean_sd([r["global_accuracy"] for r in rs]),
                "board_accuracy": [
                    _mean_sd([r["boards"][b]["accuracy"] for r in rs]) for b in range(n_boards)
                ],
                "loss_jump": _mean_sd(
                    [r["boards"][b]["loss_jump"] for r in rs for b in range(n_boards)]
                ),
                "loss_last10": _mean_sd(
                    [r["boards"][b]["loss_last10"] for r in rs for b in range(n_boards)]
                ),
                "global_accuracy_per_round": [
                    float(np.mean(col))
                    for col in zip(*[r["global_accuracy_per_round"] for r in rs], strict=True)
                ],
                "replay_max_loss_diff": max(r["replay_max_loss_diff"] for r in rs),
                "replay_max_param_diff": max(r["replay_max_param_diff"] for r in rs),
                "wall_time_s_mean": float(np.mean([r["wall_time_s"] for r in rs])),
            }
        )
    return out


# ----------------------------------------------------------------------------- figures

SMOOTH = 10  #: steps of the running mean drawn over each board's loss
PIPELINE_STYLE = {pipelines.PAPER: "--", pipelines.CENTROID: "-"}


def plot(exp: FleetExperiment, runs: list[dict[str, Any]], path: Path) -> None:
    """Loss against step: one panel per pipeline, each board's curve, FedAvg's first order."""
    plt = report.pyplot()
    first = runs[0]
    shown = [r for r in runs if r["strategy"] == first["strategy"] and r["order"] == first["order"]]
    fig, axes = plt.subplots(
        len(shown), 1, figsize=(7, 1.2 + 2.4 * len(shown)), dpi=120, sharex=True, squeeze=False
    )
    for ax, run in zip(axes[:, 0], shown, strict=True):
        for b, (ys, color) in enumerate(zip(run["losses"], report.COLORS, strict=False)):
            words = ", ".join(run["boards"][b]["words"])
            label = f"board {b + 1}" + (f" ({words})" if exp.non_iid else "")
            ax.plot(range(1, len(ys) + 1), ys, color=color, lw=0.8, alpha=0.8, label=label)
            if len(ys) >= 2 * SMOOTH:
                smooth = np.convolve(ys, np.ones(SMOOTH) / SMOOTH, mode="valid")
                ax.plot(range(SMOOTH, len(ys) + 1), smooth, color=color, lw=2.2, alpha=0.6)
        if exp.rounds > 1:
            for x in range(exp.local_steps, exp.steps, exp.local_steps):
                ax.axvline(x + 0.5, color="0.6", lw=0.6, ls=":")
        acc = run["global_accuracy"]
        ax.set_title(
            f"{run['pipeline']} pipeline: held-out accuracy of the final global model {acc:.3f}",
            fontsize=9,
        )
        ax.set_ylabel("loss")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel(
        "step (one utterance)"
        + (f"; dotted: averaging every {exp.local_steps} steps" if exp.rounds > 1 else "")
        + f"; thick: mean of {SMOOTH} steps"
    )
    fig.suptitle(exp.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_accuracy(
    exp: FleetExperiment,
    runs: list[dict[str, Any]],
    path: Path,
    *,
    reference: list[dict[str, Any]] | None = None,
) -> None:
    """Held-out accuracy of the global model per round (mean over orders), per pipeline and
    strategy; ``reference`` (the IID runs) in grey."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    colors = dict(zip(("fedavg", "fedavgm", "median", "trimmed-mean"), report.COLORS, strict=False))
    series = [(g, colors.get(g["strategy"], "black"), "") for g in aggregate(runs)]
    if reference:
        series += [(g, "0.55", "IID ") for g in aggregate(reference) if g["strategy"] == "fedavg"]
    for g, color, prefix in series:
        ys = g["global_accuracy_per_round"]
        orders = f" (mean of {g['orders']} orders)" if g["orders"] > 1 else ""
        ax.plot(
            range(len(ys)),
            ys,
            color=color,
            ls=PIPELINE_STYLE.get(g["pipeline"], "-"),
            marker=".",
            lw=1.4,
            label=f"{prefix}{g['strategy']}, {g['pipeline']}{orders}",
        )
    ax.set_xlabel(f"round ({exp.local_steps} steps per board each)")
    ax.set_ylabel(f"held-out accuracy ({runs[0]['held_out_clips']} test clips)")
    ax.set_title(f"{exp.title}: global model on unseen voices", fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table on stdout (mean ± sd over speaking orders)."""
    exp = summary["experiment"]
    print(exp["title"])
    head = f"{'pipeline':<9} {'strategy':<8} {'orders':>6} {'global model':>14} "
    head += " ".join(f"{'board ' + str(i + 1):>14}" for i in range(exp["boards"]))
    print(head + f" {'loss jump':>10} {'replay max|dloss|':>18}")

    def ms(x: dict[str, float | None]) -> str:
        if x["mean"] is None:
            return "-"
        return f"{x['mean']:.3f} ± {x['sd']:.3f}"

    for g in summary["groups"]:
        boards = " ".join(f"{ms(b):>14}" for b in g["board_accuracy"])
        jump = g["loss_jump"]["mean"]
        print(
            f"{g['pipeline']:<9} {g['strategy']:<8} {g['orders']:>6} "
            f"{ms(g['global_accuracy']):>14} {boards} "
            f"{'-' if jump is None else f'{jump:+.3f}':>10} {g['replay_max_loss_diff']:>18.2e}"
        )


def command(args: argparse.Namespace) -> int:
    """``tinyfed experiment fig5..fig8`` through the full stack (see the module docstring).

    Reads ``args.name``, ``args.out``, ``args.pipeline`` (comma-separated), ``args.corpus_dir``,
    ``args.per_word``, ``args.seed`` and, if present, ``args.strategies`` (comma-separated) and
    ``args.orders`` (how many speaking orders).
    """
    names = [n.strip() for n in args.pipeline.split(",") if n.strip()]
    strategies_text = getattr(args, "strategies", None)
    strategies = [s.strip() for s in strategies_text.split(",")] if strategies_text else None
    orders = range(getattr(args, "orders", None) or 1)
    summary = run_experiment(
        args.name,
        out=args.out or Path("runs") / f"fleet-{args.name}",
        pipeline_names=names,
        strategies=strategies,
        orders=orders,
        corpus_dir=args.corpus_dir,
        per_word=args.per_word,
        corpus_seed=args.seed,
    )
    print_summary(summary)
    return 0


def plot_jump(
    exp: FleetExperiment, runs: list[dict[str, Any]], reference: list[dict[str, Any]], path: Path
) -> None:
    """Mean loss at each step of a round (rounds 2 on, both boards, every order): the jump."""
    plt = report.pyplot()
    k = exp.local_steps
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), dpi=120, sharey=True)
    colors = {"fedavg": report.COLORS[0], "fedavgm": report.COLORS[1]}
    for ax, pipeline in zip(axes, (pipelines.PAPER, pipelines.CENTROID), strict=True):
        groups = [("IID fedavg", "0.55", [r for r in reference if r["strategy"] == "fedavg"])]
        for strategy in exp.strategies:
            groups.append(
                (
                    f"non-IID {strategy}",
                    colors.get(strategy, "black"),
                    [r for r in runs if r["strategy"] == strategy],
                )
            )
        for label, color, rs in groups:
            curves = [
                np.asarray(losses[k:]).reshape(-1, k)
                for r in rs
                if r["pipeline"] == pipeline
                for losses in r["losses"]
            ]
            if curves:
                ax.plot(
                    range(1, k + 1),
                    np.vstack(curves).mean(axis=0),
                    color=color,
                    marker=".",
                    label=label,
                )
        ax.set_title(f"{pipeline} pipeline", fontsize=9)
        ax.set_xlabel("step in the round (1: after averaging)")
        ax.set_xticks(range(1, k + 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean loss")
    axes[0].set_ylim(bottom=0)
    axes[1].legend(fontsize=7)
    fig.suptitle(
        "The loss jump after averaging: IID (Fig. 7) against non-IID (Fig. 8)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replot(folder: Path) -> None:
    """Draw a finished experiment's figures again from its ``summary.json``."""
    summary = json.loads((folder / "summary.json").read_text())
    exp = FIGURES[summary["experiment"]["name"]]
    plot(exp, summary["runs"], folder / f"{exp.name}.png")
    if exp.boards > 1:
        iid = folder.parent / "fleet-fig7" / "summary.json"
        reference = json.loads(iid.read_text())["runs"] if exp.non_iid and iid.is_file() else None
        plot_accuracy(
            exp, summary["runs"], folder / f"{exp.name}-accuracy.png", reference=reference
        )
        if reference:
            plot_jump(exp, summary["runs"], reference, folder / f"{exp.name}-jump.png")
