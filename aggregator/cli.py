"""``tinyfed aggregator``: run the fleet's aggregator service."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

from tinyfed.aggregator import service, settings
from tinyfed.aggregator.strategies import STRATEGIES
from tinyfed.model import families

EPILOG = """\
round policy:
  Round r starts from global model r; closing it publishes global model r+1 (retained).
  Expected workers are --expect, or the workers whose status is online when the round opens
  (plus any that come online while it is open). The round closes as soon as every expected
  worker has reported and at least --min-workers have; at --round-timeout it closes if
  --min-workers have reported. Otherwise it FAILS: the global model stays, the failure is
  published on the rounds topic, and the same round is retried with a new deadline, keeping
  the updates already accepted.
  Round request (--round-requests on): a person holds a board's D5 button 3 s; its gateway
  publishes workers/<id>/request. If --min-workers have reported, the round closes now with
  them; otherwise the aggregator's status says upload_now: every gateway whose board trained
  at least one step on the round's model uploads it now, and the round closes as usual.
  One request per round counts; a request from a worker outside the round is refused.
  Rejected with a reason (and changing nothing): updates based on another round (stale),
  a repeated upload id, a second update from a worker already counted, another
  architecture or feature pipeline, a wrong size, non-finite values, a bad checksum,
  a worker outside --expect.

weights:
  FedAvg weights each update by its local steps, capped at --local-steps: a worker that
  claims more steps counts as one that did the configured number; 0 steps count 0.

strategies:
  fedavg        sum(n_i x_i) / sum(n_i); streams: memory of ~4 models, any fleet size
  fedavgm       FedAvg plus server momentum: v = beta v + (g - fedavg); g' = g - lr v
                (--server-lr, --server-momentum)
  median        coordinate-wise median of the workers that trained (holds their models)
  trimmed-mean  coordinate-wise mean without the floor(f n) lowest and highest values
                (--trim-fraction f; holds the models)
  --clip-norm   scales an update's distance from the global model down first: to the
                round's median distance (default: one poisoned worker then pulls no
                harder than a typical one), to a fixed C, or not at all (off).

restart:
  Everything is in one SQLite file (--db): each global model, rounds, participants,
  rejections, metrics and the open round's accepted updates, one transaction per decision.
  Killed at any moment (even SIGKILL) and started again, the aggregator resumes the same
  round with the same global model and the updates already accepted, counts none twice,
  restarts the round's deadline, and republishes the retained global model if the broker
  lost it. Its MQTT session is persistent, so updates sent while it was down are delivered
  when it comes back.

