"""Round requests at the real aggregator service (a real Mosquitto, scripted MQTT workers):
each is logged and counted by outcome; malformed, forged and unknown ones change nothing and
never stop the service; ``--round-requests off`` ignores them all."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.aggregator.test_poison import running_aggregator
from tests.aggregator.test_service import WAIT_S, Observer, Worker, flags, perturbed
from tinyfed import cli
from tinyfed.aggregator import settings
from tinyfed.aggregator.resume import open_machine
from tinyfed.aggregator.service import AggregatorService
from tinyfed.aggregator.store import Store
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import RoundRequest, Topics
from tinyfed.testbed.broker import Mosquitto


def counted(svc: AggregatorService, outcome: str) -> float:
    value = svc.metrics.registry.get_sample_value(
        "tinyfed_aggregator_round_requests_total", {"outcome": outcome}
    )
    return value or 0.0


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def ask(worker: Worker, payload: bytes | None = None) -> None:
    """Publish a round request on ``worker``'s topic (a valid one in its name by default)."""
    if payload is None:
        payload = contract.encode_request(RoundRequest(worker.id, time=time.time()))
    info = worker.client.publish(worker.topics.worker_request(worker.id), payload, qos=1)
    info.wait_for_publish(timeout=WAIT_S)


def test_bad_requests_are_counted_and_logged_and_a_good_one_asks_for_uploads(
    broker: Mosquitto, fleet: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    a, b, x = (Worker(broker.url, topics, w) for w in ("a", "b", "x"))
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "a,b", "--min-workers", "2")
    caplog.set_level(logging.INFO, logger="tinyfed.aggregator")
    with running_aggregator(argv) as svc:
        observer.global_model(0)
        # Execute: malformed, forged (b's name on a's topic), from outside --expect, then good
        ask(a, b'{"v":1,"worker":"a","kind":"shutdown","time":1}')
        ask(a, b'{"v":1,"worker":"a","kind":"round","time":NaN}')
        ask(a, contract.encode_request(RoundRequest("b", time=1.0)))
        ask(x)
        until(lambda: counted(svc, "unknown_worker") == 1, "the unknown worker's request")
        ask(a)
        status = observer.status(lambda s: s.upload_now == 1, "upload_now in the status")
        ask(b)  # the same round again
        until(lambda: counted(svc, "repeated") == 1, "the repeated request")
        # the round then closes as usual once both have reported
        a.send(a.update(perturbed(1), steps=4))
        b.send(b.update(perturbed(2), steps=2))
        event = observer.round_event(1)
        after = observer.status(lambda s: s.round == 2, "round 2 open")
        figures = {k: counted(svc, k) for k in ("malformed", "wrong_topic", "upload_now")}
        poisoned = svc.poisoned
    for client in (observer, a, b, x):
        client.close()
    # Assert
    assert figures == {"malformed": 2, "wrong_topic": 1, "upload_now": 1}
    assert poisoned == 0
    assert (status.round, status.reported_count) == (1, 0)
    assert [p.local_steps for p in event.participants] == [4, 2]
    assert after.upload_now is None
    assert "round request of a ignored: round request: field 'kind' is 'shutdown'" in caplog.text
    assert "field 'time' is not finite" in caplog.text
    assert "round request of x ignored: worker 'x' is not one of round 0's workers" in caplog.text
    assert "a asked for a round; 0 of at least 2 workers reported" in caplog.text


def test_round_requests_off_ignores_them(broker: Mosquitto, fleet: str, tmp_path: Path) -> None:
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    a = Worker(broker.url, topics, "a")
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "a,b")
    with running_aggregator([*argv, "--round-requests", "off"]) as svc:
        observer.global_model(0)
        a.send(a.update(perturbed(1)))
        observer.status(lambda s: s.reported_count == 1, "a's update counted")
        ask(a)
        until(lambda: counted(svc, "off") == 1, "the request, ignored")
        round_, closed = svc.machine.round, counted(svc, "closed")
    observer.close()
    a.close()
    assert (round_, closed) == (0, 0)


def test_round_requests_are_on_by_default_and_the_flag_takes_on_or_off() -> None:
    parser = cli.build_parser()
    base = ["aggregator", "--fleet", "f"]
    assert settings.from_args(parser.parse_args(base), env={}).round_requests is True
    off = parser.parse_args([*base, "--round-requests", "off"])
    assert settings.from_args(off, env={}).round_requests is False
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--round-requests", "maybe"])


def test_a_machine_rebuilt_after_a_failure_still_asks_for_uploads(tmp_path: Path) -> None:
    # Prepare: a request below quorum set upload_now; then a message's handling failed, and
    # the service rebuilds its round machine from the store (the path of _isolated / _tick)
    argv = flags("mqtt://127.0.0.1:1", "f", tmp_path / "agg.db", "--expect", "a,b")
    config = settings.from_args(cli.build_parser().parse_args(argv), env={})
    svc = AggregatorService(config)
    with Store(config.db) as store:
        svc.store = store
        svc.machine = open_machine(config, store, 100.0)
        svc.machine.round_requested("a", 101.0)
        # Execute
        rebuilt = svc._rebuilt_machine(102.0)
    # Assert
    assert (rebuilt.round, rebuilt.upload_now) == (0, 0)
