"""Fixtures shared by the whole suite: real lab instances on free ports.

`lab` is one instance for the session (PostgreSQL, Mosquitto, Node-RED, portal), started
through the same code as `./lab up`. `new_lab_config` makes further instances for tests
that start, stop or break services themselves. Instances live under `$LAB_TEST_DIR` (set
by `./lab test`, which stops anything left running) or pytest's temporary folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from labctl.config import LabConfig, new_instance, remove_private_state
from labctl.lab import Lab


@pytest.fixture(scope="session")
def labs_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this session's lab instances keep their state and logs.

    At the end, the state their services kept under /var/lib/iot-lab/ goes (the logs stay):
    otherwise every run would leave its databases there.
    """
    base = os.environ.get("LAB_TEST_DIR")
    folder = Path(base) if base else tmp_path_factory.mktemp("labs")
    yield folder
    remove_private_state(folder)


@pytest.fixture(scope="session")
def new_lab_config(labs_dir: Path) -> Callable[..., LabConfig]:
    """Factory: a fresh instance (env file with new secrets and free ports, empty state)."""

    def make(name: str, **overrides: str) -> LabConfig:
        return new_instance(labs_dir / f"{name}-{uuid.uuid4().hex[:6]}", **overrides)

    return make


@dataclass
class RunningLab:
    """A started lab instance and handy ways to talk to it."""

    config: LabConfig
    lab: Lab

    @property
    def env(self) -> dict[str, str]:
        """The instance's `.env` values."""
        return self.config.env

    def port(self, name: str) -> int:
        """A port variable of the instance."""
        return self.config.port(name)

    @property
    def portal_url(self) -> str:
        """Base URL of the portal, without a trailing slash."""
        return f"http://127.0.0.1:{self.port('PORTAL_PORT')}"

    @property
    def device(self) -> tuple[str, str]:
        """The demo device's (id, password)."""
        return self.env["LAB_DEVICE_ID"], self.env["LAB_DEVICE_PASSWORD"]

    def mqtt_client(
        self,
        username: str | None,
        password: str | None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> mqtt.Client:
        """A paho client (not yet connected) with these credentials."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if username is not None:
            client.username_pw_set(username, password)
        return client

    def db(self) -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit connection to the lab's database."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port("POSTGRES_PORT"),
            user="lab",
            dbname="lab",
            password=self.env["POSTGRES_PASSWORD"],
            autocommit=True,
        )


@contextmanager
def own_lab(
    new_lab_config: Callable[..., LabConfig], name: str, services: tuple[str, ...], **env: str
) -> Iterator[RunningLab]:
    """A lab instance of a test's own (these services, these .env values), stopped when it ends."""
    config = new_lab_config(name, **env)
    running = Lab(config)
    try:
        for service in services:
            running.start(service)
        yield RunningLab(config, running)
    finally:
        running.down()


@pytest.fixture(scope="session")
def lab(new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    """The session's lab: every service started and healthy."""
    # Tests store values of 2025 on purpose: no retention round may take them during the session
    # (retention has tests of its own, with databases of their own).
    config = new_lab_config("session", RETENTION_DAYS="0")
    running = Lab(config)
    try:
        running.up()
        yield RunningLab(config, running)
    finally:
        running.down()


@pytest.fixture
def unique_room() -> str:
    """A room name no other test uses, so topics never collide between tests or runs."""
    return f"room-{uuid.uuid4().hex[:8]}"
