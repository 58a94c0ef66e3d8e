"""The gateway's settings: one object, validated once, from flags and the environment."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from tinyfed.errors import UsageError
from tinyfed.link.transports import check_url
from tinyfed.listen import parse_listen_address
from tinyfed.mqtt import contract
from tinyfed.mqtt.contract import ContractError, Topics
from tinyfed.mqtt.session import BrokerUrl, parse_broker_url

DEFAULT_BUFFER = 1000  #: MQTT messages kept while the broker is away (loss events, updates)
DEFAULT_LINK_TIMEOUT = 1.0  #: seconds to wait for one answer from the board
DEFAULT_LINK_RETRIES = 5  #: a command or window sent again this many times before giving up
RECONNECT_MIN = 0.5  #: first wait before reopening a lost board link, doubled up to the max
RECONNECT_MAX = 8.0
#: first wait for the aggregator's receipt before an update is sent again (then doubling)
DEFAULT_RESEND_AFTER = 30.0
RESEND_MAX = 300.0  #: longest wait between two sends of an update without a receipt

ENV_DEVICE = "TINYFED_DEVICE"
ENV_BROKER = "TINYFED_BROKER"
ENV_FLEET = "TINYFED_FLEET"
ENV_SPOOL = "TINYFED_SPOOL"


@dataclass(frozen=True)
class GatewaySettings:
    """Everything one gateway needs; build with :meth:`from_args` or directly (tests)."""

    device: str
    broker: BrokerUrl
    fleet: str
    prefix: str = contract.DEFAULT_PREFIX
    worker_id: str | None = None  #: None: ``board-<board id>`` from the board's HELLO
    spool: Path | None = None  #: keeps unpublished updates and the board's state on disk
    buffer: int = DEFAULT_BUFFER
    link_timeout: float = DEFAULT_LINK_TIMEOUT
    link_retries: int = DEFAULT_LINK_RETRIES
    reconnect_min: float = RECONNECT_MIN
    reconnect_max: float = RECONNECT_MAX
    resend_min: float = DEFAULT_RESEND_AFTER
    resend_max: float = RESEND_MAX
    metrics: tuple[str, int] | None = None  #: where to serve Prometheus metrics (None: not)

    def __post_init__(self) -> None:
        check_url(self.device)
        try:
            Topics(self.fleet, self.prefix)
            if self.worker_id is not None:
                contract.check_worker_id(self.worker_id)
        except ContractError as exc:
            raise UsageError(str(exc)) from exc
        if self.buffer < 10:
            raise UsageError(f"--buffer must be at least 10 messages, got {self.buffer}")
        if not 0.01 <= self.link_timeout <= 60:
            raise UsageError(f"--link-timeout must be in 0.01..60 s, got {self.link_timeout}")
        if not 0 <= self.link_retries <= 100:
            raise UsageError(f"--link-retries must be in 0..100, got {self.link_retries}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise UsageError("reconnect delays must satisfy 0 < min <= max")
        if not 0.1 <= self.resend_min <= 3600:
            raise UsageError(f"--resend-after must be in 0.1..3600 s, got {self.resend_min}")
        if self.resend_max < self.resend_min:
            raise UsageError("resend delays must satisfy min <= max")

    @property
    def topics(self) -> Topics:
        return Topics(self.fleet, self.prefix)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GatewaySettings:
        """Settings from ``tinyfed gateway`` flags, falling back on the environment."""
        device = args.device or os.environ.get(ENV_DEVICE)
        broker = args.broker or os.environ.get(ENV_BROKER)
        fleet = args.fleet or os.environ.get(ENV_FLEET)
        spool = args.spool or os.environ.get(ENV_SPOOL)
        for flag, value, env in (
            ("--device", device, ENV_DEVICE),
            ("--broker", broker, ENV_BROKER),
            ("--fleet", fleet, ENV_FLEET),
        ):
            if not value:
                raise UsageError(f"{flag} is required (or set {env})")
        assert device
        assert broker
        assert fleet
        environ = dict(os.environ)
        metrics = getattr(args, "metrics", None) or environ.get("TINYFED_GATEWAY_METRICS")
        if args.username:
            environ["TINYFED_MQTT_USERNAME"] = args.username
        if args.password:
            environ["TINYFED_MQTT_PASSWORD"] = args.password
        return cls(
            device=device,
            broker=parse_broker_url(broker, env=environ),
            fleet=fleet,
            prefix=args.prefix,
            worker_id=args.worker_id,
            spool=Path(spool) if spool else None,
            buffer=args.buffer,
            link_timeout=args.link_timeout,
            link_retries=args.link_retries,
            resend_min=args.resend_after,
            resend_max=max(RESEND_MAX, args.resend_after),
            metrics=parse_listen_address(metrics, "--metrics") if metrics else None,
        )
