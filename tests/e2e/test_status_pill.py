"""The header says what the portal itself sees, within 5 s, on every page: the broker gone, the
database gone (values kept and retried), and back to "live" once each returns; the command form
says why nothing can be sent. A lab of the test's own, since its services are stopped."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from labctl.config import LabConfig
from tests.conftest import RunningLab, own_lab
from tests.e2e.conftest import new_signed_in_page
from tests.mqtt_helpers import connect

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: What the issue asks: the header tells within this long.
TELLS_MS = 5_000


@pytest.fixture(scope="module")
def status_lab(new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    with own_lab(new_lab_config, "status-pill", ("db", "mosquitto", "web")) as running:
        yield running


def open_page(browser: Browser, lab: RunningLab, path: str) -> Page:
    page = new_signed_in_page(browser, lab, path)
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    return page


def publish_values(lab: RunningLab, count: int) -> None:
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    assert not connect(client, lab.port("MQTT_PORT")).is_failure
    try:
        infos = [
            client.publish(f"{lab.env['TOPIC_ROOT']}/status/dev/t", json.dumps(n), qos=1)
            for n in range(count)
        ]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_header_says_when_the_broker_is_gone_and_when_it_is_back(
    browser: Browser, status_lab: RunningLab
) -> None:
    pages = [open_page(browser, status_lab, path) for path in ("/", "/alarms", "/device/status/dev")]
    device_page = pages[2]
    status_lab.lab.stop("mosquitto")
    try:
        for page in pages:
            pill = page.locator("#status")
            expect(pill).to_have_attribute("data-state", "degraded", timeout=TELLS_MS)
            expect(pill).to_contain_text("broker unreachable")
        expect(device_page.locator("#command-note")).to_have_text(
            "commands cannot be sent: the portal is not connected to the broker"
        )
        expect(device_page.get_by_role("button", name="Send")).to_be_disabled()
        late = open_page_during_outage(browser, status_lab)
        expect(late.locator("#status")).to_contain_text("broker unreachable", timeout=TELLS_MS)
    finally:
        status_lab.lab.start("mosquitto")
    for page in pages:
        expect(page.locator("#status")).to_have_text("live", timeout=15_000)
    expect(device_page.get_by_role("button", name="Send")).to_be_enabled()
    expect(device_page.locator("#command-note")).to_have_text("")


def open_page_during_outage(browser: Browser, lab: RunningLab) -> Page:
    """A page opened while the broker is gone hears of it at once (the status comes on connect)."""
    return new_signed_in_page(browser, lab)


def test_the_header_says_when_the_database_is_gone_and_values_wait(
    browser: Browser, status_lab: RunningLab
) -> None:
    page = open_page(browser, status_lab, "/")
    status_lab.lab.stop("db")
    try:
        publish_values(status_lab, 20)
        pill = page.locator("#status")
        expect(pill).to_have_attribute("data-state", "degraded", timeout=TELLS_MS)
        expect(pill).to_contain_text("database unreachable")
        expect(pill).to_contain_text("values kept, retrying")
    finally:
        status_lab.lab.start("db")
    expect(page.locator("#status")).to_have_text("live", timeout=30_000)
    deadline = time.monotonic() + 30
    with status_lab.db() as db:
        while time.monotonic() < deadline:
            row = db.execute("SELECT count(*) FROM readings WHERE room = 'status'").fetchone()
            if row is not None and row[0] == 20:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the values kept during the outage were not all stored")
