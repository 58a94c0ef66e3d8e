"""Addresses a tinyfed service listens on for HTTP (the web dashboard, Prometheus metrics)."""

from __future__ import annotations

from tinyfed.errors import UsageError


def parse_listen_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (127.0.0.1) to ``(host, port)``; UsageError naming ``flag``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag}: give HOST:PORT or :PORT (e.g. :8080), got {text!r}")
    return host or "127.0.0.1", int(port)
