"""The gateway's MQTT side: what it publishes, and delivery that ends at the aggregator's disk.

* The :class:`~tinyfed.gateway.outbox.Outbox` holds the messages not yet delivered, bounded,
  dropping the oldest loss event first (then the oldest update) with a warning when full. A
  loss event is delivered when the broker acknowledges it (PUBACK). An update is delivered only
  when the aggregator's **receipt** for its upload id arrives (``workers/<id>/receipt``: it is
  then on the aggregator's disk, counted or rejected with a reason), or when the fleet's global
  model has moved past the round it was based on: until then it is kept - and, with a spool
  folder, kept on disk across gateway restarts - and sent again with the same upload id, so a
  broker that crashed with it queued, or a PUBACK that means nothing (MQTT v5 reason code 0x10
  "no matching subscribers" included), loses nothing. The aggregator recognises a re-sent
  upload it has already counted and confirms it again.
* Re-sending happens at once when the MQTT connection comes back, when the aggregator comes
  back online or starts a new round attempt (its retained status), and otherwise after
  ``resend_min`` seconds, doubling up to ``resend_max`` - but not while the aggregator's
  status says it is offline: copies would only pile up in its queue at the broker.
* :class:`Uplink` is one worker's MQTT session (:class:`~tinyfed.mqtt.adapter.MqttSession`: it
  reconnects by itself, keeps the retained status and its Last Will, says ``offline`` on exit)
  running all of this inside an asyncio loop; the real gateway (:mod:`tinyfed.gateway.bridge`)
  and the fleet's simulated gateways use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

from tinyfed.gateway.outbox import Outbox, Outgoing
from tinyfed.mqtt import contract, session
from tinyfed.mqtt.adapter import Connected, Disconnected, Event, Message, MqttSession, Published
from tinyfed.mqtt.contract import (
    ContractError,
    GlobalModel,
    LossEvent,
    ModelUpdate,
    RoundRequest,
    WorkerStatus,
)

log = logging.getLogger(__name__)

TIMER_S = 0.5  #: how often the resend timer looks at the clock

WorkerState = Literal["online", "offline", "board-missing"]


class Uplink:
    """One worker's MQTT session, in an asyncio loop: statuses, losses, updates, receipts.

    Args:
        broker: the broker.
        topics: the fleet's topics.
        worker_id: the worker this session speaks for.
        outbox: where undelivered messages wait.
        status: makes the worker's status for a state (also its Last Will, ``offline``).
        on_global: called in the loop with each valid global model.
        on_upload_now: called in the loop when the aggregator's status changes its
            ``upload_now`` (the round whose boards should upload what they have, or None).
        threaded: run paho's network loop in its own thread (the gateway); False drives the
            client from the asyncio loop itself (:class:`tinyfed.mqtt.adapter.AsyncioDriver`), for
            thousands of simulated gateways in one process.
    """

    def __init__(
        self,
        broker: session.BrokerUrl,
        topics: contract.Topics,
        worker_id: str,
        outbox: Outbox,
        *,
        status: Callable[[WorkerState], WorkerStatus],
        on_global: Callable[[GlobalModel], None],
        on_upload_now: Callable[[int | None], None] | None = None,
        threaded: bool = True,
    ) -> None:
        self.threaded = threaded
        self.broker = broker
        self.topics = topics
        self.worker_id = worker_id
        self.outbox = outbox
        self._status = status
        self._on_global = on_global
        self._on_upload_now = on_upload_now
        self._upload_now: int | None = None  #: the aggregator status's last ``upload_now``
        self.mqtt: MqttSession | None = None
        self.connected = False
        self.connections = 0  #: connections made to the broker (more than 1: reconnections)
        self.receipts: dict[str, contract.Receipt] = {}  #: last receipts seen, by upload id
        self._aggregator: tuple[str, int | None, int | None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self.last_state: WorkerState = "online"
        self._newest_global: tuple[int, float] | None = None  #: (round, created) seen

    # -- life -----------------------------------------------------------------------------

    def start(self, state: WorkerState = "online") -> None:
        """Connect (in the background; paho reconnects by itself) from the running loop."""
        self.last_state = state
        mqtt = MqttSession(
            self.broker,
            f"tinyfed-gw-{self.topics.fleet}-{self.worker_id}"[:64],
            logger=log,
            status_topic=self.topics.worker_status(self.worker_id),
            will=lambda: contract.encode_worker_status(self._status("offline")),
            on_lost=lambda: f"; {len(self.outbox)} message(s) buffered",
            pubacks=True,
        )
        self.mqtt = mqtt
        mqtt.start_in_loop(self._on_event, threaded=self.threaded)
        self._timer = asyncio.create_task(self._resend_timer(), name=f"resend-{self.worker_id}")
        log.info("connecting to %s as worker %s", self.broker, self.worker_id)

    async def stop(self) -> None:
        """Publish ``offline``, disconnect; updates not yet delivered stay in the spool."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        mqtt, self.mqtt = self.mqtt, None
        if mqtt is None:
            return
        offline = contract.encode_worker_status(self._status("offline"))
        connected, self.connected = self.connected, False  # ours: no "lost the broker" line
        if len(self.outbox):
            log.warning(
                "%d message(s) undelivered at exit%s",
                len(self.outbox),
                " (updates kept in the spool)" if self.outbox.spool else "",
            )
        await mqtt.aclose(offline if connected else None)

    # -- what the application sends -------------------------------------------------------

    def send_update(self, update: ModelUpdate) -> None:
        """Publish ``update`` until its receipt arrives (or its round is over)."""
        payload = contract.encode_update(update)
        topic = self.topics.worker_update(self.worker_id)
        self._enqueue(
            Outgoing(topic, payload, "update", update.upload_id, base_round=update.base_round)
        )

    def send_loss(self, event: LossEvent) -> None:
        topic = self.topics.worker_loss(self.worker_id)
        self._enqueue(Outgoing(topic, contract.encode_loss(event), "loss", f"loss-{event.step}"))

    def send_request(self, request: RoundRequest) -> None:
        """Publish a round request (QoS 1, not retained; kept until the broker's PUBACK)."""
        topic = self.topics.worker_request(self.worker_id)
        payload = contract.encode_request(request)
        self._enqueue(Outgoing(topic, payload, "request", f"request-{request.time:.3f}"))

    def publish_status(self, state: WorkerState) -> None:
        """Publish the worker's retained status (when connected; again on every reconnect)."""
        self.last_state = state
        mqtt = self.mqtt
        if mqtt is None or not self.connected:
            return
        mqtt.publish_status(contract.encode_worker_status(self._status(state)))

    def _enqueue(self, msg: Outgoing) -> None:
        self.outbox.add(msg)
        self._flush()

    def _flush(self) -> None:
        mqtt = self.mqtt
        if mqtt is None or not self.connected:
            return
        while (msg := self.outbox.take()) is not None:
            info = mqtt.publish(msg.topic, msg.payload)
            self.outbox.handed(msg, info.mid)

    @property
    def aggregator_offline(self) -> bool:
        """True if the aggregator's retained status says it is offline (its Last Will)."""
        return self._aggregator is not None and self._aggregator[0] == "offline"

    async def _resend_timer(self) -> None:
        period = max(TIMER_S, self.outbox.resend_min / 10)
        while True:
            await asyncio.sleep(period)
            if self.aggregator_offline:
                # Re-sending now would only pile copies up in the aggregator's queue at the
                # broker: everything goes again when its status says online.
                continue
            n = self.outbox.due(time.monotonic())
            if n:
                log.warning("no receipt yet for %d update(s): sending again", n)
                self._flush()

    # -- in the loop: the session's events ----------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Message):
            self._on_message(event.topic, event.payload)
        elif isinstance(event, Published):
            self._on_puback(event.mid, event.failed, event.reason)
        elif isinstance(event, Connected):
            self._on_connect(event)
        elif isinstance(event, Disconnected):
            self.connected = False

    def _on_connect(self, event: Connected) -> None:
        mqtt = self.mqtt
        if mqtt is None or event.failed:
            return  # a refusal is logged by the session, once per cause and minute
        self.connected = True
        self.connections += 1
        mqtt.subscribe(
            [
                self.topics.global_model,
                self.topics.worker_receipt(self.worker_id),
                self.topics.aggregator_status,
            ]
        )
        self.publish_status(self.last_state)
        # The broker may have lost what it acknowledged before: send the undelivered again.
        if self.outbox.resend_all():
            log.info("re-sending %d update(s) without a receipt", len(self.outbox.updates()))
        self._flush()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.global_model:
            self._global(topic, payload)
        elif topic == self.topics.worker_receipt(self.worker_id):
            self._receipt(payload)
        elif topic == self.topics.aggregator_status:
            self._aggregator_status(payload)
        else:
            log.warning("ignored a message on unexpected topic %s", topic)

    def _global(self, topic: str, payload: bytes) -> None:
        if not payload:
            log.warning("the retained global model on %s was cleared; keeping the last one", topic)
            return
        try:
            g = contract.decode_global(payload)
        except ContractError as exc:
            log.error("rejected a global model on %s (%d bytes): %s", topic, len(payload), exc)
            return
        newest = self._newest_global
        if newest is not None and g.round < newest[0] and g.created <= newest[1]:
            # A broker restored from an older save can hand back an older global model for a
            # moment (the aggregator republishes the current one when it reconnects): training
            # on it would waste the user's words on an update rejected as stale. A fleet that
            # really started over makes a newer model (a later creation time) and is followed.
            log.warning(
                "ignored global model round %d (%s): older than round %d already received",
                g.round,
                g.sha256[:12],
                newest[0],
            )
            return
        self._newest_global = (g.round, g.created)
        log.info("global model round %d (%s) received", g.round, g.sha256[:12])
        for msg in self.outbox.expire(g.round):
            log.info(
                "update %s (round %d) no longer needed: round %d",
                msg.key,
                msg.base_round or 0,
                g.round,
            )
        self._on_global(g)

    def _receipt(self, payload: bytes) -> None:
        if not payload:
            return
        try:
            r = contract.decode_receipt(payload)
        except ContractError as exc:
            log.warning("ignored an unreadable receipt: %s", exc)
            return
        if r.worker_id != self.worker_id:
            log.warning("ignored a receipt for %r on our topic", r.worker_id)
            return
        msg = self.outbox.confirmed(r.upload_id)
        if msg is None:
            return  # a retained receipt of an update delivered before
        self.receipts[r.upload_id] = r
        if r.outcome == "accepted":
            log.info("update %s counted by the aggregator in round %d", r.upload_id, r.round)
        else:
            log.error("the aggregator rejected update %s: %s", r.upload_id, r.reason)

    def _aggregator_status(self, payload: bytes) -> None:
        if not payload:
            return
        try:
            s = contract.decode_aggregator_status(payload, lists=False)
        except ContractError as exc:
            log.warning("ignored an unreadable aggregator status: %s", exc)
            return
        key = (s.state, s.round, s.attempt)
        changed, self._aggregator = key != self._aggregator, key
        upload_now = s.upload_now if s.state == "online" else None
        if upload_now != self._upload_now:
            self._upload_now = upload_now
            if upload_now is not None:
                log.info("the aggregator asks for uploads now (round %d was requested)", upload_now)
            if self._on_upload_now is not None:
                self._on_upload_now(upload_now)
        if changed and s.state == "online" and self.outbox.resend_all():
            log.info(
                "aggregator online at round %s attempt %s: re-sending update(s) without a receipt",
                s.round,
                s.attempt,
            )
            self._flush()

    def _on_puback(self, mid: int, failed: bool, rc: object) -> None:
        msg = self.outbox.acked(mid)
        if msg is not None:
            if failed:
                log.error(
                    "broker refused %s %s on %s: %s (kept; sent again later)"
                    if msg.kind == "update"
                    else "broker refused %s %s on %s: %s",
                    msg.kind,
                    msg.key,
                    msg.topic,
                    rc,
                )
            elif msg.kind == "update":
                log.info(
                    "update %s delivered to the broker; awaiting the aggregator's receipt", msg.key
                )
        self._flush()
