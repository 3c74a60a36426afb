"""The first thin path: a device publishes, the value is stored and reaches browsers within 2 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest
import requests
import socketio
from playwright.sync_api import Page, expect

from tests.conftest import RunningLab
from tests.mqtt_helpers import publish
from tests.web.portal_testing import signed_in_session

pytestmark = pytest.mark.integration

DELIVERY_LIMIT_S = 2.0


def readme_publish(lab: RunningLab, room: str, attr: str, value: str) -> str:
    """Publish like the README's mosquitto_pub example, as the demo device; returns the topic."""
    device, password = lab.device
    topic = f"{lab.env['TOPIC_ROOT']}/{room}/{device}/{attr}"
    publish(lab.mqtt_client(device, password), lab.port("MQTT_PORT"), topic, value)
    return topic


def stored_value(lab: RunningLab, room: str, attr: str, since: float) -> float | None:
    """The newest stored number for room/demo device/attr at or after `since`, if any."""
    device, _ = lab.device
    with lab.db() as conn:
        row = conn.execute(
            "SELECT value_num FROM readings WHERE room = %s AND device = %s AND attr = %s "
            "AND ts >= to_timestamp(%s) ORDER BY ts DESC LIMIT 1",
            (room, device, attr, since - 1),
        ).fetchone()
    return None if row is None else float(row[0])  # type: ignore[arg-type]


def logged_in_session(lab: RunningLab) -> requests.Session:
    return signed_in_session(lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"])


def test_value_is_stored_in_readings_within_2s(lab: RunningLab) -> None:
    started = time.time()
    readme_publish(lab, "lab", "temperature", "21.5")
    deadline = time.monotonic() + DELIVERY_LIMIT_S
    while time.monotonic() < deadline:
        if stored_value(lab, "lab", "temperature", started) == 21.5:
            return
        time.sleep(0.05)
    pytest.fail(f"21.5 not in readings within {DELIVERY_LIMIT_S}s")


def test_value_reaches_a_socketio_client_within_2s(lab: RunningLab, unique_room: str) -> None:
    session = logged_in_session(lab)
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    client = socketio.Client(reconnection=False)
    arrived = threading.Event()
    snapshot = threading.Event()
    got: list[dict[str, object]] = []

    def on_values(values: list[dict[str, object]]) -> None:
        for value in values:
            if value["room"] == unique_room:
                got.append(value)
                arrived.set()

    client.on("snapshot", lambda _values: snapshot.set())
    client.on("values", on_values)

    client.connect(lab.portal_url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=5)
    try:
        assert snapshot.wait(5), "a snapshot arrives at once on connect"
        readme_publish(lab, unique_room, "temperature", "21.5")
        assert arrived.wait(DELIVERY_LIMIT_S), f"no value over Socket.IO within {DELIVERY_LIMIT_S}s"
    finally:
        client.disconnect()
    device, _ = lab.device
    assert got[0]["device"] == device
    assert got[0]["attr"] == "temperature"
    assert got[0]["value"] == 21.5


def test_socketio_refuses_a_client_that_is_not_logged_in(lab: RunningLab) -> None:
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(lab.portal_url, transports=["websocket"], wait_timeout=5)


@pytest.fixture
def page(signed_in_page: Callable[..., Page], unique_room: str) -> Page:
    """The overview of the test's room, signed in and connected (tests/e2e/conftest.py).

    The device the test publishes as is new to it: the overview learns of it from the portal's
    ``devices`` notice and lists it.
    """
    page: Page = signed_in_page(f"/?q={quote(unique_room, safe='')}")
    return page


@pytest.mark.browser
def test_page_shows_the_value_within_2s(page: Page, lab: RunningLab, unique_room: str) -> None:
    device, _ = lab.device
    tile = page.locator(f'[data-key="{unique_room}/{device}/temperature"] .value')
    readme_publish(lab, unique_room, "temperature", "20")
    expect(tile).to_have_text("20", timeout=DELIVERY_LIMIT_S * 1000)
    readme_publish(lab, unique_room, "temperature", "21.5")
    expect(tile).to_have_text("21.5", timeout=DELIVERY_LIMIT_S * 1000)


@pytest.mark.browser
def test_names_from_topics_render_as_text(signed_in_page: Callable[..., Page], lab: RunningLab) -> None:
    device, _ = lab.device
    room = "<img src=x onerror=alert(1)>"
    page = signed_in_page(f"/?q={quote(room, safe='')}")
    readme_publish(lab, room, "temperature", "<script>window.pwned=1</script>")
    tile = page.locator(f'[data-key="{room}/{device}/temperature"] .value')
    expect(tile).to_have_text("<script>window.pwned=1</script>", timeout=DELIVERY_LIMIT_S * 1000)
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("img[src=x]").count() == 0
