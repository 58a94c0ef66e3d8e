"""The report folder of a fleet run, and its figures.

A run's folder holds:

* ``global.bin``: the final global model, 41,868 bytes in the board's layout
  (:func:`tinyfed.model.save`);
* ``metrics.json``: the run's settings and, per round, its outcome, participants (reported
  steps, weight, loss, the held-out accuracy of each board's own model) and the held-out
  accuracy of the global model it produced. Rounds are numbered as the aggregator does: round
  *r* starts from global model *r* and publishes global model *r + 1*;
* ``losses.json``: every training step's loss, per board;
* ``loss.png`` and ``accuracy.png``: loss against step for each board (a dotted line at every
  averaging) and held-out accuracy against round, in the style of ``tinyfed experiment``.

``tinyfed plot DIR`` draws the figures again from the two JSON files alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyfed import model
from tinyfed.errors import UsageError
from tinyfed.fleet.recorder import FleetSnapshot
from tinyfed.model import families

METRICS_FILE = "metrics.json"
LOSSES_FILE = "losses.json"
GLOBAL_FILE = "global.bin"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """The settings of a run, written into ``metrics.json``."""

    title: str
    strategy: str
    pipeline: str
    classes: tuple[str, ...]
    non_iid: bool
    rounds: int | None
    local_steps: int | None
    lr: float | None = None
    momentum: float | None = None
    boards: tuple[dict[str, Any], ...] = ()  #: worker, name, words, voices
    held_out_clips: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def metrics(snap: FleetSnapshot, info: RunInfo, wall_time_s: float | None = None) -> dict[str, Any]:
    """The content of ``metrics.json`` for a recorded run (pure)."""
    names = {w.worker_id: w.name for w in snap.workers}
    first = snap.global_of(0)
    latest = snap.latest_global

    def acc_of(worker: str, base_round: int) -> float | None:
        u = next(
            (u for u in snap.updates if u.worker_id == worker and u.base_round == base_round),
            None,
        )
        return u.accuracy if u else None

    rounds = []
    for ev in snap.rounds:
        produced = snap.global_of(ev.round) if ev.outcome == "closed" else None
        rounds.append(
            {
                "round": ev.round,
                "outcome": ev.outcome,
                "participants": [
                    {
                        "worker": p.worker_id,
                        "name": names.get(p.worker_id, p.worker_id),
                        "local_steps": p.local_steps,
                        "weight": p.weight,
                        "loss_mean": p.loss_mean,
                        "accuracy": acc_of(p.worker_id, ev.round - 1),
                    }
                    for p in ev.participants
                ],
                "dropped": list(ev.dropped),
                "rejected": [
                    {"worker": x.worker_id, "upload": x.upload_id, "reason": x.reason}
                    for x in ev.rejected
                ],
                "loss_mean": ev.loss_mean,
                "duration_s": ev.duration_s,
                "global_round": ev.round if ev.outcome == "closed" else None,
                "global_sha256": ev.global_sha256 or None,
                "accuracy": produced.accuracy if produced else None,
                "reason": ev.reason or None,
            }
        )
    return {
        "fleet": snap.fleet,
        "title": info.title,
        "strategy": info.strategy,
        "pipeline": info.pipeline,
        "classes": list(info.classes),
        "non_iid": info.non_iid,
        "rounds_planned": info.rounds,
        "local_steps": info.local_steps,
        "lr": info.lr,
        "momentum": info.momentum,
        "held_out_clips": info.held_out_clips,
        "boards": list(info.boards),
        "initial": _global_json(first),
        "final": _global_json(latest),
        "rounds": rounds,
        "wall_time_s": wall_time_s,
        **info.extra,
    }


def _global_json(g: Any) -> dict[str, Any] | None:
    if g is None:
        return None
    return {"round": g.round, "sha256": g.sha256, "accuracy": g.accuracy}


def losses(snap: FleetSnapshot) -> dict[str, Any]:
    """The content of ``losses.json``: every step's loss per worker (pure)."""
    return {
        "workers": [
            {
                "worker": w.worker_id,
                "name": w.name,
                "steps": [
                    {"step": e.step, "loss": e.loss, "label": e.label, "round": e.round}
                    for e in w.losses
                ],
            }
            for w in snap.workers
        ]
    }


