"""The MQTT contract's payloads as frozen dataclasses (re-exported by
:mod:`tinyfed.mqtt.contract`, whose table says which topic carries which, and whose codecs turn
them into bytes and back)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from tinyfed import model
from tinyfed.mqtt.fields import (
    ContractError,
    _fits_float,
    _is_number,
    _show,
)

WorkerState = Literal["online", "offline", "board-missing"]
AggregatorState = Literal["online", "offline"]
RoundOutcome = Literal["closed", "failed"]
ReceiptOutcome = Literal["accepted", "rejected"]
RequestKind = Literal["round"]


@dataclass(frozen=True)
class HyperParams:
    """Training hyper-parameters that travel with every global model to every board."""

    lr: float = model.DEFAULT_LR
    momentum: float = model.DEFAULT_MOMENTUM
    local_steps: int = 10  #: steps a board trains between two uploads (the paper: 10)

    def __post_init__(self) -> None:
        if not (_is_number(self.lr) and _fits_float(self.lr) and math.isfinite(self.lr)) or not (
            0 < self.lr <= 10
        ):
            raise ContractError(f"learning rate must be in (0, 10], got {_show(self.lr)}")
        if not (
            _is_number(self.momentum)
            and _fits_float(self.momentum)
            and math.isfinite(self.momentum)
            and 0 <= self.momentum < 1
        ):
            raise ContractError(f"momentum must be in [0, 1), got {_show(self.momentum)}")
        if (
            not isinstance(self.local_steps, int)
            or isinstance(self.local_steps, bool)
            or not 1 <= self.local_steps <= 65535
        ):
            raise ContractError(
                f"local steps must be an integer in 1..65535, got {_show(self.local_steps)}"
            )


@dataclass(frozen=True)
class GlobalModel:
    """The fleet's current model, published retained by the aggregator."""

    round: int
    params: model.F32 = field(repr=False)
    hyper: HyperParams
    pipeline: str
    arch: str = model.ARCH_ID
    created: float = 0.0  #: unix time the aggregator made it
    #: the words of the outputs, in button order (``--classes``; empty when not given)
    classes: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return model.sha256(self.params)


@dataclass(frozen=True, slots=True)
class LossSummary:
    """Summary of the local steps behind an update."""

    count: int = 0
    mean: float | None = None
    last: float | None = None


@dataclass(frozen=True)
class ModelUpdate:
    """A worker's model after its local steps, published by its gateway."""

    worker_id: str
    base_round: int  #: the global round the board started from
    local_steps: int  #: steps since that global model (self-reported: capped by the aggregator)
    params: model.F32 = field(repr=False)
    upload_id: str  #: unique per upload; a re-sent upload keeps its id (idempotence)
    pipeline: str
    arch: str = model.ARCH_ID
    loss: LossSummary = field(default_factory=LossSummary)
    created: float = 0.0

    @property
    def sha256(self) -> str:
        return model.sha256(self.params)


@dataclass(frozen=True)
class LossEvent:
    """One training step on a board (JSON on the loss topic)."""

    worker_id: str
    step: int  #: the board's step counter since boot
    loss: float
    label: int
    outputs: tuple[float, ...]
    prediction: int | None  #: the class whose output is highest and above 0.6, else None
    round: int  #: the global round the board's model descends from
    time: float
    word: str = ""  #: the label's word (from the global model's ``classes``), "" if unknown
    heard: str = ""  #: the prediction's word, "" if none or unknown


@dataclass(frozen=True)
class WorkerStatus:
    """A gateway's view of its board (JSON, retained; also the gateway's Last Will)."""

    worker_id: str
    state: WorkerState
    transport: str = ""
    firmware: str = ""
    board_id: str = ""
    boot_id: str = ""
    pipeline: str = ""
    model_round: int | None = None
    time: float = 0.0


@dataclass(frozen=True)
class Receipt:
    """The aggregator's durable decision about one upload (JSON, retained, per worker).

    Published once the decision is recorded: ``accepted`` (counted, or a duplicate of an upload
    already counted) or ``rejected`` (with the reason; never counted). ``round`` is the open
    round in which the upload was judged.
    """

    worker_id: str
    upload_id: str
    round: int
    outcome: ReceiptOutcome
    reason: str = ""
    time: float = 0.0


@dataclass(frozen=True)
class RoundRequest:
    """A person at a board asks for a federated round now (JSON on ``workers/<id>/request``).

    The board's D5 button held 3 s sends the LOG ``event round_request``; its gateway
    publishes this. ``kind`` is ``round`` (the only request there is).
    """

    worker_id: str
    kind: RequestKind = "round"
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """An update the aggregator refused, and why."""

    worker_id: str
    upload_id: str  #: empty when the payload did not decode
    reason: str


@dataclass(frozen=True, slots=True)
class Participant:
    """A worker whose update entered a round's aggregate."""

    worker_id: str
    upload_id: str
    local_steps: int
    weight: float
    loss_mean: float | None = None


def _raise_count(obj: object, name: str, listed: int) -> None:
    """Set a frozen dataclass's ``*_count`` to at least the number of entries listed."""
    count = getattr(obj, name)
    if isinstance(count, int) and count < listed:
        object.__setattr__(obj, name, listed)


@dataclass(frozen=True)
class RoundEvent:
    """The outcome of one round (JSON on the rounds topic).

    The payload lists at most :data:`MAX_LISTED` participants and dropped workers and
    :data:`MAX_LISTED_REJECTIONS` rejections; the ``*_count`` fields are the totals (never
    less than the entries listed: the constructor raises them to the lists' lengths).
    """

    round: int
    outcome: RoundOutcome
    strategy: str
    participants: tuple[Participant, ...] = ()
    dropped: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    duration_s: float = 0.0
    loss_mean: float | None = None
    global_sha256: str = ""
    reason: str = ""
    time: float = 0.0
    participant_count: int = 0
    dropped_count: int = 0
    rejected_count: int = 0
    #: the round's figures (the aggregator's: ``participants``, ``dropped``, ``rejected``,
    #: ``total_weight``, ``duration_s``, ``loss_mean``/``loss_min``/``loss_max``,
    #: ``update_norm_mean``/``update_norm_max``, ``aggregate_s``, ``clip_norm``, ``clipped``...),
    #: at most :data:`MAX_METRICS` of them
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _raise_count(self, "participant_count", len(self.participants))
        _raise_count(self, "dropped_count", len(self.dropped))
        _raise_count(self, "rejected_count", len(self.rejected))


@dataclass(frozen=True)
class AggregatorStatus:
    """The aggregator's state (JSON, retained; also its Last Will).

    ``expected`` and ``reported`` list at most :data:`MAX_LISTED` workers in the payload; the
    ``*_count`` fields are the totals (raised to the lists' lengths by the constructor).
    """

    state: AggregatorState
    round: int | None = None
    strategy: str = ""
    expected: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    time: float = 0.0
    attempt: int | None = None  #: the open round's attempt (a failed attempt reopens it)
    expected_count: int = 0
    reported_count: int = 0
    #: the open round, when a round request found no quorum: every gateway whose board
    #: trained at least one step on that round's global model uploads it now (None: no)
    upload_now: int | None = None

    def __post_init__(self) -> None:
        _raise_count(self, "expected_count", len(self.expected))
        _raise_count(self, "reported_count", len(self.reported))
