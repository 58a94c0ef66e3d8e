"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """Count finished items and redraw ``label [#####.....] done/total elapsed``.

    Thread-safe; redraws at most 10 times a second. Use as a context manager so the line ends.

    Args:
        total: how many items there are.
        label: shown before the bar.
        stream: where to draw; stderr by default.
        enabled: draw or not; by default only if ``stream`` is a terminal.
    """

    WIDTH = 30

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more items done."""
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self._enabled and (now - self._last >= 0.1 or self.done >= self.total):
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total} {now - self._start:.1f} s"
        )
        self._stream.flush()

    @property
    def elapsed(self) -> float:
        """Seconds since the bar was created."""
        return time.monotonic() - self._start

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()
