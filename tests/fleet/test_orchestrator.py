"""The process registry stops every child it started, even stubborn ones and their children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyfed.fleet.orchestrator import FleetError, ProcessRegistry


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids_of_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_stop_all_terminates_kills_the_stubborn_and_reaps_grandchildren(tmp_path: Path) -> None:
    # Prepare
    registry = ProcessRegistry(grace=0.5)
    polite = registry.spawn("polite", ["sleep", "60"], stage=1, log_path=tmp_path / "a.log")
    stubborn = registry.spawn(
        "stubborn",
        ["sh", "-c", "trap '' TERM; sleep 60 & wait"],
        stage=2,
        log_path=tmp_path / "b.log",
    )
    parent = registry.spawn(
        "parent", ["sh", "-c", "sleep 60 & wait"], stage=3, log_path=tmp_path / "c.log"
    )
    deadline = time.monotonic() + 5
    while len(pids_of_group(stubborn.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    family = pids_of_group(stubborn.pid) + pids_of_group(parent.pid)
    assert len(family) == 4  # two shells and their two sleeps
    # Execute
    t0 = time.monotonic()
    registry.stop_all()
    took = time.monotonic() - t0
    # Assert
    for pid in [polite.pid, *family]:
        assert not alive(pid), f"pid {pid} survived"
    assert took < 3.0  # one grace period for the stubborn stage only
    assert registry.children == []


def test_check_names_a_child_that_died_and_shows_its_log(tmp_path: Path) -> None:
    registry = ProcessRegistry(grace=0.5)
    registry.spawn(
        "aggregator",
        ["sh", "-c", "echo 'cannot open the database'; exit 3"],
        stage=1,
        log_path=tmp_path / "agg.log",
    )
    deadline = time.monotonic() + 5
    while registry.children[0].returncode() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(FleetError, match=r"aggregator \(pid \d+\) exited with status 3") as err:
        registry.check()
    assert "cannot open the database" in str(err.value)
    registry.stop_all()


def test_children_do_not_get_the_terminals_ctrl_c(tmp_path: Path) -> None:
    # Each child leads its own session: a Ctrl-C (SIGINT to the foreground process group)
    # reaches only the parent, which then stops the children in order.
    registry = ProcessRegistry(grace=0.5)
    child = registry.spawn("c", ["sleep", "60"], stage=1, log_path=tmp_path / "c.log")
    try:
        assert os.getsid(child.pid) == child.pid
        assert os.getpgid(child.pid) != os.getpgid(0)
    finally:
        registry.stop_all()
    assert not alive(child.pid)


PARENT = """
import sys, time
from pathlib import Path
from tinyfed.fleet.orchestrator import ProcessRegistry
registry = ProcessRegistry(grace=0.5)
folder = Path(sys.argv[1])
a = registry.spawn("a", ["sleep", "60"], stage=1, log_path=folder / "a.log")
b = registry.spawn("b", ["sh", "-c", "sleep 60 & wait"], stage=2, log_path=folder / "b.log")
print(a.pid, b.pid, flush=True)
time.sleep(60)
"""


def test_children_are_stopped_when_the_parent_is_killed(tmp_path: Path) -> None:
    # Prepare: a parent that started two process groups (one with a grandchild)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pgids = [int(x) for x in parent.stdout.readline().split()]
    time.sleep(0.3)  # the grandchild starts
    assert all(pids_of_group(g) for g in pgids)
    # Execute: the parent dies without any chance to clean up
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    # Assert: the watchdog stops both groups, grandchild included
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pids_of_group(g) for g in pgids):
        time.sleep(0.1)
    assert [pids_of_group(g) for g in pgids] == [[], []]


def test_a_clean_stop_leaves_no_watchdog_behind(tmp_path: Path) -> None:
    registry = ProcessRegistry(grace=0.5)
    registry.spawn("a", ["sleep", "60"], stage=1, log_path=tmp_path / "a.log")
    dog = registry._watchdog
    assert dog is not None
    registry.stop_all()
    registry.close_watchdog()
    assert dog.poll() == 0
