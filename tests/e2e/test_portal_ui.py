"""The portal's pages in Chromium: overview tiles, offline badge, device history, alarms, hostile names."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.conftest import RunningLab
from tests.mqtt_helpers import publish
from tests.web.portal_testing import publish_as, signed_in_session, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OpenPage = Callable[..., Page]
LIVE_MS = 5_000


def publish_value(lab: RunningLab, room: str, attr: str, payload: object, device: str | None = None) -> None:
    """Publish as the demo device, or as the broker admin for any other device name."""
    if device is None:
        device, password = lab.device
        client = lab.mqtt_client(device, password)
    else:
        client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    text = payload if isinstance(payload, str) else json.dumps(payload)
    publish(client, lab.port("MQTT_PORT"), f"{lab.env['TOPIC_ROOT']}/{room}/{device}/{attr}", text)


def publish_alarm(lab: RunningLab, room: str, device: str, alarm_type: str, **fields: object) -> None:
    body = {"type": alarm_type, "severity": "major", "state": "active", "value": 31.5} | fields
    body.setdefault("ts", int(time.time() * 1000))
    client = lab.mqtt_client(lab.env["MQTT_ADMIN_USER"], lab.env["MQTT_ADMIN_PASSWORD"])
    publish(client, lab.port("MQTT_PORT"), f"alarms/{room}/{device}/{alarm_type}", json.dumps(body))


def device_path(room: str, device: str) -> str:
    return f"/device/{quote(room, safe='')}/{quote(device, safe='')}"


def overview_of(room: str) -> str:
    """The overview filtered to one room (the session's lab holds every test's devices)."""
    return f"/?q={quote(room, safe='')}"


def test_overview_groups_tiles_by_room_and_device_and_updates_them(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    page = signed_in_page(overview_of(unique_room))
    device, _ = lab.device
    publish_value(lab, unique_room, "temperature", "20")
    publish_value(lab, unique_room, "humidity", "41")
    card = page.locator(
        f'section.room[data-room="{unique_room}"] article.device[data-device="{unique_room}/{device}"]'
    )
    expect(card.locator(f'[data-key="{unique_room}/{device}/temperature"] .value')).to_have_text(
        "20", timeout=LIVE_MS
    )
    expect(card.locator(".tile .attr")).to_have_text(["humidity", "temperature"])
    publish_value(lab, unique_room, "temperature", "21.5")
    expect(card.locator(f'[data-key="{unique_room}/{device}/temperature"] .value')).to_have_text(
        "21.5", timeout=LIVE_MS
    )
    expect(card).to_have_attribute("data-offline", "false")
    expect(card.locator(".seen")).to_contain_text("last seen")
    card.get_by_role("link", name=device).click()
    expect(page).to_have_url(f"{lab.portal_url}{device_path(unique_room, device)}")


def test_the_table_view_lists_devices_offline_first_and_keeps_them_live(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    publish_value(lab, unique_room, "temperature", "20")
    publish_value(lab, unique_room, "temperature", {"value": 19, "ts": ten_minutes_ago}, device="quiet")
    time.sleep(0.3)  # the quiet one is stored last: by name it comes first, by silence too
    page = signed_in_page(overview_of(unique_room))
    expect(page.locator(f'article.device[data-device="{unique_room}/{device}"]')).to_have_count(
        1, timeout=LIVE_MS
    )
    page.select_option("#view", "table")
    page.select_option("#sort", "offline")
    rows = page.locator("table.devices-table tbody tr")
    expect(rows).to_have_count(2, timeout=LIVE_MS)
    assert "view=table" in page.url and "sort=offline" in page.url
    expect(rows.nth(0)).to_have_attribute("data-device", f"{unique_room}/{device}")  # seen before quiet
    expect(rows.nth(1).locator(".tile .value")).to_have_text("19")
    publish_value(lab, unique_room, "temperature", "21.5")
    expect(rows.nth(0).locator(f'[data-key="{unique_room}/{device}/temperature"] .value')).to_have_text(
        "21.5", timeout=LIVE_MS
    )
    expect(rows.nth(0).locator(".tile .unit")).to_have_text("°C")
    page.reload()
    expect(page.locator("#view")).to_have_value("table")
    expect(page.locator("table.devices-table tbody tr")).to_have_count(2, timeout=LIVE_MS)


def test_a_silent_device_gets_an_offline_badge(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    publish_value(lab, unique_room, "temperature", {"value": 19, "ts": ten_minutes_ago})
    page = signed_in_page(overview_of(unique_room))
    card = page.locator(f'article.device[data-device="{unique_room}/{device}"]')
    expect(card).to_have_attribute("data-offline", "true", timeout=LIVE_MS)
    expect(card.locator(".badge.offline")).to_be_visible()
    expect(card.locator(".seen")).to_have_text("last seen 10 min ago")
    publish_value(lab, unique_room, "temperature", "20")
    expect(card).to_have_attribute("data-offline", "false", timeout=LIVE_MS)
    expect(card.locator(".badge.offline")).to_be_hidden()


def test_presence_shows_a_device_that_left_as_stopped_and_one_that_was_lost_as_offline(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    publish_value(lab, unique_room, "temperature", {"value": 19, "ts": ten_minutes_ago})
    publish_value(lab, unique_room, "$state", {"value": "offline", "ts": ten_minutes_ago + 1})
    overview = signed_in_page(overview_of(unique_room))
    card = overview.locator(f'article.device[data-device="{unique_room}/{device}"]')
    expect(card).to_have_attribute("data-presence", "stopped", timeout=LIVE_MS)
    expect(card.locator(".badge.stopped")).to_be_visible()
    expect(card.locator(".badge.offline")).to_be_hidden()
    expect(card).to_have_attribute("data-offline", "false")
    expect(card.locator(".tile")).to_have_count(1)  # presence is not an attribute

    page = signed_in_page(device_path(unique_room, device))
    head = page.locator("#device")
    expect(head).to_have_attribute("data-presence", "stopped", timeout=LIVE_MS)
    expect(head.locator(".badge.stopped")).to_be_visible()

    publish_value(lab, unique_room, "$state", "lost")
    for where in (card, head):
        expect(where).to_have_attribute("data-presence", "offline", timeout=LIVE_MS)
        expect(where.locator(".badge.offline")).to_be_visible()
        expect(where.locator(".badge.stopped")).to_be_hidden()


def test_a_reloaded_listing_keeps_the_newer_live_values(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    """A new device anywhere reloads the listing, which the database answers: it may not hold yet
    the value that just arrived live. The page keeps the newer value (and the device online)."""
    device, _ = lab.device
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    publish_value(lab, unique_room, "temperature", {"value": 19, "ts": ten_minutes_ago})
    page = signed_in_page(overview_of(unique_room))
    card = page.locator(f'article.device[data-device="{unique_room}/{device}"]')
    value = card.locator(f'[data-key="{unique_room}/{device}/temperature"] .value')
    expect(value).to_have_text("19", timeout=LIVE_MS)
    expect(card).to_have_attribute("data-offline", "true")
    stale = page.request.get(f"{lab.portal_url}/api/devices?q={quote(unique_room)}&limit=48").json()
    stale["total"] = 7  # shows on the page once the stale listing is drawn
    page.route("**/api/devices?*", lambda route: route.fulfill(json=stale))

    publish_value(lab, unique_room, "temperature", "20")
    expect(value).to_have_text("20", timeout=LIVE_MS)
    publish_value(lab, f"room-{uuid.uuid4().hex[:8]}", "temperature", "1")  # a new device: a reload
    expect(page.locator("#page-count")).to_have_text("1\u20131 of 7 devices", timeout=LIVE_MS)
    expect(value).to_have_text("20")
    expect(card).to_have_attribute("data-offline", "false")


# The overview's zero-delay timeouts (it yields with one between the parts of a page it draws) wait
# until RELEASE_TIMEOUTS: the page stays in the middle of a drawing meanwhile. Those of other
# scripts (Socket.IO's) run as usual.
HOLD_TIMEOUTS = """() => {
  if (window.__heldTimeouts === undefined) {
    const setTimeoutNow = window.setTimeout;
    window.__heldTimeouts = [];
    window.__setTimeoutNow = setTimeoutNow;
    window.setTimeout = function (callback, delay, ...rest) {
      if (window.__holdTimeouts && !delay && new Error().stack.includes("/static/live.js")) {
        window.__heldTimeouts.push(function () { callback(...rest); });
        return 0;
      }
      return setTimeoutNow(callback, delay, ...rest);
    };
  }
  window.__holdTimeouts = true;
}"""
RELEASE_TIMEOUTS = """() => new Promise(function (done) {
  window.__holdTimeouts = false;
  for (const run of window.__heldTimeouts.splice(0)) {
    window.__setTimeoutNow(run, 0);
  }
  window.__setTimeoutNow(done, 0);  // after them (the same delay runs in order)
})"""


def test_a_page_drawn_in_parts_keeps_live_values_and_gives_way_to_a_newer_search(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    """The overview draws a page of 48 devices 12 at a time, other tasks running in between: a live
    value that arrives for a device not drawn yet shows once it is drawn, and a search made before
    the drawing ends shows its own devices only, never a mix with the abandoned page's."""
    root, (device, _) = lab.env["TOPIC_ROOT"], lab.device
    other_room = f"room-{uuid.uuid4().hex[:8]}"  # not matched by a search for unique_room
    names = [f"d{number:02d}" for number in range(48)]
    publish_as(lab, "MQTT_ADMIN", [(f"{root}/{unique_room}/{name}/temperature", "19") for name in names])
    publish_value(lab, other_room, "temperature", "20")
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )

    def listed(room: str) -> int:
        answer = session.get(f"{lab.portal_url}/api/devices?q={quote(room)}&limit=1", timeout=5)
        return int(answer.json()["total"])

    wait_for("48 devices stored", lambda: listed(unique_room) == 48 and listed(other_room) == 1)
    # the 48 subscriptions may leave on HTTP long-polling, before Socket.IO moves to its WebSocket:
    # in one request, which the portal takes whole (tests/web/test_live_polling.py)
    page = signed_in_page(overview_of(other_room))
    page.fill("#filter", unique_room)
    expect(page.locator(f'section.room[data-room="{unique_room}"] article.device')).to_have_count(
        48, timeout=LIVE_MS
    )

    page.evaluate(HOLD_TIMEOUTS)
    page.select_option("#view", "table")  # the same devices again, its subscriptions unchanged
    rows = page.locator("table.devices-table tbody tr")
    expect(rows).to_have_count(12, timeout=LIVE_MS)  # the first part, the rest waiting
    expect(page.locator("#page-count")).to_have_text("1\u201348 of 48 devices")
    publish_as(
        lab,
        "MQTT_ADMIN",
        [(f"{root}/{unique_room}/d30/temperature", "25"), (f"{root}/{unique_room}/d05/temperature", "26")],
    )
    expect(page.locator(f'tr[data-device="{unique_room}/d05"] .value')).to_have_text("26", timeout=LIVE_MS)
    expect(rows).to_have_count(12)  # d30's value arrived (before d05's) while d30 was not drawn
    page.evaluate(RELEASE_TIMEOUTS)
    expect(rows).to_have_count(48, timeout=LIVE_MS)
    expect(page.locator(f'tr[data-device="{unique_room}/d30"] .value')).to_have_text("25")

    page.evaluate(HOLD_TIMEOUTS)
    page.select_option("#view", "tiles")
    expect(page.locator("[data-device]")).to_have_count(12, timeout=LIVE_MS)
    page.fill("#filter", other_room)
    expect(page.locator("#page-count")).to_have_text("1\u20131 of 1 device", timeout=LIVE_MS)
    page.evaluate(RELEASE_TIMEOUTS)  # the abandoned drawing's next part would come now
    expect(page.locator("[data-device]")).to_have_count(1)
    expect(page.locator(f'[data-key="{other_room}/{device}/temperature"] .value')).to_have_text("20")


