"""What paho's network thread hands to the application: the events and the bounded inbox.

Part of the MQTT session adapter (:mod:`tinyfed.mqtt.adapter`, which re-exports every name
here): the network thread turns each paho callback into one of these events and appends it to
the session's :class:`Inbox`; the application takes them in its own thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: How often a producer waiting for room in a full :class:`Inbox` checks that it is open (s).
PUT_POLL_S = 0.2


@dataclass(frozen=True)
class Connected:
    """A CONNACK: ``failed`` if the broker refused the connection (``reason`` says why)."""

    reason: str
    failed: bool


@dataclass(frozen=True)
class Disconnected:
    """The connection is gone (paho reconnects by itself unless the session is closing)."""

    reason: str


@dataclass(frozen=True)
class Subscribed:
    """A SUBACK for the subscription :meth:`MqttSession.subscribe` returned ``mid`` for."""

    mid: int


@dataclass(frozen=True)
class Message:
    """A PUBLISH received (with manual acknowledgements: to :meth:`MqttSession.ack`)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    #: delivered because a subscription was made (the broker's retained message), not because it
    #: was just published: brokers clear the flag on live deliveries (MQTT 3.1.1 3.3.1.3, and
    #: v5 without Retain As Published, which tinyfed never asks for)
    retain: bool = False


@dataclass(frozen=True)
class Published:
    """The broker acknowledged our publish ``mid`` (``failed``: with a v5 error reason code)."""

    mid: int
    reason: Any  #: paho's ReasonCode
    failed: bool


Event = Connected | Disconnected | Subscribed | Message | Published


class Inbox:
    """Events from the network thread to the application, in arrival order (thread-safe).

    ``wake``, if set, is called after each :meth:`put` (outside the lock): how an asyncio loop
    learns that there is something to take.

    ``capacity`` bounds it: :meth:`put` then waits for room, so paho's network thread stops
    reading the socket and TCP holds the rest at the broker, which is what the broker's queue
    is for. The aggregator needs this although it announces an MQTT v5 Receive Maximum:
    Mosquitto 2.0.11 (Debian 12's) honours that only until the first acknowledgements (each
    PUBACK of the oldest message lets a whole window more in; 1,311 unacknowledged updates of
    42 KB were seen queued at W = 3,000 in ``tinyfed bench fleet``). Only a producer on another
    thread may wait: an inbox filled from the consumer's own thread (the asyncio driver) has no
    capacity. :meth:`close` releases a waiting producer (its event is dropped; an unacknowledged
    message comes again in the next session).
    """

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"an inbox holds at least 1 event, got capacity {capacity}")
        self._items: deque[Event] = deque()
        self._ready = threading.Condition()
        self.wake: Callable[[], None] | None = None
        self.capacity = capacity
        self._closed = False
        self.peak = 0  #: the most events it held at once
        self.waits = 0  #: how many puts found it full (and waited for room)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> bool:
        """Append ``event``, waiting while the inbox is full; False if it was closed meanwhile
        (the event is dropped)."""
        with self._ready:
            if self.capacity is not None and len(self._items) >= self.capacity:
                self.waits += 1
                while len(self._items) >= self.capacity and not self._closed:
                    self._ready.wait(PUT_POLL_S)
            if self._closed and self.capacity is not None and len(self._items) >= self.capacity:
                return False
            self._items.append(event)
            self.peak = max(self.peak, len(self._items))
            self._ready.notify_all()
        wake = self.wake
        if wake is not None:
            wake()
        return True

    def get(self, timeout: float) -> Event | None:
        """The next event, waiting up to ``timeout`` seconds; None if none came."""
        with self._ready:
            if not self._items and not self._ready.wait_for(lambda: bool(self._items), timeout):
                return None
            event = self._items.popleft()
            self._ready.notify_all()  # a producer may be waiting for room
            return event

    def drain(self) -> list[Event]:
        """Every event waiting now, without blocking."""
        with self._ready:
            items = list(self._items)
            self._items.clear()
            self._ready.notify_all()
            return items

    def close(self) -> None:
        """Release any producer waiting for room (its event is dropped); idempotent."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self, timeout: float, *, linger: float = 0.0, limit: int = 1 << 30) -> list[Event]:
        """Group commit: wait up to ``timeout`` for one event, then gather what else arrives
        within ``linger`` seconds of it (what is already waiting included), at most ``limit``."""
        first = self.get(timeout)
        if first is None:
            return []
        events = [first]
        deadline = time.monotonic() + linger
        while len(events) < limit:
            event = self.get(max(0.0, deadline - time.monotonic()))
            if event is None:
                break
            events.append(event)
        return events
