"""A fleet run replayed in Python: what the fleet should compute, step by step.

:func:`simulate` runs a :class:`~tinyfed.fleet.scenario.Scenario` on the reference network
(:class:`tinyfed.model.Trainer`, momentum reset at every new global model as the board does it)
and the aggregator's own strategy functions; :mod:`tinyfed.experiments.fleet` compares every
loss the fleet published with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyfed import model
from tinyfed.aggregator import strategies as agg
from tinyfed.data import dataset as ds
from tinyfed.errors import UsageError
from tinyfed.features import pipelines
from tinyfed.fleet import scenario as sc


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
