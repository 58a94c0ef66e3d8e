"""``tinyfed board flash``: with no build tool on PATH it says how to get one and fails; with a
fake ``pio`` (or ``arduino-cli`` and ``make``) on PATH, scripts that record their arguments,
it runs exactly the commands of firmware/README.md, "Flashing"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tinyfed.board import flash
from tinyfed.board.cli import FIRMWARE_DIR

TINYFED = [sys.executable, "-m", "tinyfed.cli"]


def _fake(bindir: Path, name: str, code: int = 0) -> Path:
    """An executable ``name`` in ``bindir`` that appends its arguments to ``name.args``."""
    bindir.mkdir(exist_ok=True)
    record = bindir / f"{name}.args"
    script = bindir / name
    script.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\nexit {code}\n')
    script.chmod(0o755)
    return record


def _flash(bindir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bindir.mkdir(exist_ok=True)
    return subprocess.run(
        [*TINYFED, "board", "flash", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bindir)},
        timeout=60,
    )


def test_without_a_tool_it_says_how_to_get_one(tmp_path: Path) -> None:
    for args in ((), ("--dry-run",)):
        proc = _flash(tmp_path / "bin", *args)

        assert proc.returncode == 1, proc.stderr
        assert "neither PlatformIO (pio) nor arduino-cli was found on PATH" in proc.stderr
        assert "pip install platformio" in proc.stderr
        assert flash.ARDUINO_CLI_INSTALL in proc.stderr
        assert proc.stdout == ""


def test_an_explicit_tool_that_is_missing_is_named(tmp_path: Path) -> None:
    _fake(tmp_path / "bin", "arduino-cli")

    proc = _flash(tmp_path / "bin", "--tool", "pio")

    assert proc.returncode == 1
    assert "PlatformIO (pio) was not found on PATH: pip install platformio" in proc.stderr


def test_pio_uploads_the_platformio_project(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    record = _fake(bindir, "pio")

    proc = _flash(bindir, "--port", "/dev/ttyACM7")

    assert proc.returncode == 0, proc.stderr
    assert record.read_text() == f"run -d {FIRMWARE_DIR} -t upload --upload-port /dev/ttyACM7\n"
    assert f"$ {bindir / 'pio'} run -d {FIRMWARE_DIR} -t upload" in proc.stdout


def test_dry_run_prints_and_runs_nothing(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    record = _fake(bindir, "pio")

    proc = _flash(bindir, "--dry-run")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"$ {bindir / 'pio'} run -d {FIRMWARE_DIR} -t upload\n"
    assert not record.exists()


def test_a_failing_upload_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    _fake(bindir, "pio", code=3)

    proc = _flash(bindir)

    assert proc.returncode == 3
    assert "pio exited with 3" in proc.stderr


def test_arduino_cli_compiles_and_uploads_the_sketch_folder(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    make = _fake(bindir, "make")
    cli = _fake(bindir, "arduino-cli")
    sketch = FIRMWARE_DIR / "build" / "arduino" / "tinyfed"

    dry = _flash(bindir, "--dry-run")
    proc = _flash(bindir, "--port", "/dev/ttyACM1")

    assert dry.returncode == 0, dry.stderr
    assert f"upload -p PORT --fqbn {flash.FQBN}" in dry.stdout
    assert "give --port" in dry.stderr
    assert proc.returncode == 0, proc.stderr
    assert make.read_text() == f"-C {FIRMWARE_DIR} arduino-sketch\n"
    assert cli.read_text() == (
        f"compile --fqbn arduino:mbed_nano:nano33ble {sketch}\n"
        f"upload -p /dev/ttyACM1 --fqbn arduino:mbed_nano:nano33ble {sketch}\n"
    )


def test_arduino_cli_without_a_port_runs_nothing(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    make = _fake(bindir, "make")
    cli = _fake(bindir, "arduino-cli")

    proc = _flash(bindir)

    assert proc.returncode == 1
    assert "no board port found: give --port" in proc.stderr
    assert not make.exists()
    assert not cli.exists()
