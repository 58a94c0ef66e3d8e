"""The gateway's settings and its command line, without a board or a broker."""

from __future__ import annotations

import argparse

import pytest

from tinyfed.cli import build_parser
from tinyfed.errors import UsageError
from tinyfed.gateway import cli as gateway_cli
from tinyfed.gateway.settings import GatewaySettings
from tinyfed.mqtt.session import parse_broker_url

# ----------------------------------------------------------------------------- settings, CLI


def settings(**changes: object) -> GatewaySettings:
    base: dict[str, object] = {
        "device": "serial:///dev/ttyACM0",
        "broker": parse_broker_url("mqtt://localhost"),
        "fleet": "demo",
    }
    base.update(changes)
    return GatewaySettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "com3"}, "device URL 'com3'"),
        ({"fleet": "a/b"}, "invalid fleet name"),
        ({"worker_id": "bad id"}, "invalid worker id"),
        ({"buffer": 1}, "--buffer must be at least 10"),
        ({"link_timeout": 0}, "--link-timeout"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_value(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        settings(**changes)


def test_flags_fall_back_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYFED_DEVICE", "tcp://10.0.0.7:4000")
    monkeypatch.setenv("TINYFED_BROKER", "mqtts://broker.lan")
    monkeypatch.setenv("TINYFED_FLEET", "kitchen")
    monkeypatch.setenv("TINYFED_MQTT_PASSWORD", "s3cret")
    args = build_parser().parse_args(["gateway", "--username", "gw1"])
    s = GatewaySettings.from_args(args)
    assert (s.device, s.fleet) == ("tcp://10.0.0.7:4000", "kitchen")
    assert (s.broker.tls, s.broker.port, s.broker.username) == (True, 8883, "gw1")
    assert s.broker.password == "s3cret"


def test_a_missing_device_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYFED_DEVICE", raising=False)
    args = build_parser().parse_args(["gateway", "--broker", "mqtt://x", "--fleet", "f"])
    with pytest.raises(UsageError, match="--device is required"):
        GatewaySettings.from_args(args)


def test_gateway_help_teaches_one_gateway_per_board_over_serial_ble_and_tcp() -> None:
    parser = argparse.ArgumentParser(prog="tinyfed")
    sub = parser.add_subparsers()
    gateway_cli.register(sub)
    text = sub.choices["gateway"].format_help()
    for needle in ("one gateway per board", "serial://auto", "ble://", "tcp://", "--spool"):
        assert needle.lower() in text.lower()
