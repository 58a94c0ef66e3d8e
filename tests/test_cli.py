"""The ``tinyfed`` command: every subcommand registers and teaches with ``--help``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinyfed.cli import build_parser, main

COMMANDS = [
    ["data", "synth"],
    ["data", "info"],
    ["data", "import"],
    ["features"],
    ["model", "init"],
    ["train"],
    ["eval"],
    ["classify"],
    ["model", "info"],
    ["experiment"],
    ["demo"],
    ["monitor"],
    ["dashboard"],
    ["plot"],
    ["aggregator"],
    ["gateway"],
    ["broker", "credentials"],
    ["board", "selftest"],
    ["board", "flash"],
    ["bench", "link"],
    ["bench", "aggregate"],
    ["bench", "fleet"],
]


def test_top_level_help_teaches_the_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "workflow:" in text
    for name in ("data", "features", "experiment", "aggregator", "gateway", "board", "bench"):
        assert f"    {name}" in text


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*command, "--help"])
    assert info.value.code == 0
    assert "usage: tinyfed " + " ".join(command) in capsys.readouterr().out


def test_console_script_runs_and_reports_usage_errors_without_traceback() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinyfed.cli",
            "eval",
            "missing.bin",
            "--features",
            "x.npy",
            "--labels",
            "y.npy",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "missing.bin" in result.stderr
    assert "Traceback" not in result.stderr
