"""The aggregator service: a thin MQTT shell around the round machine and the store.

Paho's network thread only queues what arrives (the session adapter,
:class:`~tinyfed.mqtt.adapter.MqttSession`, which also keeps the connection, the retained status
with its Last Will and the orderly exit); one thread (the caller of :meth:`run`) decodes,
asks the :class:`~tinyfed.aggregator.rounds.RoundMachine`, persists each decision in the
:class:`~tinyfed.aggregator.store.Store` and only then acknowledges the MQTT message and publishes.

* Every message waiting in the queue is decided in one store batch: one synced commit, then
  every acknowledgement and receipt. The queue holds at most :data:`INBOUND_WINDOW` messages
  (the session's bounded inbox: when it is full, paho's thread stops reading the socket),
  which is also the MQTT v5 Receive Maximum the aggregator announces (under MQTT 3.1.1 the
  broker's own in-flight limit, docs/deploy.md); Mosquitto 2.0.11 honours that only until the
  first acknowledgements, the inbox always.
* Each message is handled in isolation: whatever goes wrong with one (a payload no decoder
  foresaw, a store error), it is rolled back alone, rejected with the reason, logged,
  counted in :attr:`AggregatorService.poisoned` and acknowledged; the service goes on.
* Once an update's fate is on disk, the aggregator publishes a retained receipt on
  ``workers/<id>/receipt`` (accepted, or rejected with the reason; a re-sent upload already
  counted is confirmed again). Gateways keep an update until they see its receipt, so an
  update lost anywhere between them and the database is sent again.
* The status is republished at most once a second while a round fills (and at once when a
  round or attempt changes: gateways re-send what has no receipt when an attempt restarts;
  and when a round request asks the gateways to upload now, its ``upload_now``).
* A round request (``workers/<id>/request``, a person held a board's D5 button) goes to the
  round machine (``--round-requests off`` ignores them); each is logged with its worker id and
  counted by outcome in the metrics, a malformed one or one from an unknown worker too.

* The MQTT session is persistent (fixed client id, clean start off, session expiry of a day) and
  messages are acknowledged by hand after their decision is committed: updates published while
  the aggregator is down wait at the broker, and an update whose acknowledgement a crash lost
  comes again and is recognised as a duplicate.
* On every (re)connect it publishes its retained status (its Last Will says ``offline``),
  subscribes, and compares the retained global model on the broker with the database's current
  one, republishing it if it is missing or different (a broker that lost its retained store).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho

from tinyfed.aggregator.metrics import AggregatorMetrics
from tinyfed.aggregator.resume import open_machine
from tinyfed.aggregator.rounds import (
    Accepted,
    Decision,
    Duplicate,
    Rejected,
    RequestIgnored,
    RoundClosed,
    RoundFailed,
    RoundMachine,
    UploadNow,
)
from tinyfed.aggregator.settings import Settings
from tinyfed.aggregator.store import Store
from tinyfed.mqtt import contract
from tinyfed.mqtt.adapter import Connected, Event, Message, MqttSession, Subscribed
from tinyfed.mqtt.contract import AggregatorStatus, ContractError, GlobalModel

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 86_400  #: the broker keeps our queued updates this long while we are down
#: MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may send us at once, and
#: the capacity of the inbound queue, which holds at most 64 x 64 KiB = 4 MiB whatever the
#: broker does; it also bounds the size of one commit batch.
INBOUND_WINDOW = 64
#: How long the first message of a batch waits for others to share its commit (an fsync).
BATCH_WINDOW_S = 0.01
#: closed rounds' update blobs are deleted only after this long without a message: deleting
#: 10,000 (420 MB of pages) costs ~1-3 s of CPU, which must not slow a round that is filling
PRUNE_IDLE_S = 0.5
STATUS_MIN_INTERVAL_S = 1.0  #: the retained status is republished at most this often
#: Rejection receipts per worker: a token bucket of this burst, refilled at this rate per
#: second. A flood of bad uploads then costs a bounded outgoing queue; a gateway whose
#: rejection receipt was skipped sends again later and gets one then. Accepted receipts
#: (one per counted upload) are never skipped.
REJECTION_RECEIPTS_BURST = 20.0
REJECTION_RECEIPTS_PER_S = 5.0
GLOBAL_CHECK_S = 0.5  #: after subscribing, how long to wait for the retained global model
REPUBLISH_MIN_INTERVAL_S = 1.0  #: never republish the global model more often than this
POLL_S = 0.05  #: how often the loop looks at the clock when nothing arrives


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
        self._global_mid: int | None = None
        self._global_check_at: float | None = None
        self._last_repair = -1e9
        self._subscribed = False  # the first subscription has been acknowledged
        self._status_dirty = False
        self._status_sent = -1e9
        #: (round, attempt, upload_now) last published
        self._status_key: tuple[int, int, int | None] | None = None
        self.poisoned = 0  #: messages whose handling failed unexpectedly (rejected, acked)
        self.receipts_skipped = 0  #: rejection receipts not sent (flood control)
        self._receipt_tokens: dict[str, tuple[float, float]] = {}  # worker -> (tokens, at)
        self._prune = True  # closed rounds' update blobs may be left to delete (from a crash)
        self._last_message = -1e9  # when the last batch of messages was handled (clock)
        self.metrics = AggregatorMetrics()

    # ------------------------------------------------------------------ main thread

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set; return the exit code."""
        s = self.settings
        if s.metrics is not None:  # first: a port in use is refused before anything starts
            self.metrics.serve(s.metrics)
        store = Store(s.db)
        try:
            self.machine = open_machine(s, store, self._clock())
            self.store = store
            # MQTT 3.1.1 has no session expiry nor Receive Maximum: the broker's settings
            # bound both then (docs/deploy.md, "MQTT 3.1.1").
            self.mqtt = MqttSession(
                s.broker,
                s.client_id,
                logger=log,
                status_topic=self.topics.aggregator_status,
                # offline, with the time its connection opened (paho reconnects with the Will
                # it holds: the adapter asks for a fresh one before each reconnection)
                will=lambda: contract.encode_aggregator_status(
                    AggregatorStatus(
                        state="offline",
                        strategy=s.strategy.describe(),
                        time=self._clock(),
                    )
                ),
                persistent=True,
                session_expiry=SESSION_EXPIRY_S,
                receive_maximum=INBOUND_WINDOW,
                manual_ack=True,
                keepalive=15,
                inbox_capacity=INBOUND_WINDOW,  # the bound, whatever the broker does
            )
            self.mqtt.start()
            log.info(
                "aggregator for fleet %s on %s: %s family (%d-byte models), %s, round %d, "
                "database %s",
                s.fleet,
                s.broker,
                s.family.name,
                s.family.model_bytes,
                s.strategy.describe(),
                self.machine.number,
                s.db,
            )
            try:
                while not stop.is_set():
                    self._step()
            finally:
                self._shutdown()
        finally:
            store.close()
            self.metrics.close()
        return 0

    def _next_events(self) -> list[Event]:
        """What arrived: wait briefly for one event, then take what else is already queued."""
        # Group commit: gather what arrives within BATCH_WINDOW_S into one synced commit (the
        # inbox holds at most INBOUND_WINDOW messages anyway).
        return self.mqtt.take(POLL_S, linger=BATCH_WINDOW_S, limit=INBOUND_WINDOW * 2)

    def _step(self) -> None:
        messages: list[Message] = []
        for event in self._next_events():
            if isinstance(event, Message):
                messages.append(event)
                continue
            if messages:  # keep the order: messages before a (re)connection go first
                self._messages(messages, self._clock())
                messages = []
            if isinstance(event, Connected):
                self._connected(event)
            elif isinstance(event, Subscribed) and event.mid == self._global_mid:
                self._global_check_at = self._clock() + GLOBAL_CHECK_S
                self._subscribed = True
        now = self._clock()
        if messages:
            self._messages(messages, now)
        if not self._subscribed:
            return  # decide nothing before retained statuses and queued updates can arrive
        if self._global_check_at is not None and now >= self._global_check_at:
            log.info("no retained global model on the broker: publishing it")
            self._publish_global(now, repair=True)
        self._tick(now)
        self._publish_status_if_due(now)
        m = self.machine
        self.metrics.progress(m.number, len(m.expected), len(m.reported), self.mqtt.inbox.peak)
        if self._prune and now - self._last_message >= PRUNE_IDLE_S and not self.mqtt.inbox:
            self._prune_some()

    def _prune_some(self) -> None:
        """Delete up to 1,000 closed rounds' update blobs (~0.1 s), while nothing arrives."""
        try:
            self._prune = self.store.prune_updates() > 0
        except sqlite3.Error as exc:  # tried again after the next round closes
            log.warning("could not delete closed rounds' updates yet: %s", exc)
            self._prune = False

    def _tick(self, now: float) -> None:
        """Let time pass; a round that cannot be closed is logged and tried again later."""
        try:
            decisions = self.machine.tick(now)
            if decisions:
                with self.store.batch():
                    self._record(decisions)
        except Exception:
            log.exception("round %d could not be closed; retrying", self.machine.number)
            self.machine = self._rebuilt_machine(now)
            return
        self._announce(decisions)

    def _rebuilt_machine(self, now: float) -> RoundMachine:
        """The round machine again from the store (after a failure), keeping what only the
        old one knew: the workers online, and a round request's ``upload_now``."""
        old = self.machine
        machine = open_machine(self.settings, self.store, now, online=frozenset(old.online))
        if old.upload_now is not None and old.upload_now == machine.round:
            machine.upload_now = old.upload_now
        return machine

    def _connected(self, event: Connected) -> None:
        if event.failed:
            return  # the session logged it (once per cause and minute); paho retries
        self.metrics.connections.inc()
        self._publish_status()
        # Under MQTT 3.1.1 there is no No Local: our own global models come back, match the
        # database and are ignored.
        t = self.topics
        self._global_mid = self.mqtt.subscribe(
            [t.all_worker_status, t.all_updates, t.all_requests, t.global_model],
            no_local={t.global_model},
        )
        self._global_check_at = None

    def _messages(self, batch: list[Message], now: float) -> None:
        """Decide ``batch`` in one store transaction, then acknowledge and publish."""
        self._last_message = now
        decided: list[Decision] = []
        with self.store.batch():
            for m in batch:
                decided.extend(self._isolated(m, now))
        # Only now are the decisions on disk: if the process dies before this line, the
        # broker delivers the messages again and the machine judges them again.
        for m in batch:
            self.mqtt.ack(m)
        accepted = [d.round for d in decided if isinstance(d, Accepted)]
        if accepted:  # one line per commit, not per update (10,000 lines a round at scale)
            machine = self.machine
            log.info(
                "round %d: accepted %d update(s)%s",
                accepted[-1] + 1,
                len(accepted),
                f", {len(machine.reported)} of {len(machine.expected)} in"
                if machine.round == accepted[-1]
                else " (it has closed)",
            )
        self._announce(decided)

    def _isolated(self, m: Message, now: float) -> list[Decision]:
        """Handle one message; if anything goes wrong, roll it back alone and reject it."""
        try:
            with self.store.savepoint():
                decisions = self._dispatch(m, now)
                self._record(decisions)
            self.machine.stored()
            return decisions
        except Exception as exc:  # one message must never stop the service
            self.poisoned += 1
            self.metrics.poisoned.inc()
            log.exception(
                "message on %s (%d bytes) could not be handled: rejected (%d so far)",
                m.topic,
                len(m.payload),
                self.poisoned,
            )
            # The machine may have changed before the failure: rebuild it from the store,
            # which the savepoint left exactly as it was before this message.
            self.machine = self._rebuilt_machine(now)
            try:
                worker_id, kind = self.topics.parse_worker_topic(m.topic)
            except ContractError:
                return []
            if kind != "update":
                return []
            reason = f"internal error while handling the update ({type(exc).__name__}: {exc})"
            decisions = self.machine.malformed(worker_id, reason[:300], now)
            with self.store.savepoint():
                self._record(decisions)
            return decisions

    def _dispatch(self, m: Message, now: float) -> list[Decision]:
        if m.topic == self.topics.global_model:
            self._check_global(m.payload, now, retained=m.retain)
            return []
        try:
            worker_id, kind = self.topics.parse_worker_topic(m.topic)
        except ContractError as exc:
            log.warning("ignoring message: %s", exc)
            return []
        if kind == "status":
            self._worker_status(worker_id, m.payload)
        elif kind == "update":
            try:
                update = contract.decode_update(m.payload)
            except ContractError as exc:
                return self.machine.malformed(worker_id, str(exc), now)
            if update.base_round < self.machine.round and update.worker_id == worker_id:
                # A re-send of an update counted in a closed round (its receipt was lost):
                # confirm it again rather than call it stale.
                counted = self.store.counted_round(worker_id, update.upload_id)
                if counted is not None:
                    return [Duplicate(counted, 0, worker_id, update.upload_id)]
            return self.machine.update_received(update, now, sender=worker_id)
        elif kind == "request":
            return self._round_request(worker_id, m.payload, now)
        return []

    def _round_request(self, worker_id: str, payload: bytes, now: float) -> list[Decision]:
        """A round request on ``worker_id``'s topic: to the machine if valid (and allowed)."""
        m = self.machine
        try:
            request = contract.decode_request(payload)
        except ContractError as exc:
            return [RequestIgnored(m.round, worker_id, "malformed", str(exc))]
        if request.worker_id != worker_id:
            reason = (
                f"request from {request.worker_id!r} was published on the topic of {worker_id!r}"
            )
            return [RequestIgnored(m.round, worker_id, "wrong_topic", reason)]
        if not self.settings.round_requests:
            return [RequestIgnored(m.round, worker_id, "off", "round requests are off")]
        return m.round_requested(worker_id, now)

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
        before = len(self.machine.expected)
        self.machine.worker_status(worker_id, online=status.state == "online")
        log.info("worker %s is %s", worker_id, status.state)
        if len(self.machine.expected) != before:
            self._status_dirty = True

    def _check_global(self, payload: bytes, now: float, *, retained: bool = True) -> None:
        self._global_check_at = None
        current = self.machine.current
        try:
            seen = contract.decode_global(payload) if payload else None
        except ContractError as exc:
            log.warning("retained global model is unreadable (%s)", exc)
            seen = None
        if seen is not None and (seen.round, seen.sha256) == (current.round, current.sha256):
            return
        if not retained and seen is not None and seen.round < current.round and self._ours(seen):
            # Under MQTT 3.1.1 (no No Local) our own global models come back; one published
            # before the round that has just closed can arrive after it: not a mismatch.
            return
        found = "none" if seen is None else f"round {seen.round} {seen.sha256[:12]}"
        log.warning(
            "broker holds global model %s, the database round %d %s: republishing",
            found,
            current.round,
            current.sha256[:12],
        )
        self._publish_global(now, repair=True)

    def _ours(self, seen: GlobalModel) -> bool:
        """``seen`` is the global model this aggregator stored for its round."""
        try:
            stored, _ = self.store.global_model(seen.round)
        except (LookupError, ValueError, sqlite3.Error):
            return False
        return stored.sha256 == seen.sha256

    def _record(self, decisions: list[Decision]) -> None:
        """Write ``decisions`` to the store (inside the caller's transaction or savepoint)."""
        for d in decisions:
            if isinstance(d, Accepted):
                self.store.accept(d)
                log.debug(
                    "round %d: accepted %s upload %s (%d steps, weight %g)",
                    d.round + 1,
                    d.update.worker_id,
                    d.update.upload_id,
                    d.update.local_steps,
                    d.weight,
                )
            elif isinstance(d, Rejected):
                self.store.reject(d)
            elif isinstance(d, RoundClosed):
                self.store.close_round(d)
            elif isinstance(d, RoundFailed):
                self.store.fail_round(d)

    def _announce(self, decisions: list[Decision]) -> None:
        """Publish what committed ``decisions`` mean: receipts, global models, round events."""
        self.metrics.decided(decisions)
        for d in decisions:
            if isinstance(d, Accepted):
                u = d.update
                self._publish_receipt(u.worker_id, u.upload_id, d.round + 1, "accepted", "")
                self._status_dirty = True
            elif isinstance(d, Duplicate):
                self._publish_receipt(d.worker_id, d.upload_id, d.round + 1, "accepted", "")
            elif isinstance(d, Rejected):
                r = d.rejection
                if r.upload_id and self._rejection_receipt_allowed(r.worker_id):
                    self._publish_receipt(
                        r.worker_id, r.upload_id, d.round + 1, "rejected", r.reason
                    )
            elif isinstance(d, RoundClosed):
                if d.requested_by:
                    log.info(
                        "round %d: %s asked for a round: closed now with %d update(s)",
                        d.event.round,
                        d.requested_by,
                        d.event.participant_count,
                    )
                self._publish_global(d.event.time)
                self._publish_round(dataclasses.replace(d.event, metrics=d.metrics))
                self._status_dirty = True
                self._prune = True
            elif isinstance(d, UploadNow):
                log.info(
                    "round %d: %s asked for a round; %d of at least %d workers reported: "
                    "asking the gateways to upload what their boards have now",
                    d.round,
                    d.worker_id,
                    len(self.machine.reported),
                    self.settings.policy.min_workers,
                )
            elif isinstance(d, RequestIgnored):
                log.warning(
                    "round %d: round request of %s ignored: %s", d.round, d.worker_id, d.reason
                )
            elif isinstance(d, RoundFailed):
                self._publish_round(dataclasses.replace(d.event, metrics=d.metrics))
                self._status_dirty = True
                # Asking again includes the model: a broker that lost the retained global
                # model (a publish during a cluster node's failover, say) would otherwise
                # leave every gateway waiting for a round that never reaches them.
                self._publish_global(d.event.time, repair=True)

    # ------------------------------------------------------------------ publishing

    def _publish_global(self, now: float, *, repair: bool = False) -> None:
        """Publish the current global model, retained; ``repair``s are rate-limited."""
        self._global_check_at = None
        if repair:
            if now - self._last_repair < REPUBLISH_MIN_INTERVAL_S:
                return
            self._last_repair = now
        g = dataclasses.replace(self.machine.current, classes=self.settings.classes)
        self.mqtt.publish(self.topics.global_model, contract.encode_global(g), retain=True)
        log.info("published global model %d (%s)", g.round, g.sha256[:12])

    def _publish_round(self, event: contract.RoundEvent) -> None:
        self.mqtt.publish(self.topics.rounds, contract.encode_round_event(event))

    def _publish_receipt(
        self, worker_id: str, upload_id: str, round_: int, outcome: str, reason: str
    ) -> None:
        """``round_``: the number of the round that judged the upload (1-based, as shown)."""
        try:
            receipt = contract.Receipt(
                worker_id=worker_id,
                upload_id=upload_id,
                round=round_,
                outcome="accepted" if outcome == "accepted" else "rejected",
                reason=reason[:200],
                time=self._clock(),
            )
            topic = self.topics.worker_receipt(worker_id)
            payload = contract.encode_receipt(receipt)
        except ContractError as exc:  # an upload id the contract cannot carry back
            log.warning("no receipt for %s upload %r: %s", worker_id, upload_id, exc)
            return
        self.mqtt.publish(topic, payload, retain=True)

    def _rejection_receipt_allowed(self, worker_id: str) -> bool:
        now = time.monotonic()
        if len(self._receipt_tokens) > 10_000:  # many ids flooding: forget the full buckets
            self._receipt_tokens.clear()
        tokens, at = self._receipt_tokens.get(worker_id, (REJECTION_RECEIPTS_BURST, now))
        tokens = min(REJECTION_RECEIPTS_BURST, tokens + (now - at) * REJECTION_RECEIPTS_PER_S)
        allowed = tokens >= 1.0
        self._receipt_tokens[worker_id] = (tokens - 1.0 if allowed else tokens, now)
        if not allowed:
            self.receipts_skipped += 1
        return allowed

    def _publish_status_if_due(self, now: float) -> None:
        """Republish the status if it changed: at once for a new round or attempt, else <= 1/s."""
        m = self.machine
        key = (m.round, m.attempt, m.upload_now)
        due = self._status_dirty and now - self._status_sent >= STATUS_MIN_INTERVAL_S
        if key != self._status_key or due:
            self._publish_status()

    def _status(self, state: str = "online") -> AggregatorStatus:
        m = self.machine
        return AggregatorStatus(
            state="online" if state == "online" else "offline",
            round=m.number,
            attempt=m.attempt,
            strategy=self.settings.strategy.describe(),
            expected=tuple(sorted(m.expected)[: contract.MAX_LISTED]),
            reported=m.reported[: contract.MAX_LISTED],
            expected_count=len(m.expected),
            reported_count=len(m.reported),
            time=self._clock(),
            # the round's number (round N starts from global model N - 1), as `round`
            upload_now=None if m.upload_now is None else m.upload_now + 1,
        )

    def _publish_status(self, state: str = "online") -> paho.MQTTMessageInfo:
        self._status_dirty = False
        self._status_sent = self._clock()
        self._status_key = (self.machine.round, self.machine.attempt, self.machine.upload_now)
        return self.mqtt.publish_status(contract.encode_aggregator_status(self._status(state)))

    def _shutdown(self) -> None:
        # The offline status (with the round it stopped at), its PUBACK awaited up to 2 s.
        self.mqtt.close(offline=contract.encode_aggregator_status(self._status("offline")))
        log.info("aggregator stopped at round %d", self.machine.number)


def run(settings: Settings, stop: threading.Event) -> int:
    """Run one aggregator until ``stop`` is set (``tinyfed aggregator`` and in-process tests)."""
    return AggregatorService(settings).run(stop)
