"""A flood of new names from one account: 21,000 invented device names, and the lab stays light.

Against a lab of its own (database, broker, portal), with the cap on devices per room at 5,000:
one publisher with the fleet account invents 15,000 devices over 15 rooms and 6,000 in one more
room. The 5,000 that fit in that room and all of the others are kept (20,000), the other 1,000 are
refused and counted; then every answer stays small and quick, the overview shows one page and
subscribes to it alone, a viewer of the whole site gets a bounded snapshot in pages, and the
portal's memory stays within its stated bound.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, expect

from labctl.config import LabConfig
from tests.conftest import RunningLab, own_lab
from tests.web.live_clients import RawViewer
from tests.web.portal_testing import signed_in_session
from web.live import SNAPSHOT_MAX, SNAPSHOT_PAGE

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOMS, PER_ROOM = 15, 1000
CROWDED, CROWD = "crowded", 6000
ROOM_CAP = 5000
KEPT = ROOMS * PER_ROOM + ROOM_CAP
#: Every answer of the API, with 20,000 devices: at most this long, and this big.
ANSWER_S = 0.2
ANSWER_BYTES = 512 * 1024
#: The portal's memory for 20,000 kept devices (one attribute each), over its memory before.
MEMORY_PER_DEVICE_KIB = 4


def worker_rss_kib(lab: RunningLab) -> int:
    master = lab.lab.table.pid("web")
    assert master is not None
    worker = Path(f"/proc/{master}/task/{master}/children").read_text().split()[0]
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(session: requests.Session, lab: RunningLab, name: str, labels: str = "") -> float:
    for line in session.get(f"{lab.portal_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.split()[-1])
    return 0.0


def flood(lab: RunningLab) -> None:
    client = lab.mqtt_client(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", lab.port("MQTT_PORT"))
    client.loop_start()
    names = [(f"room-{room:02d}", f"dev-{index:05d}") for room in range(ROOMS) for index in range(PER_ROOM)]
    names += [(CROWDED, f"dev-{index:05d}") for index in range(CROWD)]
    infos = [client.publish(f"office/{room}/{device}/temperature", "21.5", qos=1) for room, device in names]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def subscriptions(packets: list[str]) -> list[dict[str, str]]:
    """The scopes of the ``subscribe`` events among Engine.IO packets."""
    return [json.loads(packet[2:])[1] for packet in packets if packet.startswith('42["subscribe"')]


def timed_get(
    session: requests.Session, url: str, params: dict[str, str | int]
) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    response = session.get(url, params=params, timeout=30)
    return time.perf_counter() - started, response


def test_twenty_thousand_new_names_keep_every_answer_small_and_quick(
    new_lab_config: Callable[..., LabConfig], browser: Browser
) -> None:
    with own_lab(
        new_lab_config, "flood", ("db", "mosquitto", "web"), PORTAL_MAX_DEVICES_PER_ROOM=str(ROOM_CAP)
    ) as lab:
        session = signed_in_session(
            lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
        )
        time.sleep(1)
        memory_before = worker_rss_kib(lab)

        flood(lab)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = session.get(f"{lab.portal_url}/api/devices", params={"limit": 1}, timeout=30).json()[
                "total"
            ]
            if stored >= KEPT:
                break
            time.sleep(0.5)
        assert stored == KEPT, "every device under the caps is kept, no more"
        assert metric(session, lab, "portal_devices") == KEPT
        refused = metric(session, lab, "portal_ingest_rejected_total", '{reason="device_limit"}')
        assert refused == CROWD - ROOM_CAP
        log = (lab.config.logs_dir / "web.log").read_text()
        assert log.count("PORTAL_MAX_DEVICES_PER_ROOM") == 1, "the cap is logged once, not per reading"

        # Every answer is a bounded page, and quick.
        pages_to_ask: list[tuple[str, dict[str, str | int], int]] = [
            ("/api/devices", {}, 64 * 1024),
            ("/api/devices", {"q": "dev-0099"}, 64 * 1024),
            ("/api/devices", {"room": CROWDED, "limit": 1000}, ANSWER_BYTES),
            ("/api/latest", {}, ANSWER_BYTES),
            ("/api/latest", {"limit": 5000}, 4 * ANSWER_BYTES),
        ]
        for path, params, largest in pages_to_ask:
            times = []
            for _ in range(5):
                elapsed, response = timed_get(session, f"{lab.portal_url}{path}", params)
                assert response.status_code == 200, response.text
                assert len(response.content) < largest, f"{path} {params}: {len(response.content)} bytes"
                times.append(elapsed)
            assert statistics.median(times) < ANSWER_S, f"{path} {params}: {times}"

        # A viewer of the whole site gets a bounded snapshot, in pages.
        cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
        viewer = RawViewer(lab.portal_url, cookie, [{"scope": "site"}])
        received: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(n == "snapshot_truncated" for n, _ in received):
            received += viewer.events(viewer.read(1.0))
        viewer.close()
        pages = [values for name, values in received if name == "snapshot"]
        assert sum(map(len, pages)) == SNAPSHOT_MAX and max(map(len, pages)) == SNAPSHOT_PAGE
        assert ("snapshot_truncated", {"scope": {"scope": "site"}, "sent": SNAPSHOT_MAX}) in received

        # The overview shows one page and subscribes to that page alone.
        page = browser.new_page()
        sent: list[str] = []  # Engine.IO packets the page sent, over either transport
        page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(str(payload))))
        page.on(
            "request",
            lambda request: (
                sent.extend((request.post_data or "").split("\x1e"))
                if request.method == "POST" and "/socket.io/" in request.url
                else None
            ),
        )
        try:
            page.goto(f"{lab.portal_url}/login")
            page.fill("input[name=username]", lab.env["PORTAL_ADMIN_USER"])
            page.fill("input[name=password]", lab.env["PORTAL_ADMIN_PASSWORD"])
            page.click("button[type=submit]")
            expect(page.locator("#page-count")).to_have_text(f"1\u201348 of {KEPT:,} devices", timeout=10_000)
            expect(page.locator("article.device")).to_have_count(48)
            expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=10_000)
            deadline = time.monotonic() + 10
            while len(subscriptions(sent)) < 48 and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            page.wait_for_timeout(300)  # and nothing more
            scopes = subscriptions(sent)
            assert len(scopes) == 48 and all(scope["scope"] == "device" for scope in scopes)
            page.click("#page-next")
            second_page = f"49\u201396 of {KEPT:,} devices"
            expect(page.locator("#page-count")).to_have_text(second_page, timeout=10_000)
        finally:
            page.close()

        memory_after = worker_rss_kib(lab)
        grown = memory_after - memory_before
        assert grown < MEMORY_PER_DEVICE_KIB * KEPT, f"{grown} KiB for {KEPT} devices"
