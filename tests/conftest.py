"""Shared fixtures: a private Mosquitto per test session, unique fleet names per test, the
compiled virtual board, and a scripted MQTT peer of the test's fleet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.link_support import Peer
from tinyfed.testbed.broker import Mosquitto
from tinyfed.testbed.virtual_board import build_virtual_board


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    """A Mosquitto started by the tests on a free loopback port, shared by the session.

    Tests that stop, kill or restart a broker must use :func:`own_broker` instead.
    """
    with Mosquitto() as mosquitto:
        yield mosquitto


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own, free to be killed and restarted."""
    with Mosquitto() as mosquitto:
        yield mosquitto


@pytest.fixture
def fleet() -> str:
    """A fleet name unique to the test, so tests sharing a broker never see each other."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def binary() -> Path:
    """The virtual board, built once per session (``make -C firmware host``)."""
    return build_virtual_board()


@pytest.fixture
def peer(broker: Mosquitto, fleet: str) -> Iterator[Peer]:
    """A scripted MQTT peer of the test's fleet: publishes global models, records the rest."""
    p = Peer(broker.url, fleet)
    yield p
    p.close()
