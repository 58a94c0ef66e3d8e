"""The board's frames as the link client hands them on, and the queue of unsolicited ones.

The classes are the generated messages (:mod:`tinyfed.link.messages`) under the names the
gateway reads them by. :class:`EventQueue` keeps what nobody has read yet, dropping the oldest
(and counting it) past :data:`EVENT_QUEUE_LIMIT`.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from tinyfed.link import messages
from tinyfed.link.stats import LinkStats, log

EVENT_QUEUE_LIMIT = 10_000  #: unread events kept before the oldest is dropped (with a warning)

Hello = messages.Hello  #: who the board is, what it runs, where its model stands
ModelInfo = messages.ModelInfo  #: the board's model at the moment it was asked
LossReport = messages.Loss  #: one training step (loss and outputs before its update)
InferReport = messages.Infer  #: one inference (``prediction`` None: nothing detected)
StateReport = messages.State  #: the board's state or LEDs changed
LogLine = messages.Log  #: a line the board logged (``text``; level 0 debug .. 3 error)

#: Unsolicited frames: LOSS, INFER, STATE, LOG, and a HELLO with a boot id not seen before.
Event: TypeAlias = Hello | LossReport | InferReport | StateReport | LogLine
EVENTS = (Hello, LossReport, InferReport, StateReport, LogLine)
#: Frames that answer a command, queued for the command that waits.
Reply: TypeAlias = (
    messages.Ack | messages.Error | messages.XferAck | messages.ModelInfo | messages.ModelChunk
)
REPLIES = (messages.Ack, messages.Error, messages.XferAck, messages.ModelInfo, messages.ModelChunk)


class EventQueue:
    """Unread events, oldest first; past ``limit`` the oldest goes (``stats.events_dropped``)."""

    def __init__(self, stats: LinkStats, url: str, limit: int = EVENT_QUEUE_LIMIT) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self._stats = stats
        self._url = url
        self._limit = limit

    def post(self, event: Event) -> None:
        if self.queue.qsize() >= self._limit:
            self.queue.get_nowait()
            self._stats.events_dropped += 1
            dropped = self._stats.events_dropped
            if dropped in (1, 10, 100) or dropped % 1000 == 0:
                log.warning("%s: %d board events dropped: nobody reads them", self._url, dropped)
        self.queue.put_nowait(event)
