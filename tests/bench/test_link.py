"""``tinyfed bench link`` on a virtual board: the figures it prints and its last line."""

from __future__ import annotations

import re

import pytest

from tinyfed.bench.link import Exchange, gatt_ops, usb_ms
from tinyfed.cli import main


def test_bench_link_compares_tinyfed_with_the_paper_on_the_same_link(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Execute: a short baseline (scaled to 10,467 round trips) keeps the test quick.
    assert main(["bench", "link", "--repeats", "2", "--baseline-round-trips", "400"]) == 0
    out = capsys.readouterr().out
    # Assert
    assert "read back: identical to the model sent" in out
    assert re.search(r"USB full speed, tinyfed's frame sequence: down \d+ ms", out)
    assert re.search(r"BLE at MTU 247, GATT operations per model: down \d+", out)
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"round_trips_ratio=([\d.]+) speedup_down=([\d.]+) speedup_up=([\d.]+)", last)
    assert m, last
    ratio, down, up = (float(x) for x in m.groups())
    assert ratio >= 100  # <= 100 round trips per model, each way
    # The targets are 20x; half of that here leaves room for a busy CI machine.
    assert down >= 10
    assert up >= 10


def test_usb_and_ble_estimates_count_packets_frames_and_gatt_operations() -> None:
    # One window of 8 full frames out and a 12-byte acknowledgement back.
    window = [Exchange(out=8 * 242, into=12)]
    assert usb_ms(window) == 2  # 31 + 1 packets: two 1 ms frames of 19
    assert gatt_ops(window) == (8, 1)  # 1,936 B in 244-byte writes, one notification
