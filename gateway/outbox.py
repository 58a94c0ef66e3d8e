"""The gateway's outbox: messages kept until delivered, and the spool that keeps updates on disk.

:class:`Outbox` holds the messages not yet delivered, bounded, dropping the oldest loss event
first (then the oldest update) with a warning when full. A loss event (and a round request)
is delivered when the broker acknowledges it (PUBACK). An update is delivered only when the
aggregator's **receipt** for its upload id arrives, or when the fleet's global model has moved
past the round it was based on: until then it is kept - and, with a spool folder, kept on
disk across gateway restarts (``SPOOL/updates/``) - and sent again with the same upload id,
after ``resend_min`` seconds, doubling up to ``resend_max``.
:class:`~tinyfed.gateway.uplink.Uplink` decides when to hand its messages to the broker (the
module's docstring there says the whole rule).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ContractError

log = logging.getLogger(__name__)

MAX_INFLIGHT = 20  #: messages handed to paho and not yet acknowledged
RESEND_MIN = 30.0  #: first wait for a receipt before an update is sent again (doubling)
RESEND_MAX = 300.0  #: longest wait between two sends of one update


@dataclass
class Outgoing:
    """One MQTT message not yet delivered."""

    topic: str
    payload: bytes
    kind: Literal["update", "loss", "request"]
    key: str  #: upload id, ``loss-<step>`` or ``request-<time>``
    spool_path: Path | None = None
    base_round: int | None = None  #: for updates: the round it was trained from
    sends: int = 0  #: how many times it was handed to the client
    resend_at: float = 0.0  #: monotonic time of the next send while awaiting a receipt


class Outbox:
    """Messages to publish at QoS 1, kept until delivered (see the module's rules).

    Args:
        limit: most messages kept (queued, in flight and awaiting a receipt).
        spool: folder where updates wait on disk until delivered (None: memory only).
        resend_min: first wait for a receipt before an update is sent again.
        resend_max: longest wait between two sends.
    """

    def __init__(
        self,
        limit: int,
        spool: Path | None = None,
        *,
        resend_min: float = RESEND_MIN,
        resend_max: float = RESEND_MAX,
    ) -> None:
        self.limit = limit
        self.spool = spool
        self.resend_min = resend_min
        self.resend_max = resend_max
        self.queued: deque[Outgoing] = deque()
        self.inflight: dict[int, Outgoing] = {}
        self.awaiting: dict[str, Outgoing] = {}  #: updates the broker has, by upload id
        self.dropped = 0
        self.resent = 0
        if spool is not None:
            (spool / "updates").mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.queued) + len(self.inflight) + len(self.awaiting)

    def updates(self) -> list[Outgoing]:
        """Every update not yet delivered, wherever it waits."""
        return [
            m
            for m in (*self.queued, *self.inflight.values(), *self.awaiting.values())
            if m.kind == "update"
        ]

    def load_spool(self) -> int:
        """Queue the updates a previous run left undelivered; return how many."""
        if self.spool is None:
            return 0
        n = 0
        for path in sorted((self.spool / "updates").glob("*.msgpack")):
            try:
                payload = path.read_bytes()
                update = contract.decode_update(payload)
                topic = path.with_suffix(".topic").read_text().strip()
            except (OSError, ContractError) as exc:
                log.error("spooled update %s is unreadable (%s); moved aside", path, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            self.queued.append(
                Outgoing(topic, payload, "update", update.upload_id, path, update.base_round)
            )
            n += 1
        return n

    def add(self, msg: Outgoing) -> None:
        if self.spool is not None and msg.kind == "update":
            name = f"{time.time_ns():020d}-{msg.key}"
            path = self.spool / "updates" / f"{name}.msgpack"
            write_atomic(path.with_suffix(".topic"), msg.topic.encode())
            write_atomic(path, msg.payload)
            msg.spool_path = path
        self.queued.append(msg)
        while len(self) > self.limit and self.queued:
            victim = next((m for m in self.queued if m.kind == "loss"), self.queued[0])
            self.queued.remove(victim)
            self._forget(victim)
            self.dropped += 1
            log.warning(
                "MQTT buffer full (%d messages, broker unreachable?): dropped %s %s; "
                "%d dropped so far; raise --buffer to keep more",
                self.limit,
                victim.kind,
                victim.key,
                self.dropped,
            )

    def take(self) -> Outgoing | None:
        """The next queued message to hand to the client, if there is room in flight."""
        if not self.queued or len(self.inflight) >= MAX_INFLIGHT:
            return None
        return self.queued.popleft()

    def handed(self, msg: Outgoing, mid: int) -> None:
        msg.sends += 1
        self.inflight[mid] = msg

    def acked(self, mid: int, now: float | None = None) -> Outgoing | None:
        """The broker acknowledged ``mid``: a loss event is done, an update awaits its receipt."""
        msg = self.inflight.pop(mid, None)
        if msg is None:
            return None
        if msg.kind == "update":
            wait = min(self.resend_max, self.resend_min * 2 ** max(0, msg.sends - 1))
            msg.resend_at = (time.monotonic() if now is None else now) + wait
            self.awaiting[msg.key] = msg
        else:
            self._forget(msg)
        return msg

    def confirmed(self, upload_id: str) -> Outgoing | None:
        """The aggregator's receipt for ``upload_id`` arrived: the update is delivered."""
        msg = self.awaiting.pop(upload_id, None)
        if msg is None:
            msg = next((m for m in self.queued if m.key == upload_id), None)
            if msg is not None:
                self.queued.remove(msg)
        if msg is None:
            mid = next((k for k, m in self.inflight.items() if m.key == upload_id), None)
            if mid is not None:
                msg = self.inflight.pop(mid)
        if msg is not None and msg.kind == "update":
            self._forget(msg)
            return msg
        return None

    def expire(self, round_: int) -> list[Outgoing]:
        """The global model is now ``round_``: updates based on older rounds are moot."""
        gone = [m for m in self.updates() if m.base_round is not None and m.base_round < round_]
        for msg in gone:
            if self.awaiting.get(msg.key) is msg:
                del self.awaiting[msg.key]
            elif msg in self.queued:
                self.queued.remove(msg)
            else:
                mid = next((k for k, m in self.inflight.items() if m is msg), None)
                if mid is not None:
                    del self.inflight[mid]
            self._forget(msg)
        return gone

    def due(self, now: float) -> int:
        """Queue again the updates whose receipt is overdue; return how many."""
        late = [m for m in self.awaiting.values() if m.resend_at <= now]
        for msg in late:
            del self.awaiting[msg.key]
            self.queued.appendleft(msg)
        self.resent += len(late)
        return len(late)

    def resend_all(self) -> int:
        """Queue again every update awaiting a receipt (the path to the aggregator changed)."""
        return self.due(float("inf"))

    def _forget(self, msg: Outgoing) -> None:
        if msg.spool_path is not None:
            for path in (msg.spool_path, msg.spool_path.with_suffix(".topic")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
