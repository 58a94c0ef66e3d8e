"""``tinyfed demo`` end to end: Mosquitto, the aggregator, virtual boards and their gateways.

Everything is real and runs as separate processes; the tests then look at the report folder
and at the process table, where nothing the demo started may survive it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tinyfed import model
from tinyfed.testbed.virtual_board import build_virtual_board

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_virtual_board()
    return tmp_path_factory.mktemp("corpus")


def demo_command(
    report: Path, corpus: Path, fleet: str, rounds: int, family: str = "paper"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tinyfed.cli",
        "demo",
        "--model",
        family,
        "--boards",
        "2",
        "--rounds",
        str(rounds),
        "--no-dashboard",
        "--report",
        str(report),
        "--corpus-dir",
        str(corpus),
        "--per-word",
        "30",
        "--record-ms",
        "20",
        "--fleet",
        fleet,
    ]


def survivors(*needles: str) -> list[str]:
    """Command lines of live processes that mention any of ``needles``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state != "Z" and any(n in cmd for n in needles):
            found.append(f"{entry.name}: {cmd}")
    return found


def test_demo_runs_two_rounds_and_leaves_a_report_and_no_process(
    corpus_dir: Path, tmp_path: Path
) -> None:
    # Prepare
    report = tmp_path / "report"
    fleet = "t" + uuid.uuid4().hex[:8]
    # Execute
    t0 = time.monotonic()
    done = subprocess.run(
        demo_command(report, corpus_dir, fleet, rounds=2),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - t0
    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    assert survivors(str(report), fleet) == []
    final = (report / "global.bin").read_bytes()
    assert len(final) == model.MODEL_BYTES == 41_868
    assert final != model.to_bytes(model.init_params())
    m = json.loads((report / "metrics.json").read_text())
    closed = [r for r in m["rounds"] if r["outcome"] == "closed"]
    assert [r["round"] for r in closed] == [1, 2]  # round N makes global model N
    assert [len(r["participants"]) for r in closed] == [2, 2]
    assert all(p["local_steps"] == 10 for r in closed for p in r["participants"])
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in closed)
    assert m["final"]["round"] == 2
    assert m["final"]["sha256"] == model.sha256(model.from_bytes(final))
    losses = json.loads((report / "losses.json").read_text())
    assert [len(w["steps"]) for w in losses["workers"]] == [20, 20]
    assert (report / "loss.png").exists()
    assert (report / "accuracy.png").exists()
    assert "2 rounds closed" in done.stdout
    assert took < 90


def test_the_dscnn_family_demo_moves_only_heads_and_learns_unseen_voices(
    corpus_dir: Path, tmp_path: Path
) -> None:
    # Prepare
    report = tmp_path / "report"
    fleet = "t" + uuid.uuid4().hex[:8]
    # Execute: the frozen extractor in the boards' flash, heads trained on the boards
    done = subprocess.run(
        demo_command(report, corpus_dir, fleet, rounds=2, family="dscnn"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    assert survivors(str(report), fleet) == []
    final = (report / "global.bin").read_bytes()
    assert len(final) == 780  # 3 x 64 weights + 3 biases: all that moves in a round
    assert final != bytes(780)  # the zero head of round 0 was trained
    m = json.loads((report / "metrics.json").read_text())
    closed = [r for r in m["rounds"] if r["outcome"] == "closed"]
    assert [len(r["participants"]) for r in closed] == [2, 2]
    # 20 words per board on the pre-trained embeddings: far above chance on unseen voices
    # (a broken extractor, pipeline or head stays near 1/3)
    assert m["rounds"][-1]["accuracy"] > 0.7, m["rounds"][-1]


def test_ctrl_c_stops_every_process_and_still_writes_the_report(
    corpus_dir: Path, tmp_path: Path
) -> None:
    # Prepare: a long demo, interrupted once its first round has closed
    report = tmp_path / "report"
    fleet = "t" + uuid.uuid4().hex[:8]
    proc = subprocess.Popen(
        demo_command(report, corpus_dir, fleet, rounds=50),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 90
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("round 1/50 closed") or time.monotonic() > deadline:
                break
        assert any(ln.startswith("round 1/50 closed") for ln in seen), "".join(seen)
        assert survivors(str(report), fleet) != []  # the fleet is running
        # Execute: what a Ctrl-C at the terminal does to the demo
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Assert
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    assert survivors(str(report), fleet) == []
    m = json.loads((report / "metrics.json").read_text())
    assert any(r["outcome"] == "closed" for r in m["rounds"])
    assert (report / "global.bin").stat().st_size == 41_868
