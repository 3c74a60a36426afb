"""Chromium through the front of two portal replicas (PORTAL_REPLICAS=2), as a user opens the lab:
the page's Socket.IO connection starts with long polling, so it works only if the front keeps it
on one replica; every page sees every value whichever replica stored it; a page whose replica is
killed moves to the other by itself; Redis stopped shows in the header and live updates come back
when it returns."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from labctl.config import LabConfig
from tests.conftest import RunningLab, own_lab
from tests.e2e.conftest import new_signed_in_page
from tests.web.portal_testing import publish_as

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: socket.io-client retries with a back-off of up to 5 s; HAProxy drops a dead replica within 2 s.
RECONNECT_MS = 20_000
DEVICES = 40


@pytest.fixture
def replica_lab(new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    services = ("db", "mosquitto", "redis", "web-1", "web-2", "front")
    with own_lab(new_lab_config, "replicas-browser", services, PORTAL_REPLICAS="2") as lab:
        yield lab


def open_page(browser: Browser, lab: RunningLab) -> Page:
    """A new browser (its own cookies) signed in at the overview, through the front."""
    page = new_signed_in_page(browser, lab)
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    return page


def replica_of(page: Page) -> str:
    """The replica the page's live connection is on, as its header's tooltip names it."""
    title = page.locator("#status").get_attribute("title") or ""
    assert title.startswith("portal replica web-"), title
    return title.removeprefix("portal replica ")


def pages_on_both(browser: Browser, lab: RunningLab) -> list[Page]:
    """Browsers until one is on each replica (the front deals them out in turn)."""
    pages: list[Page] = []
    while {"web-1", "web-2"} - {replica_of(page) for page in pages}:
        assert len(pages) < 5, "the front put every browser on one replica"
        pages.append(open_page(browser, lab))
    return pages


def send(lab: RunningLab, room: str, value: str) -> None:
    """One value from each of DEVICES devices (the replicas share them out)."""
    root = lab.env["TOPIC_ROOT"]
    publish_as(lab, "LAB_FLEET", [(f"{root}/{room}/d{n:02d}/t", value) for n in range(DEVICES)])


def expect_everywhere(pages: list[Page], room: str, value: str, timeout: int = 10_000) -> None:
    for page in pages:
        for n in range(DEVICES):
            tile = page.locator(f'[data-key="{room}/d{n:02d}/t"] .value')
            expect(tile).to_have_text(value, timeout=timeout)


def test_pages_through_the_front_see_every_value_and_survive_a_replica_and_redis(
    browser: Browser, replica_lab: RunningLab, unique_room: str
) -> None:
    lab = replica_lab
    pages = pages_on_both(browser, lab)
    try:
        send(lab, unique_room, "1")
        expect_everywhere(pages, unique_room, "1")

        # A replica dies: its pages reconnect through the front, to the other one.
        killed = replica_of(pages[0])
        lab.lab.table.stop(killed, signal.SIGKILL)
        for page in pages:
            expect(page.locator("#status")).to_have_text("live", timeout=RECONNECT_MS)
            expect(page.locator("#status")).not_to_have_attribute("title", f"portal replica {killed}")
        send(lab, unique_room, "2")
        expect_everywhere(pages, unique_room, "2", RECONNECT_MS)

        # Redis stopped: the header says live updates paused; values are still stored.
        lab.lab.stop("redis")
        for page in pages:
            expect(page.locator("#status")).to_have_attribute("data-state", "degraded", timeout=10_000)
            expect(page.locator("#status")).to_contain_text("live updates paused (Redis")
        send(lab, unique_room, "3")
        lab.lab.start("redis")
        for page in pages:
            expect(page.locator("#status")).to_have_text("live", timeout=RECONNECT_MS)
        expect_everywhere(pages, unique_room, "3")  # the fresh snapshot after Redis came back
    finally:
        for page in pages:
            page.context.close()
