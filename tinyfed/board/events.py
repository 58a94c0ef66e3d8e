"""What a self-test's board link said: every event in order, so a check looks at what came
since a mark."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from tinyfed.link.client import BoardLink, Event, LinkError


class LinkEvents:
    """Every event of the link, kept in order, so a check can look at what came since a mark."""

    def __init__(self, link: BoardLink) -> None:
        self.link = link
        self.items: list[Event] = []
        self._changed = asyncio.Event()

    async def run(self) -> None:
        with contextlib.suppress(LinkError):
            while True:
                self.items.append(await self.link.next_event())
                self._changed.set()

    def mark(self) -> int:
        return len(self.items)

    def since(self, mark: int) -> list[Event]:
        return self.items[mark:]

    async def wait(
        self, pred: Callable[[Event], bool], since: int, timeout: float
    ) -> tuple[int, Event] | None:
        """The first event from ``since`` on for which ``pred`` holds, and the index after it."""
        deadline = time.monotonic() + timeout
        i = since
        while True:
            while i < len(self.items):
                i += 1
                if pred(self.items[i - 1]):
                    return i, self.items[i - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.link.closed:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
