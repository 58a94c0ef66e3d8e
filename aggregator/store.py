"""SQLite persistence: rounds, participants, rejections, metrics and every global model.

One file, WAL journal, ``synchronous=FULL``. Each decision is one transaction, or one savepoint
of a :meth:`Store.batch` (the service decides every message waiting in its queue inside one
batch: one synced commit for all of them, and only then are they acknowledged), so a SIGKILL
(or a power cut) at any moment leaves either all or none of a decision on disk:

* an accepted update writes its ``participants`` row and its parameters (``updates``) together;
  ``UNIQUE(round, worker_id)`` and ``UNIQUE(round, upload_id)`` make a second count impossible
  even if the code above were wrong;
* closing a round writes the new global model, the round's outcome and metrics and opens the
  next round, all at once; the closed round's update parameters are deleted afterwards, a few
  hundred per transaction while the service is idle (:meth:`Store.prune_updates`): freeing
  10,000 updates' pages took ~3 s, which had sat between the last upload and the new global
  model. Left-over parameters of closed rounds are never read (replay reads the open round's).
* a failed attempt records its outcome and opens the next attempt.

The open round's accepted updates are stored whole (41,868 bytes each) rather than as a
running sum: the same rows serve every strategy (median and trimmed mean need the models
anyway), a write is half the size of a float64 sum, and replaying them in their accepted
order on restart rebuilds the exact same aggregate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyfed import model
from tinyfed.aggregator.rounds import Accepted, Counted, Opening, Rejected, RoundClosed, RoundFailed
from tinyfed.aggregator.strategies import F32
from tinyfed.errors import ModelError, UsageError
from tinyfed.model import families
from tinyfed.mqtt.contract import ContractError, GlobalModel, HyperParams, Participant, Rejection

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS globals (
    round INTEGER PRIMARY KEY,
    params BLOB NOT NULL,            -- the family's model: float32 little-endian, board layout
    sha256 TEXT NOT NULL,
    arch TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    lr REAL NOT NULL,
    momentum REAL NOT NULL,
    local_steps INTEGER NOT NULL,
    created REAL NOT NULL,
    velocity BLOB                    -- FedAvgM server momentum after this round, or NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    opened REAL NOT NULL,
    expected TEXT NOT NULL,          -- JSON list of worker ids
    closed REAL,                     -- NULL while open
    outcome TEXT,                    -- 'closed' | 'failed' | NULL while open
    strategy TEXT,
    dropped TEXT,                    -- JSON list
    reason TEXT,
    global_sha256 TEXT,
    PRIMARY KEY (round, attempt)
);
CREATE TABLE IF NOT EXISTS participants (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    local_steps INTEGER NOT NULL,
    weight REAL NOT NULL,
    loss_mean REAL,
    norm REAL NOT NULL,
    received REAL NOT NULL,
    UNIQUE (round, worker_id),
    UNIQUE (round, upload_id)
);
CREATE INDEX IF NOT EXISTS participants_upload ON participants (upload_id);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY REFERENCES participants (seq),
    params BLOB NOT NULL             -- deleted once the round closes
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (round, attempt, name)
);
"""


@dataclass(frozen=True)
class ResumePoint:
    """Everything needed to resume: the current global model and the open round."""

    current: GlobalModel
    velocity: F32 | None = field(repr=False)
    opening: Opening
    first_opened: float
    counted: tuple[Counted, ...]
    rejected: tuple[Rejection, ...]


def _vec(blob: bytes | None) -> F32 | None:
    return None if blob is None else np.frombuffer(blob, "<f4").astype(np.float32)


