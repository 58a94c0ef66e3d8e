"""``tinyfed bench aggregate``: both ways agree, and only the paper's way holds every model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tinyfed import cli, model
from tinyfed.bench import aggregate as bench


def test_streaming_and_paper_way_produce_the_same_global_model() -> None:
    # Prepare
    g, payloads = bench.make_payloads(40)
    # Execute
    ours = bench.aggregate_streaming(g, payloads)
    papers = bench.aggregate_paper(g, payloads)
    # Assert
    np.testing.assert_allclose(ours, papers, atol=1e-6)
    assert not np.array_equal(ours, g.params)


def test_streaming_peak_memory_stays_a_few_models_while_the_papers_grows() -> None:
    # Execute
    result = bench.run_bench(200)
    # Assert: per-update bookkeeping is a few hundred bytes; models are 41,868 bytes each
    assert result.tinyfed.peak_bytes < 10 * model.MODEL_BYTES
    assert result.paper.peak_bytes > 200 * model.MODEL_BYTES


def test_bench_command_ends_with_the_key_value_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    code = cli.main(["bench", "aggregate", "--updates", "30"])
    # Assert
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0
    assert re.fullmatch(r"updates_per_s=\d+ peak_mb=\d+\.\d\d speedup=\d+\.\d", last)
