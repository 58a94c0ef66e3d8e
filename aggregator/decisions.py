"""What the round machine decides (:mod:`tinyfed.aggregator.rounds`): one value per decision,
which the service records in the store, then announces (receipts, global models, round events,
the status). Pure data; re-exported by :mod:`tinyfed.aggregator.rounds`."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyfed.aggregator.strategies import F32
from tinyfed.mqtt.contract import GlobalModel, ModelUpdate, Participant, Rejection, RoundEvent


@dataclass(frozen=True)
class Opening:
    """A round attempt that opens (the first of a round, or a retry after a failure)."""

    round: int
    attempt: int
    opened: float
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Accepted:
    """An update that now counts in the open round."""

    round: int
    attempt: int
    update: ModelUpdate
    weight: float
    norm: float  #: L2 distance of the update from the round's base model
    received: float


@dataclass(frozen=True)
class Rejected:
    """An update (or undecodable payload) refused, with the reason."""

    round: int
    attempt: int
    rejection: Rejection
    received: float
    #: False once the worker has had MAX_RECORDED_REJECTIONS in this attempt: a flood is
    #: counted, not stored row by row.
    record: bool = True


@dataclass(frozen=True)
class Duplicate:
    """A re-sent upload already counted in the open round: nothing changes, confirm it again."""

    round: int
    attempt: int
    worker_id: str
    upload_id: str


@dataclass(frozen=True)
class RoundClosed:
    """A round produced a new global model; the next round is open."""

    event: RoundEvent
    model: GlobalModel
    velocity: F32 | None  #: FedAvgM's server momentum after this round
    attempt: int
    metrics: dict[str, float]
    next: Opening
    requested_by: str = ""  #: the worker whose round request closed it ("" if none did)


@dataclass(frozen=True)
class UploadNow:
    """A round request without quorum from ``worker_id``: gateways upload what they have."""

    round: int
    attempt: int
    worker_id: str


@dataclass(frozen=True)
class RequestIgnored:
    """A round request that changes nothing: ``kind`` ``repeated`` or ``unknown_worker``."""

    round: int
    worker_id: str
    kind: str
    reason: str


@dataclass(frozen=True)
class RoundFailed:
    """A round attempt ended below quorum; the global model stays; a retry is open."""

    event: RoundEvent
    attempt: int
    metrics: dict[str, float]
    next: Opening


Decision = Accepted | Rejected | Duplicate | RoundClosed | RoundFailed | UploadNow | RequestIgnored


@dataclass(frozen=True)
class Counted:
    """An update accepted before a restart, replayed from the store."""

    participant: Participant
    params: F32 = field(repr=False)
    norm: float
