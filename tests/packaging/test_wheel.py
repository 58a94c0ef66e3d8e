"""The built wheel alone, in a fresh virtual environment, runs the demo from any folder.

The virtual board is built on first use from the firmware sources the wheel ships, in the user
cache (never in site-packages); without a C++ compiler the demo says so instead of a traceback;
without the ``plot`` extra the report has its data and no figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyfed.model import families

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with only the wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", ROOT, cwd=tmp
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("tinyfed-*.whl")
    made = run(sys.executable, "-m", "venv", tmp / "venv", cwd=tmp)
    assert made.returncode == 0, made.stderr
    pip = tmp / "venv" / "bin" / "pip"
    installed = run(pip, "install", "-q", "--disable-pip-version-check", wheel, cwd=tmp)
    assert installed.returncode == 0, installed.stderr
    return tmp / "venv"


def demo_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {**env, "XDG_CACHE_HOME": str(cache), **extra}


def demo_args(folder: Path) -> list[str | Path]:
    return [
        *("demo", "--boards", "2", "--rounds", "1", "--no-dashboard", "--per-word", "30"),
        *("--record-ms", "20", "--report", folder / "report", "--corpus-dir", folder / "corpus"),
    ]


def test_the_wheel_runs_the_demo_from_any_folder(venv: Path, tmp_path: Path) -> None:
    # Execute: from an empty folder, with an empty user cache
    cache = tmp_path / "cache"
    done = run(venv / "bin" / "tinyfed", *demo_args(tmp_path), cwd=tmp_path, env=demo_env(cache))
    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rounds closed" in done.stdout
    # the default family: the released extractor and the firmware's weights came with the wheel
    assert len((tmp_path / "report" / "global.bin").read_bytes()) == families.DSCNN.model_bytes
    assert (tmp_path / "report" / "metrics.json").exists()
    assert not (tmp_path / "report" / "loss.png").exists()  # no plot extra: no figures...
    assert "pip install 'tinyfed[plot]'" in done.stdout + done.stderr  # ...and how to get them
    (built,) = cache.glob("tinyfed/firmware-*/build/host/tinyfed-virtual-board")
    assert os.access(built, os.X_OK)
    site = next((venv / "lib").glob("python3*/site-packages/tinyfed"))
    assert not list(site.rglob("build")), "nothing may be built inside site-packages"
    assert not list(site.rglob("*.lock"))


def test_the_wheel_names_a_missing_compiler(venv: Path, tmp_path: Path) -> None:
    env = demo_env(tmp_path / "cache", CXX="no-such-c++")
    done = run(venv / "bin" / "tinyfed", *demo_args(tmp_path), cwd=tmp_path, env=env)
    assert done.returncode != 0
    assert "a C++ compiler (no-such-c++) is not installed" in done.stderr
    assert "sudo apt-get install g++ make" in done.stderr
    assert "Traceback" not in done.stderr
