"""Stop a fleet's processes when the process that started them dies, however it dies.

The demo starts every child in its own session (so a Ctrl-C at the terminal reaches only the
demo, which then stops them in order). If the demo itself is killed (SIGKILL, a crash, a
closed terminal), nobody would be left to stop them; this watchdog is. It reads process-group
ids from its stdin, ``+PGID`` to watch and ``-PGID`` to forget, and when its stdin reaches
end-of-file — the demo closed it, or the kernel did because the demo died — it sends SIGTERM
to every group still watched, waits up to :data:`GRACE_S`, then SIGKILL.

Run as ``python -m tinyfed.fleet.watchdog``; :class:`tinyfed.fleet.orchestrator.ProcessRegistry`
starts it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

GRACE_S = 3.0  #: between SIGTERM and SIGKILL


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(pgids: set[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def main() -> int:
    """Watch the groups named on stdin; stop them at end-of-file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the demo
    watched: set[int] = set()
    for line in sys.stdin:
        text = line.strip()
        if not text:
            continue
        try:
            pgid = int(text)
        except ValueError:
            continue
        if pgid > 0:
            watched.add(pgid)
        else:
            watched.discard(-pgid)
    survivors = {g for g in watched if _alive(g)}
    if not survivors:
        return 0
    _signal(survivors, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(g) for g in survivors):
        time.sleep(0.05)
    _signal({g for g in survivors if _alive(g)}, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
