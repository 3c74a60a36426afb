"""Sign-in throttling, CSRF and API authentication, with the broker and database down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.portal_testing import ADMIN_PASSWORD, ADMIN_USER, csrf_from, sign_in
from web.auth import MAX_ADDRESS_FAILURES, AuthState, LoginThrottle, bearer_token, token_user

# Every authenticated API route, with a method and a concrete path.
API_ROUTES = [
    ("GET", "/api/devices"),
    ("GET", "/api/latest"),
    ("GET", "/api/history?room=r&device=d&attr=a"),
    ("GET", "/api/alarms"),
    ("GET", "/api/alarms/1"),
    ("POST", "/api/alarms/1/ack"),
    ("POST", "/api/alarms/1/clear"),
    ("POST", "/api/devices/r/d/set/a"),
    ("GET", "/metrics"),
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttle(app: Flask) -> Iterator[LoginThrottle]:
    """The app's throttle, emptied and on a clock the test moves; a fresh one again afterwards."""
    state: AuthState = app.extensions["auth"]
    clock = FakeClock()
    state.throttle = LoginThrottle(clock=clock)
    state.address_throttle = LoginThrottle(max_failures=MAX_ADDRESS_FAILURES, clock=clock)
    yield state.throttle
    state.throttle = LoginThrottle()
    state.address_throttle = LoginThrottle(max_failures=MAX_ADDRESS_FAILURES)


# -- throttle -------------------------------------------------------------------------------


def test_throttle_allows_five_failures_per_minute_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, window_s=60, clock=clock)
    key = ("admin", "10.0.0.1")
    for _ in range(5):
        assert throttle.retry_after(key) == 0
        throttle.failed(key)
        clock.now += 1
    assert throttle.retry_after(key) == 55
    clock.now += 54.5
    assert throttle.retry_after(key) == 1
    clock.now += 0.5
    assert throttle.retry_after(key) == 0


def test_throttle_keys_are_independent_and_success_forgets() -> None:
    throttle = LoginThrottle(max_failures=2, clock=FakeClock())
    for _ in range(2):
        throttle.failed(("admin", "a"))
    assert throttle.retry_after(("admin", "a")) > 0
    assert throttle.retry_after(("admin", "b")) == 0
    assert throttle.retry_after(("other", "a")) == 0
    throttle.succeeded(("admin", "a"))
    assert throttle.retry_after(("admin", "a")) == 0


def test_throttle_memory_is_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=5, max_keys=100, clock=clock)
    for i in range(1000):
        throttle.failed((f"user{i}", "a"))
    assert len(throttle._failures) <= 101


def test_sign_in_is_refused_with_429_after_five_failures(
    client: FlaskClient, throttle: LoginThrottle
) -> None:
    for _ in range(5):
        assert sign_in(client, ADMIN_USER, "wrong").status_code == 401
    response = sign_in(client, ADMIN_USER, ADMIN_PASSWORD)  # even the right password now
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) == 60
    assert b"Too many failed sign-ins" in response.data
    assert client.get("/").status_code == 302
    assert isinstance(throttle.clock, FakeClock)
    throttle.clock.now += 61
    assert sign_in(client, ADMIN_USER, ADMIN_PASSWORD).status_code == 302


def test_throttle_is_per_client_address(app: Flask, throttle: LoginThrottle) -> None:
    attacker = app.test_client()
    for _ in range(6):
        sign_in(attacker, ADMIN_USER, "wrong")
    assert sign_in(attacker, ADMIN_USER, ADMIN_PASSWORD).status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "10.1.2.3"
    assert sign_in(elsewhere, ADMIN_USER, ADMIN_PASSWORD).status_code == 302


def test_one_address_is_limited_whatever_the_names(app: Flask, throttle: LoginThrottle) -> None:
    sprayer = app.test_client()
    for attempt in range(MAX_ADDRESS_FAILURES):
        assert sign_in(sprayer, f"no such user {attempt}", "wrong").status_code == 401  # no database needed
    assert sign_in(sprayer, ADMIN_USER, ADMIN_PASSWORD).status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "10.1.2.3"
    assert sign_in(elsewhere, ADMIN_USER, ADMIN_PASSWORD).status_code == 302


