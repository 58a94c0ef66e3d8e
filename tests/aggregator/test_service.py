"""The aggregator service against a real Mosquitto, with scripted MQTT workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest

from tinyfed import cli, model
from tinyfed.aggregator import service, settings
from tinyfed.aggregator.store import Store
from tinyfed.errors import UsageError
from tinyfed.model import families
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import (
    AggregatorStatus,
    GlobalModel,
    LossSummary,
    ModelUpdate,
    RoundEvent,
    Topics,
    WorkerStatus,
)
from tinyfed.mqtt.session import connect, make_client, parse_broker_url
from tinyfed.testbed.broker import Mosquitto

WAIT_S = 15.0


class Observer:
    """A monitoring client: records everything published under the fleet's topics."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.topics = topics
        self._messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client = make_client(parse_broker_url(url), f"observer-{os.getpid()}-{id(self)}")
        self.client.on_connect = lambda c, *a: c.subscribe(topics.base + "#", qos=1)
        self.client.on_message = self._on_message
        connect(self.client, parse_broker_url(url))
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    def wait(self, topic: str, accept: Callable[[bytes], bool], what: str) -> bytes:
        deadline = time.monotonic() + WAIT_S
        seen = 0
        with self._cond:
            while True:
                for msg in self._messages[seen:]:
                    if msg.topic == topic and accept(bytes(msg.payload)):
                        return bytes(msg.payload)
                seen = len(self._messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cond.wait(left)

    def global_model(self, round_: int) -> GlobalModel:
        payload = self.wait(
            self.topics.global_model,
            lambda p: bool(p) and contract.decode_global(p).round == round_,
            f"global model {round_}",
        )
        return contract.decode_global(payload)

    def round_event(self, round_: int, outcome: str = "closed") -> RoundEvent:
        def match(p: bytes) -> bool:
            e = contract.decode_round_event(p)
            return (e.round, e.outcome) == (round_, outcome)

        return contract.decode_round_event(
            self.wait(self.topics.rounds, match, f"round {round_} {outcome}")
        )

    def status(self, accept: Callable[[AggregatorStatus], bool], what: str) -> AggregatorStatus:
        payload = self.wait(
            self.topics.aggregator_status,
            lambda p: bool(p) and accept(contract.decode_aggregator_status(p)),
            what,
        )
        return contract.decode_aggregator_status(payload)

    def events(self) -> list[RoundEvent]:
        with self._cond:
            return [
                contract.decode_round_event(bytes(m.payload))
                for m in self._messages
                if m.topic == self.topics.rounds
            ]

    def receipts(self, worker_id: str) -> list[contract.Receipt]:
        """The receipts the aggregator published for ``worker_id``, in order."""
        topic = self.topics.worker_receipt(worker_id)
        with self._cond:
            return [
                contract.decode_receipt(bytes(m.payload))
                for m in self._messages
                if m.topic == topic and m.payload
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Worker:
    """A scripted worker: a plain paho client speaking the contract, as a gateway does."""

    def __init__(self, url: str, topics: Topics, worker_id: str) -> None:
        self.topics, self.id = topics, worker_id
        broker = parse_broker_url(url)
        offline = contract.encode_worker_status(WorkerStatus(worker_id, "offline"))
        self.client = make_client(
            broker,
            f"worker-{topics.fleet}-{worker_id}",
            will_topic=topics.worker_status(worker_id),
            will_payload=offline,
        )
        connect(self.client, broker)
        self.client.loop_start()
        self.wait_connected()
        online = contract.encode_worker_status(WorkerStatus(worker_id, "online", transport="test"))
        self.client.publish(topics.worker_status(worker_id), online, qos=1, retain=True)

    def wait_connected(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while not self.client.is_connected():
            assert time.monotonic() < deadline, f"worker {self.id} did not connect"
            time.sleep(0.02)

    def update(
        self, params: np.ndarray, *, base: int = 0, steps: int = 10, upload: str = ""
    ) -> ModelUpdate:
        return ModelUpdate(
            worker_id=self.id,
            base_round=base,
            local_steps=steps,
            params=params.astype(np.float32),
            upload_id=upload or f"{self.id}-{base}-{time.monotonic_ns()}",
            pipeline="centroid",
            loss=LossSummary(count=steps, mean=0.3, last=0.25),
        )

    def send(self, u: ModelUpdate | bytes) -> None:
        payload = u if isinstance(u, bytes) else contract.encode_update(u)
        info = self.client.publish(self.topics.worker_update(self.id), payload, qos=1)
        info.wait_for_publish(timeout=WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def flags(url: str, fleet: str, db: Path | str, *extra: str) -> list[str]:
    """An aggregator of the paper family's fleet: these tests exchange its 10,467-float models
    (the default family, dscnn, has tests of its own: test_families_service.py)."""
    model = [] if "--model" in extra else ["--model", "paper"]
    return ["aggregator", "--broker", url, "--fleet", fleet, "--db", str(db), *model, *extra]


@contextmanager
def aggregator_in_process(argv: list[str]) -> Iterator[None]:
    config = settings.from_args(cli.build_parser().parse_args(argv), env={})
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(config, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "aggregator did not stop"


def aggregator_process(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tinyfed.cli", *argv], stdout=out, stderr=subprocess.STDOUT
        )


def perturbed(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (families.PAPER.init() + rng.normal(0, 0.1, model.N_PARAMS)).astype(np.float32)


def fedavg(*pairs: tuple[np.ndarray, float]) -> np.ndarray:
    stack = np.stack([p.astype(np.float64) for p, _ in pairs])
    return np.average(stack, axis=0, weights=[w for _, w in pairs])


@pytest.fixture
def observer(broker: Mosquitto, fleet: str) -> Iterator[Observer]:
    obs = Observer(broker.url, Topics(fleet))
    yield obs
    obs.close()


def wait_until(check: Callable[[], bool]) -> bool:
    """Poll ``check`` until it holds (True) or WAIT_S has passed (False)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_all_workers_report_and_every_board_can_catch_up(
    broker: Mosquitto, fleet: str, observer: Observer, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    a, b = Worker(broker.url, topics, "a"), Worker(broker.url, topics, "b")
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "a,b", "--lr", "0.1")
    with aggregator_in_process(argv):
        g0 = observer.global_model(0)
        pa, pb = perturbed(1), perturbed(2)
        # Execute
        a.send(a.update(pa, steps=10))
        b.send(b.update(pb, steps=4))
        g1 = observer.global_model(1)
        event = observer.round_event(1)
        pruned = wait_until(lambda: Store(tmp_path / "agg.db").stored_updates() == 0)
    late = Observer(broker.url, topics)  # a board that boots after the round
    retained = late.global_model(1)
    late.close()
    a.close()
    b.close()
    # Assert
    np.testing.assert_array_equal(g0.params, families.PAPER.init())
    np.testing.assert_allclose(g1.params, fedavg((pa, 10), (pb, 4)), atol=1e-7)
    assert (g1.hyper.lr, g1.hyper.momentum, g1.hyper.local_steps) == (0.1, 0.9, 10)
    assert (g1.pipeline, g1.arch) == ("centroid", model.ARCH_ID)
    assert [(p.worker_id, p.weight) for p in event.participants] == [("a", 10.0), ("b", 4.0)]
    assert event.global_sha256 == g1.sha256 == retained.sha256
    assert event.loss_mean == pytest.approx(0.3)
    # the round's figures travel with its event (what the aggregator stores as metrics)
    assert event.metrics["participants"] == 2
    assert event.metrics["total_weight"] == 14
    assert event.metrics["loss_min"] <= event.metrics["loss_mean"] <= event.metrics["loss_max"]
    assert event.metrics["update_norm_max"] > 0
    assert "aggregate_s" in event.metrics
    assert pruned, "the closed round's update blobs were not deleted while the service idled"


def test_dropped_worker_round_closes_at_timeout_with_quorum(
    broker: Mosquitto, fleet: str, observer: Observer, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    a, b = Worker(broker.url, topics, "a"), Worker(broker.url, topics, "b")
    argv = flags(
        broker.url, fleet, tmp_path / "agg.db",
        "--expect", "a,b,c", "--min-workers", "2", "--round-timeout", "1.5",
    )  # fmt: skip
    with aggregator_in_process(argv):
        observer.global_model(0)
        pa, pb = perturbed(3), perturbed(4)
        # Execute
        a.send(a.update(pa))
        b.send(b.update(pb))
        event = observer.round_event(1)
        g1 = observer.global_model(1)
    a.close()
    b.close()
    # Assert
    assert event.dropped == ("c",)
    assert event.duration_s >= 1.5
    np.testing.assert_allclose(g1.params, fedavg((pa, 10), (pb, 10)), atol=1e-7)


def test_round_below_quorum_fails_and_the_global_model_stays(
    broker: Mosquitto, fleet: str, observer: Observer, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    a = Worker(broker.url, topics, "a")
    argv = flags(
        broker.url, fleet, tmp_path / "agg.db",
        "--expect", "a,b", "--min-workers", "2", "--round-timeout", "1",
    )  # fmt: skip
    with aggregator_in_process(argv):
        g0 = observer.global_model(0)
        # Execute
        a.send(a.update(perturbed(5)))
        failed = observer.round_event(1, "failed")
        status = observer.status(lambda s: s.round == 1 and s.reported == ("a",), "status")
    late = Observer(broker.url, topics)
    retained = late.global_model(0)
    late.close()
    a.close()
    # Assert
    assert "1 of at least 2" in failed.reason
    assert failed.dropped == ("b",)
    assert failed.global_sha256 == g0.sha256 == retained.sha256
    assert status.expected == ("a", "b")
    assert all(e.outcome == "failed" for e in observer.events())


def test_stale_duplicate_and_malformed_updates_are_rejected_and_change_nothing(
    broker: Mosquitto, fleet: str, observer: Observer, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    a, b = Worker(broker.url, topics, "a"), Worker(broker.url, topics, "b")
    pa, pb = perturbed(6), perturbed(7)
    good = a.update(pa, upload="a-good")
    corrupted = bytearray(contract.encode_update(a.update(perturbed(8), upload="a-bad")))
    corrupted[-100] ^= 0xFF  # a bit flip inside the parameters, after the checksum was made
    with aggregator_in_process(flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "a,b")):
        observer.global_model(0)
        # Execute
        a.send(a.update(perturbed(9), base=5, upload="a-stale"))
        a.send(bytes(corrupted))
        a.send(b"\x00 not msgpack")
        a.send(good)
        a.send(good)  # redelivered
        a.send(a.update(perturbed(10), upload="a-second"))
        b.send(b.update(pb))
        g1 = observer.global_model(1)
        event = observer.round_event(1)
    a.close()
    b.close()
    # Assert
    reasons = {r.upload_id or "?": r.reason for r in event.rejected}
    assert (
        "based on global model 5, the open round 1 starts from global model 0"
        in (reasons["a-stale"])
    )
    assert "a-good" not in reasons  # a redelivered upload is confirmed again, not rejected
    assert "already counted in round 1" in reasons["a-second"]
    receipts = observer.receipts("a")
    assert [(r.upload_id, r.outcome) for r in receipts] == [
        ("a-stale", "rejected"),
        ("a-good", "accepted"),
        ("a-good", "accepted"),
        ("a-second", "rejected"),
    ]
    assert "based on global model 5" in receipts[0].reason
    malformed = [r.reason for r in event.rejected if not r.upload_id]
    assert any("sha256 does not match" in r for r in malformed)
    assert any("not valid msgpack" in r for r in malformed)
    assert event.participants[0].upload_id == "a-good"
    assert [p.worker_id for p in event.participants] == ["a", "b"]
    np.testing.assert_allclose(g1.params, fedavg((pa, 10), (pb, 10)), atol=1e-7)


def test_sigkilled_aggregator_resumes_the_same_round_and_counts_nothing_twice(
    broker: Mosquitto, fleet: str, observer: Observer, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    a, b = Worker(broker.url, topics, "a"), Worker(broker.url, topics, "b")
    db, log = tmp_path / "agg.db", tmp_path / "aggregator.log"
    argv = flags(broker.url, fleet, db, "--expect", "a,b", "--round-timeout", "30")
    first = aggregator_process(argv, log)
    observer.global_model(0)
    pa, pb = perturbed(11), perturbed(12)
    ua = a.update(pa, steps=6)
    a.send(ua)
    observer.status(lambda s: s.reported == ("a",), "a counted")
    # Execute: kill -9 mid-round; updates keep arriving while it is down
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    observer.status(lambda s: s.state == "offline", "the Last Will")
    a.send(ua)  # the gateway re-sends: the broker queues it for the aggregator's session
    b.send(b.update(pb, steps=10))
    second = aggregator_process(argv, log)
    try:
        g1 = observer.global_model(1)
        event = observer.round_event(1)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0, log.read_text()
    a.close()
    b.close()
    # Assert
    np.testing.assert_allclose(g1.params, fedavg((pa, 6), (pb, 10)), atol=1e-7)
    assert [(p.worker_id, p.weight) for p in event.participants] == [("a", 6.0), ("b", 10.0)]
    # the re-sent copy (and the original too if the kill beat its acknowledgement) is
    # confirmed again with an "accepted" receipt, never counted twice nor rejected
    assert event.rejected == ()
    assert {(r.upload_id, r.outcome) for r in observer.receipts("a")} == {
        (ua.upload_id, "accepted")
    }
    assert len(observer.receipts("a")) >= 2
    with Store(db) as store:
        assert [p.worker_id for p in store.participants(0)] == ["a", "b"]
        assert store.global_model()[0].sha256 == g1.sha256


def test_broker_restart_mid_round_loses_no_update(
    own_broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    observer = Observer(own_broker.url, topics)
    a, b = Worker(own_broker.url, topics, "a"), Worker(own_broker.url, topics, "b")
    pa, pb = perturbed(13), perturbed(14)
    argv = flags(own_broker.url, fleet, tmp_path / "agg.db", "--expect", "a,b")
    with aggregator_in_process(argv):
        observer.global_model(0)
        a.send(a.update(pa))
        observer.status(lambda s: s.reported == ("a",), "a counted")
        # Execute
        own_broker.restart()
        b.wait_connected()
        b.send(b.update(pb))
        g1 = observer.global_model(1)
        event = observer.round_event(1)
    observer.close()
    a.close()
    b.close()
    # Assert
    assert [p.worker_id for p in event.participants] == ["a", "b"]
    np.testing.assert_allclose(g1.params, fedavg((pa, 10), (pb, 10)), atol=1e-7)


def test_global_model_is_republished_when_the_broker_lost_it(
    own_broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare
    topics = Topics(fleet)
    with aggregator_in_process(flags(own_broker.url, fleet, tmp_path / "agg.db")):
        first = Observer(own_broker.url, topics)
        g0 = first.global_model(0)
        first.close()
        # Execute: the broker crashes and comes back without its retained messages
        own_broker.kill()
        (own_broker.workdir / "mosquitto.db").unlink(missing_ok=True)
        own_broker.start()
        after = Observer(own_broker.url, topics)
        again = after.global_model(0)
        after.close()
    # Assert
    assert again.sha256 == g0.sha256


def test_restarted_aggregator_replaces_a_retained_global_that_differs_from_its_database(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: the aggregator made global 0, then died; the broker now holds another model
    topics = Topics(fleet)
    argv = flags(broker.url, fleet, tmp_path / "agg.db")
    first = Observer(broker.url, topics)
    with aggregator_in_process(argv):
        g0 = first.global_model(0)
    first.close()
    impostor = GlobalModel(round=3, params=perturbed(15), hyper=g0.hyper, pipeline="centroid")
    writer = Worker(broker.url, topics, "writer")
    info = writer.client.publish(topics.global_model, contract.encode_global(impostor), 1, True)
    info.wait_for_publish(timeout=WAIT_S)
    writer.close()
    observer = Observer(broker.url, topics)
    observer.global_model(3)
    # Execute
    with aggregator_in_process(argv):
        repaired = observer.global_model(0)
    observer.close()
    # Assert
    assert repaired.sha256 == g0.sha256


def test_a_late_echo_of_its_own_older_global_is_not_a_mismatch_but_a_foreign_one_is(
    broker: Mosquitto, fleet: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Under MQTT 3.1.1 the aggregator hears its own global models; one published before the
    # round that just closed may arrive after it. Simulated here by a live (not retained)
    # publish of its global 0 once it is at round 1, then of a model it never made.
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    a = Worker(broker.url, topics, "a")
    writer = Worker(broker.url, topics, "writer")
    with (
        caplog.at_level("WARNING"),
        aggregator_in_process(flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "a")),
    ):
        g0 = observer.global_model(0)
        a.send(a.update(perturbed(1), steps=10))
        g1 = observer.global_model(1)
        # Execute 1: the old model of its own, live
        writer.client.publish(topics.global_model, contract.encode_global(g0), 1, False)
        time.sleep(1.0)
        echo_lines = [r.getMessage() for r in caplog.records if "republishing" in r.getMessage()]
        # Execute 2: a model it never made, live
        impostor = GlobalModel(round=0, params=perturbed(9), hyper=g0.hyper, pipeline=g0.pipeline)
        writer.client.publish(topics.global_model, contract.encode_global(impostor), 1, False)
        repaired = wait_until(lambda: any("republishing" in r.getMessage() for r in caplog.records))
    for c in (observer, a, writer):
        c.close()
    # Assert
    assert g1.round == 1
    assert echo_lines == []
    assert repaired, "a global model it never made went unanswered"


def test_the_global_model_names_the_words_of_its_outputs(
    broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    observer = Observer(broker.url, Topics(fleet))
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--classes", "vermell, verd,blau")
    with aggregator_in_process(argv):
        g0 = observer.global_model(0)
    observer.close()
    assert g0.classes == ("vermell", "verd", "blau")
    for bad in ("a,a", "a,,b", ",".join("w" * 3 for _ in range(2)) + ",x" * 3):
        args = cli.build_parser().parse_args(["aggregator", "--fleet", "f", "--classes", bad])
        with pytest.raises(UsageError, match="--classes: give up to 3 different words"):
            settings.from_args(args, env={})


def test_help_explains_round_policy_strategies_and_restart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["aggregator", "--help"])
    out = capsys.readouterr().out
    for topic in ("round policy:", "strategies:", "restart:", "trimmed-mean", "SIGKILL"):
        assert topic in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-workers", "0"], "--min-workers: must be at least 1, got 0"),
        (["--round-timeout", "soon"], "--round-timeout: 'soon' is not a number"),
        (["--expect", "a,b", "--min-workers", "3"], "--min-workers 3 is more than the 2"),
        (["--expect", "a,b/c"], "--expect: invalid worker id 'b/c'"),
        (["--lr", "20"], "--lr: must be in (0, 10], got 20"),
        (["--pipeline", "mfcc-42"], "--pipeline: 'mfcc-42' is not one of"),
        (["--clip-norm", "-1"], "--clip-norm: must be more than 0, got -1"),
    ],
)
def test_bad_flag_is_refused_naming_it(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(flags("mqtt://127.0.0.1:1", "f", tmp_path / "x.db", *extra))
    assert code == 2
    assert message in capsys.readouterr().err
