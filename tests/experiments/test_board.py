"""``tinyfed experiment``: the single-board runs produce consistent losses, figures and scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyfed import model
from tinyfed.cli import main
from tinyfed.data import dataset as ds
from tinyfed.features import pipelines


@pytest.fixture(scope="module")
def fig6_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fig6")
    args = ["experiment", "fig6", "--out", str(out), "--corpus-dir", str(out / "corpus")]
    code = main([*args, "--per-word", "15", "--repeats", "2", "--ceiling-epochs", "2"])
    assert code == 0
    return out


def test_experiment_writes_losses_summary_and_figure(fig6_run: Path) -> None:
    losses = json.loads((fig6_run / "losses.json").read_text())
    assert set(losses) == {"paper", "centroid"}
    assert [len(run) for run in losses["paper"]] == [60, 60]
    summary = json.loads((fig6_run / "summary.json").read_text())
    for result in summary["pipelines"].values():
        assert 0.0 <= result["test_accuracy_mean"] <= 1.0
        assert result["test_clips"] > 0
    assert (fig6_run / "fig6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_losses_are_the_boards_training_steps(fig6_run: Path) -> None:
    # Recompute the first speaking order independently with the reference trainer.
    corpus = next((fig6_run / "corpus").iterdir())
    data = ds.load(corpus, classes=["vermell", "verd", "blau"], splits=["train"])
    x = pipelines.get_pipeline("paper").compute_batch(data.audio)
    order = ds.alternating_order(data.labels, steps=60, seed=0)
    trainer = model.Trainer(model.init_params(), lr=0.3, momentum=0.9)
    expected = [trainer.step(x[i], int(data.labels[i])).loss for i in order]
    got = json.loads((fig6_run / "losses.json").read_text())["paper"][0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert [int(data.labels[i]) for i in order[:6]] == [0, 1, 2, 0, 1, 2]


def test_unknown_pipeline_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["experiment", "fig5", "--pipeline", "mfcc2", "--out", str(tmp_path)]) == 2
    assert "unknown feature pipeline 'mfcc2'" in capsys.readouterr().err
