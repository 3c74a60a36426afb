"""Helpers shared by the portal's unit tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest
import requests
import requests.adapters
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine
from werkzeug.test import TestResponse

from tests.conftest import RunningLab
from tests.mqtt_helpers import connect
from web.settings import DatabaseSettings, Settings
from web.storage import make_engine

T = TypeVar("T")

#: For property tests: no example database (it would write .hypothesis/ into the working
#: directory, outside tests/web) and no per-example deadline (slow CI machines are not bugs).
property_test = hypothesis_settings(database=None, deadline=None)

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct horse battery staple"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def make_settings(**overrides: Any) -> Settings:
    """Settings whose broker and database are unreachable; `.env` and the environment are ignored."""
    values: dict[str, Any] = {
        "mqtt_host": "127.0.0.1",
        "mqtt_port": closed_port(),
        "mqtt_portal_password": "mqtt-secret",
        "topic_root": "office",
        "postgres_host": "127.0.0.1",
        "postgres_port": closed_port(),
        "postgres_password": "pg-secret",
        "portal_admin_user": ADMIN_USER,
        "portal_admin_password": ADMIN_PASSWORD,
        "portal_secret_key": "test-secret-key",
    }
    values.update(overrides)
    return Settings.from_env(_env_file=None, **values)


_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str | bytes) -> str:
    """The CSRF token a page carries (the sign-in form's hidden field)."""
    text = html.decode() if isinstance(html, bytes) else html
    found = _CSRF_FIELD.search(text)
    assert found, "no csrf_token field on the page"
    return found.group(1)


def sign_in(client: FlaskClient, username: str, password: str, **fields: str) -> TestResponse:
    """Fill in the sign-in form like a browser: load it (for its CSRF token), then post it."""
    token = csrf_from(client.get("/login").data)
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token, **fields}
    )


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    """A `requests` session whose connections come from `address` (any of 127.0.0.0/8 here),
    so a test can be several clients on one machine."""
    session = requests.Session()
    session.mount("http://", _FromAddress(address))
    return session


def sign_in_over_http(
    session: requests.Session, base_url: str, username: str, password: str
) -> requests.Response:
    """Post the portal's sign-in form (with a fresh CSRF token) like a browser; no redirects."""
    token = csrf_from(session.get(f"{base_url}/login", timeout=10).text)
    return session.post(
        f"{base_url}/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )


def signed_in_session(base_url: str, username: str, password: str) -> requests.Session:
    """A `requests` session signed in to a running portal (through its sign-in form)."""
    session = requests.Session()
    response = sign_in_over_http(session, base_url, username, password)
    assert response.status_code in (302, 303), f"sign-in failed: {response.status_code} {response.text[:200]}"
    return session


def users_cli(lab: RunningLab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m web.users ARGS`` against `lab`'s database (as ``./lab users`` would)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("POSTGRES_", "PORTAL_"))}
    env.update(
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(lab.port("POSTGRES_PORT")),
        POSTGRES_PASSWORD=lab.env["POSTGRES_PASSWORD"],
        PORTAL_ADMIN_USER=lab.env["PORTAL_ADMIN_USER"],
    )
    return subprocess.run(
        [sys.executable, "-m", "web.users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=lab.config.data_dir,  # away from the repository's own .env
        timeout=60,
        check=False,
    )


def api_token(lab: RunningLab, user: str | None = None, label: str = "tests") -> str:
    """A new bearer token for `user` (the administrator by default), made with the users CLI."""
    result = users_cli(lab, "token", "create", user or lab.env["PORTAL_ADMIN_USER"], "--label", label)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_for(what: str, check: Callable[[], T | None], seconds: float = 15.0) -> T:
    """What ``check`` returns once it is truthy, asked every 0.1 s; the test fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds}s")
        time.sleep(0.1)


def publish_as(
    lab: RunningLab, account: str, messages: Iterable[tuple[str, bytes | str]], *, retain: bool = False
) -> None:
    """Publish (topic, payload) pairs over one connection as the ``.env`` account ``<account>_USER``
    (``LAB_FLEET``, ``MQTT_ADMIN``), QoS 1, each acknowledged by the broker."""
    client = lab.mqtt_client(lab.env[f"{account}_USER"], lab.env[f"{account}_PASSWORD"])
    assert not connect(client, lab.port("MQTT_PORT")).is_failure
    try:
        infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def lab_engine(lab: RunningLab) -> Engine:
    """The portal's own engine (``web.storage.make_engine``) on `lab`'s database; dispose it after."""
    return make_engine(
        DatabaseSettings.from_env(
            _env_file=None,
            postgres_port=lab.port("POSTGRES_PORT"),
            postgres_password=lab.env["POSTGRES_PASSWORD"],
        )
    )
