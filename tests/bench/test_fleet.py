"""``tinyfed bench fleet``: simulated gateways through a real broker and the real aggregator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_the_fleet_bench_counts_every_worker_of_every_round_at_two_sizes(tmp_path: Path) -> None:
    # Execute: the real command, small sizes (the figures in docs/scale.md are at 10,000)
    out = subprocess.run(
        [
            *(sys.executable, "-m", "tinyfed.cli", "bench", "fleet", "--workers", "3,25"),
            *("--rounds", "2", "--spread", "0.2", "--timeout", "120"),
            *("--plot", str(tmp_path / "scale.png")),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # Assert: one line per size and round, every update counted, a growth ratio
    assert out.returncode == 0, out.stdout + out.stderr
    rows = re.findall(r"^\s+(\d+)\s+(\d)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\d+)/(\d+)$",
                      out.stdout, re.MULTILINE)  # fmt: skip
    assert [(w, r, c) for w, r, c, _ in rows] == [
        ("3", "0", "3"),
        ("3", "1", "3"),
        ("25", "0", "25"),
        ("25", "1", "25"),
    ], out.stdout
    assert "aggregator CPU per round grows" in out.stdout
    assert "cpu_growth=" in out.stdout.splitlines()[-2]
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_fleet_bench_runs_a_dscnn_fleet() -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "tinyfed.cli", "bench", "fleet", "--workers", "3"),
            *("--rounds", "1", "--spread", "0.2", "--timeout", "120", "--model", "dscnn"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = re.findall(r"^\s+(\d+)\s+(\d)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\d+)/(\d+)$",
                      out.stdout, re.MULTILINE)  # fmt: skip
    assert [(w, r, c) for w, r, c, _ in rows] == [("3", "0", "3")], out.stdout
    assert "dscnn family, 780-byte models" in out.stdout
