"""The round state machine: which updates count, when a round closes, what it produces.

(Over 500 lines on purpose: one state machine, read together.) No sockets and no clock of
its own: the service feeds it events (a worker's status, an update, a payload that failed to
decode, the passing of time, a round request) with the current time, and it returns
:data:`Decision` objects that the service persists and publishes. Round ``r`` is the round
whose workers start from global model ``r``; closing it produces global model ``r + 1``.

Round policy:

* *expected* workers are ``--expect`` if given, otherwise the workers whose status was online
  when the round (attempt) opened, plus any that come online while it is open;
* the round closes as soon as every expected worker has reported and at least
  ``min_workers`` have; at the deadline it closes if ``min_workers`` have reported, otherwise
  it **fails**: the global model stays, the failure is published, and a new attempt of the
  same round opens with a new deadline, keeping the updates already accepted (they were made
  from the global model that is still current);
* an update is rejected, with a reason, and changes nothing if it was published on another
  worker's topic, comes from a worker outside ``--expect``, repeats an upload id already
  counted, is based on another round (stale), comes from a worker already counted this round,
  has another architecture or feature pipeline, or has a wrong size or non-finite values;
  payloads that fail to decode (bad checksum, malformed msgpack) are rejected the same way;
* weight = the worker's local steps capped at the round's configured local steps, so a
  worker that claims more steps counts as one that did the configured number; 0 steps count
  with weight 0;
* a **round request** (a person held a board's D5 button) from one of the round's workers
  closes the round now if ``min_workers`` have reported (as a deadline with quorum does);
  otherwise it sets :attr:`RoundMachine.upload_now`: every gateway uploads what its board has,
  and the round closes as usual. One request per round counts; others are ignored.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from tinyfed.aggregator.decisions import (
    Accepted as Accepted,
    Counted as Counted,
    Decision as Decision,
    Duplicate as Duplicate,
    Opening as Opening,
    Rejected as Rejected,
    RequestIgnored as RequestIgnored,
    RoundClosed as RoundClosed,
    RoundFailed as RoundFailed,
    UploadNow as UploadNow,
)
from tinyfed.aggregator.strategies import F32, RoundAggregate, Strategy, UpdateSource, trim_count
from tinyfed.errors import ModelError
from tinyfed.model import families
from tinyfed.mqtt.contract import (
    GlobalModel,
    HyperParams,
    ModelUpdate,
    Participant,
    Rejection,
    RoundEvent,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundPolicy:
    """When a round closes (validated)."""

    min_workers: int = 1
    expect: frozenset[str] | None = None  #: None: expect the workers online at the start
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.min_workers < 1:
            raise ValueError(f"min workers must be >= 1, got {self.min_workers}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"round timeout must be > 0 seconds, got {self.timeout_s}")
        if self.expect is not None and len(self.expect) < self.min_workers:
            raise ValueError(
                f"min workers ({self.min_workers}) exceeds the {len(self.expect)} expected "
                f"workers ({', '.join(sorted(self.expect))})"
            )


#: Rejections stored (and listed in memory) per worker and round attempt; more are counted only.
MAX_RECORDED_REJECTIONS = 20
#: Rejections kept in memory for the round event (the contract lists at most 20 anyway).
MAX_LISTED_REJECTIONS = 20


class RoundMachine:
    """The state of the open round and the rules that move it on.

    Args:
        policy: when rounds close or fail.
        strategy: how updates are aggregated.
        hyper: hyper-parameters of the global models this aggregator makes (the open round's
            cap on local steps comes from the current global model's own).
        current: the global model the open round starts from.
        velocity: FedAvgM's server momentum so far (None at the start).
        now: the current time (seconds; any clock, as long as every call uses the same).
        attempt: the open round's attempt number (restored after a restart).
        first_opened: when the round's first attempt opened (for its duration).
        expected: the expected workers stored when the attempt opened (after a restart).
        online: workers known to be online now.
        counted: updates accepted before a restart, in their original order.
        rejected: rejections recorded in this round before a restart.
        source_for: reads a round's accepted updates again (from the store), in accepted
            order; needed to clip to the median norm or exclude an update without holding
            every model in memory.
    """

    def __init__(
        self,
        *,
        policy: RoundPolicy,
        strategy: Strategy,
        hyper: HyperParams,
        current: GlobalModel,
        now: float,
        velocity: F32 | None = None,
        attempt: int = 1,
        first_opened: float | None = None,
        expected: Iterable[str] = (),
        online: Iterable[str] = (),
        counted: Iterable[Counted] = (),
        rejected: Iterable[Rejection] = (),
        source_for: Callable[[int], UpdateSource] | None = None,
    ) -> None:
        self.policy = policy
        self.strategy = strategy
        self.hyper = hyper
        self.online: set[str] = set(online)
        self.velocity = velocity
        self._source_for = source_for
        self._open(current, attempt, now, first_opened, set(expected))
        for c in counted:
            try:
                self._count(c.participant, c.params)
            except (ValueError, ModelError) as exc:  # a damaged row must not stop the service
                log.error(
                    "stored update %s of %s cannot be replayed (%s): left out of round %d",
                    c.participant.upload_id,
                    c.participant.worker_id,
                    exc,
                    self.number,
                )
        for r in rejected:
            self._note_rejection(r)
        self._aggregate.mark_stored()

    # ------------------------------------------------------------------ state

    def _open(
        self,
        current: GlobalModel,
        attempt: int,
        now: float,
        first_opened: float | None,
        extra_expected: set[str],
    ) -> None:
        self.current = current
        self.attempt = attempt
        self.opened = now
        self.first_opened = now if first_opened is None else first_opened
        self.expected: set[str] = (
            set(self.policy.expect)
            if self.policy.expect is not None
            else set(self.online) | extra_expected
        )
        source = None if self._source_for is None else self._source_for(current.round)
        self._aggregate = RoundAggregate(self.strategy, current.params, source)
        self._participants: dict[str, Participant] = {}
        self._by_upload: dict[str, str] = {}
        self._norms: list[float] = []
        self._order: list[str] = []  #: worker ids in accepted order (the aggregate's indices)
        #: the open round once a request found no quorum: gateways upload what they have
        self.upload_now: int | None = None
        self._reset_rejections()

    def _reopen(self, now: float) -> None:
        """A new attempt of the same round: keep what was accepted, restart the clock."""
        self.attempt += 1
        self.opened = now
        if self.policy.expect is None:
            self.expected = set(self.online) | set(self._participants)
        self._reset_rejections()

    def _reset_rejections(self) -> None:
        self._rejected: list[Rejection] = []  #: the first MAX_LISTED_REJECTIONS
        self.rejected_count = 0
        self._rejections_by_worker: dict[str, int] = {}

    def _note_rejection(self, r: Rejection) -> bool:
        """Count a rejection; True if it should be stored (the worker's first few)."""
        self.rejected_count += 1
        if len(self._rejected) < MAX_LISTED_REJECTIONS:
            self._rejected.append(r)
        n = self._rejections_by_worker.get(r.worker_id, 0)
        self._rejections_by_worker[r.worker_id] = n + 1
        return n < MAX_RECORDED_REJECTIONS

    def _count(self, p: Participant, params: F32) -> float:
        self.family.check(params)
        norm = self._aggregate.add(params, p.weight)
        self._participants[p.worker_id] = p
        self._by_upload[p.upload_id] = p.worker_id
        self._norms.append(norm)
        self._order.append(p.worker_id)
        return norm

    def stored(self) -> None:
        """The decisions returned so far are in the store (the aggregate may re-read them)."""
        self._aggregate.mark_stored()

    @property
    def round(self) -> int:
        """The global model the open round's workers start from (internal: the store's key)."""
        return self.current.round

    @property
    def number(self) -> int:
        """The open round's number, as every payload, log line and report shows it: the
        global model it will produce (round 1 turns global model 0 into global model 1)."""
        return self.current.round + 1

    @property
    def family(self) -> families.Family:
        """The fleet's model family: the one the global model's ``arch`` names."""
        return families.by_arch(self.current.arch)

    @property
    def deadline(self) -> float:
        """When the open attempt times out."""
        return self.opened + self.policy.timeout_s

    @property
    def reported(self) -> tuple[str, ...]:
        """Workers counted in the open round, sorted."""
        return tuple(sorted(self._participants))

    @property
    def participants(self) -> tuple[Participant, ...]:
        """The open round's participants, in the order they were accepted."""
        return tuple(self._participants.values())

    @property
    def held_models(self) -> int:
        """Whole models the open round holds in memory (0 for FedAvg/FedAvgM)."""
        return self._aggregate.held_models

    def opening(self) -> Opening:
        """The open attempt, as the store records it."""
        return Opening(self.round, self.attempt, self.opened, tuple(sorted(self.expected)))

    # ------------------------------------------------------------------ events

    def worker_status(self, worker_id: str, online: bool) -> None:
        """A worker's status changed; an online worker joins the open round's expected set.

        A worker that goes offline stays expected: the round waits for it until the deadline
        (gateways reconnect), and lists it as dropped if it never reports.
        """
        if online:
            self.online.add(worker_id)
            if self.policy.expect is None:
                self.expected.add(worker_id)
        else:
            self.online.discard(worker_id)

    def update_received(
        self, update: ModelUpdate, now: float, *, sender: str | None = None
    ) -> list[Decision]:
        """Judge one decoded update; ``sender`` is the worker id of the topic it came on."""
        if (
            update.upload_id in self._by_upload
            and self._by_upload[update.upload_id] == update.worker_id
            and (sender is None or sender == update.worker_id)
        ):
            return [Duplicate(self.round, self.attempt, update.worker_id, update.upload_id)]
        reason = self._check(update, sender)
        if reason:
            return [self._reject(sender or update.worker_id, update.upload_id, reason, now)]
        weight = float(min(update.local_steps, self.current.hyper.local_steps))
        participant = Participant(
            worker_id=update.worker_id,
            upload_id=update.upload_id,
            local_steps=update.local_steps,
            weight=weight,
            loss_mean=update.loss.mean,
        )
        norm = self._count(participant, update.params)
        accepted = Accepted(self.round, self.attempt, update, weight, norm, now)
        return [accepted, *self._maybe_close(now, deadline_passed=False)]

    def malformed(self, worker_id: str, reason: str, now: float) -> list[Decision]:
        """A payload on ``worker_id``'s update topic that did not decode."""
        return [self._reject(worker_id, "", reason, now)]

    def round_requested(self, worker_id: str, now: float) -> list[Decision]:
        """A person at ``worker_id``'s board asks for a round now (see the module's policy)."""
        known = self.policy.expect if self.policy.expect is not None else self.expected
        if worker_id not in known and (self.policy.expect or worker_id not in self.online):
            reason = f"worker {worker_id!r} is not one of round {self.round}'s workers"
            return [RequestIgnored(self.round, worker_id, "unknown_worker", reason)]
        if self.upload_now is not None:
            reason = f"round {self.round} was already requested: uploads are under way"
            return [RequestIgnored(self.round, worker_id, "repeated", reason)]
        if len(self._participants) >= self.policy.min_workers:  # the service logs each request
            return [self._close(now, requested_by=worker_id)]
        self.upload_now = self.round
        return [UploadNow(self.round, self.attempt, worker_id)]

    def tick(self, now: float) -> list[Decision]:
        """Let time pass: close (or fail) the round if it is complete or past its deadline."""
        return self._maybe_close(now, deadline_passed=now >= self.deadline)

    # ------------------------------------------------------------------ rules

    def _check(self, u: ModelUpdate, sender: str | None) -> str:
        r = self.number
        if sender is not None and sender != u.worker_id:
            return f"update from worker {u.worker_id!r} was published on the topic of {sender!r}"
        if self.policy.expect is not None and u.worker_id not in self.policy.expect:
            return f"worker {u.worker_id!r} is not one of the expected workers (--expect)"
        if u.upload_id in self._by_upload:
            return f"duplicate upload {u.upload_id!r}: already counted in round {r}"
        if u.base_round != self.round:
            return (
                f"stale update: based on global model {u.base_round}, the open round {r} "
                f"starts from global model {self.round}"
            )
        if u.worker_id in self._participants:
            first = self._participants[u.worker_id].upload_id
            return f"worker {u.worker_id!r} already counted in round {r} (upload {first!r})"
        if u.arch != self.current.arch:
            try:
                theirs = f"the {families.by_arch(u.arch).name} family's"
            except ModelError:
                theirs = "an unknown"
            return (
                f"architecture {u.arch!r} ({theirs}), expected {self.current.arch!r} "
                f"(the fleet runs the {self.family.name} family)"
            )
        if u.pipeline != self.current.pipeline:
            return f"feature pipeline {u.pipeline!r}, expected {self.current.pipeline!r}"
        try:
            self.family.check(u.params)
        except ModelError as exc:
            return str(exc)
        return ""

    def _reject(self, worker_id: str, upload_id: str, reason: str, now: float) -> Rejected:
        rejection = Rejection(worker_id=worker_id, upload_id=upload_id, reason=reason)
        record = self._note_rejection(rejection)
        if record:
            log.warning("round %d: rejected %s %s: %s", self.number, worker_id, upload_id, reason)
        elif self._rejections_by_worker.get(worker_id, 0) % 1000 == 0:
            log.warning(
                "round %d: %d rejections of %s so far (a flood? only the first %d are stored)",
                self.number,
                self._rejections_by_worker.get(worker_id, 0),
                worker_id,
                MAX_RECORDED_REJECTIONS,
            )
        return Rejected(self.round, self.attempt, rejection, now, record)

    def _maybe_close(self, now: float, *, deadline_passed: bool) -> list[Decision]:
        n = len(self._participants)
        quorum = n >= self.policy.min_workers
        # The length test first: the subset test is O(fleet), and an update arrives per worker.
        everyone = (
            bool(self.expected)
            and n >= len(self.expected)
            and self._participants.keys() >= self.expected
        )
        if quorum and (everyone or deadline_passed):
            return [self._close(now)]
        if deadline_passed:
            return [self._fail(now)]
        return []

    def _summary(self, now: float) -> tuple[dict[str, float], float | None]:
        losses = [p.loss_mean for p in self._participants.values() if p.loss_mean is not None]
        loss_mean = float(np.mean(losses)) if losses else None
        metrics = {
            "participants": float(len(self._participants)),
            "dropped": float(len(self.expected - set(self._participants))),
            "rejected": float(self.rejected_count),
            "total_weight": float(sum(p.weight for p in self._participants.values())),
            "duration_s": now - self.first_opened,
        }
        if losses:
            metrics.update(loss_mean=float(np.mean(losses)), loss_min=min(losses))
            metrics["loss_max"] = max(losses)
        if self._norms:
            metrics["update_norm_mean"] = float(np.mean(self._norms))
            metrics["update_norm_max"] = max(self._norms)
        return metrics, loss_mean

    def _event(self, now: float, outcome: str, sha: str, reason: str) -> RoundEvent:
        metrics, loss_mean = self._summary(now)
        return RoundEvent(
            round=self.number,
            outcome="closed" if outcome == "closed" else "failed",
            strategy=self.strategy.describe(),
            participants=self.participants,
            dropped=tuple(sorted(self.expected - set(self._participants))),
            rejected=tuple(self._rejected),
            participant_count=len(self._participants),
            dropped_count=len(self.expected - set(self._participants)),
            rejected_count=self.rejected_count,
            duration_s=metrics["duration_s"],
            loss_mean=loss_mean,
            global_sha256=sha,
            reason=reason,
            time=now,
        )

    def _aggregate_finite(self, now: float) -> tuple[F32, F32 | None, str]:
        """Aggregate; leave out, one by one, the updates that make the result non-finite.

        Float32 updates summed in float64 cannot overflow, but the mean cast back to float32
        can (values near 3.4e38): the update farthest from the base is named, left out and
        the round aggregated again, so one absurd update never stops the fleet.
        """
        excluded: list[int] = []
        notes: list[str] = []
        self._clip_info: tuple[float | None, int] = (None, 0)
        while True:
            result = self._aggregate.finish(self.velocity, excluded)
            velocity_ok = result.velocity is None or bool(np.isfinite(result.velocity).all())
            if bool(np.isfinite(result.params).all()) and velocity_ok:
                break
            suspect = self._aggregate.largest(excluded)
            if suspect is None:  # cannot happen: no update left means the base, finite
                return self.current.params.copy(), self.velocity, "aggregate was not finite"
            excluded.append(suspect)
            worker = self._order[suspect]
            p = self._participants.pop(worker)
            reason = (
                f"left out at close: with it the aggregate was not finite "
                f"(distance from the global model {self._norms[suspect]:.3g})"
            )
            self._note_rejection(Rejection(worker, p.upload_id, reason))
            notes.append(f"{worker} {p.upload_id} {reason}")
            log.error("round %d: %s %s %s", self.number, worker, p.upload_id, reason)
        if result.clipped:
            log.info(
                "round %d: %d of %d updates clipped to norm %.4g",
                self.number,
                result.clipped,
                len(self._norms),
                result.clip or 0.0,
            )
        s = self.strategy
        if s.name == "trimmed-mean" and len(self._participants) > 0:
            n = sum(1 for p in self._participants.values() if p.weight > 0)
            if trim_count(n, s.trim_fraction) == 0:
                need = math.ceil(1 / s.trim_fraction) if s.trim_fraction > 0 else 0
                note = (
                    f"trimmed mean trimmed nothing: {n} worker(s) with fraction "
                    f"{s.trim_fraction:g} (it needs at least {need} to drop one at each end)"
                )
                log.warning("round %d: %s", self.number, note)
                notes.append(note)
        self._clip_info = (result.clip, result.clipped)
        return result.params, result.velocity, "; ".join(notes)

    def _close(self, now: float, requested_by: str = "") -> RoundClosed:
        started = time.perf_counter()
        params, velocity, note = self._aggregate_finite(now)
        aggregate_s = time.perf_counter() - started
        new_global = GlobalModel(
            round=self.round + 1,
            params=params,
            hyper=self.hyper,
            pipeline=self.current.pipeline,
            arch=self.current.arch,
            created=now,
        )
        metrics, _ = self._summary(now)
        clip, clipped = self._clip_info
        metrics["aggregate_s"] = aggregate_s  # the close's own cost (a re-read when clipping)
        if clip is not None:
            metrics.update(clip_norm=clip, clipped=float(clipped))
        if requested_by:  # the round event says why it closed before every worker reported
            note = f"closed early at the request of {requested_by}" + (note and f"; {note}")
        event = self._event(now, "closed", new_global.sha256, note)
        attempt = self.attempt
        self.velocity = velocity
        self._open(new_global, 1, now, None, set())
        log.info(
            "round %d closed: %d participants, %d dropped, %d rejected; global %d is %s",
            event.round,
            len(event.participants),
            len(event.dropped),
            len(event.rejected),
            new_global.round,
            new_global.sha256[:12],
        )
        return RoundClosed(
            event, new_global, velocity, attempt, metrics, self.opening(), requested_by
        )

    def _fail(self, now: float) -> RoundFailed:
        n = len(self._participants)
        reason = (
            f"timeout after {self.policy.timeout_s:g} s with {n} of at least "
            f"{self.policy.min_workers} workers reported; global model {self.round} stays"
        )
        metrics, _ = self._summary(now)
        event = self._event(now, "failed", self.current.sha256, reason)
        attempt = self.attempt
        self._reopen(now)
        log.warning("round %d attempt %d failed: %s", event.round, attempt, reason)
        return RoundFailed(event, attempt, metrics, self.opening())
