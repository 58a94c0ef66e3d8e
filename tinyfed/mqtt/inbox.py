"""A bounded hand-off from paho's network thread to the application.

Why bounded by the application and not only by the broker: a subscriber that acknowledges by
hand announces an MQTT v5 Receive Maximum so the broker never has more than that many
unacknowledged QoS 1 messages out to it. Mosquitto 2.0.11 (Debian 12's) honours it only until
the first acknowledgements: after 64 PUBACKs it sent the 536 messages it had queued at once
(``tests/mqtt/test_inbox.py`` shows it). An aggregator that is slower than its gateways for a
moment then holds every update of the burst in memory (1,311 updates of 42 KB were seen queued
at W = 3,000 in ``tinyfed bench fleet``).

An :class:`Inbox` makes the bound hold whatever the broker does: when it is full, the network
thread waits in :meth:`Inbox.put`, so it stops reading the socket and TCP holds the rest at
the broker, which is what the broker's queue is for. Keep-alives wait too, for as long as the
application takes to make room (it takes one item at a time; paho's keep-alive is seconds).
:meth:`Inbox.close` releases a waiting network thread at shutdown: what it held is dropped,
unacknowledged, and the broker sends it again to the next session.
"""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")

#: How often a network thread waiting for room checks whether the inbox was closed (s).
PUT_POLL_S = 0.2


class Inbox(Generic[T]):
    """A FIFO of at most ``capacity`` items; ``put`` waits for room, ``get`` for an item."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an inbox holds at least 1 item, got capacity {capacity}")
        self.capacity = capacity
        self._queue: queue.Queue[T] = queue.Queue(maxsize=capacity)
        self._closed = threading.Event()
        self.peak = 0  #: the most items it held at once
        self.waits = 0  #: how many puts found it full (and waited for room)

    def put(self, item: T) -> bool:
        """Add ``item``, waiting while the inbox is full; False if it was closed meanwhile
        (the item is dropped)."""
        if self._queue.full():
            self.waits += 1
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=PUT_POLL_S)
            except queue.Full:
                continue
            self.peak = max(self.peak, self._queue.qsize())
            return True
        return False

    def get(self, timeout: float | None = None) -> T:
        """The oldest item, waiting up to ``timeout`` seconds; raises queue.Empty."""
        return self._queue.get(timeout=timeout)

    def get_nowait(self) -> T:
        """The oldest item if there is one; raises queue.Empty."""
        return self._queue.get_nowait()

    def empty(self) -> bool:
        """Nothing waiting (at this instant)."""
        return self._queue.empty()

    def __len__(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Release any network thread waiting for room (its item is dropped); idempotent."""
        self._closed.set()
