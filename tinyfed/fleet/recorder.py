"""Record a fleet from its MQTT topics only, and score every global model on held-out voices.

The recorder is an ordinary MQTT subscriber (it needs nothing but the broker): it decodes every
message with :mod:`tinyfed.mqtt.contract` and keeps

* each worker's loss events (one per training step) and its latest status;
* each worker's model updates, scored on the held-out test voices (the board's own model,
  before averaging);
* every global model, scored on the held-out voices as it arrives;
* every round event and the aggregator's status.

Messages are handled (decoded, scored, stored) in the session's handler thread
(:class:`~tinyfed.mqtt.adapter.MqttSession`), never on paho's network thread: scoring a model
(the MFCCs of every held-out clip on first use) must not hold up keep-alives. Scoring runs the
Python reference of the fleet's feature pipeline and network
(:class:`~tinyfed.fleet.corpus.HeldOut`), which the firmware matches to 1e-5. Payloads that do
not follow the contract are counted, logged and otherwise ignored. :meth:`Recorder.snapshot`
returns an immutable copy for the dashboard and the report.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tinyfed import model
from tinyfed.errors import UsageError
from tinyfed.fleet.corpus import HeldOut
from tinyfed.mqtt import contract
from tinyfed.mqtt.adapter import Connected, Disconnected, Event, Message, MqttSession, Subscribed
from tinyfed.mqtt.contract import (
    AggregatorStatus,
    ContractError,
    LossEvent,
    RoundEvent,
    Topics,
    WorkerStatus,
)
from tinyfed.mqtt.session import BrokerUrl

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GlobalRecord:
    """A global model as the recorder received it."""

    round: int
    sha256: str
    params: model.F32 = field(repr=False)
    accuracy: float | None  #: on the held-out voices; None without test data
    received: float  #: unix time
    created: float
    pipeline: str
    lr: float
    momentum: float
    local_steps: int
    classes: tuple[str, ...] = ()  #: the words of the outputs, if the aggregator names them
    arch: str = model.ARCH_ID  #: the model family's architecture (tinyfed.model.families)


@dataclass(frozen=True)
class UpdateRecord:
    """A worker's model update (the board's own model after its local steps)."""

    worker_id: str
    base_round: int
    local_steps: int
    upload_id: str
    loss_mean: float | None
    accuracy: float | None  #: on the held-out voices
    sha256: str
    received: float


@dataclass(frozen=True)
class WorkerView:
    """One worker as seen so far."""

    worker_id: str
    name: str  #: a short display name ("board 1"), or the worker id
    losses: tuple[LossEvent, ...] = ()
    status: WorkerStatus | None = None

    @property
    def steps(self) -> int:
        """The board's own step counter (since its boot), from its latest loss event: right
        for a monitor that joined late, which saw only the last of them."""
        return self.losses[-1].step if self.losses else 0

    @property
    def state(self) -> str:
        return self.status.state if self.status is not None else "unknown"


@dataclass(frozen=True)
class FleetSnapshot:
    """Everything recorded, frozen at one moment."""

    fleet: str
    started: float
    workers: tuple[WorkerView, ...]
    globals: tuple[GlobalRecord, ...]  #: in arrival order, one per round
    rounds: tuple[RoundEvent, ...]  #: closed and failed rounds, in arrival order
    updates: tuple[UpdateRecord, ...]
    aggregator: AggregatorStatus | None
    rejected_payloads: int
    connected: bool

    def global_of(self, round_: int) -> GlobalRecord | None:
        return next((g for g in self.globals if g.round == round_), None)

    @property
    def latest_global(self) -> GlobalRecord | None:
        return max(self.globals, key=lambda g: g.round) if self.globals else None

    @property
    def closed_rounds(self) -> tuple[RoundEvent, ...]:
        return tuple(r for r in self.rounds if r.outcome == "closed")


class Recorder:
    """Subscribes to one fleet's topics and records them (thread-safe).

    Args:
        broker: the broker.
        topics: the fleet's topics.
        held_out: scores global models and updates; None records without scoring.
        client_id: MQTT client id (default: a random ``tinyfed-recorder-...``).
    """

    def __init__(
        self,
        broker: BrokerUrl,
        topics: Topics,
        *,
        held_out: HeldOut | None = None,
        client_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.held_out = held_out
        self.client_id = client_id or f"tinyfed-recorder-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._names: dict[str, str] = {}
        self._losses: dict[str, list[LossEvent]] = {}
        self._status: dict[str, WorkerStatus] = {}
        self._globals: dict[int, GlobalRecord] = {}
        self._rounds: list[RoundEvent] = []
        self._updates: list[UpdateRecord] = []
        self._aggregator: AggregatorStatus | None = None
        self._rejected = 0
        self._connected = False
        self._started = time.time()
        self._mqtt: MqttSession | None = None
        self.listeners: list[Callable[[str], None]] = []  #: called with the kind of message

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = SUBSCRIBE_TIMEOUT_S) -> None:
        """Connect and wait until the subscriptions are acknowledged."""
        self._mqtt = MqttSession(self.broker, self.client_id, logger=log)
        self._mqtt.start(handler=self._on_event)
        if not self._subscribed.wait(timeout):
            self.stop()
            raise ConnectionError(f"could not subscribe at {self.broker} within {timeout:.0f} s")

    def stop(self) -> None:
        """Disconnect (idempotent); what already arrived is recorded first."""
        mqtt, self._mqtt = self._mqtt, None
        if mqtt is not None:
            mqtt.close()

    def set_names(self, names: dict[str, str]) -> None:
        """Display names of workers (``{"board-74...01": "board 1"}``); also their order."""
        with self._lock:
            self._names = dict(names)
            for worker in names:
                self._losses.setdefault(worker, [])

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> FleetSnapshot:
        """An immutable copy of everything recorded so far."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> FleetSnapshot:
        workers = tuple(
            WorkerView(w, self._names.get(w, w), tuple(self._losses[w]), self._status.get(w))
            for w in self._ordered_workers()
        )
        return FleetSnapshot(
            fleet=self.topics.fleet,
            started=self._started,
            workers=workers,
            globals=tuple(self._globals[r] for r in sorted(self._globals)),
            rounds=tuple(self._rounds),
            updates=tuple(self._updates),
            aggregator=self._aggregator,
            rejected_payloads=self._rejected,
            connected=self._connected,
        )

    def _ordered_workers(self) -> list[str]:
        named = [w for w in self._names if w in self._losses]
        return named + sorted(w for w in self._losses if w not in self._names)

    def latest_global_round(self) -> int | None:
        """The highest round of a global model received, or None."""
        with self._lock:
            return max(self._globals) if self._globals else None

    def wait_for(self, predicate: Callable[[FleetSnapshot], bool], timeout: float) -> FleetSnapshot:
        """Block until ``predicate(snapshot)`` holds; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                snap = self._snapshot()
                if predicate(snap):
                    return snap
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout:.0f} s")
                self._changed.wait(remaining)

    # ------------------------------------------------------------------ the session's events

    def _on_event(self, event: Event) -> None:
        """One event, in the session's handler thread (not paho's: scoring takes time)."""
        if isinstance(event, Message):
            self._on_message(event.topic, event.payload)
        elif isinstance(event, Connected):
            if not event.failed:
                self._store(lambda: setattr(self, "_connected", True))
                self._subscribe()
        elif isinstance(event, Disconnected):
            self._store(lambda: setattr(self, "_connected", False))
        elif isinstance(event, Subscribed):
            self._subscribed.set()

    def _subscribe(self) -> None:
        t = self.topics
        mqtt = self._mqtt
        if mqtt is not None:
            mqtt.subscribe(
                [
                    t.global_model,
                    t.rounds,
                    t.aggregator_status,
                    t.all_losses,
                    t.all_updates,
                    t.all_worker_status,
                ]
            )

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            kind = self.handle(topic, payload)
        except ContractError as exc:
            self._store(self._count_rejected)
            log.warning("ignored a message on %s: %s", topic, exc)
            return
        for listener in list(self.listeners):
            listener(kind)

    # ------------------------------------------------------------------ decoding

    def handle(self, topic: str, payload: bytes) -> str:
        """Record one message; return its kind. Raises ContractError on a bad payload."""
        t = self.topics
        now = time.time()
        if topic == t.global_model:
            if not payload:
                return "cleared"
            g = contract.decode_global(payload)
            record = GlobalRecord(
                round=g.round,
                sha256=g.sha256,
                params=g.params,
                accuracy=self._score(g.params, g.pipeline),
                received=now,
                created=g.created,
                pipeline=g.pipeline,
                lr=g.hyper.lr,
                momentum=g.hyper.momentum,
                local_steps=g.hyper.local_steps,
                arch=g.arch,
                classes=g.classes,
            )
            self._store(lambda: self._globals.__setitem__(g.round, record))
            return "global"
        if topic == t.rounds:
            event = contract.decode_round_event(payload)
            self._store(lambda: self._rounds.append(event))
            return "round"
        if topic == t.aggregator_status:
            if not payload:
                return "cleared"
            agg = contract.decode_aggregator_status(payload)
            self._store(lambda: setattr(self, "_aggregator", agg))
            return "aggregator"
        worker, what = t.parse_worker_topic(topic)
        if what == "loss":
            loss = contract.decode_loss(payload)
            self._store(lambda: self._losses.setdefault(worker, []).append(loss))
        elif what == "update":
            u = contract.decode_update(payload)
            update = UpdateRecord(
                worker_id=worker,
                base_round=u.base_round,
                local_steps=u.local_steps,
                upload_id=u.upload_id,
                loss_mean=u.loss.mean,
                accuracy=self._score(u.params, u.pipeline),
                sha256=u.sha256,
                received=now,
            )
            self._store(lambda: self._updates.append(update))
        elif what == "receipt":  # not subscribed to; checked, not kept (round events say it all)
            if not payload:
                return "cleared"
            contract.decode_receipt(payload)
        else:
            if not payload:
                return "cleared"
            status = contract.decode_worker_status(payload)

            def put() -> None:
                self._status[worker] = status
                self._losses.setdefault(worker, [])

            self._store(put)
        return what

    def _count_rejected(self) -> None:
        self._rejected += 1

    def _store(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    def _score(self, params: model.F32, pipeline: str) -> float | None:
        if self.held_out is None:
            return None
        try:
            return self.held_out.accuracy(params, pipeline)
        except UsageError as exc:  # a pipeline this Python does not know
            log.warning("cannot score a model of pipeline %r: %s", pipeline, exc)
            return None
