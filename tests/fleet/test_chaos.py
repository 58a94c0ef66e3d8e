"""Chaos: the broker and the aggregator SIGKILLed at random moments under a fleet of gateways.

A private Mosquitto (persistence on), the real aggregator as a subprocess and four simulated
gateways (the real gateway's MQTT side, :mod:`tinyfed.gateway.simulated`). For 30 s one of the two
processes is killed at a seeded-random moment and restarted after a short random pause; then
the fleet runs on until 3 more rounds close (or 30 s pass). The aggregator's database and the
gateways' records must then show: no update acknowledged with an "accepted" receipt lost, none
counted twice, rounds still closing, and every global model equal to the aggregation of its
round's updates recomputed from what the gateways sent. The scenario is
:func:`tinyfed.fleet.chaos.run_chaos`, which ``bench/chaos.py`` runs longer.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tinyfed.fleet.chaos import ChaosConfig, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SEED = int(os.environ.get("TINYFED_CHAOS_SEED", "7"))


def test_random_broker_and_aggregator_kills_lose_nothing_count_nothing_twice_and_never_stall(
    tmp_path: Path,
) -> None:
    # Prepare
    config = ChaosConfig(
        seconds=30.0,
        gateways=4,
        seed=SEED,
        round_timeout=8.0,
        min_workers=1,
        resend_min=2.0,
        resend_max=8.0,
        settle_rounds=3,
        settle_timeout=30.0,
        spool=True,
        workdir=tmp_path,
    )
    # Execute
    report = asyncio.run(run_chaos(config, say=print))
    print(report.table())
    figures = report.summary()
    # Assert
    assert report.kills["broker"] >= 1, f"the broker was never killed: {figures}"
    assert report.kills["aggregator"] >= 1, f"the aggregator was never killed: {figures}"
    assert report.uploads >= 8, f"too few uploads to mean anything: {figures}"
    assert report.accepted >= 4, f"too few accepted receipts to mean anything: {figures}"
    assert report.lost == [], f"acknowledged updates lost: {report.lost}; {figures}"
    assert report.double_counted == [], f"counted twice: {report.double_counted}; {figures}"
    assert report.misplaced == [], f"counted in the wrong round: {report.misplaced}; {figures}"
    assert not report.stalled, (
        f"stalled: {report.advanced} round(s) closed in {report.settle_s:.1f} s after the "
        f"chaos; {figures}"
    )
    assert report.rejected_but_counted == [], (
        f"a receipt said rejected (never counted) for a counted update: "
        f"{report.rejected_but_counted}; {figures}"
    )
    assert report.mismatches == [], f"recomputation: {report.mismatches}; {figures}"
    assert report.aggregator_crashes == [], f"crashes: {report.aggregator_crashes}; {figures}"
    assert report.aggregator_exit == 0, f"aggregator exit {report.aggregator_exit}; {figures}"
    assert report.problems() == [], figures