def write(
    folder: Path,
    snap: FleetSnapshot,
    info: RunInfo,
    *,
    wall_time_s: float | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write the report folder; return the metrics. No global model yet: no ``global.bin``."""
    folder.mkdir(parents=True, exist_ok=True)
    latest = snap.latest_global
    if latest is not None:
        family = families.by_arch(latest.arch)  # the paper's 41,868 bytes, or a dscnn head's 780
        model.save(latest.params, folder / GLOBAL_FILE, family.n_params)
    data = metrics(snap, info, wall_time_s)
    (folder / METRICS_FILE).write_text(json.dumps(data, indent=2) + "\n")
    (folder / LOSSES_FILE).write_text(json.dumps(losses(snap), separators=(",", ":")) + "\n")
    if plots:
        try:
            plot_run(folder)
        except MissingPlotsError as exc:  # the data is written; only the pictures are missing
            log.warning("no figures in %s: %s", folder, exc)
    return data


def load(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metrics.json`` and ``losses.json`` of a run folder."""
    try:
        m = json.loads((folder / METRICS_FILE).read_text())
        losses_ = json.loads((folder / LOSSES_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder} is not a recorded run: {exc}") from exc
    return m, losses_


class MissingPlotsError(UsageError):
    """matplotlib is not installed (it is the ``plot`` extra)."""


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend; :class:`MissingPlotsError` says how to get it."""
    # imported here: it costs ~0.3 s, and only the figures need it (an optional extra)
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError as exc:
        raise MissingPlotsError(
            "the figures need matplotlib, an optional part of tinyfed: "
            "pip install 'tinyfed[plot]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_loss(
    ax: Any, losses_: dict[str, Any], local_steps: int | None, *, label: str = "", lw: float = 1.0
) -> None:
    """Loss against each board's step, one line per board, dotted lines at averaging points."""
    longest = 0
    for w, color in zip(losses_["workers"], COLORS, strict=False):
        ys = [s["loss"] for s in w["steps"]]
        longest = max(longest, len(ys))
        ax.plot(
            range(1, len(ys) + 1),
            ys,
            color=color,
            lw=lw,
            label=f"{label}{w['name']}" if label or w["name"] else w["worker"],
        )
    if local_steps:
        for x in range(local_steps, longest, local_steps):
            ax.axvline(x + 0.5, color="0.6", lw=0.6, ls=":")


def plot_run(folder: Path) -> list[Path]:
    """Draw ``loss.png`` and ``accuracy.png`` from the folder's JSON files; return the paths."""
    m, losses_ = load(folder)
    plt = pyplot()
    title = m.get("title") or f"fleet {m.get('fleet')}"
    sub = f"{m.get('strategy')}, {m.get('pipeline')} pipeline"
    k = m.get("local_steps")

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    plot_loss(ax, losses_, k)
    ax.set_xlabel("step (one utterance)" + (f"; dotted: averaging every {k} steps" if k else ""))
    ax.set_ylabel("loss (squared error)")
    ax.set_title(f"{title} ({sub})", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    loss_png = folder / "loss.png"
    fig.savefig(loss_png)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    closed = [r for r in m["rounds"] if r["outcome"] == "closed"]
    xs = [0] + [r["global_round"] for r in closed]
    initial = (m.get("initial") or {}).get("accuracy")
    ys = [initial] + [r["accuracy"] for r in closed]
    ax.plot(xs, ys, color="black", lw=2.0, marker="o", ms=4, label="global model")
    names = [b.get("name", b.get("worker")) for b in m.get("boards", [])]
    for name, color in zip(names, COLORS, strict=False):
        pts = [
            (r["global_round"], p["accuracy"])
            for r in closed
            for p in r["participants"]
            if p["name"] == name and p["accuracy"] is not None
        ]
        if pts:
            ax.plot(
                *zip(*pts, strict=True),
                color=color,
                lw=1.0,
                ls="--",
                marker=".",
                label=f"{name}'s own model (before averaging)",
            )
    n = m.get("held_out_clips")
    ax.set_xlabel("round (global model after it)")
    ax.set_ylabel("held-out accuracy" + (f" ({n} test clips)" if n else ""))
    ax.set_title(f"{title}: accuracy on voices no board heard", fontsize=10)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    acc_png = folder / "accuracy.png"
    fig.savefig(acc_png)
    plt.close(fig)
    return [loss_png, acc_png]
