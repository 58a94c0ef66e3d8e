"""The aggregator's settings: one validated object, from command-line flags and environment.

Defaults and ranges live here and nowhere else; every error names the flag and the bad value.
Environment variables (used when the flag is absent): ``TINYFED_BROKER``, ``TINYFED_FLEET``,
``TINYFED_AGGREGATOR_DB``, plus the broker credentials of :mod:`tinyfed.mqtt.session`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfed import model
from tinyfed.aggregator.rounds import RoundPolicy
from tinyfed.aggregator.strategies import STRATEGIES, Strategy
from tinyfed.errors import ModelError, UsageError
from tinyfed.features import pipelines
from tinyfed.listen import parse_listen_address
from tinyfed.model import families
from tinyfed.mqtt.contract import (
    MAX_LABEL_TEXT,
    ContractError,
    HyperParams,
    Topics,
    check_worker_id,
)
from tinyfed.mqtt.session import BrokerUrl, parse_broker_url

DEFAULT_BROKER = "mqtt://localhost:1883"
DEFAULT_TIMEOUT_S = 600.0  #: a board needs a user to speak 10 words: minutes, not seconds
DEFAULT_PIPELINE = pipelines.DEFAULT_PIPELINE
#: ``--model`` without the flag: new fleets run ``dscnn``, as the boards' firmware does by
#: default (docs/learning.md); ``--model paper`` for the paper's network and its figures.
DEFAULT_MODEL = "dscnn"
#: Each update's distance from the global model is clipped to the round's median distance:
#: one poisoned worker then pulls no harder than a typical one (see docs/aggregator.md).
DEFAULT_CLIP = "median"


def known_pipelines(family: families.Family = families.PAPER) -> tuple[str, ...]:
    """Names of the feature pipelines a global model of ``family`` may declare."""
    return family.pipelines


def default_db(fleet: str) -> Path:
    """Where the database goes without ``--db``: the current folder, one file per fleet."""
    return Path(f"tinyfed-aggregator-{fleet}.sqlite3")


@dataclass(frozen=True)
class Settings:
    """Everything the aggregator service needs, validated."""

    broker: BrokerUrl
    topics: Topics
    policy: RoundPolicy
    strategy: Strategy
    hyper: HyperParams
    pipeline: str
    db: Path
    init: Path | None = None
    family: families.Family = families.PAPER  #: ``--model``
    #: how round 0 is made without ``--init`` (the family's default: ``scaled`` for the paper)
    init_scheme: str = families.PAPER.default_scheme
    client_id: str = ""
    metrics: tuple[str, int] | None = None  #: where to serve Prometheus metrics (None: not)
    classes: tuple[str, ...] = ()  #: the words of the outputs, sent with every global model
    #: ``--round-requests``: a board's round request closes the round or asks for uploads
    round_requests: bool = True

    @property
    def fleet(self) -> str:
        return self.topics.fleet


def _number(value: Any, flag: str, kind: type[int] | type[float]) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"{flag}: {value!r} is not a{'n integer' if kind is int else ' number'}"
        ) from None
    if kind is float and not math.isfinite(out):
        raise UsageError(f"{flag}: {value!r} is not a finite number")
    return out


def from_args(args: Any, env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from an ``argparse`` namespace (see :mod:`tinyfed.aggregator.cli`)."""
    environ = os.environ if env is None else env
    broker_url = args.broker or environ.get("TINYFED_BROKER") or DEFAULT_BROKER
    broker = parse_broker_url(broker_url, env=dict(environ))
    fleet = args.fleet or environ.get("TINYFED_FLEET")
    if not fleet:
        raise UsageError("--fleet is required (or set TINYFED_FLEET)")
    try:
        topics = Topics(fleet=fleet, prefix=args.prefix)
    except ContractError as exc:
        raise UsageError(f"--fleet/--prefix: {exc}") from exc

    expect: frozenset[str] | None = None
    if args.expect:
        ids = [w.strip() for w in args.expect.split(",") if w.strip()]
        try:
            expect = frozenset(check_worker_id(w) for w in ids)
        except ContractError as exc:
            raise UsageError(f"--expect: {exc}") from exc
        if not expect:
            raise UsageError(f"--expect: {args.expect!r} names no worker")
    min_workers = _number(args.min_workers, "--min-workers", int)
    timeout = _number(args.round_timeout, "--round-timeout", float)
    if min_workers < 1:
        raise UsageError(f"--min-workers: must be at least 1, got {min_workers}")
    if timeout <= 0:
        raise UsageError(f"--round-timeout: must be more than 0 seconds, got {timeout:g}")
    if expect is not None and min_workers > len(expect):
        raise UsageError(
            f"--min-workers {min_workers} is more than the {len(expect)} workers of --expect"
        )
    policy = RoundPolicy(min_workers=min_workers, expect=expect, timeout_s=timeout)

    if args.strategy not in STRATEGIES:
        raise UsageError(f"--strategy: {args.strategy!r} is not one of {', '.join(STRATEGIES)}")
    clip_arg = str(args.clip_norm if args.clip_norm is not None else DEFAULT_CLIP).strip().lower()
    clip_median = clip_arg == "median"
    clip = None if clip_arg in ("median", "off") else _number(clip_arg, "--clip-norm", float)
    server_lr = _number(args.server_lr, "--server-lr", float)
    server_momentum = _number(args.server_momentum, "--server-momentum", float)
    trim = _number(args.trim_fraction, "--trim-fraction", float)
    for flag, value, ok, rule in (
        ("--clip-norm", clip, clip is None or clip > 0, "must be more than 0"),
        ("--server-lr", server_lr, server_lr > 0, "must be more than 0"),
        ("--server-momentum", server_momentum, 0 <= server_momentum < 1, "must be in [0, 1)"),
        ("--trim-fraction", trim, 0 <= trim < 0.5, "must be in [0, 0.5)"),
    ):
        if not ok:
            raise UsageError(f"{flag}: {rule}, got {value}")
    strategy = Strategy(
        name=args.strategy,
        clip_norm=clip,
        clip_median=clip_median,
        server_lr=server_lr,
        server_momentum=server_momentum,
        trim_fraction=trim,
    )

    model_name = getattr(args, "model", None) or environ.get("TINYFED_MODEL") or DEFAULT_MODEL
    try:
        family = families.by_name(model_name)
    except ModelError as exc:
        raise UsageError(f"--model: {exc}") from None
    scheme = getattr(args, "init_scheme", None) or family.default_scheme
    if scheme not in family.init_schemes:
        raise UsageError(
            f"--init-scheme: {scheme!r} is not one of the {family.name} family's "
            f"({', '.join(family.init_schemes)})"
        )
    lr_arg = family.lr if getattr(args, "lr", None) is None else args.lr
    momentum_arg = family.momentum if getattr(args, "momentum", None) is None else args.momentum
    lr = _number(lr_arg, "--lr", float)
    momentum = _number(momentum_arg, "--momentum", float)
    steps = _number(args.local_steps, "--local-steps", int)
    for flag, value, ok, rule in (
        ("--lr", lr, 0 < lr <= 10, "must be in (0, 10]"),
        ("--momentum", momentum, 0 <= momentum < 1, "must be in [0, 1)"),
        ("--local-steps", steps, 1 <= steps <= 65535, "must be in 1..65535"),
    ):
        if not ok:
            raise UsageError(f"{flag}: {rule}, got {value}")
    hyper = HyperParams(lr=lr, momentum=momentum, local_steps=steps)

    pipeline = getattr(args, "pipeline", None) or family.pipeline
    known = known_pipelines(family)
    if pipeline not in known:
        raise UsageError(
            f"--pipeline: {pipeline!r} is not one of the {family.name} family's "
            f"({', '.join(known)})"
        )

    init = Path(args.init) if args.init else None
    if init is not None:
        try:
            family.load(init)
        except ModelError as exc:
            raise UsageError(f"--init: {exc}") from exc
    db = Path(args.db or environ.get("TINYFED_AGGREGATOR_DB") or default_db(fleet))
    metrics = getattr(args, "metrics", None) or environ.get("TINYFED_AGGREGATOR_METRICS")
    classes_arg = getattr(args, "classes", None) or environ.get("TINYFED_CLASSES") or ""
    classes = tuple(c.strip() for c in classes_arg.split(",")) if classes_arg else ()
    if classes and (
        len(classes) > model.N_OUTPUTS
        or not all(0 < len(c) <= MAX_LABEL_TEXT for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise UsageError(
            f"--classes: give up to {model.N_OUTPUTS} different words separated by commas, "
            f"got {classes_arg!r}"
        )
    requests_arg = str(getattr(args, "round_requests", None) or "on").strip().lower()
    if requests_arg not in ("on", "off"):
        raise UsageError(f"--round-requests: {requests_arg!r} is not on or off")
    return Settings(
        broker=broker,
        topics=topics,
        policy=policy,
        strategy=strategy,
        hyper=hyper,
        pipeline=pipeline,
        db=db,
        init=init,
        family=family,
        init_scheme=scheme,
        client_id=f"tinyfed-aggregator-{topics.prefix.replace('/', '-')}-{fleet}",
        metrics=parse_listen_address(metrics, "--metrics") if metrics else None,
        classes=classes,
        round_requests=requests_arg == "on",
    )
