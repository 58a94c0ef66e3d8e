"""Without the ``plot`` extra (matplotlib) runs keep their data and say how to get figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Run in a child interpreter where importing matplotlib fails, as in a venv without the extra.
BLOCK = "import sys; sys.modules['matplotlib'] = None; "


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_report_without_matplotlib_keeps_its_data_and_names_the_extra(tmp_path: Path) -> None:
    done = run(
        "import logging; logging.basicConfig(); "
        "from tinyfed.fleet import report; from tinyfed.fleet.recorder import FleetSnapshot; "
        "snap = FleetSnapshot('f', 0.0, (), (), (), (), None, 0, True); "
        "info = report.RunInfo(title='t', strategy='', pipeline='', classes=(), non_iid=False, "
        "rounds=None, local_steps=None, lr=None, momentum=None, boards=(), held_out_clips=None); "
        f"report.write(__import__('pathlib').Path({str(tmp_path)!r}), snap, info)"
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "loss.png").exists()
    assert "pip install 'tinyfed[plot]'" in done.stderr


def test_tinyfed_plot_without_matplotlib_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "losses.json").write_text('{"workers": []}')
    done = run(f"from tinyfed.cli import main; raise SystemExit(main(['plot', {str(tmp_path)!r}]))")
    assert done.returncode == 2
    assert "pip install 'tinyfed[plot]'" in done.stderr
    assert "Traceback" not in done.stderr
