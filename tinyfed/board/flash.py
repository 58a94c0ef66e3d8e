"""``tinyfed board flash``: build and upload the firmware with the tool the user has.

PlatformIO (``pio run -d firmware -t upload``, the project ``firmware/platformio.ini``) is
preferred; otherwise arduino-cli compiles and uploads the sketch folder that
``make -C firmware arduino-sketch`` makes. Neither is a dependency of tinyfed: when neither is
on PATH, :func:`plan` raises :class:`FlashToolMissingError` saying how to get one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tinyfed.errors import TinyfedError

FQBN = "arduino:mbed_nano:nano33ble"
TOOLS = ("pio", "arduino-cli")
PIO_NAMES = ("pio", "platformio")
ARDUINO_CLI_INSTALL = "https://arduino.github.io/arduino-cli/latest/installation/"
HOW_TO_GET_ONE = f"""\
neither PlatformIO (pio) nor arduino-cli was found on PATH; install one, then run this again:
  PlatformIO:  pip install platformio
               (it fetches the pinned nordicnrf52 platform and ArduinoBLE on the first build)
  arduino-cli: see {ARDUINO_CLI_INSTALL}
               then: arduino-cli core install arduino:mbed_nano
                     arduino-cli lib install ArduinoBLE@2.0.1"""


class FlashToolMissingError(TinyfedError):
    """No build tool for the board was found (the message says how to get one)."""


@dataclass(frozen=True)
class Plan:
    """The commands to run, in order, and the tool they use."""

    tool: str
    commands: tuple[tuple[str, ...], ...]
    note: str = ""


def find_tool(tool: str = "auto") -> tuple[str, str]:
    """(tool name, its path) for ``tool`` (``auto``, ``pio`` or ``arduino-cli``)."""
    if tool in ("auto", "pio"):
        for name in PIO_NAMES:
            path = shutil.which(name)
            if path:
                return "pio", path
        if tool == "pio":
            raise FlashToolMissingError(
                "PlatformIO (pio) was not found on PATH: pip install platformio"
            )
    if tool in ("auto", "arduino-cli"):
        path = shutil.which("arduino-cli")
        if path:
            return "arduino-cli", path
        if tool == "arduino-cli":
            raise FlashToolMissingError(
                f"arduino-cli was not found on PATH: see {ARDUINO_CLI_INSTALL}"
            )
    if tool not in ("auto", *TOOLS):
        raise ValueError(f"unknown tool {tool!r}")
    raise FlashToolMissingError(HOW_TO_GET_ONE)


def plan(firmware: Path, *, tool: str = "auto", port: str | None = None) -> Plan:
    """What to run to build and upload ``firmware`` to the board on ``port`` (None: the tool
    finds it, or arduino-cli gets ``PORT`` to replace)."""
    name, path = find_tool(tool)
    if name == "pio":
        cmd: tuple[str, ...] = (path, "run", "-d", str(firmware), "-t", "upload")
        if port:
            cmd += ("--upload-port", port)
        return Plan("pio", (cmd,))
    sketch = str(firmware / "build" / "arduino" / "tinyfed")
    note = "" if port else "no board port found: give --port (e.g. /dev/ttyACM0)"
    return Plan(
        "arduino-cli",
        (
            ("make", "-C", str(firmware), "arduino-sketch"),
            (path, "compile", "--fqbn", FQBN, sketch),
            (path, "upload", "-p", port or "PORT", "--fqbn", FQBN, sketch),
        ),
        note,
    )
