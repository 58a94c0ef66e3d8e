"""``tinyfed demo`` and ``tinyfed monitor`` refuse bad input at once, with a clear error."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tinyfed.cli import main
from tinyfed.fleet import cli as fleet_cli
from tinyfed.testbed.broker import free_port


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-1"], "learning rate must be in (0, 10], got -1"),
        (["--momentum", "1.5"], "momentum must be in [0, 1), got 1.5"),
    ],
)
def test_demo_refuses_bad_hyper_parameters_before_making_the_corpus(
    tmp_path: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus"
    args = ["demo", "--corpus-dir", str(corpus), "--report", str(tmp_path / "r"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not corpus.exists()


@pytest.mark.parametrize("command", ["demo", "monitor"])
def test_an_unreachable_broker_is_named_not_a_traceback(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    args = [command, "--broker", url]
    args += ["--fleet", "f"] if command == "monitor" else ["--corpus-dir", str(tmp_path / "c")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot reach the broker at 127.0.0.1:" in err
    assert "Traceback" not in err


def test_a_second_demo_keeps_the_first_ones_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "demo"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    then = time.mktime((2026, 11, 30, 12, 0, 0, 0, 0, -1))
    os.utime(report, (then, then))
    fleet_cli._keep_previous(report)
    kept = tmp_path / "demo-20261130-120000"
    assert (kept / "metrics.json").read_text() == "{}"
    assert not report.exists()
    assert f"kept as {kept}/" in capsys.readouterr().out
    report.mkdir()  # an empty folder is simply used
    fleet_cli._keep_previous(report)
    assert report.is_dir()
