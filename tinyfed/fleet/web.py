"""The fleet on the web: a live dashboard page, its JSON, and Prometheus metrics.

``tinyfed monitor --web :8080`` (and ``tinyfed demo --web :8080``) serve, from what the
:class:`~tinyfed.fleet.recorder.Recorder` saw on the fleet's MQTT topics:

* ``/`` — a page that redraws every second: the aggregator and the round, each board's state,
  steps and loss curve (round changes marked), the rounds with their participants and the
  global model's held-out accuracy. It needs nothing from the internet (no CDN).
* ``/api/fleet`` — the same as JSON (bounded: the last :data:`MAX_LOSSES` losses of at most
  :data:`MAX_WORKERS` workers, the last :data:`MAX_ROUNDS` rounds; counts say how many more).
* ``/metrics`` — the Prometheus text format, for Prometheus/Grafana or Home Assistant's
  Prometheus sensor (names under ``tinyfed_``, one ``fleet`` label; per-worker series for at
  most :data:`MAX_WORKERS` workers, so a large fleet cannot explode a time-series database).

The server is the standard library's threaded HTTP server on its own thread; each request reads
one snapshot. It binds 127.0.0.1 unless told otherwise (``--web 0.0.0.0:8080`` to share it).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from tinyfed.errors import UsageError
from tinyfed.fleet.recorder import FleetSnapshot
from tinyfed.listen import parse_listen_address

log = logging.getLogger(__name__)

MAX_WORKERS = 500  #: workers listed in /api/fleet and given per-worker metrics
MAX_LOSSES = 300  #: latest losses per worker in /api/fleet
MAX_ROUNDS = 100  #: latest rounds in /api/fleet

Snapshotter = Callable[[], FleetSnapshot]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (127.0.0.1) to an address; UsageError naming a bad value."""
    return parse_listen_address(text, "--web")


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def fleet_json(snap: FleetSnapshot) -> dict[str, Any]:
    """What the page draws: a bounded, JSON-ready view of ``snap``."""
    agg = snap.aggregator
    accuracy = {g.round: _num(g.accuracy) for g in snap.globals}
    workers = []
    for w in snap.workers[:MAX_WORKERS]:
        losses = w.losses[-MAX_LOSSES:]
        last10 = [e.loss for e in w.losses[-10:]]
        workers.append(
            {
                "id": w.worker_id,
                "name": w.name,
                "state": w.state,
                "steps": w.steps,
                "model_round": w.status.model_round if w.status else None,
                "firmware": w.status.firmware if w.status else "",
                "transport": w.status.transport if w.status else "",
                "loss": _num(w.losses[-1].loss) if w.losses else None,
                "loss_mean10": _num(sum(last10) / len(last10)) if last10 else None,
                "losses": [_num(e.loss) for e in losses],
                "loss_rounds": [e.round for e in losses],
                "last_word": w.losses[-1].word if w.losses else "",
                "last_heard": w.losses[-1].heard if w.losses else "",
            }
        )
    rounds = [
        {
            "round": r.round,
            "outcome": r.outcome,
            "participants": r.participant_count,
            "dropped": r.dropped_count,
            "rejected": r.rejected_count,
            "loss_mean": _num(r.loss_mean),
            "duration_s": _num(r.duration_s),
            "accuracy": accuracy.get(r.round) if r.outcome == "closed" else None,
            "reason": r.reason,
            "rejections": [
                {"worker": x.worker_id, "upload_id": x.upload_id, "reason": x.reason}
                for x in r.rejected
            ],
        }
        for r in snap.rounds[-MAX_ROUNDS:]
    ]
    latest = snap.latest_global
    return {
        "fleet": snap.fleet,
        "connected": snap.connected,
        "aggregator": None
        if agg is None
        else {
            "state": agg.state,
            "round": agg.round,
            "attempt": agg.attempt,
            "strategy": agg.strategy,
            "expected": agg.expected_count,
            "reported": agg.reported_count,
        },
        "global": None
        if latest is None
        else {
            "round": latest.round,
            "accuracy": _num(latest.accuracy),
            "sha256": latest.sha256,
            "classes": list(latest.classes),
        },
        "initial_accuracy": accuracy.get(0),
        "workers": workers,
        "workers_total": len(snap.workers),
        "rounds": rounds,
        "rounds_total": len(snap.rounds),
        "rejected_payloads": snap.rejected_payloads,
    }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(snap: FleetSnapshot) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``snap``."""
    fleet = f'fleet="{_label(snap.fleet)}"'
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP tinyfed_{name} {help_}")
        out.append(f"# TYPE tinyfed_{name} {kind}")
        for labels, value in samples:
            shown = "NaN" if not math.isfinite(value) else repr(float(value))
            out.append(f"tinyfed_{name}{{{fleet}{labels}}} {shown}")

    agg = snap.aggregator
    metric(
        "connected",
        "gauge",
        "1 while the monitor is connected to the broker",
        [("", float(snap.connected))],
    )
    metric(
        "aggregator_up",
        "gauge",
        "1 while the aggregator's retained status says online",
        [("", float(agg is not None and agg.state == "online"))],
    )
    if agg is not None and agg.round is not None:
        metric("round", "gauge", "the open round", [("", float(agg.round))])
        metric(
            "round_expected",
            "gauge",
            "workers the open round waits for",
            [("", float(agg.expected_count))],
        )
        metric(
            "round_reported",
            "gauge",
            "updates the open round has counted",
            [("", float(agg.reported_count))],
        )
    closed = snap.closed_rounds
    metric(
        "rounds_closed_total",
        "counter",
        "rounds closed since the monitor started",
        [("", float(len(closed)))],
    )
    metric(
        "rounds_failed_total",
        "counter",
        "round attempts that failed since the monitor started",
        [("", float(sum(1 for r in snap.rounds if r.outcome == "failed")))],
    )
    if closed:
        last = closed[-1]
        metric(
            "last_round_participants",
            "gauge",
            "updates counted in the last closed round",
            [("", float(last.participant_count))],
        )
        if last.loss_mean is not None:
            metric(
                "last_round_loss_mean",
                "gauge",
                "mean training loss reported in the last closed round",
                [("", last.loss_mean)],
            )
        metric(
            "last_round_duration_seconds",
            "gauge",
            "how long the last closed round took",
            [("", last.duration_s)],
        )
    latest = snap.latest_global
    if latest is not None:
        metric(
            "global_round", "gauge", "round of the latest global model", [("", float(latest.round))]
        )
        if latest.accuracy is not None:
            metric(
                "global_accuracy",
                "gauge",
                "held-out accuracy of the latest global model",
                [("", latest.accuracy)],
            )
    states: dict[str, int] = {}
    for w in snap.workers:
        states[w.state] = states.get(w.state, 0) + 1
    metric(
        "workers",
        "gauge",
        "workers by state",
        [(f',state="{_label(s)}"', float(n)) for s, n in sorted(states.items())],
    )
    listed = snap.workers[:MAX_WORKERS]
    metric(
        "worker_steps",
        "gauge",
        "a board's training step counter (since its boot), from its latest loss event",
        [(f',worker="{_label(w.worker_id)}"', float(w.steps)) for w in listed],
    )
    metric(
        "worker_loss",
        "gauge",
        "a worker's latest training loss",
        [(f',worker="{_label(w.worker_id)}"', w.losses[-1].loss) for w in listed if w.losses],
    )
    metric(
        "rejected_payloads_total",
        "counter",
        "payloads the monitor could not read",
        [("", float(snap.rejected_payloads))],
    )
    return "\n".join(out) + "\n"


def page() -> bytes:
    """The dashboard page (HTML, CSS and script in one file, shipped in the package)."""
    return resources.files("tinyfed.fleet").joinpath("dashboard.html").read_bytes()


class WebServer:
    """Serves the dashboard, its JSON and the metrics for ``snapshot`` on ``address``.

    ``address`` port 0 takes a free port (:attr:`port` says which). :meth:`close` stops it.
    """

    def __init__(self, snapshot: Snapshotter, address: tuple[str, int]) -> None:
        body = page()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path in ("/", "/index.html"):
                        self._send(200, "text/html; charset=utf-8", body)
                    elif path == "/api/fleet":
                        data = json.dumps(fleet_json(snapshot()), allow_nan=False).encode()
                        self._send(200, "application/json", data)
                    elif path == "/metrics":
                        text = metrics_text(snapshot()).encode()
                        self._send(200, "text/plain; version=0.0.4; charset=utf-8", text)
                    else:
                        self._send(404, "text/plain; charset=utf-8", b"not found\n")
                except Exception:  # a bad snapshot must not kill the server
                    log.exception("web: %s failed", path)
                    self._send(500, "text/plain; charset=utf-8", b"internal error\n")

            def _send(self, code: int, kind: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("web: " + format, *args)

        try:
            self._server = ThreadingHTTPServer(address, Handler)
        except OSError as exc:
            raise UsageError(
                f"--web {address[0]}:{address[1]}: cannot listen ({exc.strerror})"
            ) from exc
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.host = host.decode() if isinstance(host, bytes) else str(host)
        self.port = int(port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tinyfed-web", daemon=True
        )
        self._thread.start()
        log.info("dashboard on http://%s:%d/ (metrics: /metrics)", self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
