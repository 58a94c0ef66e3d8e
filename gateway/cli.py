"""``tinyfed gateway``: run the bridge of one board to the fleet's MQTT broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from tinyfed.gateway import settings as defaults
from tinyfed.gateway.bridge import Bridge
from tinyfed.gateway.metrics import GatewayMetrics
from tinyfed.gateway.settings import GatewaySettings
from tinyfed.mqtt import contract

log = logging.getLogger(__name__)

DESCRIPTION = """\
Bridge ONE board to the fleet's MQTT broker. Run one gateway per board: each speaks its
board's link protocol (USB serial, BLE or TCP) on one side and MQTT v5 on the other, so the
aggregator sees every board as an ordinary federated-learning worker.

What it does:
  * pushes the retained global model (and its lr, momentum, local steps) to the board
    whenever the board appears or reboots (a new boot id), and every new global model;
  * forwards every training step's loss to  <prefix>/<fleet>/workers/<id>/loss  (JSON);
  * after the board's local steps of a round, uploads its model to .../workers/<id>/update
    (QoS 1, with a unique upload id that a re-send keeps, so nothing counts twice);
  * when the board's D5 button is held 3 s, asks the aggregator for a round on
    .../workers/<id>/request; when the aggregator's status says upload_now, uploads the
    board's model at once if it trained at least one step on that round's model;
  * publishes .../workers/<id>/status (retained; "offline" as its Last Will);
  * reconnects to the board and to the broker by itself, buffering messages meanwhile.

The worker id defaults to  board-<board id>  from the board's HELLO, stable across reboots.
Broker credentials: user:password in the URL, --username/--password, or (better, out of the
process list) TINYFED_MQTT_USERNAME / TINYFED_MQTT_PASSWORD; TINYFED_MQTT_CA names the CA
bundle for mqtts://.
"""

EPILOG = """\
examples (one gateway per board, each in its own terminal or service):
  # a Nano 33 BLE Sense on USB; "auto" finds the one board plugged in
  tinyfed gateway --device serial://auto --broker mqtt://localhost:1883 --fleet demo

  # two boards on USB: name the ports (stable names live in /dev/serial/by-id/)
  tinyfed gateway --device serial:///dev/ttyACM0 --broker mqtt://localhost --fleet demo
  tinyfed gateway --device serial:///dev/ttyACM1 --broker mqtt://localhost --fleet demo

  # a board over BLE, by address or by its advertised name (tinyfed-XXXX); needs bleak
  tinyfed gateway --device ble://AA:BB:CC:DD:EE:FF --broker mqtt://localhost --fleet demo
  tinyfed gateway --device ble://tinyfed-3f2a --broker mqtts://broker.lan --fleet demo

  # a board behind a serial-to-network bridge (ser2net/socat in raw mode)
  tinyfed gateway --device tcp://10.0.0.7:4000 --broker mqtt://localhost --fleet demo

  # keep unpublished updates on disk so a gateway restart loses none
  tinyfed gateway --device serial://auto --broker mqtt://localhost --fleet demo \\
      --spool /var/lib/tinyfed/gw-kitchen --worker-id kitchen

watch the fleet:
  mosquitto_sub -v -t 'tinyfed/demo/workers/+/loss' -t 'tinyfed/demo/workers/+/status'
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tinyfed gateway``."""
    p = subparsers.add_parser(
        "gateway",
        help="bridge one board (serial, BLE, TCP) to the MQTT broker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--device",
        metavar="URL",
        help="the board: serial:///dev/ttyACM0, serial://auto, ble://ADDRESS, ble://NAME or "
        f"tcp://HOST:PORT (env {defaults.ENV_DEVICE})",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help=f"mqtt://[USER[:PASS]@]HOST[:PORT] or mqtts://... (env {defaults.ENV_BROKER})",
    )
    p.add_argument("--fleet", metavar="NAME", help=f"fleet name (env {defaults.ENV_FLEET})")
    p.add_argument(
        "--worker-id",
        metavar="ID",
        help="worker id in topics (default: board-<board id> from the board's HELLO)",
    )
    p.add_argument(
        "--prefix",
        default=contract.DEFAULT_PREFIX,
        help="topic prefix (default: %(default)s)",
    )
    p.add_argument("--username", help="broker user name (or TINYFED_MQTT_USERNAME)")
    p.add_argument("--password", help="broker password (prefer TINYFED_MQTT_PASSWORD: not in `ps`)")
    p.add_argument(
        "--spool",
        metavar="DIR",
        help="folder keeping undelivered updates and the board's state across gateway "
        f"restarts (env {defaults.ENV_SPOOL}; default: memory only)",
    )
    p.add_argument(
        "--buffer",
        type=int,
        default=defaults.DEFAULT_BUFFER,
        metavar="N",
        help="MQTT messages kept while the broker is away; beyond, the oldest loss events "
        "are dropped with a warning (default: %(default)s)",
    )
    p.add_argument(
        "--link-timeout",
        type=float,
        default=defaults.DEFAULT_LINK_TIMEOUT,
        metavar="S",
        help="seconds to wait for one answer from the board (default: %(default)s)",
    )
    p.add_argument(
        "--link-retries",
        type=int,
        default=defaults.DEFAULT_LINK_RETRIES,
        metavar="N",
        help="times a command or window is sent again before the transfer fails "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--resend-after",
        type=float,
        default=defaults.DEFAULT_RESEND_AFTER,
        metavar="SECONDS",
        help="an update is kept until the aggregator's receipt says it is on its disk; without "
        "one it is sent again (same upload id) after this long, then doubling up to 5 minutes, "
        "and at once when the broker or the aggregator comes back (default: %(default)s)",
    )
    p.add_argument(
        "--metrics",
        metavar="[HOST]:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (env TINYFED_GATEWAY_METRICS;"
        " e.g. :9103): the board link's round trips, retries and transfers, MQTT reconnections,"
        " the outbox",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file with a [gateway] table of these options (env TINYFED_CONFIG); a "
        "flag, then its environment variable, win over the file",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run a gateway until interrupted (SIGINT/SIGTERM); return the exit code."""
    settings = GatewaySettings.from_args(args)
    asyncio.run(_main(settings))
    return 0


async def _main(settings: GatewaySettings) -> None:
    bridge = Bridge(settings)
    metrics = GatewayMetrics(bridge)
    if settings.metrics is not None:
        metrics.serve(settings.metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, bridge.stop)
    log.info("gateway: %s <-> %s, fleet %s", settings.device, settings.broker, settings.fleet)
    try:
        await bridge.run()
    finally:
        metrics.close()
