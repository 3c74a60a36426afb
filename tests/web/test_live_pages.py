"""The live pages' server side: routes, escaping, settings handed to the scripts, vendored assets."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.web.portal_testing import make_settings
from web import create_app, vendor
from web.portal import portal_of
from web.settings import SettingsError


@pytest.mark.parametrize("path", ["/", "/alarms", "/device/lab/sensor1"])
def test_pages_need_a_session(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize(
    ("path", "script"),
    [
        ("/", "/static/live.js"),
        ("/alarms", "/static/alarms.js"),
        ("/device/lab/sensor1", "/static/device.js"),
    ],
)
def test_pages_load_their_module_and_no_inline_script(signed_in: FlaskClient, path: str, script: str) -> None:
    html = signed_in.get(path).get_data(as_text=True)
    assert f'<script type="module" src="{script}"></script>' in html
    assert "/static/vendor/socket.io.min.js" in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline scripts break the CSP"
    assert "style=" not in html, "inline styles break the CSP"
    assert re.search(r'<meta name="csrf-token" content="[^"]+">', html)
    assert 'id="status"' in html
    assert 'id="alarm-count"' in html


def test_overview_hands_the_offline_threshold_to_the_script(signed_in: FlaskClient) -> None:
    html = signed_in.get("/").get_data(as_text=True)
    assert 'data-offline-after-s="60"' in html


def test_device_page_escapes_names_from_topics(signed_in: FlaskClient) -> None:
    response = signed_in.get("/device/%3Cb%3Eroom/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript")
    # "</script" has a "/": not a device name, so no page.
    assert response.status_code == 404
    html = signed_in.get("/device/%3Cb%3Eroom/%22%3E%3Cimg%20src=x%3E").get_data(as_text=True)
    assert "<b>room" not in html
    assert "<img src=x>" not in html
    assert 'data-room="&lt;b&gt;room"' in html
    assert 'data-device="&#34;&gt;&lt;img src=x&gt;"' in html
    assert "<h2>&#34;&gt;&lt;img src=x&gt;</h2>" in html


@pytest.mark.parametrize("path", ["/device/lab/a+b", "/device/lab/%23", "/device/%00/x", "/device/lab"])
def test_device_page_of_an_impossible_name_is_not_found(signed_in: FlaskClient, path: str) -> None:
    assert signed_in.get(path).status_code == 404


@pytest.mark.parametrize(
    ("name", "mimetype"), [("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css")]
)
def test_chart_library_is_served_by_the_portal(client: FlaskClient, name: str, mimetype: str) -> None:
    response = client.get(f"/static/vendor/{name}")
    if vendor.missing_files():
        pytest.fail(f"run `npm ci` in {vendor.ASSETS_DIR}: {vendor.missing_files()}")
    assert response.status_code == 200
    assert response.mimetype == mimetype


def test_flush_interval_comes_from_the_settings() -> None:
    app: Flask = create_app(make_settings(portal_live_flush_ms=250, portal_offline_after_s=5))
    portal = portal_of(app)
    try:
        assert portal.live.coalescer.interval_s == 0.25
        assert portal.settings.portal_offline_after_s == 5
    finally:
        portal.stop()


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"portal_live_flush_ms": 0}, "PORTAL_LIVE_FLUSH_MS"),
        ({"portal_offline_after_s": 0}, "PORTAL_OFFLINE_AFTER_S"),
    ],
)
def test_live_settings_are_validated(overrides: dict[str, int], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        make_settings(**overrides)