def test_charts_round_to_the_attributes_precision_and_show_its_unit_and_dates(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    now = int(time.time() * 1000)
    bucket_start = (now - 600_000) // 15_000 * 15_000  # three values in one 15 s bucket of the 1 h view
    for offset, value in ((1000, 37.5), (2000, 37.6), (3000, 37.8)):
        publish_value(lab, unique_room, "humidity", {"value": value, "ts": bucket_start + offset})
    two_days_ago = now - 2 * 86_400_000
    publish_value(lab, unique_room, "humidity", {"value": 41.2, "ts": two_days_ago})
    time.sleep(0.5)  # stored before the page asks
    page = signed_in_page(device_path(unique_room, device))
    panel = page.locator('section.attr-panel[data-attr="humidity"]')
    expect(panel.locator("header .unit")).to_have_text("%", timeout=LIVE_MS)  # web/units.json
    expect(panel.locator("table.history thead th").nth(1)).to_have_text("Average (%)")
    rows = panel.locator("table.history tbody tr")
    expect(rows).to_have_count(1, timeout=LIVE_MS)
    expect(rows.first.locator("td").nth(1)).to_have_text("37.6")  # not 37.6333
    legend = panel.locator(".u-legend .u-series").nth(1).locator(".u-value")
    expect(legend).to_have_text("37.6 %")  # the newest values while the cursor is away, not "--"

    page.get_by_label("7 d").check()
    expect(rows).to_have_count(2, timeout=LIVE_MS)
    old_time = rows.last.locator("time")
    expect(old_time).to_contain_text(time.strftime("%Y", time.localtime(two_days_ago / 1000)))


def test_the_values_in_the_range_download_as_csv(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    now = int(time.time() * 1000)
    for minutes, value in ((30, 18.5), (20, 19.5), (10, 20.5)):
        publish_value(lab, unique_room, "temperature", {"value": value, "ts": now - minutes * 60_000})
    time.sleep(0.5)  # stored before the page asks
    page = signed_in_page(device_path(unique_room, device))
    panel = page.locator('section.attr-panel[data-attr="temperature"]')
    expect(panel.locator("table.history tbody tr")).to_have_count(3, timeout=LIVE_MS)
    with page.expect_download() as downloading:
        panel.get_by_role("link", name="Download the values of temperature in the time range as CSV").click()
    download = downloading.value
    assert download.suggested_filename == f"{unique_room}-{device}-temperature.csv"
    lines = Path(download.path()).read_text().splitlines()
    assert lines[0] == "ts,time,value"
    assert [line.split(",")[2] for line in lines[1:]] == ["18.5", "19.5", "20.5"]


def test_a_device_is_removed_from_its_page_after_confirmation(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    publish_value(lab, unique_room, "temperature", "20")
    overview = signed_in_page(overview_of(unique_room))
    card = overview.locator(f'article.device[data-device="{unique_room}/{device}"]')
    expect(card).to_have_count(1, timeout=LIVE_MS)

    page = signed_in_page(device_path(unique_room, device))
    expect(page.locator('section.attr-panel[data-attr="temperature"]')).to_have_count(1, timeout=LIVE_MS)
    questions: list[str] = []

    def answer(accept: bool) -> Callable[[Dialog], None]:
        def on_dialog(dialog: Dialog) -> None:
            questions.append(dialog.message)
            if accept:
                dialog.accept()
            else:
                dialog.dismiss()

        return on_dialog

    page.once("dialog", answer(False))
    page.get_by_role("button", name="Remove device").click()
    expect(page.get_by_role("button", name="Remove device")).to_be_enabled()
    assert questions == [
        f"Remove {device} of {unique_room} with all its values, history and alarms? "
        "If it publishes again it comes back as a new device."
    ]
    expect(card).to_have_count(1)

    page.once("dialog", answer(True))
    page.get_by_role("button", name="Remove device").click()
    expect(page).to_have_url(f"{lab.portal_url}{overview_of(unique_room)}", timeout=LIVE_MS)
    expect(page.locator("article.device")).to_have_count(0)
    expect(card).to_have_count(0, timeout=LIVE_MS)  # the other page heard of it live
    expect(overview.locator("#page-count")).to_have_text("no device matches")


def test_device_page_shows_history_and_appends_live_values(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    now = int(time.time() * 1000)
    past = [(now - minutes * 60_000, 10.0 + minutes) for minutes in (40, 30, 20)]
    for ts, value in past:
        publish_value(lab, unique_room, "temperature", {"value": value, "ts": ts})
    publish_value(lab, unique_room, "door", {"value": "open", "ts": now - 50 * 60_000})
    publish_value(lab, unique_room, "door", {"value": "closed", "ts": now - 5 * 60_000})
    time.sleep(0.5)  # stored before the page asks for history

    page = signed_in_page(device_path(unique_room, device))
    panel = page.locator('section.attr-panel[data-attr="temperature"]')
    rows = panel.locator("table.history tbody tr")
    expect(rows).to_have_count(3, timeout=LIVE_MS)
    for (_ts, value), row in zip(reversed(past), rows.all(), strict=True):
        expect(row.locator("td").nth(1)).to_have_text(f"{value:g}")
    expect(panel.locator(".chart canvas")).to_have_count(1)
    expect(panel.locator(".panel-status")).to_contain_text("buckets of 15 s")
    text_panel = page.locator('section.attr-panel[data-attr="door"]')
    expect(text_panel.locator("ol.recent li .text-value")).to_have_text(["closed", "open"])

    publish_value(lab, unique_room, "temperature", "33.5")
    expect(panel.locator("header .value")).to_have_text("33.5", timeout=LIVE_MS)
    expect(rows).to_have_count(4)
    expect(rows.first.locator("td").nth(1)).to_have_text("33.5")


def test_device_page_range_picker_reloads_history(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device, _ = lab.device
    now = int(time.time() * 1000)
    publish_value(lab, unique_room, "temperature", {"value": 1, "ts": now - 3 * 3600_000})
    publish_value(lab, unique_room, "temperature", {"value": 2, "ts": now - 60_000})
    time.sleep(0.5)
    page = signed_in_page(device_path(unique_room, device))
    rows = page.locator('section.attr-panel[data-attr="temperature"] table.history tbody tr')
    expect(rows).to_have_count(1, timeout=LIVE_MS)  # the last hour
    page.get_by_label("6 h").check()
    expect(rows).to_have_count(2, timeout=LIVE_MS)
    page.get_by_label("custom").check()
    page.fill("#from", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((now - 4 * 3600_000) / 1000)))
    page.fill("#to", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((now - 2 * 3600_000) / 1000)))
    page.get_by_role("button", name="Show").click()
    expect(rows).to_have_count(1, timeout=LIVE_MS)
    expect(rows.first.locator("td").nth(1)).to_have_text("1")


def test_alarm_appears_live_and_can_be_acknowledged_and_cleared(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    page = signed_in_page("/alarms")
    alarm_type = f"overheat{uuid.uuid4().hex[:6]}"
    publish_alarm(lab, unique_room, "boiler", alarm_type)
    row = page.locator("#alarm-rows tr", has=page.locator("td.type", has_text=alarm_type))
    expect(row).to_have_count(1, timeout=LIVE_MS)
    expect(row).to_have_attribute("data-state", "active")
    expect(page.locator("#alarm-count")).to_be_visible()

    row.get_by_role("button", name=f"Acknowledge {alarm_type} on boiler in {unique_room}").click()
    expect(row).to_have_attribute("data-acked", "true", timeout=LIVE_MS)
    expect(row.locator("button.ack")).to_be_disabled()
    alarm_id = row.get_attribute("data-alarm-id")
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    stored = {a["id"]: a for a in session.get(f"{lab.portal_url}/api/alarms", timeout=5).json()["alarms"]}
    assert stored[int(alarm_id or 0)]["acked_by"] == lab.env["PORTAL_ADMIN_USER"]

    row.get_by_role("button", name=f"Clear {alarm_type} on boiler in {unique_room}").click()
    expect(row).to_have_count(0, timeout=LIVE_MS)  # the page shows active alarms
    page.select_option("#state", "cleared")
    expect(row).to_have_attribute("data-state", "cleared", timeout=LIVE_MS)


def test_names_from_topics_render_as_text_everywhere(
    signed_in_page: OpenPage, lab: RunningLab, unique_room: str
) -> None:
    device = "<script>"  # a topic level cannot hold "</script>": it has a "/"
    attr = "<img src=x onerror=window.pwned=1>"
    publish_value(lab, unique_room, attr, "<b>bold</b>", device=device)
    publish_alarm(lab, unique_room, device, "hot", value="<img src=x onerror=window.pwned=2>")
    for path in (overview_of(unique_room), device_path(unique_room, device), "/alarms"):
        page = signed_in_page(path)
        if path.startswith("/?"):
            tile = page.locator(f'[data-key="{unique_room}/{device}/{attr}"] .value')
            expect(tile).to_have_text("<b>bold</b>", timeout=LIVE_MS)
            expect(page.get_by_role("link", name=device)).to_be_visible()
        elif path == "/alarms":
            # this room's row (other tests' hostile rooms may have alarms of their own by now)
            row = page.locator("#alarm-rows tr", has=page.locator("td", has_text=unique_room))
            expect(row.locator("td", has_text="<img src=x")).to_have_count(1, timeout=LIVE_MS)
        else:
            expect(page.locator("h2", has_text=device)).to_be_visible()
            expect(page.locator(f'section.attr-panel[data-attr="{attr}"] header .value')).to_have_text(
                "<b>bold</b>", timeout=LIVE_MS
            )
        assert page.evaluate("window.pwned === undefined")
        assert page.locator("img[src=x]").count() == 0
        assert page.locator("main b").count() == 0


@pytest.mark.parametrize("path", ["/", "/alarms", "/device/lab/sensor1"])
def test_pages_fit_a_phone_screen(signed_in_page: OpenPage, lab: RunningLab, path: str) -> None:
    publish_value(lab, "lab", "temperature", "21")
    page = signed_in_page(path, width=375, height=812)
    page.wait_for_timeout(500)  # let the live data and charts lay out
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
