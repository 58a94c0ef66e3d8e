"""The self-test's report: one :class:`Check` per line, PASS, FAIL or SKIP, and its JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


def dbfs(value: float) -> float:
    """An int16 amplitude in dB relative to full scale (-inf for 0)."""
    return 20 * math.log10(value / 32768) if value > 0 else -math.inf


# ----------------------------------------------------------------------------- the report


@dataclass
class Check:
    """One line of the report."""

    group: str
    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Everything the self-test found."""

    device: str
    interactive: bool
    board: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not any(c.status == FAIL for c in self.checks)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        text = (
            f"result: {verdict} ({self.count(PASS)} passed, {self.count(FAIL)} failed, "
            f"{self.count(SKIP)} skipped) in {self.seconds:.1f} s"
        )
        failed = [c for c in self.checks if c.status == FAIL]
        if failed:
            text += "\nfailed: " + "; ".join(f"{c.group}/{c.name}: {c.detail}" for c in failed)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "passed": self.passed,
            "interactive": self.interactive,
            "seconds": round(self.seconds, 3),
            "board": self.board,
            "counts": {s.lower(): self.count(s) for s in (PASS, FAIL, SKIP)},
            "checks": [asdict(c) for c in self.checks],
        }


def format_check(check: Check) -> str:
    return f"{check.group:<11} {check.status}  {check.name}: {check.detail}"


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2)
