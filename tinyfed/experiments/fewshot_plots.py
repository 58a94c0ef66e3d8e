"""The figures of ``tinyfed experiment fewshot``, drawn from its JSON rows (``fewshot.json``).

``accuracy``: accuracy against utterances per word, one panel per keyword set and evaluation
corpus, one line per family and setting. ``rejection``: in the IID fleet, the keyword accept
rate (a keyword accepted as its own word at the threshold) and the false-accept rate (another
word accepted as a keyword), same panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyfed.fleet.report import pyplot

KEYWORD_TITLES = {"fig6": "vermell / verd / blau", "fig5": "Montserrat / Pedraforca / silence"}
CORPORA = ("espeak", "festival")
COLORS = {"paper": "tab:blue", "paper-scaled": "tab:green", "dscnn": "tab:orange"}
STYLES = {"single": ":", "iid": "-", "noniid": "--"}
CHANCE = 1 / 3  #: three classes in both keyword sets

Row = Mapping[str, Any]


def _select(rows: Sequence[Row], family: str, keywords: str, setting: str) -> list[Row]:
    return sorted(
        (
            r
            for r in rows
            if (r["family"], r["keywords"], r["setting"]) == (family, keywords, setting)
        ),
        key=lambda r: int(r["shots"]),
    )


def _panels(rows: Sequence[Row], ylabel: str) -> tuple[Any, Any, Any]:
    plt = pyplot()  # imported on use: matplotlib is the optional extra `plot`
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110, sharex=True, sharey=True)
    ticks = sorted({int(r["shots"]) for r in rows})
    for i, kw in enumerate(KEYWORD_TITLES):
        for j, corpus in enumerate(CORPORA):
            ax = axes[i][j]
            ax.set_title(f"{KEYWORD_TITLES[kw]}: held-out {corpus} voices", fontsize=9)
            ax.set_xscale("log")
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("utterances per word (in a fleet: one FedAvg round each)")
            if j == 0:
                ax.set_ylabel(ylabel)
    return plt, fig, axes


def plot_accuracy(rows: Sequence[Row], path: Path) -> None:
    """Accuracy (mean ± sd over repeats) against utterances per word."""
    plt, fig, axes = _panels(rows, "accuracy")
    for i, kw in enumerate(KEYWORD_TITLES):
        for j, corpus in enumerate(CORPORA):
            ax = axes[i][j]
            for fam in dict.fromkeys(r["family"] for r in rows):
                for setting, ls in STYLES.items():
                    sel = _select(rows, fam, kw, setting)
                    if sel:
                        ax.errorbar(
                            [r["shots"] for r in sel],
                            [r["accuracy"][corpus] for r in sel],
                            yerr=[r["accuracy_sd"][corpus] for r in sel],
                            capsize=3,
                            color=COLORS.get(fam, "tab:gray"),
                            ls=ls,
                            marker="o",
                            label=f"{fam}, {setting}",
                        )
            ax.axhline(CHANCE, color="gray", lw=0.8, ls="-.", label="chance")
    fig.suptitle("accuracy against utterances per word (single board, or 3 boards and FedAvg)")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_rejection(rows: Sequence[Row], path: Path, threshold: float) -> None:
    """IID fleet: keyword accept rate (solid) and false-accept rate (dashed)."""
    plt, fig, axes = _panels(rows, f"rate at threshold {threshold:g}")
    for i, kw in enumerate(KEYWORD_TITLES):
        for j, corpus in enumerate(CORPORA):
            ax = axes[i][j]
            for fam in dict.fromkeys(r["family"] for r in rows):
                sel = _select(rows, fam, kw, "iid")
                shots = [r["shots"] for r in sel]
                color = COLORS.get(fam, "tab:gray")
                ax.plot(
                    shots,
                    [r["keyword_accept"][corpus] for r in sel],
                    color=color,
                    marker="o",
                    label=f"{fam}: keyword accepted as itself",
                )
                ax.plot(
                    shots,
                    [r["false_accept"][corpus] for r in sel],
                    color=color,
                    ls="--",
                    marker="x",
                    label=f"{fam}: other word accepted",
                )
    fig.suptitle(f"IID fleet of 3 boards: accept rates at threshold {threshold:g}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
