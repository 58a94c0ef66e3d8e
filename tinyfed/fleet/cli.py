"""``tinyfed demo``, ``monitor``, ``dashboard``, ``plot``, ``virtual-users``: fleets here.

Run on its own (before it is listed in ``tinyfed.cli``) as ``python -m tinyfed.fleet.cli``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
from pathlib import Path
from typing import Any

from tinyfed.data import dataset as ds
from tinyfed.errors import UsageError
from tinyfed.features import pipelines
from tinyfed.fleet import homeassistant, report, web
from tinyfed.fleet.corpus import DEFAULT_CORPUS_DIR, HeldOut, parse_words
from tinyfed.fleet.dashboard import Dashboard, DashboardInfo
from tinyfed.fleet.recorder import Recorder
from tinyfed.fleet.runner import RunPlan, execute, prepare
from tinyfed.fleet.users import UsersPlan, write_users
from tinyfed.model import families
from tinyfed.mqtt import contract
from tinyfed.mqtt.session import parse_broker_url

log = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "fedavgm", "median", "trimmed-mean")

DEMO_DESCRIPTION = """\
A whole federated keyword-spotting fleet on this machine, nothing to set up: a private
Mosquitto on a free port (unless --broker), the aggregator, N virtual boards (the firmware's
core on the host, on pseudo-terminals), one gateway per board, and a scripted user per board
who presses the keyword buttons and speaks synthesized words from its own training voices.
Every board trains on the board, its gateway uploads its model every --local-steps steps, the
aggregator averages and publishes the global model, the gateways push it back.

