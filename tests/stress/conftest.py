"""Fixtures of the stress tests: private plain brokers (anonymous, and with passwords)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stress.plain_broker import PlainBroker

USERS = {"fleet": "fleet-secret", "watcher": "watcher-secret"}


@pytest.fixture(scope="session")
def broker() -> Iterator[PlainBroker]:
    """An anonymous Mosquitto shared by the tests that never stop it."""
    instance = PlainBroker()
    instance.start()
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def auth_broker() -> Iterator[PlainBroker]:
    """A Mosquitto with a password file (``USERS``) and no anonymous access."""
    instance = PlainBroker(users=USERS)
    instance.start()
    yield instance
    instance.close()


@pytest.fixture
def own_broker() -> Iterator[PlainBroker]:
    """A Mosquitto of this test's own, which it may stop, freeze and restart."""
    instance = PlainBroker()
    instance.start()
    yield instance
    instance.close()
