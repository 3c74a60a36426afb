"""A page survives a portal restart: it shows the outage, reconnects, re-subscribes, catches up."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, expect

from labctl.config import LabConfig
from labctl.lab import Lab
from tests.conftest import RunningLab
from tests.mqtt_helpers import publish

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# socket.io-client retries with a back-off of up to 5 s; the portal takes a few seconds to start.
RECONNECT_MS = 20_000


def test_page_reconnects_and_resubscribes_after_a_portal_restart(
    new_lab_config: Callable[..., LabConfig], browser: Browser
) -> None:
    lab = Lab(new_lab_config("reconnect"))
    try:
        for service in ("db", "mosquitto", "web"):  # Node-RED plays no part here
            lab.start(service)
        running = RunningLab(lab.config, lab)
        device, password = running.device
        topic = f"{running.env['TOPIC_ROOT']}/lab/{device}/temperature"

        def send(value: str) -> None:
            publish(running.mqtt_client(device, password), running.port("MQTT_PORT"), topic, value)

        page = browser.new_page()
        try:
            page.goto(f"{running.portal_url}/")
            page.fill("input[name=username]", running.env["PORTAL_ADMIN_USER"])
            page.fill("input[name=password]", running.env["PORTAL_ADMIN_PASSWORD"])
            page.click("button[type=submit]")
            status = page.locator("#status")
            tile = page.locator(f'[data-key="lab/{device}/temperature"] .value')
            expect(status).to_have_attribute("data-state", "connected", timeout=10_000)
            send("1")
            expect(tile).to_have_text("1", timeout=5_000)

            lab.stop("web")
            expect(status).to_have_attribute("data-state", "disconnected", timeout=RECONNECT_MS)
            send("2")  # kept by the broker for the portal's session while it is down
            lab.start("web")
            expect(status).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
            expect(tile).to_have_text("2", timeout=RECONNECT_MS)
            send("3")  # arrives only if the page subscribed again after reconnecting
            expect(tile).to_have_text("3", timeout=5_000)
        finally:
            page.context.close()
    finally:
        lab.down()
