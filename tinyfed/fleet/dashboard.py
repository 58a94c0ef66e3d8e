"""The live terminal view of a fleet: per-board loss curves, round progress, accuracy per round.

:func:`render` turns a :class:`~tinyfed.fleet.recorder.FleetSnapshot` into a frame of text (pure,
tested as a string). :class:`Dashboard` redraws that frame in place with plain ANSI escapes
(cursor home, erase line, erase below: no curses, works in any VT100-style terminal) when its
output is a terminal; otherwise, or with ``live=False``, it prints one log line per closed
round and a progress line every few seconds, which suits CI logs and ``| tee``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from tinyfed.fleet.recorder import FleetSnapshot, WorkerView
from tinyfed.mqtt.contract import RoundEvent

BLOCKS = " ▁▂▃▄▅▆▇█"  #: eighths of a cell, for curves
CURVE_HEIGHT = 3  #: rows of each board's loss curve
MAX_ACC_COLUMNS = 12  #: rounds shown in the accuracy table (the latest)
HOME, ERASE_LINE, ERASE_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR, CLEAR = "\x1b[?25l", "\x1b[?25h", "\x1b[2J"
BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"


@dataclass(frozen=True)
class DashboardInfo:
    """What the frame shows besides the recorded messages."""

    title: str = "tinyfed"
    broker: str = ""
    strategy: str = ""
    pipeline: str = ""
    rounds: int | None = None  #: rounds planned (None: open-ended, the monitor)
    local_steps: int | None = None
    words: dict[str, str] = field(default_factory=dict)  #: worker id -> what its user says
    held_out: int | None = None  #: number of test clips, if accuracy is computed


def sparkline(values: list[float], vmax: float | None = None) -> str:
    """One character per value, ``▁`` (0) to ``█`` (``vmax``, default the largest)."""
    if not values:
        return ""
    top = vmax if vmax else max(values) or 1.0
    return "".join(BLOCKS[max(1, min(8, round(v / top * 8)))] for v in values)


def bucket(values: list[float], width: int) -> list[float]:
    """``values`` averaged into at most ``width`` consecutive buckets (in order)."""
    n = len(values)
    if n <= width:
        return list(values)
    out = []
    for i in range(width):
        lo, hi = i * n // width, (i + 1) * n // width
        chunk = values[lo:hi]
        out.append(sum(chunk) / len(chunk))
    return out


def curve(values: list[float], width: int, height: int, vmax: float) -> list[str]:
    """A bar chart ``height`` rows high, top row first, one column per value (or bucket)."""
    cols = bucket(values, width)
    rows = []
    for r in range(height):
        base = (height - 1 - r) * 8
        line = ""
        for v in cols:
            eighths = round(min(max(v, 0.0), vmax) / vmax * height * 8) if vmax > 0 else 0
            line += BLOCKS[max(0, min(8, eighths - base))]
        rows.append(line)
    return rows


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _round_progress(snap: FleetSnapshot, info: DashboardInfo, width: int) -> str:
    latest = snap.latest_global
    current = latest.round if latest is not None else 0  # rounds closed
    total = info.rounds
    k = latest.local_steps if latest is not None else info.local_steps or 0
    if total is not None:
        running = min(current + 1, total)
        done = current >= total
        label = f"round {total} of {total} done" if done else f"round {running} of {total}"
        bar_w = 20
        filled = round(bar_w * min(current, total) / total)
        bar = "█" * filled + "░" * (bar_w - filled)
    else:
        label, bar = f"round {current + 1}", ""
    parts = []
    shown = current - 1 if total is not None and current >= total else current
    for w in snap.workers:
        steps = sum(1 for e in w.losses if latest is None or e.round == shown)
        sent = any(u.worker_id == w.worker_id and u.base_round == shown for u in snap.updates)
        mark = "✔" if sent else "…"
        parts.append(f"{w.name} {mark} {min(steps, k) if k else steps}/{k or '?'}")
    return f"{BOLD}{label}{RESET}  {bar}  " + "   ".join(parts)


def _board_block(w: WorkerView, info: DashboardInfo, width: int, vmax: float) -> list[str]:
    losses = [e.loss for e in w.losses]
    last10 = losses[-10:]
    mean10 = sum(last10) / len(last10) if last10 else None
    words = info.words.get(w.worker_id, "")
    who = f" ({w.worker_id})" if w.name.replace(" ", "") != w.worker_id else ""
    hears = f"  hears {words}" if words else ""
    figures = f"  {w.state}  step {w.steps}  loss {_fmt(losses[-1] if losses else None)}"
    # the longest form that fits the terminal: a narrow one keeps the numbers, not the words
    forms = [
        f"{w.name}{who}{hears}{figures}  mean of last 10 {_fmt(mean10)}",
        f"{w.name}{who}{hears}{figures}  mean10 {_fmt(mean10)}",
        f"{w.name}{hears}{figures}  mean10 {_fmt(mean10)}",
        f"{w.name}{figures}  mean10 {_fmt(mean10)}",
    ]
    head = next((f for f in forms if len(f) <= width), forms[-1])
    lines = [f"{BOLD}{w.name}{RESET}{head[len(w.name) :]}"]
    plot_w = max(10, width - 8)
    rows = curve(losses, plot_w, CURVE_HEIGHT, vmax) if losses else [""] * CURVE_HEIGHT
    for i, row in enumerate(rows):
        label = f"{vmax:5.2f}" if i == 0 else ("  0.0" if i == CURVE_HEIGHT - 1 else "     ")
        lines.append(f"{DIM}{label} ┤{RESET}{row}")
    k = info.local_steps
    n = len(losses)
    axis = ["─"] * min(n, plot_w)
    if k and n > 0:
        # a model went up after every k-th step (an averaging point); with more steps than
        # columns, the column that holds that step
        for step in range(k, n + 1, k):
            axis[min(len(axis), step * len(axis) // n) - 1] = "┴"
    lines.append(f"{DIM}      └{''.join(axis)}{RESET}")
    return lines


def _accuracy_table(snap: FleetSnapshot, info: DashboardInfo, width: int) -> list[str]:
    if info.held_out is None:
        return []
    rounds = sorted(g.round for g in snap.globals)
    shown = rounds[-max(1, min(MAX_ACC_COLUMNS, (width - 10) // 7)) :]  # as many as fit
    head = f"{'accuracy':<10}" + "".join(f"{('start' if r == 0 else f'r{r}'):>7}" for r in shown)
    glob = f"{'global':<10}" + "".join(
        f"{_fmt(g.accuracy if (g := snap.global_of(r)) else None):>7}" for r in shown
    )
    lines = [
        f"{BOLD}held-out accuracy{RESET} on {info.held_out} clips of test voices no board heard",
        f"{DIM}(global: the model after each round; board N: its model before averaging){RESET}",
        head,
        glob,
    ]
    for w in snap.workers:
        cells = []
        for r in shown:
            u = next(
                (u for u in snap.updates if u.worker_id == w.worker_id and u.base_round == r - 1),
                None,
            )
            cells.append(f"{_fmt(u.accuracy if u else None):>7}")
        lines.append(f"{w.name:<10.10}" + "".join(cells))
    accs = [g.accuracy for g in snap.globals if g.accuracy is not None]
    if accs:
        lines.append(f"{'trend':<10} {sparkline(accs, 1.0)}")
    return lines


def render(
    snap: FleetSnapshot,
    info: DashboardInfo,
    *,
    width: int = 100,
    now: float | None = None,
    color: bool = True,
) -> str:
    """The dashboard frame for ``snap``, ``width`` columns wide (pure)."""
    elapsed = (now if now is not None else time.time()) - snap.started
    agg = snap.aggregator
    strategy = info.strategy or (agg.strategy if agg else "")
    head = " · ".join(
        x
        for x in (
            f"{BOLD}{info.title}{RESET}",
            f"fleet {snap.fleet}",
            info.broker,
            strategy,
            info.pipeline,
            _clock(elapsed),
        )
        if x
    )
    status = "aggregator " + (agg.state if agg else "?")
    if not snap.connected:
        status += " · broker disconnected"
    if snap.rejected_payloads:
        status += f" · {snap.rejected_payloads} unreadable message(s)"
    lines = [head, f"{DIM}{status}{RESET}", _round_progress(snap, info, width), ""]
    all_losses = [e.loss for w in snap.workers for e in w.losses]
    vmax = max(0.1, min(1.0, max(all_losses))) if all_losses else 0.5
    for w in snap.workers:
        lines += _board_block(w, info, width, vmax)
    lines.append("")
    lines += _accuracy_table(snap, info, width)
    failed = [r for r in snap.rounds if r.outcome == "failed"]
    if failed:
        lines.append(f"failed round attempts: {len(failed)} (last: {failed[-1].reason})")
    text = "\n".join(_clip(ln, width) for ln in lines)
    if not color:
        for code in (BOLD, DIM, RESET):
            text = text.replace(code, "")
    return text


def _clip(line: str, width: int) -> str:
    """``line`` cut to ``width`` visible characters (ANSI escapes do not count)."""
    out, visible, i = [], 0, 0
    while i < len(line):
        if line[i] == "\x1b":
            end = line.find("m", i)
            end = len(line) - 1 if end < 0 else end
            out.append(line[i : end + 1])
            i = end + 1
            continue
        if visible < width:
            out.append(line[i])
            visible += 1
        i += 1
    return "".join(out)


def round_line(event: RoundEvent, snap: FleetSnapshot, info: DashboardInfo) -> str:
    """One log line for a round event (the non-terminal mode)."""
    names = {w.worker_id: w.name for w in snap.workers}
    total = f"/{info.rounds}" if info.rounds else ""
    if event.outcome != "closed":
        return f"round {event.round}{total} failed: {event.reason}"
    who = ", ".join(
        f"{names.get(p.worker_id, p.worker_id)} ({p.local_steps} steps, loss {_fmt(p.loss_mean)})"
        for p in event.participants
    )
    g = snap.global_of(event.round)
    acc = f"; global accuracy {_fmt(g.accuracy)} on held-out voices" if g and g.accuracy else ""
    return f"round {event.round}{total} closed in {event.duration_s:.1f} s: {who}{acc}"


class Dashboard:
    """Shows snapshots live (ANSI, in place) or as log lines.

    Args:
        info: what the frame shows besides the messages.
        out: where to write (default stdout).
        live: redraw in place; default: when ``out`` is a terminal.
        interval: seconds between two redraws (live) or two progress lines (log mode).
    """

    def __init__(
        self,
        info: DashboardInfo,
        out: TextIO | None = None,
        *,
        live: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self.info = info
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.interval = interval if interval is not None else (0.25 if self.live else 10.0)
        self._last = 0.0
        self._logged_at: float | None = None
        self._rounds_logged = 0
        self._globals_logged: set[int] = set()
        self._started = False

    def update(self, snap: FleetSnapshot, *, force: bool = False) -> None:
        """Redraw (live) or log what is new; at most once per ``interval`` unless forced."""
        now = time.monotonic()
        if self.live:
            if not force and now - self._last < self.interval:
                return
            self._last = now
            if not self._started:
                self.out.write(HIDE_CURSOR + CLEAR)
                self._started = True
            width = shutil.get_terminal_size((100, 40)).columns
            frame = render(snap, self.info, width=min(width, 140))
            self.out.write(HOME + f"{ERASE_LINE}\n".join(frame.splitlines()) + ERASE_LINE)
            self.out.write("\n" + ERASE_BELOW)
            self.out.flush()
            return
        self._log(snap, now, force)

    def _log(self, snap: FleetSnapshot, now: float, force: bool) -> None:
        for g in snap.globals:
            if g.round == 0 and 0 not in self._globals_logged and g.accuracy is not None:
                self._emit(f"global model round 0: accuracy {g.accuracy:.3f} on held-out voices")
            self._globals_logged.add(g.round)
        while self._rounds_logged < len(snap.rounds):
            event = snap.rounds[self._rounds_logged]
            if event.outcome == "closed" and snap.global_of(event.round) is None:
                break  # wait for its global model, to print its accuracy
            self._emit(round_line(event, snap, self.info))
            self._rounds_logged += 1
        if force or self._logged_at is None or now - self._logged_at >= self.interval:
            self._logged_at = now
            steps = ", ".join(
                f"{w.name} {w.steps} steps (loss {_fmt(w.losses[-1].loss if w.losses else None)})"
                for w in snap.workers
            )
            self._emit(f"progress: {steps}")

    def _emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def close(self, snap: FleetSnapshot | None = None) -> None:
        """Draw the final frame (it stays on the screen) and show the cursor again."""
        if snap is not None:
            self.update(snap, force=True)
        if self.live and self._started:
            self.out.write(SHOW_CURSOR)
            self.out.flush()
