"""The paper's Fig. 5 to Fig. 8 as fleet runs: what each figure's fleet is (boards, words, steps).

:data:`FIGURES` is the table :mod:`tinyfed.experiments.fleet` runs; each entry is a
:class:`FleetExperiment`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Extra ``tinyfed aggregator`` flags of a strategy. The paper's figures start from the
    paper's seeded model (``--init-scheme paper``; a new fleet would start from the scaled
    init), as their replay (:mod:`tinyfed.experiments.replay`) does."""
    return ("--init-scheme", "paper", *(FEDAVGM_ARGS if strategy == "fedavgm" else ()))
