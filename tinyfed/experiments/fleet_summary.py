"""The numbers of the full-stack figures: loss jumps, means over speaking orders, the table.

:func:`aggregate` turns the runs of :mod:`tinyfed.experiments.fleet` into one group per
pipeline and strategy (mean and standard deviation over speaking orders); :func:`print_summary`
prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
