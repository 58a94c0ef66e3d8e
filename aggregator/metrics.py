"""The aggregator's Prometheus metrics (``tinyfed aggregator --metrics :9102``).

Served by the ``prometheus_client`` library from its own thread, from a registry of this
service's own (several aggregators in one process, as in the tests, do not mix). Names start
with ``tinyfed_aggregator_``; labels are few and bounded (a rejection's reason is reduced to its
kind), so a fleet of any size makes the same number of series:

* ``rounds_total{outcome}`` closed and failed attempts; ``round`` the open round;
  ``round_expected`` / ``round_reported`` its progress;
* ``round_participants``, ``round_loss_mean``, ``round_duration_seconds`` (histogram) of the
  rounds that closed;
* ``updates_total{outcome}`` accepted, duplicate, rejected; ``rejections_total{kind}``;
  ``update_norm`` (histogram: each accepted update's distance from the round's base model);
* ``round_requests_total{outcome}``: round requests (a board's D5 held 3 s) by what they did:
  ``closed`` (the round, with a quorum), ``upload_now`` (asked the gateways to upload), or why
  they were refused: ``repeated`` (the round was already requested), ``unknown_worker``,
  ``malformed``, ``wrong_topic``, ``off`` (``--round-requests off``);
* ``mqtt_connections_total`` (connections made: more than 1 means reconnects),
  ``poisoned_total`` (messages whose handling failed unexpectedly), ``inbox_peak`` (the most
  messages waiting at once).
"""

from __future__ import annotations

import logging
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tinyfed.aggregator.rounds import (
    Accepted,
    Decision,
    Duplicate,
    Rejected,
    RequestIgnored,
    RoundClosed,
    RoundFailed,
    UploadNow,
)
from tinyfed.listen import MetricsEndpoint

log = logging.getLogger(__name__)

#: what a round request did: closed the round, asked for uploads, or why it changed nothing
REQUEST_OUTCOMES = (
    "closed",
    "upload_now",
    "repeated",
    "unknown_worker",
    "malformed",
    "wrong_topic",
    "off",
)

#: a rejection's reason (free text) -> its kind, the first pattern that matches
_KINDS = (
    ("wrong_topic", re.compile(r"was published on the topic of")),
    ("not_expected", re.compile(r"is not one of the expected workers")),
    ("duplicate", re.compile(r"^duplicate upload")),
    ("stale", re.compile(r"^stale update")),
    ("already_counted", re.compile(r"already counted in round")),
    ("architecture", re.compile(r"^architecture ")),
    ("pipeline", re.compile(r"^feature pipeline ")),
    ("internal_error", re.compile(r"^internal error")),
)


def rejection_kind(reason: str) -> str:
    """The kind of a rejection's reason (``malformed`` for a payload the contract refused)."""
    return next((kind for kind, pattern in _KINDS if pattern.search(reason)), "malformed")


class AggregatorMetrics(MetricsEndpoint):
    """The metrics of one aggregator service; :meth:`serve` exposes them over HTTP."""

    def __init__(self) -> None:
        super().__init__(CollectorRegistry())
        r = self.registry
        self.rounds = Counter(
            "tinyfed_aggregator_rounds", "round attempts that ended", ["outcome"], registry=r
        )
        self.round = Gauge("tinyfed_aggregator_round", "the open round", registry=r)
        self.expected = Gauge(
            "tinyfed_aggregator_round_expected", "workers the open round waits for", registry=r
        )
        self.reported = Gauge(
            "tinyfed_aggregator_round_reported", "updates the open round counted", registry=r
        )
        self.participants = Gauge(
            "tinyfed_aggregator_round_participants",
            "updates counted in the last closed round",
            registry=r,
        )
        self.loss = Gauge(
            "tinyfed_aggregator_round_loss_mean",
            "mean training loss the last closed round's workers reported",
            registry=r,
        )
        self.duration = Histogram(
            "tinyfed_aggregator_round_duration_seconds",
            "from a round's opening to its close",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.updates = Counter(
            "tinyfed_aggregator_updates", "updates judged", ["outcome"], registry=r
        )
        self.rejections = Counter(
            "tinyfed_aggregator_rejections", "rejected updates by kind", ["kind"], registry=r
        )
        self.norm = Histogram(
            "tinyfed_aggregator_update_norm",
            "accepted updates' L2 distance from the round's base model",
            buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 1000),
            registry=r,
        )
        self.connections = Counter(
            "tinyfed_aggregator_mqtt_connections",
            "connections made to the broker (more than 1: reconnections)",
            registry=r,
        )
        self.poisoned = Counter(
            "tinyfed_aggregator_poisoned",
            "messages whose handling failed unexpectedly (rejected, acknowledged)",
            registry=r,
        )
        self.inbox_peak = Gauge(
            "tinyfed_aggregator_inbox_peak", "the most inbound messages waiting at once", registry=r
        )
        self.requests = Counter(
            "tinyfed_aggregator_round_requests",
            "round requests (a board's D5 button held 3 s) by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        for outcome in ("closed", "failed"):
            self.rounds.labels(outcome)
        for outcome in ("accepted", "duplicate", "rejected"):
            self.updates.labels(outcome)
        for kind in (*(k for k, _ in _KINDS), "malformed"):  # every series from the start
            self.rejections.labels(kind)

    def decided(self, decisions: list[Decision]) -> None:
        """Count what the round machine decided (after it is committed)."""
        for d in decisions:
            if isinstance(d, Accepted):
                self.updates.labels("accepted").inc()
                self.norm.observe(d.norm)
            elif isinstance(d, Duplicate):
                self.updates.labels("duplicate").inc()
            elif isinstance(d, Rejected):
                self.updates.labels("rejected").inc()
                self.rejections.labels(rejection_kind(d.rejection.reason)).inc()
            elif isinstance(d, UploadNow):
                self.requests.labels("upload_now").inc()
            elif isinstance(d, RequestIgnored):
                known = d.kind in REQUEST_OUTCOMES
                self.requests.labels(d.kind if known else "malformed").inc()
            elif isinstance(d, RoundClosed):
                e = d.event
                if d.requested_by:
                    self.requests.labels("closed").inc()
                self.rounds.labels("closed").inc()
                self.participants.set(e.participant_count)
                if e.loss_mean is not None:
                    self.loss.set(e.loss_mean)
                self.duration.observe(e.duration_s)
            elif isinstance(d, RoundFailed):
                self.rounds.labels("failed").inc()

    def progress(self, round_: int, expected: int, reported: int, inbox_peak: int) -> None:
        """The open round's state."""
        self.round.set(round_)
        self.expected.set(expected)
        self.reported.set(reported)
        self.inbox_peak.set(inbox_peak)