# -- API authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_api_needs_credentials(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 401
    assert response.is_json
    assert "sign in" in response.get_json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer a b", "token", ""])
def test_malformed_authorization_is_refused(client: FlaskClient, header: str) -> None:
    response = client.get("/api/devices", headers={"Authorization": header})
    assert response.status_code == 401
    assert "Bearer" in response.get_json()["error"]


def test_a_token_that_cannot_be_checked_is_a_503_not_a_500(client: FlaskClient) -> None:
    response = client.get("/api/devices", headers={"Authorization": "Bearer lab_" + "x" * 43})
    assert response.status_code == 503
    assert response.get_json() == {"error": "database unavailable; try again shortly"}


def test_a_token_that_is_not_a_lab_token_is_refused_without_the_database(client: FlaskClient) -> None:
    response = client.get("/api/devices", headers={"Authorization": "Bearer not-a-lab-token"})
    assert response.status_code == 401


def test_session_post_without_csrf_header_is_refused(signed_in: FlaskClient) -> None:
    response = signed_in.post("/api/alarms/1/ack")
    assert response.status_code == 403
    assert "X-CSRF-Token" in response.get_json()["error"]
    wrong = signed_in.post("/api/alarms/1/ack", headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403


def test_session_post_with_csrf_header_reaches_the_handler(signed_in: FlaskClient) -> None:
    token = csrf_from(signed_in.get("/").data)
    response = signed_in.post("/api/alarms/1/ack", headers={"X-CSRF-Token": token})
    assert response.status_code == 503  # past authentication; the database is down in unit tests


def test_session_get_needs_no_csrf_header(signed_in: FlaskClient) -> None:
    assert signed_in.get("/api/devices").status_code == 503


def test_metrics_for_a_signed_in_session(signed_in: FlaskClient) -> None:
    response = signed_in.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"portal_ingest_messages_total" in response.data


def test_openapi_document_needs_no_sign_in(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.get_json()["openapi"] == "3.1.0"


def test_unknown_api_routes_and_methods_answer_json(signed_in: FlaskClient) -> None:
    missing = signed_in.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.get_json() == {"error": "Not Found"}
    wrong_method = signed_in.put("/api/devices")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.get_json()
    assert "GET" in wrong_method.headers["Allow"]
    assert signed_in.post("/api/alarms/-1/ack").status_code == 404


def test_pages_outside_the_api_keep_html_errors(client: FlaskClient) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert not response.is_json


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Bearer", None),
        ("Basic abc", None),
        ("Bearer a b", None),
    ],
)
def test_bearer_header_parsing(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


def test_socket_token_check_refuses_when_the_database_is_down(app: Flask) -> None:
    with app.test_request_context("/socket.io/"):
        assert token_user("lab_" + "x" * 43) is None
        assert token_user("anything") is None


# -- sessions ---------------------------------------------------------------------------------


def test_signing_out_ends_the_session_even_with_the_database_down(app: Flask, client: FlaskClient) -> None:
    """The administrator works without the database; signing out still ends the session for
    every copy of its cookie (this process remembers it, and deletes the row once it can)."""
    assert sign_in(client, ADMIN_USER, ADMIN_PASSWORD).status_code == 302
    cookie = client.get_cookie("session")
    assert cookie is not None
    copy = app.test_client()
    copy.set_cookie("session", cookie.value)
    assert copy.get("/api/latest").status_code == 503, "past sign-in (the database is down)"
    token = csrf_from(client.get("/").data)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert copy.get("/api/latest").status_code == 401
    assert copy.get("/").status_code == 302


def test_a_cookie_from_before_server_sessions_is_refused(app: Flask, client: FlaskClient) -> None:
    """A cookie with the right user and fingerprint but no server session proves nothing."""
    assert sign_in(client, ADMIN_USER, ADMIN_PASSWORD).status_code == 302
    with client.session_transaction() as session:
        del session["sid"]
    assert client.get("/api/latest").status_code == 401
