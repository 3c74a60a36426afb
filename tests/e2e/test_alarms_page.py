"""The alarms page in Chromium with many alarms: filters, pages, sorting, one colour per severity,
acknowledging the selected ones and clearing every alarm that matches, "Raised" as raised."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, Route, expect

from tests.conftest import RunningLab
from tests.web.portal_testing import publish_as

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OpenPage = Callable[..., Page]
LIVE_MS = 10_000
SEVERITIES = ("critical", "major", "minor", "warning")
#: The text and background colours a severity label of the given severity gets on the page.
COLOUR_OF = """s => {
  const label = document.createElement("span");
  label.className = "severity";
  label.dataset.severity = s;
  document.body.append(label);
  const style = getComputedStyle(label);
  const colours = style.color + " on " + style.backgroundColor;
  label.remove();
  return colours;
}"""


def publish_alarms(lab: RunningLab, messages: list[tuple[str, dict[str, Any]]]) -> None:
    publish_as(lab, "MQTT_ADMIN", [(topic, json.dumps(body)) for topic, body in messages])


def many_alarms(lab: RunningLab, room: str, count: int, raised: int) -> None:
    publish_alarms(
        lab,
        [
            (
                f"alarms/{room}/d{n:03}/hot",
                {
                    "type": "hot",
                    "severity": SEVERITIES[n % 4],
                    "state": "active",
                    "value": n,
                    "ts": raised + n,
                },
            )
            for n in range(count)
        ],
    )


def test_filters_pages_and_bulk_actions(signed_in_page: OpenPage, lab: RunningLab, unique_room: str) -> None:
    raised = int(time.time() * 1000) - 3_600_000
    many_alarms(lab, unique_room, 130, raised)
    page = signed_in_page("/alarms")
    for _ in range(300):  # every alarm stored (one transaction each) before the page is read
        listed = page.request.get(f"{lab.portal_url}/api/alarms?room={unique_room}&limit=1").json()
        if listed["total"] == 130:
            break
        page.wait_for_timeout(100)
    # The filter applies 300 ms after typing stops and goes back to the first page: wait for its
    # answer, or a click on Next before it would be undone by it.
    with page.expect_response(lambda answer: "/api/alarms?" in answer.url and "room=" in answer.url):
        page.fill("#room-filter", unique_room)
    rows = page.locator("#alarm-rows tr")
    expect(page.locator("#page-count")).to_have_text("1\u2013100 of 130", timeout=LIVE_MS)
    expect(rows).to_have_count(100)
    newest = rows.first
    expect(newest.locator("td").nth(4)).to_have_text("d129")
    raised_iso = datetime.fromtimestamp((raised + 129) / 1000, UTC).isoformat(timespec="milliseconds")
    expect(newest.locator("time").first).to_have_attribute("datetime", raised_iso.replace("+00:00", "Z"))

    page.get_by_role("button", name="Next").click()
    expect(page.locator("#page-count")).to_have_text("101\u2013130 of 130", timeout=LIVE_MS)
    expect(rows).to_have_count(30)
    expect(rows.last.locator("td").nth(4)).to_have_text("d000")
    page.get_by_role("button", name="Previous").click()
    expect(page.locator("#page-count")).to_have_text("1\u2013100 of 130", timeout=LIVE_MS)

    page.select_option("#severity", "critical")
    expect(page.locator("#page-count")).to_have_text("1\u201333 of 33", timeout=LIVE_MS)
    colours = {severity: page.evaluate(COLOUR_OF, severity) for severity in SEVERITIES}
    assert len(set(colours.values())) == 4, f"severities share a colour: {colours}"

    rows.nth(0).locator("input.pick").check()
    rows.nth(1).locator("input.pick").check()
    page.get_by_role("button", name="Acknowledge selected (2)").click()
    expect(page.locator("#bulk-note")).to_have_text("2 alarms acknowledged", timeout=LIVE_MS)
    expect(page.locator('#alarm-rows tr[data-acked="true"]')).to_have_count(2, timeout=LIVE_MS)

    page.get_by_role("button", name="Severity").click()  # sort this page by severity (all critical): by id
    expect(page.locator("th", has=page.get_by_role("button", name="Severity"))).to_have_attribute(
        "aria-sort", "descending"
    )

    questions: list[str] = []

    def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Clear all 33 matching").click()
    expect(page.locator("#bulk-note")).to_have_text("33 alarms cleared", timeout=LIVE_MS)
    assert questions == ["Clear all 33 alarms that match the filters?"]
    expect(page.locator("#page-count")).to_have_text("no alarm matches", timeout=LIVE_MS)
    page.select_option("#severity", "")
    expect(page.locator("#page-count")).to_have_text("1\u201397 of 97", timeout=LIVE_MS)
    page.select_option("#state", "cleared")
    expect(page.locator("#page-count")).to_have_text("1\u201333 of 33", timeout=LIVE_MS)


def test_a_bad_filter_is_said_on_the_page(signed_in_page: OpenPage) -> None:
    page = signed_in_page("/alarms")
    page.fill("#device-filter", "a/b")
    expect(page.locator("#alarm-error")).to_contain_text("device is not a valid name", timeout=LIVE_MS)


def test_an_alarm_raised_while_the_list_loads_stays_on_the_page(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    """The list answered before the alarm was stored; its live event came before the answer."""
    page = signed_in_page("/alarms")
    stale = page.request.get(f"{lab.portal_url}/api/alarms?state=active&room={unique_room}&limit=100").json()
    assert stale["total"] == 0
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/api/alarms?*", hold)
    page.fill("#room-filter", unique_room)  # the list is asked again, and held
    while not held:
        page.wait_for_timeout(50)
    many_alarms(lab, unique_room, 1, int(time.time() * 1000))
    row = page.locator("#alarm-rows tr")
    expect(row).to_have_count(1, timeout=LIVE_MS)  # the live event
    held[0].fulfill(json=stale)
    page.unroute("**/api/alarms?*")
    expect(page.locator("#page-count")).to_have_text("1\u20131 of 1", timeout=LIVE_MS)
    expect(row).to_have_count(1)
