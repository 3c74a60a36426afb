"""Fixtures for end-to-end tests: a signed-in requests session, Socket.IO clients, Chromium pages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import socketio
from playwright.sync_api import Browser, Page, expect

from tests.chromium import launched
from tests.conftest import RunningLab
from tests.web.portal_testing import signed_in_session


def portal_cookie(lab: RunningLab) -> str:
    """A signed-in session's Cookie header for the lab's portal."""
    session = signed_in_session(
        lab.portal_url, lab.env["PORTAL_ADMIN_USER"], lab.env["PORTAL_ADMIN_PASSWORD"]
    )
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


@dataclass
class LiveClient:
    """A python-socketio client that records every event it receives."""

    client: socketio.Client
    events: list[tuple[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, name: str, payload: Any) -> None:
        with self.changed:
            self.events.append((name, payload))
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[str, Any]]], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate(events)` holds; fails with what arrived after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"condition not met within {timeout}s; events: {self.events!r}"[:2000]
                    )
                self.changed.wait(remaining)

    def values(self, name: str = "values") -> list[dict[str, Any]]:
        """Every value object received in events called `name`."""
        with self.changed:
            return [value for event, payload in self.events if event == name for value in payload]


@pytest.fixture
def live_client(lab: RunningLab) -> Iterator[Callable[..., LiveClient]]:
    """Factory: a signed-in Socket.IO client connected to the lab's portal (closed after the test)."""
    cookie = portal_cookie(lab)
    made: list[LiveClient] = []

    def connect(auth: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> LiveClient:
        live = LiveClient(socketio.Client(reconnection=False))
        for name in ("snapshot", "values", "error", "alarm"):
            live.client.on(name, lambda payload, name=name: live.record(name, payload))
        live.client.connect(
            lab.portal_url,
            headers={"Cookie": cookie} if headers is None else headers,
            auth=auth,
            transports=["websocket"],
            wait_timeout=5,
        )
        made.append(live)
        return live

    yield connect
    for live in made:
        live.client.disconnect()


def new_signed_in_page(browser: Browser, lab: RunningLab, path: str = "/") -> Page:
    """A page of a new browser context (its own cookies), signed in to ``lab``'s portal and sent on to
    ``path`` (not waiting for its live connection)."""
    page = browser.new_context().new_page()
    page.goto(f"{lab.portal_url}/login?next={quote(path)}")
    page.fill("input[name=username]", lab.env["PORTAL_ADMIN_USER"])
    page.fill("input[name=password]", lab.env["PORTAL_ADMIN_PASSWORD"])
    page.click("button[type=submit]")
    return page


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def signed_in_page(browser: Browser, lab: RunningLab) -> Iterator[Callable[..., Page]]:
    """Factory: a new browser page, signed in, at `path` (a phone-sized one with `width=375`).

    After the test, no page may have thrown a JavaScript error.
    """
    contexts = []
    errors: list[str] = []

    def open_page(path: str = "/", width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{path}: {error}"))
        page.goto(f"{lab.portal_url}/login?next={quote(path)}")
        page.fill("input[name=username]", lab.env["PORTAL_ADMIN_USER"])
        page.fill("input[name=password]", lab.env["PORTAL_ADMIN_PASSWORD"])
        page.click("button[type=submit]")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=10_000)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], "JavaScript errors on the page"
