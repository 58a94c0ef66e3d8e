"""The paper's Fig. 5 to Fig. 8 through the full stack: boards, gateways, broker, aggregator.

Every run is a real fleet (:mod:`tinyfed.fleet.runner`): the firmware's core trains on the
virtual boards, pressed by scripted users who speak the synthesized words of their own training
voices in turn (1, 2, 3, 1, 2, 3... as in the paper); each gateway forwards the losses, uploads
its board's model every ``local_steps`` steps, the aggregator averages and publishes the global
model, and the gateways push it back. A scripted user speaks the next ``local_steps`` words
only once its board holds the new global model, so a run is reproducible to the step.

Each run is then **replayed in Python** (:func:`tinyfed.experiments.replay.simulate`: the
reference network :class:`tinyfed.model.Trainer` and the aggregator's own strategy functions,
momentum reset at every new global model as the board does it): the largest difference
between a loss the fleet published and the replay's is reported, which checks the whole stack
(features and training on the board, link transfers, rounds, averaging) against the reference.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tinyfed.data import dataset as ds
from tinyfed.errors import UsageError
from tinyfed.experiments.fleet_plots import draw
from tinyfed.experiments.fleet_summary import aggregate, loss_jump, print_summary
from tinyfed.experiments.fleet_table import (
    FEDAVGM_ARGS,
    FIGURES,
    MOUNTAINS,
    RECORD_MS,
    FleetExperiment,
    aggregator_args,
)
from tinyfed.experiments.replay import clip_features, simulate
from tinyfed.features import pipelines
from tinyfed.fleet import scenario as sc
from tinyfed.fleet.corpus import DEFAULT_CORPUS_DIR, classes_of
from tinyfed.fleet.runner import Prepared, RunPlan, execute, prepare

#: What this module's callers (the command, the tests) find here besides its own functions.
__all__ = ["FIGURES", "MOUNTAINS", "FleetExperiment", "command", "loss_jump", "run_experiment"]

log = logging.getLogger(__name__)


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
    draw(exp, runs, folder)
    return summary


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
