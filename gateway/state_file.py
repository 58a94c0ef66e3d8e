"""The board's state in the spool folder (``SPOOL/board.json``): what survives a gateway restart.

What global model the gateway put on the board in which boot (:class:`~tinyfed.gateway.state.Held`)
and which (boot, round) pairs it has already uploaded: a restarted gateway then neither pushes
the same model again nor uploads the same local steps twice. Written atomically; a file of
another worker, or unreadable, is ignored (with a warning).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from tinyfed.gateway.outbox import write_atomic
from tinyfed.gateway.state import BridgeState, Held

log = logging.getLogger(__name__)

KEEP_UPLOADED = 16  #: the latest (boot, round) uploads remembered


def save(path: Path, state: BridgeState) -> None:
    """Write ``state``'s board record to ``path`` (atomically)."""
    obj = {
        "worker_id": state.worker_id,
        "held": asdict(state.held) if state.held else None,
        "uploaded": sorted(state.uploaded)[-KEEP_UPLOADED:],
    }
    write_atomic(path, json.dumps(obj).encode())


def restore(path: Path, state: BridgeState) -> None:
    """Fill ``state`` from ``path`` if it exists and belongs to ``state``'s worker."""
    if not path.exists():
        return
    try:
        obj = json.loads(path.read_text())
        if obj.get("worker_id") != state.worker_id:
            return
        if obj.get("held"):
            state.held = Held(**obj["held"])
        state.uploaded = {(int(b), int(r)) for b, r in obj.get("uploaded", [])}
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
