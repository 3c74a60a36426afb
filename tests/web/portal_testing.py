"""Helpers shared by the portal's unit tests."""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import settings as hypothesis_settings

from web.settings import Settings

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
