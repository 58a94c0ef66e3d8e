"""The paper's figures through the full stack: the fleet computes what the Python replay does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyfed.experiments import fleet as fx
from tinyfed.testbed.virtual_board import build_virtual_board

pytestmark = pytest.mark.slow


def test_loss_jump_compares_a_rounds_first_step_with_the_same_class_before() -> None:
    losses = [0.5, 0.1, 0.4, 0.1, 0.9, 0.1]
    labels = [0, 2, 0, 2, 0, 2]
    # round 2 starts at step 4 (label 0): 0.9 against 0.4, the last label-0 loss of round 1
    assert fx.loss_jump(losses, labels, 4) == pytest.approx(0.5)
    assert fx.loss_jump(losses[:4], labels[:4], 4) is None


def test_fig8_through_the_full_stack_matches_its_replay(tmp_path: Path) -> None:
    # Prepare: the paper's non-IID figure, shortened to 2 rounds on a small corpus
    build_virtual_board()
    fx.FIGURES["fig8-short"] = fx.FleetExperiment(
        "fig8-short",
        "short",
        fx.MOUNTAINS,
        True,
        boards=2,
        steps=20,
        local_steps=10,
        lr=0.3,
        non_iid=True,
        strategies=("fedavg", "fedavgm"),
    )
    try:
        # Execute
        summary = fx.run_experiment(
            "fig8-short",
            out=tmp_path / "out",
            pipeline_names=["paper"],
            corpus_dir=tmp_path / "corpus",
            per_word=30,
        )
    finally:
        del fx.FIGURES["fig8-short"]
    # Assert
    assert [r["strategy"] for r in summary["runs"]] == ["fedavg", "fedavgm"]
    for run in summary["runs"]:
        assert run["replay_max_loss_diff"] < 1e-4
        assert run["replay_max_param_diff"] < 1e-3
        assert [len(x) for x in run["losses"]] == [20, 20]
        assert set(run["labels"][0]) == {0, 2}  # board 1: montserrat and silence
        assert set(run["labels"][1]) == {1, 2}  # board 2: pedraforca and silence
        assert len(run["global_accuracy_per_round"]) == 3
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(saved["groups"]) == 2
    assert (tmp_path / "out" / "fig8-short.png").exists()
    assert (tmp_path / "out" / "fig8-short-accuracy.png").exists()