class Store:
    """The aggregator's database (one SQLite file).

    Args:
        path: the database file; created with its folder if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._depth = 0  # open transaction levels (0: none; 1: a batch; >1: savepoints)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open database {self.path}: {exc}") from exc
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        version = self.meta().get("schema_version")
        if version is None:
            self.set_meta(schema_version=str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise UsageError(
                f"database {self.path} has schema {version}, expected {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; inside a :meth:`batch`, one savepoint of it."""
        if self._depth == 0:
            begin, commit, rollback = "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"
        else:
            name = f"sp{self._depth}"
            begin, commit = f"SAVEPOINT {name}", f"RELEASE {name}"
            rollback = f"ROLLBACK TO {name}; RELEASE {name}"
        self._db.execute(begin)
        self._depth += 1
        try:
            yield self._db
        except BaseException:
            self._depth -= 1
            for sql in rollback.split("; "):
                self._db.execute(sql)
            raise
        self._depth -= 1
        self._db.execute(commit)

    def batch(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Group the decisions made inside into one transaction (one synced commit).

        Decisions inside are savepoints: one that raises is rolled back alone (use
        :meth:`savepoint` around each) and the rest commit together when the block ends.
        """
        return self._tx()

    def savepoint(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A unit inside :meth:`batch` that is rolled back alone if it raises."""
        return self._tx()

    # ------------------------------------------------------------------ meta

    def meta(self) -> dict[str, str]:
        """The database's key/value facts (schema version, fleet, pipeline)."""
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: str) -> None:
        """Set key/value facts in one transaction."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                values.items(),
            )

    # ------------------------------------------------------------------ writes

    def _insert_global(self, db: sqlite3.Connection, g: GlobalModel, velocity: F32 | None) -> None:
        db.execute(
            "INSERT INTO globals (round, params, sha256, arch, pipeline, lr, momentum, "
            "local_steps, created, velocity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                g.round,
                families.by_arch(g.arch).to_bytes(g.params),
                g.sha256,
                g.arch,
                g.pipeline,
                g.hyper.lr,
                g.hyper.momentum,
                g.hyper.local_steps,
                g.created,
                None if velocity is None else np.asarray(velocity, "<f4").tobytes(),
            ),
        )

    def _open(self, db: sqlite3.Connection, o: Opening) -> None:
        db.execute(
            "INSERT INTO rounds (round, attempt, opened, expected) VALUES (?, ?, ?, ?)",
            (o.round, o.attempt, o.opened, json.dumps(list(o.expected))),
        )

    def initialise(self, first: GlobalModel, opening: Opening) -> None:
        """Store global model 0 and open round 0 (a new database)."""
        with self._tx() as db:
            self._insert_global(db, first, None)
            self._open(db, opening)

    def accept(self, d: Accepted) -> None:
        """Record an accepted update and its parameters in one transaction."""
        u = d.update
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO participants (round, attempt, worker_id, upload_id, local_steps, "
                "weight, loss_mean, norm, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d.round,
                    d.attempt,
                    u.worker_id,
                    u.upload_id,
                    u.local_steps,
                    d.weight,
                    u.loss.mean,
                    d.norm,
                    d.received,
                ),
            )
            db.execute(
                "INSERT INTO updates (seq, params) VALUES (?, ?)",
                (cur.lastrowid, families.by_arch(u.arch).to_bytes(u.params)),
            )

    def reject(self, d: Rejected) -> None:
        """Record a rejection (only counted, not stored, when ``d.record`` is False)."""
        if not d.record:
            return
        r = d.rejection
        with self._tx() as db:
            db.execute(
                "INSERT INTO rejections (round, attempt, worker_id, upload_id, reason, received) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (d.round, d.attempt, r.worker_id, r.upload_id, r.reason, d.received),
            )

    def _finish(self, db: sqlite3.Connection, d: RoundClosed | RoundFailed) -> None:
        e = d.event
        db.execute(
            "UPDATE rounds SET closed = ?, outcome = ?, strategy = ?, dropped = ?, reason = ?, "
            "global_sha256 = ? WHERE round = ? AND attempt = ?",
            (
                e.time,
                e.outcome,
                e.strategy,
                json.dumps(list(e.dropped)),
                e.reason,
                e.global_sha256,
                e.round - 1,  # rows are keyed by the global model the round starts from
                d.attempt,
            ),
        )
        db.executemany(
            "INSERT INTO metrics (round, attempt, name, value) VALUES (?, ?, ?, ?)",
            [(e.round - 1, d.attempt, k, v) for k, v in d.metrics.items()],
        )
        self._open(db, d.next)

    def close_round(self, d: RoundClosed) -> None:
        """Record a closed round and its new global model, and open the next round, at once."""
        with self._tx() as db:
            self._insert_global(db, d.model, d.velocity)
            self._finish(db, d)

    def prune_updates(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` update parameter blobs of closed rounds (one transaction);
        returns how many were deleted (0: nothing left to prune).

        Rounds are sequential, so every closed round's update has a lower ``seq`` than any of
        the open round's: the blobs go in ``seq`` order, a range of the table's own key.
        """
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM updates WHERE seq IN (SELECT seq FROM updates WHERE seq < "
                "COALESCE((SELECT MIN(seq) FROM participants "
                "WHERE round >= (SELECT MAX(round) FROM globals)), "
                "(SELECT MAX(seq) + 1 FROM participants), 0) LIMIT ?)",
                (limit,),
            )
            return max(0, cur.rowcount)

    def fail_round(self, d: RoundFailed) -> None:
        """Record a failed attempt and open the next attempt, at once."""
        with self._tx() as db:
            self._finish(db, d)

    # ------------------------------------------------------------------ reads

    def global_model(self, round_: int | None = None) -> tuple[GlobalModel, F32 | None]:
        """Global model ``round_`` (the latest if None) and the server velocity stored with it."""
        sql = (
            "SELECT round, params, arch, pipeline, lr, momentum, local_steps, created, velocity "
            "FROM globals "
        )
        row = (
            self._db.execute(sql + "ORDER BY round DESC LIMIT 1").fetchone()
            if round_ is None
            else self._db.execute(sql + "WHERE round = ?", (round_,)).fetchone()
        )
        if row is None:
            raise LookupError(f"no global model {'at all' if round_ is None else round_}")
        r, params, arch, pipeline, lr, momentum, steps, created, velocity = row
        g = GlobalModel(
            round=r,
            params=families.by_arch(arch).from_bytes(params),
            hyper=HyperParams(lr=lr, momentum=momentum, local_steps=steps),
            pipeline=pipeline,
            arch=arch,
            created=created,
        )
        return g, _vec(velocity)

    def load(self) -> ResumePoint | None:
        """The state to resume from, or None for a new database."""
        if self._db.execute("SELECT 1 FROM globals LIMIT 1").fetchone() is None:
            return None
        current, velocity = self.global_model()
        row = self._db.execute(
            "SELECT attempt, opened, expected FROM rounds WHERE round = ? AND outcome IS NULL",
            (current.round,),
        ).fetchone()
        if row is None:
            raise UsageError(f"database {self.path}: round {current.round} has no open attempt")
        attempt, opened, expected = row
        (first_opened,) = self._db.execute(
            "SELECT MIN(opened) FROM rounds WHERE round = ?", (current.round,)
        ).fetchone()
        return ResumePoint(
            current=current,
            velocity=velocity,
            opening=Opening(current.round, attempt, opened, tuple(json.loads(expected))),
            first_opened=first_opened,
            counted=tuple(self._counted(current.round)),
            rejected=tuple(self.rejections(current.round, attempt)),
        )

    def _counted(self, round_: int) -> Iterator[Counted]:
        rows = self._db.execute(
            "SELECT p.seq, p.worker_id, p.upload_id, p.local_steps, p.weight, p.loss_mean, "
            "p.norm, u.params FROM participants p JOIN updates u ON u.seq = p.seq "
            "WHERE p.round = ? ORDER BY p.seq",
            (round_,),
        ).fetchall()
        damaged: list[int] = []
        for seq, worker, upload, steps, weight, loss_mean, norm, params in rows:
            try:
                p = Participant(worker, upload, steps, weight, loss_mean)
                # any family's size: the round's aggregate checks it against the global model
                yield Counted(p, model.from_bytes(params, None), norm)
            except (ModelError, ContractError, TypeError, ValueError) as exc:
                # A damaged row must not keep the aggregator from starting: it is removed, so
                # the worker may report again, and named.
                log.error(
                    "stored update %s of %s is unreadable (%s): removed, not replayed",
                    upload,
                    worker,
                    exc,
                )
                damaged.append(seq)
        if damaged:
            with self._tx() as db:
                for seq in damaged:
                    db.execute("DELETE FROM updates WHERE seq = ?", (seq,))
                    db.execute("DELETE FROM participants WHERE seq = ?", (seq,))

    def round_updates(
        self, round_: int, only: AbstractSet[int] | None = None
    ) -> Iterator[tuple[int, F32, float]]:
        """The accepted updates of ``round_`` as ``(index, params, weight)``, in accepted order.

        ``only`` (None: all) names the indices (0 = the first accepted) whose parameters are
        read; one model is in memory at a time. Only the open round's parameters are kept.
        """
        rows = self._db.execute(
            "SELECT p.seq, p.weight FROM participants p JOIN updates u ON u.seq = p.seq "
            "WHERE p.round = ? ORDER BY p.seq",
            (round_,),
        ).fetchall()  # small rows: the parameters are read one by one below
        for index, (seq, weight) in enumerate(rows):
            if only is not None and index not in only:
                continue
            (params,) = self._db.execute(
                "SELECT params FROM updates WHERE seq = ?", (seq,)
            ).fetchone()
            yield index, model.from_bytes(params, None), float(weight)

    def counted_round(self, worker_id: str, upload_id: str) -> int | None:
        """The round in which ``worker_id``'s upload ``upload_id`` was counted, if it was."""
        row = self._db.execute(
            "SELECT round FROM participants WHERE upload_id = ? AND worker_id = ?",
            (upload_id, worker_id),
        ).fetchone()
        return None if row is None else int(row[0])

    def participants(self, round_: int) -> list[Participant]:
        """The workers counted in ``round_``, in the order they were accepted."""
        rows = self._db.execute(
            "SELECT worker_id, upload_id, local_steps, weight, loss_mean FROM participants "
            "WHERE round = ? ORDER BY seq",
            (round_,),
        )
        return [Participant(*row) for row in rows]

    def rejections(self, round_: int, attempt: int | None = None) -> list[Rejection]:
        """Rejections recorded in ``round_`` (one attempt, or all)."""
        sql = "SELECT worker_id, upload_id, reason FROM rejections WHERE round = ?"
        args: tuple[int, ...] = (round_,)
        if attempt is not None:
            sql += " AND attempt = ?"
            args = (round_, attempt)
        return [Rejection(*row) for row in self._db.execute(sql + " ORDER BY id", args)]

    def rounds(self) -> list[tuple[int, int, str | None]]:
        """Every round attempt as ``(round, attempt, outcome)``; outcome None while open."""
        return list(
            self._db.execute("SELECT round, attempt, outcome FROM rounds ORDER BY round, attempt")
        )

    def metrics(self, round_: int, attempt: int = 1) -> dict[str, float]:
        """The metrics recorded when ``round_`` (attempt) ended."""
        rows = self._db.execute(
            "SELECT name, value FROM metrics WHERE round = ? AND attempt = ?", (round_, attempt)
        )
        return dict(rows.fetchall())

    def stored_updates(self) -> int:
        """How many update parameter blobs the database holds (the open round's, and closed
        rounds' until :meth:`prune_updates` has deleted them)."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM updates").fetchone()
        return int(n)
