"""SQLite persistence: what survives a restart, and what can never be counted twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tinyfed import model
from tinyfed.aggregator.rounds import Accepted, RoundClosed, RoundFailed, RoundMachine, RoundPolicy
from tinyfed.aggregator.store import Store
from tinyfed.aggregator.strategies import Strategy
from tinyfed.mqtt.contract import GlobalModel, HyperParams, LossSummary, ModelUpdate

T0 = 5000.0


def vec(value: float) -> np.ndarray:
    return np.full(model.N_PARAMS, value, np.float32)


def update(worker: str, value: float, *, steps: int = 10, base: int = 0) -> ModelUpdate:
    return ModelUpdate(
        worker_id=worker,
        base_round=base,
        local_steps=steps,
        params=vec(value),
        upload_id=f"{worker}-{base}-{value}",
        pipeline="paper",
        loss=LossSummary(count=steps, mean=0.25, last=0.2),
    )


class Aggregator:
    """The machine and the store wired as the service wires them, without MQTT."""

    def __init__(self, path: Path, now: float, *, min_workers: int = 1) -> None:
        self.store = Store(path)
        policy = RoundPolicy(min_workers=min_workers, expect=frozenset("abc"), timeout_s=60)
        snap = self.store.load()
        if snap is None:
            first = GlobalModel(0, model.init_params(), HyperParams(), "paper", created=now)
            self.machine = RoundMachine(
                policy=policy, strategy=Strategy(), hyper=HyperParams(), current=first, now=now
            )
            self.store.initialise(first, self.machine.opening())
        else:
            self.machine = RoundMachine(
                policy=policy,
                strategy=Strategy(),
                hyper=HyperParams(),
                current=snap.current,
                velocity=snap.velocity,
                now=now,
                attempt=snap.opening.attempt,
                first_opened=snap.first_opened,
                counted=snap.counted,
                rejected=snap.rejected,
            )

    def feed(self, u: ModelUpdate, now: float) -> None:
        for d in self.machine.update_received(u, now):
            self.persist(d)

    def tick(self, now: float) -> None:
        for d in self.machine.tick(now):
            self.persist(d)

    def persist(self, d: object) -> None:
        if isinstance(d, Accepted):
            self.store.accept(d)
        elif isinstance(d, RoundClosed):
            self.store.close_round(d)
        elif isinstance(d, RoundFailed):
            self.store.fail_round(d)


def test_new_database_has_nothing_to_resume(tmp_path: Path) -> None:
    with Store(tmp_path / "agg.db") as store:
        assert store.load() is None


def test_database_uses_the_write_ahead_log(tmp_path: Path) -> None:
    Store(tmp_path / "agg.db").close()
    mode = sqlite3.connect(tmp_path / "agg.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)


def test_round_zero_is_the_papers_seeded_model(tmp_path: Path) -> None:
    Aggregator(tmp_path / "agg.db", T0).store.close()
    with Store(tmp_path / "agg.db") as store:
        g, velocity = store.global_model(0)
    np.testing.assert_array_equal(g.params, model.init_params(model.DEFAULT_SEED))
    assert velocity is None


def test_accepted_updates_survive_a_restart_in_their_order(tmp_path: Path) -> None:
    # Prepare
    first = Aggregator(tmp_path / "agg.db", T0)
    first.feed(update("a", 1.0, steps=3), T0 + 1)
    first.feed(update("b", 2.0, steps=7), T0 + 2)
    first.store.close()
    # Execute
    with Store(tmp_path / "agg.db") as store:
        snap = store.load()
    # Assert
    assert snap is not None
    assert (snap.current.round, snap.opening.attempt) == (0, 1)
    assert [c.participant.worker_id for c in snap.counted] == ["a", "b"]
    assert [c.participant.weight for c in snap.counted] == [3.0, 7.0]
    np.testing.assert_array_equal(snap.counted[1].params, vec(2.0))
    assert snap.first_opened == T0


def test_database_refuses_to_count_a_worker_twice_in_a_round(tmp_path: Path) -> None:
    # Prepare
    agg = Aggregator(tmp_path / "agg.db", T0)
    decision = agg.machine.update_received(update("a", 1.0), T0 + 1)[0]
    assert isinstance(decision, Accepted)
    agg.store.accept(decision)
    # Execute / Assert
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        agg.store.accept(decision)
    assert len(agg.store.participants(0)) == 1


def test_closing_a_round_stores_its_global_and_drops_its_update_blobs(tmp_path: Path) -> None:
    # Prepare
    agg = Aggregator(tmp_path / "agg.db", T0)
    for worker, value in (("a", 1.0), ("b", 2.0)):
        agg.feed(update(worker, value), T0 + 1)
    assert agg.store.stored_updates() == 2
    # Execute
    agg.feed(update("c", 3.0), T0 + 2)
    # Assert
    g1, _ = agg.store.global_model()
    assert g1.round == 1
    np.testing.assert_allclose(g1.params, vec(2.0))
    assert agg.store.stored_updates() == 3  # deleted later, off the path to the new model
    assert [p.worker_id for p in agg.store.participants(0)] == ["a", "b", "c"]
    assert agg.store.rounds() == [(0, 1, "closed"), (1, 1, None)]
    assert agg.store.metrics(0)["participants"] == 3
    snap = agg.store.load()
    assert snap is not None
    assert (snap.current.round, snap.counted) == (1, ())  # closed rounds' blobs are not read
    agg.feed(update("a", 4.0, base=1), T0 + 3)  # the open round's update stays
    assert agg.store.prune_updates(limit=2) == 2
    assert agg.store.prune_updates() == 1
    assert agg.store.prune_updates() == 0
    assert agg.store.stored_updates() == 1


def test_failed_attempt_is_recorded_and_the_retry_keeps_its_updates(tmp_path: Path) -> None:
    # Prepare
    agg = Aggregator(tmp_path / "agg.db", T0, min_workers=2)
    agg.feed(update("a", 1.0), T0 + 1)
    # Execute
    agg.tick(T0 + 61)
    # Assert
    assert agg.store.rounds() == [(0, 1, "failed"), (0, 2, None)]
    snap = agg.store.load()
    assert snap is not None
    assert snap.opening.attempt == 2
    assert [c.participant.worker_id for c in snap.counted] == ["a"]


def test_restart_mid_round_gives_the_same_global_as_no_restart(tmp_path: Path) -> None:
    # Prepare: one aggregator runs a round without interruption
    steady = Aggregator(tmp_path / "steady.db", T0)
    for worker, value, steps in (("a", 0.1, 3), ("b", -0.3, 10), ("c", 0.7, 6)):
        steady.feed(update(worker, value, steps=steps), T0 + 1)
    expected, _ = steady.store.global_model()
    # Execute: another one is closed (as if killed) after two updates, and reopened
    crashed = Aggregator(tmp_path / "crashed.db", T0)
    crashed.feed(update("a", 0.1, steps=3), T0 + 1)
    crashed.feed(update("b", -0.3, steps=10), T0 + 1)
    crashed.store.close()
    resumed = Aggregator(tmp_path / "crashed.db", T0 + 30)
    resumed.feed(update("b", -0.3, steps=10), T0 + 31)  # redelivered
    resumed.feed(update("c", 0.7, steps=6), T0 + 32)
    # Assert
    got, _ = resumed.store.global_model()
    assert got.round == expected.round == 1
    np.testing.assert_array_equal(got.params, expected.params)
    assert [p.worker_id for p in resumed.store.participants(0)] == ["a", "b", "c"]


def test_database_of_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agg.db"
    Store(path).set_meta(schema_version="99")
    with pytest.raises(Exception, match="schema 99"):
        Store(path)


def test_a_damaged_stored_update_is_skipped_at_restart_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a and b counted, then b's stored parameters damaged on disk
    db = tmp_path / "agg.db"
    first = Aggregator(db, T0)
    first.feed(update("a", 1.0), T0 + 1)
    first.feed(update("b", 3.0), T0 + 2)
    first.store.close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE updates SET params = ? WHERE seq = "
            "(SELECT seq FROM participants WHERE worker_id = 'b')",
            (b"\x00" * 10,),
        )
    # Execute
    second = Aggregator(db, T0 + 100)
    # Assert: it starts, names the damaged row, and resumes with what it could read
    assert second.machine.reported == ("a",)
    assert "stored update b-0-3.0 of b is unreadable" in caplog.text
    second.feed(update("b", 5.0, steps=10), T0 + 101)
    second.feed(update("c", 5.0), T0 + 102)
    assert second.machine.round == 1
