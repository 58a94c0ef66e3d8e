"""``--config FILE``: the services' TOML files, below flags and the environment."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tinyfed import config
from tinyfed.aggregator import settings as aggregator_settings
from tinyfed.cli import build_parser, main, subcommand_parser
from tinyfed.errors import UsageError
from tinyfed.gateway.settings import GatewaySettings

AGGREGATOR = """
[aggregator]
broker = "mqtt://from-file:1883"
fleet = "filefleet"
expect = "b1,b2"
round-timeout = 900
lr = 0.05
classes = "vermell,verd,blau"
"""


def parsed(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    config.apply(args.command, subcommand_parser(parser, args.command), args, argv, env=env)
    return args


def test_the_file_fills_what_flags_and_environment_leave(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "tinyfed.toml"
    path.write_text(AGGREGATOR)
    argv = ["aggregator", "--config", str(path), "--lr", "0.2"]
    env = {"TINYFED_FLEET": "envfleet"}
    # Execute
    s = aggregator_settings.from_args(parsed(argv, env), env=env)
    # Assert: the flag beats the file (lr), the environment beats the file (fleet)
    assert s.hyper.lr == 0.2
    assert s.fleet == "envfleet"
    assert (s.broker.host, s.broker.port) == ("from-file", 1883)
    assert s.policy.expect == frozenset({"b1", "b2"})
    assert s.policy.timeout_s == 900
    assert s.classes == ("vermell", "verd", "blau")


def test_a_gateway_reads_its_own_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tinyfed.toml"
    path.write_text(
        '[gateway]\ndevice = "tcp://127.0.0.1:7000"\nbroker = "mqtt://b:1883"\n'
        'fleet = "home"\nworker-id = "board1"\nbuffer = 50\n'
    )
    for name in ("TINYFED_DEVICE", "TINYFED_BROKER", "TINYFED_FLEET", "TINYFED_SPOOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TINYFED_CONFIG", str(path))  # named by the environment this time
    s = GatewaySettings.from_args(parsed(["gateway"], env={"TINYFED_CONFIG": str(path)}))
    assert (s.device, s.fleet, s.worker_id, s.buffer) == (
        "tcp://127.0.0.1:7000",
        "home",
        "board1",
        50,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[aggregator]\nflete = 'x'\n", "[aggregator] has no key 'flete'; keys:"),
        ("[gateway]\nfleet = 'x'\n", "no [aggregator] table"),
        ("[aggregator\n", "not valid TOML"),
        ("[aggregator]\nfleet = ['a']\n", "fleet must be a single value"),
    ],
)
def test_a_bad_file_is_named_with_the_problem(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        parsed(["aggregator", "--config", str(path)], env={})
    assert main(["aggregator", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read it"):
        parsed(["aggregator", "--config", str(tmp_path / "none.toml")], env={})