model families (docs/learning.md):
  --model paper   the paper's 650-16-3 network: 10,467 float32 (41,868 bytes) per model,
                  pipelines paper or centroid (default centroid), lr 0.3, momentum 0.9
  --model dscnn   frozen int8 DS-CNN extractor + a softmax head trained on the boards: only
                  the head moves, 195 float32 (780 bytes), pipeline logmel40, lr 0.01,
                  momentum 0
  dscnn is the default, as in the boards' firmware; --model paper for the paper's network
  and its figures. A database holds one family: --model must match it.
  Global model 0 is --init MODEL.bin, or else made by --init-scheme: for paper, "scaled"
  (uniform +-sqrt(3/fan_in) weights, zero biases; hidden units start unsaturated) or
  "paper" (the paper's seeded uniform [-0.5, 0.5], for reproductions); for dscnn, zeros.

example:
  tinyfed aggregator --broker mqtt://localhost:1883 --fleet demo --expect board1,board2
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help  # "(default: None)" teaches nothing
        return super()._get_help_string(action)


def register(subparsers: Any) -> None:
    """Add ``tinyfed aggregator`` to the command line."""
    p = subparsers.add_parser(
        "aggregator",
        help="run the aggregator: rounds, FedAvg and robust strategies, retained global model",
        description=(
            "Collect the boards' model updates over MQTT, aggregate them once every expected "
            "worker has reported (or at the round timeout with a quorum), and publish the new "
            "global model retained, with a JSON event for every round."
        ),
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    conn = p.add_argument_group("connection")
    conn.add_argument(
        "--broker", help=f"broker URL (env TINYFED_BROKER; default {settings.DEFAULT_BROKER})"
    )
    conn.add_argument("--fleet", help="fleet name (env TINYFED_FLEET); required")
    conn.add_argument("--prefix", default="tinyfed", help="topic prefix")
    rounds = p.add_argument_group("round policy")
    rounds.add_argument("--min-workers", default="1", help="quorum to close a round at timeout")
    rounds.add_argument("--expect", help="comma-separated worker ids to wait for (and accept)")
    rounds.add_argument(
        "--round-timeout",
        default=str(settings.DEFAULT_TIMEOUT_S),
        help="seconds a round attempt waits for its expected workers",
    )
    rounds.add_argument(
        "--round-requests",
        default="on",
        choices=("on", "off"),
        help="a person holding a board's D5 button 3 s asks for a round: with --min-workers "
        "updates in, the round closes now; otherwise every gateway uploads what its board has "
        "trained (at least one step) and the round closes as usual. off: requests are ignored",
    )
    hyper = p.add_argument_group("training (sent with every global model)")
    hyper.add_argument(
        "--local-steps", default="10", help="steps per round; also the cap on an update's weight"
    )
    hyper.add_argument(
        "--classes",
        metavar="W1,W2,W3",
        help="the words of the outputs in button order (env TINYFED_CLASSES), sent with every "
        "global model so that loss events and dashboards name them",
    )
    hyper.add_argument("--lr", help="boards' learning rate (default: the family's, 0.3 / 0.01)")
    hyper.add_argument("--momentum", help="boards' momentum (default: the family's, 0.9 / 0)")
    hyper.add_argument(
        "--pipeline",
        help=f"feature pipeline of the fleet (default: the family's, "
        f"{settings.DEFAULT_PIPELINE} / logmel40)",
    )
    fam = p.add_argument_group("model family")
    fam.add_argument(
        "--model",
        choices=tuple(families.FAMILIES),
        help=f"the fleet's model family (env TINYFED_MODEL; default {settings.DEFAULT_MODEL}, "
        "as the boards' firmware)",
    )
    fam.add_argument(
        "--init-scheme",
        choices=sorted({s for f in families.FAMILIES.values() for s in f.init_schemes}),
        help="how global model 0 is made without --init (default: the family's, scaled for paper, "
        "zeros for dscnn; 'paper' reproduces the paper's seeded model)",
    )
    strat = p.add_argument_group("strategy")
    strat.add_argument("--strategy", default="fedavg", choices=STRATEGIES)
    strat.add_argument(
        "--clip-norm",
        default=settings.DEFAULT_CLIP,
        metavar="median|off|C",
        help="clip each update's L2 distance from the global model: to the round's median "
        "distance, not at all, or to the number C",
    )
    strat.add_argument("--server-lr", default="1.0", help="fedavgm: server learning rate")
    strat.add_argument("--server-momentum", default="0.9", help="fedavgm: server momentum")
    strat.add_argument("--trim-fraction", default="0.2", help="trimmed-mean: share cut per end")
    state = p.add_argument_group("state")
    state.add_argument(
        "--db",
        help="SQLite file (env TINYFED_AGGREGATOR_DB; default tinyfed-aggregator-FLEET.sqlite3)",
    )
    state.add_argument(
        "--init", metavar="MODEL.bin", help="global model 0 (of the --model family's size)"
    )
    ops = p.add_argument_group("operations")
    ops.add_argument(
        "--metrics",
        metavar="[HOST]:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (env "
        "TINYFED_AGGREGATOR_METRICS; e.g. :9102, or 0.0.0.0:9102 for a Prometheus elsewhere)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file with a [aggregator] table of these options (env TINYFED_CONFIG); a "
        "flag, then its environment variable, win over the file",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Validate the settings and serve until SIGINT or SIGTERM."""
    config = settings.from_args(args)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return service.run(config, stop)
