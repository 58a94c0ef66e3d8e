"""What a link counts and logs: frames, bytes, round trips, retries, one record a transfer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

#: The link client's one logger, for all its modules: logging configurations (and tests) name
#: it by the public module, as before the client was split.
log = logging.getLogger("tinyfed.link.client")


@dataclass
class LinkStats:
    """Counters of one link: what the bench reports and the gateway logs."""

    round_trips: int = 0  #: times the host waited for the board's answer
    frames_out: int = 0
    frames_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    retries: int = 0  #: commands or windows sent again
    bad_frames: int = 0  #: frames from the board rejected by the codec (CRC, COBS, length)
    lost_frames: int = 0  #: gaps in the board's sequence numbers
    events_dropped: int = 0

    def snapshot(self) -> LinkStats:
        return LinkStats(**self.__dict__)

    def since(self, before: LinkStats) -> LinkStats:
        return LinkStats(**{k: v - getattr(before, k) for k, v in self.__dict__.items()})


@dataclass(frozen=True)
class TransferRecord:
    """One finished transfer, for logs and the bench."""

    what: str  #: "model down", "model up", "features down", ...
    size: int
    seconds: float
    round_trips: int
    retries: int
    frames: int  #: frames sent and received for it

    def __str__(self) -> str:
        rate = self.size / self.seconds / 1000 if self.seconds > 0 else float("inf")
        return (
            f"{self.what}: {self.size} B in {self.seconds * 1000:.1f} ms ({rate:.0f} kB/s, "
            f"{self.round_trips} round trips, {self.frames} frames, {self.retries} retries)"
        )
