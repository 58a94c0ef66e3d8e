"""The full-stack figures: loss against step, accuracy per round, the loss jump after averaging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinyfed.experiments.fleet_summary import aggregate
from tinyfed.experiments.fleet_table import FIGURES, FleetExperiment
from tinyfed.features import pipelines
from tinyfed.fleet import report

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


def draw(exp: FleetExperiment, runs: list[dict[str, Any]], folder: Path) -> None:
    """Every figure of ``exp`` into ``folder``: the losses, and with two boards or more the
    accuracy per round and, beside the IID runs of ``runs/fleet-fig7``, the loss jump."""
    plot(exp, runs, folder / f"{exp.name}.png")
    if exp.boards > 1:
        reference = None
        if exp.non_iid:  # the IID run of the same boards, if it was made beside this one
            iid = folder.parent / "fleet-fig7" / "summary.json"
            if iid.is_file():
                reference = json.loads(iid.read_text())["runs"]
        plot_accuracy(exp, runs, folder / f"{exp.name}-accuracy.png", reference=reference)
        if reference:
            plot_jump(exp, runs, reference, folder / f"{exp.name}-jump.png")


def replot(folder: Path) -> None:
    """Draw a finished experiment's figures again from its ``summary.json``."""
    summary = json.loads((folder / "summary.json").read_text())
    draw(FIGURES[summary["experiment"]["name"]], summary["runs"], folder)
