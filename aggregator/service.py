"""The aggregator service: a thin MQTT shell around the round machine and the store.

Paho's network thread only queues what arrives; one thread (the caller of :meth:`run`) decodes,
asks the :class:`~aggregator.rounds.RoundMachine`, persists each decision in the
:class:`~aggregator.store.Store` and only then acknowledges the MQTT message and publishes.

* The MQTT session is persistent (fixed client id, clean start off, session expiry of a day) and
  messages are acknowledged by hand after their decision is committed: updates published while
  the aggregator is down wait at the broker, and an update whose acknowledgement a crash lost
  comes again and is recognised as a duplicate.
* On every (re)connect it publishes its retained status (its Last Will says ``offline``),
  subscribes, and compares the retained global model on the broker with the database's current
  one, republishing it if it is missing or different (a broker that lost its retained store).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from aggregator.rounds import (
    Accepted,
    Decision,
    Rejected,
    RoundClosed,
    RoundFailed,
    RoundMachine,
)
from aggregator.settings import Settings
from aggregator.store import Store
from tinyfed import contract, model
from tinyfed.contract import AggregatorStatus, ContractError, GlobalModel
from tinyfed.errors import UsageError
from tinyfed.mqtt import make_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 86_400  #: the broker keeps our queued updates this long while we are down
GLOBAL_CHECK_S = 0.5  #: after subscribing, how long to wait for the retained global model
REPUBLISH_MIN_INTERVAL_S = 1.0  #: never republish the global model more often than this
POLL_S = 0.05  #: how often the loop looks at the clock when nothing arrives


@dataclass(frozen=True)
class _Connected:
    reason: str
    failed: bool


@dataclass(frozen=True)
class _Subscribed:
    mid: int


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


_Event = _Connected | _Subscribed | _Message


def open_machine(settings: Settings, store: Store, now: float) -> RoundMachine:
    """Resume the round machine from ``store``, or start round 0 in a new database."""
    meta = store.meta()
    for key, value in (("fleet", settings.fleet), ("pipeline", settings.pipeline)):
        if key in meta and meta[key] != value:
            raise UsageError(
                f"database {store.path} belongs to {key} {meta[key]!r}, not {value!r}: "
                f"use --{key} {meta[key]} or another --db"
            )
    snapshot = store.load()
    if snapshot is None:
        params = model.load(settings.init) if settings.init else model.init_params()
        first = GlobalModel(
            round=0, params=params, hyper=settings.hyper, pipeline=settings.pipeline, created=now
        )
        machine = RoundMachine(
            policy=settings.policy,
            strategy=settings.strategy,
            hyper=settings.hyper,
            current=first,
            now=now,
        )
        store.set_meta(fleet=settings.fleet, pipeline=settings.pipeline)
        store.initialise(first, machine.opening())
        log.info("new database %s: round 0 is %s", store.path, first.sha256[:12])
        return machine
    if settings.init is not None:
        log.warning(
            "--init %s ignored: %s already holds the fleet's models", settings.init, store.path
        )
    # The deadline restarts now: while the aggregator was down nobody could be told anything.
    machine = RoundMachine(
        policy=settings.policy,
        strategy=settings.strategy,
        hyper=settings.hyper,
        current=snapshot.current,
        velocity=snapshot.velocity,
        now=now,
        attempt=snapshot.opening.attempt,
        first_opened=snapshot.first_opened,
        expected=snapshot.opening.expected,
        counted=snapshot.counted,
        rejected=snapshot.rejected,
    )
    log.info(
        "resumed round %d attempt %d with %d accepted updates (%s)",
        machine.round,
        machine.attempt,
        len(snapshot.counted),
        ", ".join(machine.reported) or "none yet",
    )
    return machine


class AggregatorService:
    """One aggregator for one fleet.

    Args:
        settings: validated settings.
        clock: wall-clock time source (seconds); rounds store and publish its values.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._clock = clock
        self._events: queue.Queue[_Event] = queue.Queue()
        self._global_mid: int | None = None
        self._global_check_at: float | None = None
        self._last_repair = -1e9
        self._stopping = False
        self._subscribed = False  # the first subscription has been acknowledged

    # ------------------------------------------------------------------ paho thread

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._events.put(_Connected(str(rc), bool(rc.is_failure)))

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        self._events.put(_Subscribed(mid))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._events.put(_Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if not self._stopping:
            log.warning("disconnected from %s (%s); reconnecting", self.settings.broker, rc)

    # ------------------------------------------------------------------ main thread

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set; return the exit code."""
        s = self.settings
        store = Store(s.db)
        try:
            self.machine = open_machine(s, store, self._clock())
            self.store = store
            client = make_client(
                s.broker,
                s.client_id,
                will_topic=self.topics.aggregator_status,
                will_payload=contract.encode_aggregator_status(AggregatorStatus(state="offline")),
            )
            client.manual_ack_set(True)
            client.on_connect = self._on_connect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
            self.client = client
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            client.connect_async(
                s.broker.host, s.broker.port, keepalive=15, clean_start=False, properties=props
            )
            client.loop_start()
            log.info(
                "aggregator for fleet %s on %s: %s, round %d, database %s",
                s.fleet,
                s.broker,
                s.strategy.describe(),
                self.machine.round,
                s.db,
            )
            try:
                while not stop.is_set():
                    self._step()
            finally:
                self._shutdown()
        finally:
            store.close()
        return 0

    def _step(self) -> None:
        try:
            event = self._events.get(timeout=POLL_S)
        except queue.Empty:
            event = None
        now = self._clock()
        if isinstance(event, _Connected):
            self._connected(event)
        elif isinstance(event, _Subscribed):
            if event.mid == self._global_mid:
                self._global_check_at = now + GLOBAL_CHECK_S
                self._subscribed = True
        elif isinstance(event, _Message):
            self._message(event, now)
        if not self._subscribed:
            return  # decide nothing before retained statuses and queued updates can arrive
        if self._global_check_at is not None and now >= self._global_check_at:
            log.info("no retained global model on the broker: publishing it")
            self._publish_global(now, repair=True)
        self._handle(self.machine.tick(now))

    def _connected(self, event: _Connected) -> None:
        if event.failed:
            log.error("broker %s refused the connection: %s", self.settings.broker, event.reason)
            return
        log.info("connected to %s", self.settings.broker)
        self._publish_status()
        qos1 = SubscribeOptions(qos=1)
        _, mid = self.client.subscribe(
            [
                (self.topics.all_worker_status, qos1),
                (self.topics.all_updates, qos1),
                (self.topics.global_model, SubscribeOptions(qos=1, noLocal=True)),
            ]
        )
        self._global_mid = mid
        self._global_check_at = None

    def _message(self, m: _Message, now: float) -> None:
        self._dispatch(m, now)
        # Only now is the decision on disk: if the process dies before this line (or the
        # store raised), the broker delivers the message again and the machine judges it again.
        self.client.ack(m.mid, m.qos)

    def _dispatch(self, m: _Message, now: float) -> None:
        if m.topic == self.topics.global_model:
            self._check_global(m.payload, now)
            return
        try:
            worker_id, kind = self.topics.parse_worker_topic(m.topic)
        except ContractError as exc:
            log.warning("ignoring message: %s", exc)
            return
        if kind == "status":
            self._worker_status(worker_id, m.payload)
        elif kind == "update":
            try:
                update = contract.decode_update(m.payload)
            except ContractError as exc:
                self._handle(self.machine.malformed(worker_id, str(exc), now))
            else:
                self._handle(self.machine.update_received(update, now, sender=worker_id))

    def _worker_status(self, worker_id: str, payload: bytes) -> None:
        if not payload:  # a cleared retained status: the worker is gone
            self.machine.worker_status(worker_id, online=False)
            return
        try:
            status = contract.decode_worker_status(payload)
        except ContractError as exc:
            log.warning("ignoring status of %s: %s", worker_id, exc)
            return
        if status.worker_id != worker_id:
            log.warning("ignoring status of %r on the topic of %r", status.worker_id, worker_id)
            return
        before = set(self.machine.expected)
        self.machine.worker_status(worker_id, online=status.state == "online")
        log.info("worker %s is %s", worker_id, status.state)
        if self.machine.expected != before:
            self._publish_status()

    def _check_global(self, payload: bytes, now: float) -> None:
        self._global_check_at = None
        current = self.machine.current
        try:
            seen = contract.decode_global(payload) if payload else None
        except ContractError as exc:
            log.warning("retained global model is unreadable (%s)", exc)
            seen = None
        if seen is not None and (seen.round, seen.sha256) == (current.round, current.sha256):
            return
        found = "none" if seen is None else f"round {seen.round} {seen.sha256[:12]}"
        log.warning(
            "broker holds global model %s, the database round %d %s: republishing",
            found,
            current.round,
            current.sha256[:12],
        )
        self._publish_global(now, repair=True)

    def _handle(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Accepted):
                self.store.accept(d)
                log.info(
                    "round %d: accepted %s upload %s (%d steps, weight %g)",
                    d.round,
                    d.update.worker_id,
                    d.update.upload_id,
                    d.update.local_steps,
                    d.weight,
                )
                self._publish_status()
            elif isinstance(d, Rejected):
                self.store.reject(d)
            elif isinstance(d, RoundClosed):
                self.store.close_round(d)
                self._publish_global(d.event.time)
                self._publish_round(d.event)
                self._publish_status()
            elif isinstance(d, RoundFailed):
                self.store.fail_round(d)
                self._publish_round(d.event)
                self._publish_status()

    # ------------------------------------------------------------------ publishing

    def _publish_global(self, now: float, *, repair: bool = False) -> None:
        """Publish the current global model, retained; ``repair``s are rate-limited."""
        self._global_check_at = None
        if repair:
            if now - self._last_repair < REPUBLISH_MIN_INTERVAL_S:
                return
            self._last_repair = now
        g = self.machine.current
        self.client.publish(self.topics.global_model, contract.encode_global(g), qos=1, retain=True)
        log.info("published global model %d (%s)", g.round, g.sha256[:12])

    def _publish_round(self, event: contract.RoundEvent) -> None:
        self.client.publish(self.topics.rounds, contract.encode_round_event(event), qos=1)

    def _status(self, state: str = "online") -> AggregatorStatus:
        m = self.machine
        return AggregatorStatus(
            state="online" if state == "online" else "offline",
            round=m.round,
            strategy=self.settings.strategy.describe(),
            expected=tuple(sorted(m.expected)),
            reported=m.reported,
            time=self._clock(),
        )

    def _publish_status(self, state: str = "online") -> paho.MQTTMessageInfo:
        payload = contract.encode_aggregator_status(self._status(state))
        return self.client.publish(self.topics.aggregator_status, payload, qos=1, retain=True)

    def _shutdown(self) -> None:
        self._stopping = True
        if self.client.is_connected():
            info = self._publish_status("offline")
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish the offline status: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        log.info("aggregator stopped at round %d", self.machine.round)


def run(settings: Settings, stop: threading.Event) -> int:
    """Run one aggregator until ``stop`` is set (``tinyfed aggregator`` and in-process tests)."""
    return AggregatorService(settings).run(stop)
