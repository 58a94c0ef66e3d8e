"""A person at a board asks for a round, end to end: the compiled virtual board's scripted user
holds D5 3.2 s, the real gateway publishes the request, the real aggregator service acts on it,
through a real Mosquitto.

* With a quorum (``--min-workers`` updates in), the round closes now with what it has.
* Without, the aggregator's status says ``upload_now``: every gateway uploads what its board
  has trained (fewer steps than ``--local-steps``) and the round closes when all have reported.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.aggregator import test_service
from tests.aggregator.test_poison import running_aggregator
from tests.aggregator.test_service import Observer, flags
from tests.gateway.test_bridge import BOARD_ARGS, gateway_args
from tests.link_support import Gateway, write_clip, write_script
from tinyfed.aggregator.service import AggregatorService
from tinyfed.mqtt.contract import Topics
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.virtual_board import VirtualBoard

WAIT_S = 90.0  #: a loaded 2-core machine starts gateways and holds D5 3.2 s: be patient


@pytest.fixture(autouse=True)
def patient_observer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_service, "WAIT_S", WAIT_S)


def requester_script(folder: Path, presses: int) -> Path:
    """Wait for the model, train ``presses`` steps, then hold D5 past 3 s: ask for a round."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["pace 50", "hold 30", "wait model"]
    for i in range(presses):
        clip = write_clip(folder / f"clip{i % 3}.wav", i % 3)
        lines.append(f"press {('D2', 'D3', 'D4')[i % 3]} {clip.name}")
    lines.append("request round")
    path = folder / "script.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Site:
    """Where the boards and gateways of a test run."""

    binary: Path
    broker: Mosquitto
    fleet: str


def board_with_gateway(stack: ExitStack, site: Site, script: Path, worker: str) -> Gateway:
    """A virtual board running ``script`` behind a real gateway, both stopped with ``stack``."""
    board = stack.enter_context(VirtualBoard(script, binary=site.binary, extra_args=BOARD_ARGS))
    args = gateway_args(board, site.broker, site.fleet, "--worker-id", worker)
    gw = Gateway(script.parent, *args)
    stack.callback(gw.stop)
    return gw


def requests_counted(svc: AggregatorService, outcome: str) -> float | None:
    return svc.metrics.registry.get_sample_value(
        "tinyfed_aggregator_round_requests_total", {"outcome": outcome}
    )


def test_a_request_with_a_quorum_closes_the_round_now(
    binary: Path, broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: w1 and w2 expected, a quorum of 1, a deadline far away; w1 trains its 3 steps
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    site = Site(binary, broker, fleet)
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "w1,w2")
    argv += ["--min-workers", "1", "--local-steps", "3", "--round-timeout", "3600"]
    with ExitStack() as stack, running_aggregator(argv) as svc:
        w1 = write_script(tmp_path / "w1", presses=3, wait_model=True)
        board_with_gateway(stack, site, w1, "w1")
        observer.status(lambda s: s.reported_count == 1, "w1's update counted")
        # Execute: w2's user asks for a round as soon as the model is on the board
        w2 = requester_script(tmp_path / "w2", presses=0)
        gw2 = board_with_gateway(stack, site, w2, "w2")
        event = observer.round_event(1)
        observer.global_model(1)
        gw2.wait_log("round request of worker w2 published")
        closed = requests_counted(svc, "closed")
    observer.close()
    # Assert: closed at once with w1's update, naming who asked and who is missing
    assert [p.worker_id for p in event.participants] == ["w1"]
    assert event.dropped == ("w2",)
    assert event.reason == "closed early at the request of w2"
    assert closed == 1.0


def test_a_request_without_a_quorum_makes_every_gateway_upload_now(
    binary: Path, broker: Mosquitto, fleet: str, tmp_path: Path
) -> None:
    # Prepare: both workers needed (quorum 2), 10 local steps per round; w1's user trains 2
    # steps, w2's 1 step and then asks for a round
    topics = Topics(fleet)
    observer = Observer(broker.url, topics)
    site = Site(binary, broker, fleet)
    argv = flags(broker.url, fleet, tmp_path / "agg.db", "--expect", "w1,w2")
    argv += ["--min-workers", "2", "--local-steps", "10", "--round-timeout", "3600"]
    with ExitStack() as stack, running_aggregator(argv) as svc:
        w1 = write_script(tmp_path / "w1", presses=2, wait_model=True)
        w2 = requester_script(tmp_path / "w2", presses=1)
        gateways = [
            board_with_gateway(stack, site, w1, "w1"),
            board_with_gateway(stack, site, w2, "w2"),
        ]
        # Execute
        asked = observer.status(lambda s: s.upload_now == 1, "the status asking for uploads")
        event = observer.round_event(1)
        observer.global_model(1)
        after = observer.status(lambda s: s.round == 2, "round 2 open")
        for gw in gateways:
            gw.wait_log("the aggregator asks for uploads now (round 1 was requested)")
        upload_now = requests_counted(svc, "upload_now")
    observer.close()
    # Assert: both uploaded what they had (fewer steps than 10), the round closed as usual
    assert asked.round == 1
    steps = {p.worker_id: p.local_steps for p in event.participants}
    assert sorted(steps) == ["w1", "w2"]
    assert all(1 <= n < 10 for n in steps.values()), steps
    assert event.dropped == ()
    assert event.reason == ""
    assert after.upload_now is None
    assert upload_now == 1.0