The dashboard shows each board's loss curve (a tick at every averaging), the round progress,
and the held-out accuracy of the global model (and of each board's own model) on test voices
that no board heard. Ctrl-C stops every process it started. At the end, the report folder
holds global.bin (the final global model in the board's layout: the dscnn family's 780-byte
head, or with --model paper the paper's 41,868-byte network), metrics.json
(per round: participants, loss, held-out accuracy), losses.json, loss.png and accuracy.png.
"""

DEMO_EPILOG = """\
examples:
  tinyfed demo                                   # 2 boards, 10 rounds of 10 steps, ~45 s
  tinyfed demo --non-iid                         # each keyword spoken to one board only
  tinyfed demo --non-iid --strategy fedavgm      # the same with server momentum
  tinyfed demo --words montserrat,pedraforca,silence --boards 3 --rounds 8
  tinyfed demo --broker mqtt://localhost:1883    # on your broker; watch with
      mosquitto_sub -v -t 'tinyfed/+/workers/+/loss'
"""


HA_DESCRIPTION = """\
Make every board of a fleet a Home Assistant device, through MQTT discovery: for each board
whose gateway reports on the fleet's status topics, retained configs under the discovery prefix
give it an "Online" connectivity sensor, its model round and firmware, and, from its loss
events, the last word heard (its prediction, "unknown" below the threshold), the word it was
taught, the loss and the steps. The configs point at tinyfed's own topics, so nothing else is
published. Runs until stopped, announcing new boards as they appear and every board again when
Home Assistant restarts. The account needs write access to the discovery prefix.
"""

HA_EPILOG = """\
examples:
  tinyfed homeassistant --broker mqtt://localhost:1883 --fleet home
  tinyfed homeassistant --broker mqtt://localhost:1883 --fleet home --remove board1,board2
"""

USERS_DESCRIPTION = """\
Write the demo's scripted users to a folder, for virtual boards that run elsewhere (the
"virtual" profile of docker-compose.yml): the keyword corpus, synthesized with espeak-ng once
and reused, and one script per board (board-1.txt, board-2.txt, ...), each pressing a
keyword's button and speaking a clip from that board's own training voices, --local-steps
words per round, then waiting for the next global model. Start each virtual board with
`--script DIR/board-N.txt --local-steps N` (the same N). users.json lists what was written.
"""

USERS_EPILOG = """\
examples:
  tinyfed virtual-users --out runs/users
  tinyfed-virtual-board --script runs/users/board-1.txt --local-steps 10
  tinyfed virtual-users --out /virtual --boards 3 --non-iid --words montserrat,pedraforca,silence
"""


DEFAULT_MODEL = "dscnn"  #: the demo's model family, the boards' default (docs/learning.md)

REACH_TIMEOUT_S = 5.0  #: how long a broker has to accept a TCP connection before we give up


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``tinyfed demo``, ``tinyfed monitor`` and ``tinyfed plot``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "demo",
        help="run a whole fleet here (virtual boards, gateways, broker, aggregator), live",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--boards", type=_positive, default=2, help="virtual boards (default 2)")
    p.add_argument("--rounds", type=_positive, default=10, help="rounds to run (default 10)")
    p.add_argument(
        "--local-steps", type=_positive, default=10, help="steps per board per round (default 10)"
    )
    p.add_argument(
        "--words",
        default="vermell,verd,blau",
        help="the three classes, D2,D3,D4; 'silence' for noise only (default vermell,verd,blau)",
    )
    p.add_argument(
        "--non-iid",
        action="store_true",
        help="each keyword spoken to one board only (silence to all), as the paper's Fig. 8",
    )
    p.add_argument("--strategy", choices=STRATEGIES, default="fedavg", help="default fedavg")
    p.add_argument(
        "--model",
        choices=sorted(families.FAMILIES),
        default=DEFAULT_MODEL,
        help=f"model family (docs/learning.md): dscnn, the frozen pre-trained extractor with a "
        f"head trained on the boards (only the head moves); paper, the paper's 650-16-3 "
        f"network (default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--pipeline",
        choices=sorted(pipelines.PIPELINES),
        help=f"the paper family's feature pipeline (default {pipelines.DEFAULT_PIPELINE}; "
        "dscnn computes logmel40)",
    )
    p.add_argument(
        "--lr", type=float, help="boards' learning rate (default: the family's, 0.01 or 0.3)"
    )
    p.add_argument(
        "--momentum", type=float, help="boards' momentum (default: the family's, 0 or 0.9)"
    )
    p.add_argument("--broker", metavar="URL", help="use this broker instead of a private Mosquitto")
    p.add_argument(
        "--report", type=Path, default=Path("runs/demo"), help="report folder (runs/demo)"
    )
    p.add_argument("--no-dashboard", action="store_true", help="log lines instead of the live view")
    p.add_argument(
        "--web",
        metavar="[HOST]:PORT",
        help="also serve the live web dashboard and Prometheus metrics here (e.g. :8080)",
    )
    more = p.add_argument_group("corpus and pace")
    more.add_argument(
        "--per-word", type=_positive, default=150, help="clips per class to synthesize (150)"
    )
    more.add_argument("--seed", type=int, default=0, help="corpus and speaking-order seed (0)")
    more.add_argument(
        "--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR, help="corpus cache (runs/corpus)"
    )
    more.add_argument(
        "--record-ms",
        type=_positive,
        default=200,
        help="how long a virtual board records after a press (200; a real board: 1000)",
    )
    more.add_argument("--fleet", help="fleet name (default demo-XXXXXX, random)")
    more.add_argument(
        "--timeout", type=float, help="give up after this many seconds (default 60 + 60/round)"
    )
    p.set_defaults(func=cmd_demo)

    m = subparsers.add_parser(
        "monitor",
        help="the live dashboard of a fleet, from its MQTT topics only",
        description=(
            "Watch a fleet (real boards or virtual) from its MQTT topics alone: per-board loss "
            "curves, round progress, and with --test-corpus the held-out accuracy of every "
            "global model. --record DIR writes the report (metrics.json, losses.json, "
            "global.bin, figures) when you stop it with Ctrl-C."
        ),
        epilog="example:\n  tinyfed monitor --broker mqtt://localhost:1883 --fleet home "
        "--test-corpus runs/corpus/fig6-n300-s0 --record runs/home",
        formatter_class=fmt,
    )
    _watch_args(m)
    m.add_argument("--record", type=Path, help="write the report here when stopped")
    m.add_argument("--no-dashboard", action="store_true", help="log lines instead of the live view")
    m.add_argument("--duration", type=float, help="stop after this many seconds")
    m.add_argument(
        "--web",
        metavar="[HOST]:PORT",
        help="also serve a live web dashboard, its JSON and Prometheus metrics here "
        "(e.g. :8080 for http://127.0.0.1:8080/; 0.0.0.0:8080 to share it)",
    )
    m.set_defaults(func=cmd_monitor)

    d = subparsers.add_parser(
        "dashboard",
        help="serve a fleet's live web dashboard and Prometheus metrics",
        description=(
            "Serve the web dashboard of a fleet (real boards or virtual) from its MQTT topics "
            "alone: each board's state, loss curve with round boundaries, firmware and model "
            "round; the round's progress, participants and rejections; with --test-corpus the "
            "held-out accuracy of every global model. /api/fleet gives the same as JSON and "
            "/metrics in the Prometheus format. The same as `tinyfed monitor --web` without "
            "the terminal view."
        ),
        epilog="example:\n  tinyfed dashboard --broker mqtt://localhost:1883 --fleet home "
        "--web 0.0.0.0:8080",
        formatter_class=fmt,
    )
    _watch_args(d)
    d.add_argument(
        "--web", metavar="[HOST]:PORT", default=":8080", help="where to serve (127.0.0.1:8080)"
    )
    d.add_argument("--duration", type=float, help="stop after this many seconds")
    d.set_defaults(func=cmd_dashboard, record=None, no_dashboard=True, terminal=False)

    h = subparsers.add_parser(
        "homeassistant",
        help="announce the fleet's boards to Home Assistant (MQTT discovery), until stopped",
        description=HA_DESCRIPTION,
        epilog=HA_EPILOG,
        formatter_class=fmt,
    )
    h.add_argument("--broker", metavar="URL", required=True, help="mqtt://HOST:PORT")
    h.add_argument("--fleet", required=True, help="fleet name")
    h.add_argument("--prefix", default=contract.DEFAULT_PREFIX, help="topic prefix (tinyfed)")
    h.add_argument(
        "--discovery-prefix",
        default=homeassistant.DEFAULT_PREFIX,
        help=f"Home Assistant's discovery prefix (default {homeassistant.DEFAULT_PREFIX})",
    )
    h.add_argument(
        "--remove",
        metavar="WORKERS",
        help="instead: delete these boards' entities (comma-separated worker ids) and exit",
    )
    h.add_argument("--duration", type=float, help="stop after this many seconds")
    h.set_defaults(func=cmd_homeassistant)

    u = subparsers.add_parser(
        "virtual-users",
        help="write the demo's scripted users (corpus + one script per board) for compose",
        description=USERS_DESCRIPTION,
        epilog=USERS_EPILOG,
        formatter_class=fmt,
    )
    u.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    u.add_argument("--boards", type=_positive, default=2, help="virtual boards (default 2)")
    u.add_argument("--rounds", type=_positive, default=10, help="rounds to script (default 10)")
    u.add_argument(
        "--local-steps",
        type=_positive,
        default=10,
        help="words per board per round: give the boards the same --local-steps (default 10)",
    )
    u.add_argument(
        "--words",
        default="vermell,verd,blau",
        help="the three classes, D2,D3,D4; 'silence' for noise only (default vermell,verd,blau)",
    )
    u.add_argument("--non-iid", action="store_true", help="each keyword spoken to one board only")
    u.add_argument(
        "--per-word", type=_positive, default=100, help="clips per class to synthesize (100)"
    )
    u.add_argument("--seed", type=int, default=0, help="corpus and speaking-order seed (0)")
    u.set_defaults(func=cmd_virtual_users)

    pl = subparsers.add_parser(
        "plot",
        help="draw the figures of a recorded run (tinyfed demo --report, monitor --record)",
        description="Draw loss.png and accuracy.png from a run folder's metrics.json and "
        "losses.json.",
        formatter_class=fmt,
    )
    pl.add_argument("runs", nargs="+", type=Path, help="run folders")
    pl.set_defaults(func=cmd_plot)


def _watch_args(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that watches a fleet from its topics (monitor, dashboard)."""
    p.add_argument("--broker", metavar="URL", required=True, help="mqtt://HOST:PORT")
    p.add_argument("--fleet", required=True, help="fleet name")
    p.add_argument("--prefix", default=contract.DEFAULT_PREFIX, help="topic prefix (tinyfed)")
    p.add_argument(
        "--test-corpus",
        type=Path,
        help="a corpus folder (Speech Commands layout) whose test split scores global models",
    )


def _reachable(url: str) -> None:
    """Refuse a broker nobody answers at, before any work (a clear error, not a traceback)."""
    broker = parse_broker_url(url)
    try:
        socket.create_connection((broker.host, broker.port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UsageError(
            f"cannot reach the broker at {broker.host}:{broker.port} ({reason}): is it running, "
            "and is that its address?"
        ) from exc


def _keep_previous(folder: Path) -> None:
    """A report folder that holds an earlier run is renamed (with its time), not overwritten."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(folder.stat().st_mtime))
    target = folder.with_name(f"{folder.name}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}-{stamp}-{n}")
    folder.rename(target)
    print(f"the previous run in {folder}/ is kept as {target}/")


def cmd_demo(args: argparse.Namespace) -> int:
    """``tinyfed demo``."""
    words, silence = parse_words(args.words)
    family = families.by_name(args.model)
    if args.pipeline is not None and args.pipeline not in family.pipelines:
        raise UsageError(
            f"--pipeline {args.pipeline} is not a pipeline of the {family.name} family "
            f"({', '.join(family.pipelines)}); --model paper uses paper or centroid"
        )
    args.pipeline = args.pipeline or family.pipeline
    args.lr = family.lr if args.lr is None else args.lr
    args.momentum = family.momentum if args.momentum is None else args.momentum
    try:  # the values every board would be sent, checked before the corpus is made
        contract.HyperParams(lr=args.lr, momentum=args.momentum, local_steps=args.local_steps)
    except contract.ContractError as exc:
        raise UsageError(f"--lr/--momentum/--local-steps: {exc}") from exc
    if args.broker:
        _reachable(args.broker)
    address = web.parse_address(args.web) if args.web else None
    _keep_previous(args.report)
    extra: dict[str, Any] = {"fleet": args.fleet} if args.fleet else {}
    plan = RunPlan(
        title="tinyfed demo",
        words=words,
        silence=silence,
        boards=args.boards,
        rounds=args.rounds,
        local_steps=args.local_steps,
        non_iid=args.non_iid,
        strategy=args.strategy,
        pipeline=args.pipeline,
        model=family.name,
        lr=args.lr,
        momentum=args.momentum,
        broker=args.broker,
        corpus_dir=args.corpus_dir,
        per_word=args.per_word,
        seed=args.seed,
        record_ms=args.record_ms,
        **extra,
    )
    t0 = time.monotonic()
    prepared = prepare(plan)
    result = execute(
        prepared,
        args.report,
        dashboard=False if args.no_dashboard else None,
        timeout=args.timeout,
        web=address,
    )
    m = result.metrics
    final = m.get("final") or {}
    closed = sum(1 for r in m.get("rounds", []) if r["outcome"] == "closed")
    print(
        f"{closed} rounds closed in {time.monotonic() - t0:.1f} s; global model round "
        f"{final.get('round')}: held-out accuracy {_fmt(final.get('accuracy'))} "
        f"(start {_fmt((m.get('initial') or {}).get('accuracy'))}) on "
        f"{m.get('held_out_clips')} clips of unseen voices"
    )
    print(f"report: {args.report}/ (global.bin, metrics.json, losses.json, loss.png, accuracy.png)")
    return 0 if result.completed else 1


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def cmd_monitor(args: argparse.Namespace) -> int:
    """``tinyfed monitor``."""
    broker = parse_broker_url(args.broker)
    _reachable(args.broker)
    try:
        topics = contract.Topics(args.fleet, args.prefix)
    except contract.ContractError as exc:
        raise UsageError(str(exc)) from exc
    held_out = None
    if args.test_corpus is not None:
        held_out = HeldOut(ds.load(args.test_corpus, splits=("test",)))
    recorder = Recorder(broker, topics, held_out=held_out)
    info = DashboardInfo(
        title="tinyfed monitor", broker=str(broker), held_out=len(held_out) if held_out else None
    )
    terminal = getattr(args, "terminal", True)
    dash = Dashboard(info, live=False if args.no_dashboard else None) if terminal else None
    address = web.parse_address(args.web) if args.web else None
    t0 = time.monotonic()
    recorder.start()
    server = web.WebServer(recorder.snapshot, address) if address else None
    if server is not None:
        stop_hint = "" if terminal else "; Ctrl-C stops it"
        print(f"web dashboard: {server.url} (metrics: {server.url}metrics){stop_hint}", flush=True)
    try:
        while args.duration is None or time.monotonic() - t0 < args.duration:
            if dash is not None:
                dash.update(recorder.snapshot())
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()
        recorder.stop()
        snap = recorder.snapshot()
        if dash is not None:
            dash.close(snap)
    if args.record is not None:
        latest = snap.latest_global
        run_info = report.RunInfo(
            title=f"fleet {args.fleet}",
            strategy=snap.aggregator.strategy if snap.aggregator else "",
            pipeline=latest.pipeline if latest else "",
            classes=tuple(held_out.test.classes) if held_out else (),
            non_iid=False,
            rounds=None,
            local_steps=latest.local_steps if latest else None,
            lr=latest.lr if latest else None,
            momentum=latest.momentum if latest else None,
            boards=tuple({"worker": w.worker_id, "name": w.name} for w in snap.workers),
            held_out_clips=len(held_out) if held_out else None,
        )
        report.write(args.record, snap, run_info, wall_time_s=round(time.monotonic() - t0, 2))
        print(f"report: {args.record}/")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``tinyfed dashboard``: the monitor's web side only (Ctrl-C stops it)."""
    return cmd_monitor(args)


def cmd_plot(args: argparse.Namespace) -> int:
    """``tinyfed plot``."""
    for folder in args.runs:
        paths = report.plot_run(folder)
        m, _ = report.load(folder)
        rows = [
            f"  round {r['round']}: {r['outcome']}, "
            f"{len(r['participants'])} participants, accuracy {_fmt(r['accuracy'])}"
            for r in m["rounds"]
        ]
        print(f"{folder}: " + ", ".join(str(p) for p in paths))
        print("\n".join(rows))
    return 0


def cmd_virtual_users(args: argparse.Namespace) -> int:
    """``tinyfed virtual-users``."""
    words, silence = parse_words(args.words)
    index = write_users(
        UsersPlan(
            out=args.out,
            words=words,
            silence=silence,
            boards=args.boards,
            rounds=args.rounds,
            local_steps=args.local_steps,
            non_iid=args.non_iid,
            per_word=args.per_word,
            seed=args.seed,
        )
    )
    for board in index["boards"]:  # type: ignore[attr-defined]
        print(
            f"{args.out / board['script']}: {', '.join(board['words'])}, {board['presses']} words"
        )
    print(f"start each board with --script {args.out}/board-N.txt --local-steps {args.local_steps}")
    return 0


def cmd_homeassistant(args: argparse.Namespace) -> int:
    """``tinyfed homeassistant``."""
    workers = [w.strip() for w in (args.remove or "").split(",") if w.strip()]
    for w in workers:
        try:
            contract.check_worker_id(w)
        except contract.ContractError as exc:
            raise UsageError(f"--remove: {exc}") from exc
    if args.remove is not None and not workers:
        raise UsageError("--remove needs worker ids, e.g. --remove board1,board2")
    _reachable(args.broker)
    topics = contract.Topics(args.fleet, args.prefix)
    broker = parse_broker_url(args.broker)
    if workers:
        homeassistant.remove(broker, topics, workers, prefix=args.discovery_prefix)
        print(f"deleted the Home Assistant entities of {', '.join(workers)}")
        return 0
    ha = homeassistant.HomeAssistantDiscovery(broker, topics, prefix=args.discovery_prefix)
    ha.start()
    print(
        f"announcing the boards of fleet {args.fleet} under {args.discovery_prefix}/ "
        "(Ctrl-C stops; the devices stay in Home Assistant)"
    )
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        ha.close()
    print(f"announced {len(ha.boards)} boards: {', '.join(ha.boards) or 'none'}")
    return 0
