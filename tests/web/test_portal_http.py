"""HTTP routes with the broker and database down: health, sign-in, the live page, vendored JS."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.web.portal_testing import ADMIN_PASSWORD, ADMIN_USER, csrf_from, make_settings, sign_in
from web import create_app, vendor
from web.portal import portal_of


def test_app_starts_with_services_down_and_healthz_answers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_says_what_is_down(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"].startswith("down")
    assert body["checks"]["database"].startswith("down")


def test_live_page_redirects_to_login(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_login_page_renders(client: FlaskClient) -> None:
    response = client.get("/login?next=/")
    assert response.status_code == 200
    assert b'name="password"' in response.data


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (ADMIN_USER, "wrong"),
        (ADMIN_USER, ""),
        (ADMIN_USER + " ", ADMIN_PASSWORD),
        ("", ""),
        (ADMIN_USER, ADMIN_PASSWORD + " "),
        (ADMIN_USER, ADMIN_PASSWORD * 100),
    ],
)
def test_wrong_credentials_are_refused(client: FlaskClient, username: str, password: str) -> None:
    response = sign_in(client, username, password)
    assert response.status_code == 401
    assert b"Wrong user name or password" in response.data
    assert client.get("/").status_code == 302


def test_other_users_cannot_sign_in_while_the_database_is_down(client: FlaskClient) -> None:
    response = sign_in(client, "someone", ADMIN_PASSWORD)
    assert response.status_code == 503
    assert b"unavailable" in response.data
    assert client.get("/").status_code == 302


def test_right_credentials_open_the_live_page(client: FlaskClient) -> None:
    response = sign_in(client, ADMIN_USER, ADMIN_PASSWORD)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert b'id="values"' in page.data
    assert b"/static/vendor/socket.io.min.js" in page.data
    assert b"/static/live.js" in page.data


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/?room=lab", "/?room=lab"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_login_only_redirects_within_the_site(client: FlaskClient, next_url: str, expected: str) -> None:
    response = sign_in(client, ADMIN_USER, ADMIN_PASSWORD, next=next_url)
    assert response.headers["Location"] == expected


def test_logout_ends_the_session(signed_in: FlaskClient) -> None:
    page = signed_in.get("/")
    assert page.status_code == 200
    response = signed_in.post("/logout", data={"csrf_token": csrf_from(page.data)})
    assert response.status_code == 302
    assert signed_in.get("/").status_code == 302


def test_logout_from_another_site_is_ignored(signed_in: FlaskClient) -> None:
    signed_in.post("/logout")
    assert signed_in.get("/").status_code == 200


def test_user_name_is_escaped_on_the_page() -> None:
    app = create_app(make_settings(portal_admin_user="<script>alert(1)</script>"))
    try:
        client = app.test_client()
        assert sign_in(client, "<script>alert(1)</script>", ADMIN_PASSWORD).status_code == 302
        page = client.get("/")
        assert b"<script>alert(1)</script>" not in page.data
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.data
    finally:
        portal_of(app).stop()


def test_forged_session_cookie_without_credential_is_not_signed_in(client: FlaskClient) -> None:
    with client.session_transaction() as session:
        session["user"] = ADMIN_USER
    assert client.get("/").status_code == 302


def test_login_page_carries_a_csrf_token(client: FlaskClient) -> None:
    first = csrf_from(client.get("/login").data)
    assert len(first) >= 32
    assert csrf_from(client.get("/login").data) == first  # stable within a session
    other = csrf_from(client.application.test_client().get("/login").data)
    assert other != first


@pytest.mark.parametrize("token", [None, "", "forged", "x" * 5000])
def test_login_without_the_form_token_is_refused(client: FlaskClient, token: str | None) -> None:
    client.get("/login")
    data = {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = client.post("/login", data=data)
    assert response.status_code == 400
    assert b"expired" in response.data
    assert client.get("/").status_code == 302


def test_sign_in_rotates_the_csrf_token(client: FlaskClient) -> None:
    before = csrf_from(client.get("/login").data)
    assert sign_in(client, ADMIN_USER, ADMIN_PASSWORD).status_code == 302
    assert csrf_from(client.get("/").data) != before


def test_pages_carry_security_headers(client: FlaskClient) -> None:
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_only_the_allow_listed_vendor_file_is_served(client: FlaskClient) -> None:
    assert client.get("/static/vendor/socket.io.js").status_code == 404
    assert client.get("/static/vendor/package.json").status_code == 404
    assert client.get("/static/vendor/..%2Fpackage.json").status_code == 404


def test_vendor_file_is_served_when_installed(client: FlaskClient) -> None:
    response = client.get("/static/vendor/socket.io.min.js")
    if vendor.missing_files():
        assert response.status_code == 404
        pytest.skip("socket.io-client not installed: run `npm ci` in web/assets")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert b"Socket.IO" in response.data[:200]
    response.close()


def test_missing_vendor_file_is_a_clear_error(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    monkeypatch.setattr(vendor, "ASSETS_DIR", tmp_path)
    assert client.get("/static/vendor/socket.io.min.js").status_code == 404
    assert "npm ci" in caplog.text


def test_readyz_reports_a_stuck_live_path(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    portal = portal_of(client.application)
    monkeypatch.setattr(portal.live, "stuck_s", lambda: 12.4)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["live"] == "stuck: no live update sent for 12 s"
