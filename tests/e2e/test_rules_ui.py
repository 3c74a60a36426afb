"""Node-RED's alarms and the portal's commands, in Chromium: an alarm a reading raises is on the
alarms page within 2 s and leaves it when the reading clears it, and its history shows what
happened; the device page sends a command to the device's ``set`` topic."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import RunningLab
from tests.e2e.test_portal_ui import device_path
from tests.mqtt_helpers import connect, publish

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OpenPage = Callable[..., Page]
#: What the issue asks: a raised alarm is on the page within 2 s.
VISIBLE_WITHIN_MS = 2_000


def reading(lab: RunningLab, room: str, device: str, attr: str, value: float) -> None:
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    publish(
        client,
        lab.port("MQTT_PORT"),
        f"{lab.env['TOPIC_ROOT']}/{room}/{device}/{attr}",
        json.dumps({"value": value}),
    )


def test_an_alarm_from_the_rules_is_on_the_page_within_2_s(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    page = signed_in_page("/alarms")
    device = f"oven-{uuid.uuid4().hex[:6]}"
    expect(page.locator("#alarm-rows")).to_be_attached()
    reading(lab, unique_room, device, "temperature", 31.0)
    row = page.locator("#alarm-rows tr", has=page.locator("td", has_text=device))
    expect(row).to_have_count(1, timeout=VISIBLE_WITHIN_MS)
    expect(row.locator("td.type")).to_have_text("high-temperature")
    expect(row).to_have_attribute("data-state", "active")
    reading(lab, unique_room, device, "temperature", 28.0)
    expect(row).to_have_count(0, timeout=VISIBLE_WITHIN_MS)  # cleared: the page shows active alarms

    # its history: raised and cleared by the rule; acknowledging it later adds to it at once
    page.select_option("#state", "all")
    expect(row).to_have_attribute("data-state", "cleared")
    row.get_by_role("button", name="History").click()
    history = page.locator("#alarm-history")
    expect(history).to_be_visible()
    title = f"History of high-temperature on {device} in {unique_room}"
    expect(page.locator("#history-title")).to_have_text(title)
    expect(history.locator("li .kind")).to_have_text(["raised by the rule", "cleared by the rule"])
    expect(history.locator("li .value")).to_have_text(["31", "28"])
    row.get_by_role("button", name="Acknowledge").click()
    admin = lab.env["PORTAL_ADMIN_USER"]
    expect(history.locator("li .kind")).to_have_text(
        ["raised by the rule", "cleared by the rule", f"acknowledged by {admin}"]
    )
    page.get_by_role("button", name="Close").click()
    expect(history).to_be_hidden()


def test_the_device_page_sends_a_command(signed_in_page: OpenPage, lab: RunningLab, unique_room: str) -> None:
    device = f"thermo-{uuid.uuid4().hex[:6]}"
    reading(lab, unique_room, device, "setpoint", 21.0)
    received: list[tuple[str, bytes]] = []
    got = threading.Event()
    listener = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])

    def on_message(_client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        received.append((message.topic, bytes(message.payload)))
        got.set()

    listener.on_message = on_message
    assert not connect(listener, lab.port("MQTT_PORT")).is_failure
    listener.subscribe(f"{lab.env['TOPIC_ROOT']}/{unique_room}/{device}/set/#", qos=1)
    try:
        page = signed_in_page(device_path(unique_room, device))
        expect(page.locator('section.attr-panel[data-attr="setpoint"]')).to_be_visible(timeout=5_000)
        page.fill("#command-attr", "setpoint")
        page.fill("#command-value", "23.5")
        page.get_by_role("button", name="Send").click()
        topic = f"{lab.env['TOPIC_ROOT']}/{unique_room}/{device}/set/setpoint"
        expect(page.locator("#command-note")).to_have_text(f"sent 23.5 to {topic}", timeout=5_000)
        assert got.wait(5)
        assert received == [(topic, b"23.5")]
        page.fill("#command-attr", "bad+attr")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#command-note")).to_contain_text("not sent: attr is not a valid name")
    finally:
        listener.disconnect()
        listener.loop_stop()
