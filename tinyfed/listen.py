"""Addresses a tinyfed service listens on for HTTP (the web dashboard, Prometheus metrics), and
the Prometheus endpoint the aggregator and the gateway serve."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from tinyfed.errors import UsageError

log = logging.getLogger(__name__)


def parse_listen_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (127.0.0.1) to ``(host, port)``; UsageError naming ``flag``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag}: give HOST:PORT or :PORT (e.g. :8080), got {text!r}")
    return host or "127.0.0.1", int(port)


class MetricsEndpoint:
    """``/metrics`` of one registry, served by ``prometheus_client`` from its own thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: Any = None

    def serve(self, address: tuple[str, int]) -> int:
        """Serve on ``address`` (port 0: a free one); return the port. UsageError if taken."""
        host, port = address
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"--metrics {host}:{port}: cannot listen ({exc.strerror})") from exc
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
