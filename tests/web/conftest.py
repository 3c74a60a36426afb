"""Fixtures for the portal's unit tests: an app whose broker and database are unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis.configuration import set_hypothesis_home_dir

from tests.conftest import RunningLab
from tests.web.portal_testing import ADMIN_PASSWORD, ADMIN_USER, lab_engine, make_settings, sign_in
from web import create_app
from web.portal import portal_of
from web.settings import Settings
from web.storage import Store

# Hypothesis caches what it learns (even at collection time) under .hypothesis/ in the working
# directory, i.e. the repository root. Keep it beside these tests instead; Hypothesis writes a
# .gitignore into that folder, so git never sees it.
set_hypothesis_home_dir(Path(__file__).resolve().parent / ".hypothesis")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[Flask]:
    # One app per test module: starting is instant, but stopping waits for paho's reconnect
    # back-off (up to a second) since the broker is unreachable. Tests share no state but the
    # app itself: sessions live in each test client's cookie jar.
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    portal = portal_of(app)
    portal.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def signed_in(client: FlaskClient) -> FlaskClient:
    response = sign_in(client, ADMIN_USER, ADMIN_PASSWORD)
    assert response.status_code == 302
    return client


@pytest.fixture
def store(lab: RunningLab) -> Iterator[Store]:
    """The portal's storage on the session lab's database."""
    engine = lab_engine(lab)
    yield Store(engine)
    engine.dispose()
