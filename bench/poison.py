"""One poisoned worker in a round: how far does it move the global model, per strategy?

Usage: ``.venv/bin/python bench/poison.py [--workers 4,10] [--norm 1e6] [--seed N]``. Honest
updates share a direction (norm 0.4) plus their own noise (norm 0.3) around the paper's initial
model, as the updates of one round do; the poisoned worker sends a random direction of norm
``--norm``. Each round runs through the real round machine (weights, caps, clipping) and
prints ‖new global − old global‖₂ for an all-honest round and for the same round with the
first worker poisoned, for each strategy; the service's default is FedAvg clipped to the
round's median update norm.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tinyfed import model
from tinyfed.aggregator.rounds import RoundClosed, RoundMachine, RoundPolicy
from tinyfed.aggregator.strategies import Strategy
from tinyfed.mqtt.contract import GlobalModel, HyperParams, ModelUpdate

STRATEGIES: tuple[tuple[str, Strategy], ...] = (
    ("fedavg (--clip-norm off)", Strategy("fedavg")),
    ("fedavg, clip to median (default)", Strategy("fedavg", clip_median=True)),
    ("fedavgm, clip to median", Strategy("fedavgm", clip_median=True)),
    ("fedavg --clip-norm 2", Strategy("fedavg", clip_norm=2.0)),
    ("median", Strategy("median")),
    ("trimmed-mean 0.2, --clip-norm off", Strategy("trimmed-mean")),
    ("trimmed-mean 0.2, clip to median", Strategy("trimmed-mean", clip_median=True)),
)


def move(strategy: Strategy, updates: list[np.ndarray], base: np.ndarray) -> float:
    """‖new global − base‖₂ after one round of ``updates`` through the round machine."""
    ids = [f"w{i}" for i in range(len(updates))]
    machine = RoundMachine(
        policy=RoundPolicy(expect=frozenset(ids), timeout_s=60),
        strategy=strategy,
        hyper=HyperParams(),
        current=GlobalModel(round=0, params=base, hyper=HyperParams(), pipeline="centroid"),
        now=0.0,
    )
    closed: list[RoundClosed] = []
    for worker, params in zip(ids, updates, strict=True):
        u = ModelUpdate(worker, 0, 10, params, worker, "centroid")
        closed += [d for d in machine.update_received(u, 1.0) if isinstance(d, RoundClosed)]
    return float(np.linalg.norm(closed[0].model.params.astype(np.float64) - base))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="4,10", help="fleet sizes, comma-separated")
    parser.add_argument("--norm", type=float, default=1e6, help="the poisoned update's norm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    base = model.init_params()
    direction = rng.normal(0, 1, model.N_PARAMS)
    direction *= 0.4 / np.linalg.norm(direction)
    print(f"one worker's update of norm {args.norm:g}; honest updates: norm ~0.5")
    print(f"{'strategy':36s} {'workers':>7s} {'honest round':>13s} {'poisoned':>12s} {'ratio':>8s}")
    worst = 0.0
    for n in (int(w) for w in args.workers.split(",")):
        honest = []
        for _ in range(n):
            noise = rng.normal(0, 1, model.N_PARAMS)
            honest.append(base + direction + noise * (0.3 / np.linalg.norm(noise)))
        attack = rng.normal(0, 1, model.N_PARAMS)
        poisoned = [base + attack * (args.norm / np.linalg.norm(attack)), *honest[1:]]
        for name, strategy in STRATEGIES:
            a = move(strategy, [u.astype(np.float32) for u in honest], base)
            b = move(strategy, [u.astype(np.float32) for u in poisoned], base)
            print(f"{name:36s} {n:7d} {a:13.3f} {b:12.4g} {b / a:8.2f}")
            if strategy.clip_median and strategy.name == "fedavg":
                worst = max(worst, b / a)
    print(f"default_worst_ratio={worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
