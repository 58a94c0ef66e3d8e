"""The aggregator's Prometheus endpoint, scraped while it serves a round through a real broker."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tinyfed import cli
from tinyfed.aggregator import settings
from tinyfed.aggregator.metrics import rejection_kind
from tinyfed.errors import UsageError
from tinyfed.mqtt.contract import Topics
from tinyfed.testbed.broker import Mosquitto, free_port

from .test_service import WAIT_S, Observer, Worker, aggregator_in_process, flags, perturbed


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as res:
        text = res.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_a_round_its_updates_and_rejections(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare
    port = free_port()
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    a = Worker(broker.url, topics, "a")
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "a")
    with aggregator_in_process([*argv, "--metrics", f"127.0.0.1:{port}"]):
        observer.global_model(0)
        # Execute: one malformed upload, then a good one that closes round 0
        a.send(b"\x00not msgpack")
        a.send(a.update(perturbed(1), steps=10))
        observer.global_model(1)
        deadline = time.monotonic() + WAIT_S
        while True:  # the gauges follow within a step of the service loop
            m = scrape(port)
            if m[("tinyfed_aggregator_round", ())] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    observer.close()
    a.close()
    # Assert
    assert m[("tinyfed_aggregator_rounds_total", (("outcome", "closed"),))] == 1
    assert m[("tinyfed_aggregator_rounds_total", (("outcome", "failed"),))] == 0
    assert m[("tinyfed_aggregator_updates_total", (("outcome", "accepted"),))] == 1
    assert m[("tinyfed_aggregator_updates_total", (("outcome", "rejected"),))] == 1
    assert m[("tinyfed_aggregator_rejections_total", (("kind", "malformed"),))] == 1
    assert m[("tinyfed_aggregator_round", ())] == 2  # round 1 closed: round 2 is open
    assert m[("tinyfed_aggregator_round_participants", ())] == 1
    assert m[("tinyfed_aggregator_round_duration_seconds_count", ())] == 1
    assert m[("tinyfed_aggregator_update_norm_count", ())] == 1
    assert m[("tinyfed_aggregator_mqtt_connections_total", ())] >= 1
    assert 1 <= m[("tinyfed_aggregator_inbox_peak", ())] <= 64


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("stale update: based on round 2, the open round is 3", "stale"),
        ("duplicate upload 'u1': already counted in round 4", "duplicate"),
        ("worker 'a' already counted in round 4 (upload 'u0')", "already_counted"),
        ("update from worker 'b' was published on the topic of 'a'", "wrong_topic"),
        ("worker 'z' is not one of the expected workers (--expect)", "not_expected"),
        ("architecture 'x', expected 'FC650_16_3'", "architecture"),
        ("feature pipeline 'paper', expected 'centroid'", "pipeline"),
        ("internal error while handling the update (KeyError: 'x')", "internal_error"),
        ("model update: field 'local_steps' is 18446744073709551615, too large", "malformed"),
    ],
)
def test_each_rejection_reason_has_a_bounded_kind(reason: str, kind: str) -> None:
    assert rejection_kind(reason) == kind


def test_a_bad_metrics_address_is_named() -> None:
    args = cli.build_parser().parse_args(["aggregator", "--fleet", "f", "--metrics", "9102"])
    with pytest.raises(UsageError, match="--metrics: give HOST:PORT"):
        settings.from_args(args, env={})
