"""The ``tinyfed board`` command: ``selftest`` a board on the desk, ``flash`` its firmware."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from tinyfed.board import flash, selftest
from tinyfed.board.person import Person, TerminalPerson
from tinyfed.board.report import Check, format_check, report_json
from tinyfed.board.sample import load_sample
from tinyfed.errors import UsageError
from tinyfed.help import HelpFormatter
from tinyfed.link.transports import check_url, open_transport
from tinyfed.link.transports.serial import find_boards

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"

SELFTEST_EPILOG = """\
what it checks (each line PASS, FAIL or SKIP):
  link        HELLO (firmware, architecture, pipeline); 20 HELLO round trips; the board's
              model uploaded (CRC-32 checked against MODEL_INFO) and downloaded back (the
              board checks the CRC-32), with their speed
  microphone  the boot report (microphone ok / started but SILENT / FAILED to start); with a
              person, a recording's level in dBFS
  training    one step on a host sample (--sample, else a synthesized word): the board's LOSS
              and new model against the Python reference step
  buttons     with a person: D2..D5 pressed in turn, the LED the board sets, the recording
  leds        with a person: asks whether the LEDs lit
  restore     the board's own model is put back after training
Without a terminal on stdin, or with --no-interactive, the steps that need a person are
skipped and the report says so. Exit code 0 only if no check failed.

examples:
  tinyfed board selftest                                  # serial://auto: the one board on USB
  tinyfed board selftest --device serial:///dev/ttyACM0 --sample corpus/
  tinyfed board selftest --device ble://tinyfed-3f2a --no-interactive --json
"""

FLASH_EPILOG = f"""\
Uses PlatformIO when `pio` (or `platformio`) is on PATH: pio run -d firmware -t upload.
Otherwise arduino-cli: make -C firmware arduino-sketch, then arduino-cli compile and upload
with --fqbn {flash.FQBN}. With neither, it says how to get one and exits 1.

examples:
  tinyfed board flash --dry-run        # print what it would run
  tinyfed board flash --port /dev/ttyACM0
  tinyfed board flash --tool arduino-cli
"""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``tinyfed board selftest`` and ``tinyfed board flash``."""
    board = sub.add_parser(
        "board",
        help="check a board on your desk (selftest) or flash its firmware",
        description="Tools for one Arduino Nano 33 BLE Sense on your desk.",
        formatter_class=HelpFormatter,
    )
    board_sub = board.add_subparsers(dest="board_command", metavar="ACTION", required=True)

    p = board_sub.add_parser(
        "selftest",
        help="check the link, microphone, buttons, LEDs and training of one board",
        description=(
            "Check one board part by part and print a pass/fail report: the link (HELLO, "
            "model upload and download with CRC-32, round trips, speed), the microphone, the "
            "buttons and LEDs (asking you to press and look), and one training step."
        ),
        epilog=SELFTEST_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--device",
        default="serial://auto",
        help="the board: serial://PATH, serial://auto (or just auto), tcp://HOST:PORT, ble://NAME",
    )
    p.add_argument(
        "--sample",
        type=Path,
        help="a WAV (or a corpus folder: its first clip) to train one step on; "
        "default: a synthesized word",
    )
    p.add_argument(
        "--no-interactive",
        action="store_true",
        help="skip the steps that need a person (buttons, LEDs, a recording)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for one answer")
    p.add_argument("--retries", type=int, default=3, help="tries again before a check fails")
    p.add_argument("--round-trips", type=int, default=20, help="HELLO round trips to time")
    p.add_argument(
        "--press-timeout", type=float, default=60.0, help="seconds to wait for each button press"
    )
    p.set_defaults(func=_selftest)

    p = board_sub.add_parser(
        "flash",
        help="build and upload the firmware with PlatformIO or arduino-cli",
        description="Build the firmware and upload it to the board with the tool you have.",
        epilog=FLASH_EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--tool", choices=("auto", *flash.TOOLS), default="auto", help="which tool")
    p.add_argument("--port", help="the board's serial port (default: the tool finds it)")
    p.add_argument("--firmware", type=Path, default=FIRMWARE_DIR, help="the firmware folder")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.set_defaults(func=_flash)


def _device_url(text: str) -> str:
    url = "serial://auto" if text == "auto" else text
    return check_url(url)


def _selftest(args: argparse.Namespace) -> int:
    url = _device_url(args.device)
    if args.timeout <= 0 or args.retries < 0 or args.round_trips < 1 or args.press_timeout <= 0:
        raise UsageError(
            "--timeout and --press-timeout must be > 0, --retries >= 0, --round-trips >= 1"
        )
    sample = load_sample(args.sample)
    if not getattr(args, "verbose", 0):  # the report says it all; -v shows the link's log
        logging.getLogger("tinyfed.link").setLevel(logging.WARNING)
    out = sys.stderr if args.json else sys.stdout
    person: Person | None = None
    if args.no_interactive:
        reason = "--no-interactive"
    elif not sys.stdin.isatty():
        reason = "stdin is not a terminal"
    else:
        reason = ""
        person = TerminalPerson(out)
    mode = "interactive" if person else f"no person: {reason}"
    print(f"tinyfed board selftest · {url} · {mode}", file=out, flush=True)

    def show(check: Check) -> None:
        print(format_check(check), file=out, flush=True)

    report = asyncio.run(
        selftest.run_selftest(
            open_transport(url),
            device=url,
            sample=sample,
            person=person,
            skip_reason=reason,
            timeout=args.timeout,
            retries=args.retries,
            round_trips=args.round_trips,
            press_timeout=args.press_timeout,
            on_check=show,
        )
    )
    print(report.summary(), file=out, flush=True)
    if args.json:
        print(report_json(report), flush=True)
    return 0 if report.passed else 1


def _flash(args: argparse.Namespace) -> int:
    port = args.port
    if port is None:
        found, _ = find_boards()
        port = found[0] if len(found) == 1 else None
    try:
        todo = flash.plan(args.firmware, tool=args.tool, port=port)
    except flash.FlashToolMissingError as exc:
        print(f"tinyfed board flash: {exc}", file=sys.stderr)
        return 1
    if todo.note:
        print(f"tinyfed board flash: {todo.note}", file=sys.stderr)
        if not args.dry_run:
            return 1
    for cmd in todo.commands:
        print("$ " + " ".join(cmd), flush=True)
        if args.dry_run:
            continue
        try:
            code = subprocess.run(cmd, check=False).returncode
        except OSError as exc:
            print(f"tinyfed board flash: could not run {cmd[0]}: {exc}", file=sys.stderr)
            return 1
        if code != 0:
            print(f"tinyfed board flash: {cmd[0]} exited with {code}", file=sys.stderr)
            return code
    return 0
