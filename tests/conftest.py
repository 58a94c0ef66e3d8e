"""Shared fixtures: a private Mosquitto per test session, unique fleet names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tinyfed.broker import Mosquitto


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
