"""``stress dashboard`` in Chromium: a real run drawn live with uPlot, its cards and hover legend,
and the finished run from its folder."""

from __future__ import annotations

import csv
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.chromium import launched
from tests.stress import test_dashboard as dashboard_tests
from tests.stress.plain_broker import PlainBroker

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# The Socket.IO tests' fixtures, made this module's so that pytest finds them by name
env = dashboard_tests.env
dashboard = dashboard_tests.dashboard

OpenPage = Callable[..., Page]

#: The rate chart's lines at QoS 1 by legend label, in order, and the key of a second each reads.
RATE_LINES = {
    "time": "t",
    "written": "sent",
    "acknowledged": "acked",
    "failed": "failed",
    "offered": "offered",
}

#: Chart ``name``'s data by legend label ("time" for the seconds).
DRAWN = """name => {
  const plot = window.charts[name].plot;
  return Object.fromEntries(plot.series.map((series, i) => [series.label, plot.data[i]]));
}"""
#: What the rate chart's legend shows and the data under the cursor, or null away from it.
HOVERED = """() => {
  const plot = window.charts.rate.plot;
  const idx = plot.cursor.idx;
  if (idx === null || idx === undefined) return null;
  const values = [...document.querySelectorAll("#rate-chart .u-legend .u-value")].map((e) => e.textContent);
  return { values, at: plot.data.map((column) => column[idx]) };
}"""
#: The cards' text, with the second they show (the newest one drawn).
CARDS = """() => {
  const text = (id) => document.getElementById(id).textContent;
  const ids = ["offered", "written", "acked", "connected", "failed", "latency-label", "latency", "generator"];
  const newest = window.charts.rate.plot.data[0].at(-1);
  return { t: newest, ...Object.fromEntries(ids.map((id) => [id, text(id)])) };
}"""
#: The rate chart narrower than ``wide`` px and as wide as its box.
FITS_NARROWER = """wide => {
  const width = window.charts.rate.plot.width;
  return width < wide && width === Math.floor(document.getElementById("rate-chart").clientWidth);
}"""
#: Mean brightness (0-255) of the opaque pixels under the rate chart's plot: its x axis's ticks.
AXIS_INK = """() => {
  const plot = window.charts.rate.plot;
  const canvas = plot.ctx.canvas;
  const top = Math.ceil(plot.bbox.top + plot.bbox.height) + 2;
  const pixels = plot.ctx.getImageData(0, top, canvas.width, canvas.height - top).data;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] > 200) {
      sum += (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3;
      count += 1;
    }
  }
  return count ? sum / count : null;
}"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with launched() as browser:
        yield browser


@pytest.fixture
def open_page(chromium: Browser, dashboard: int) -> Iterator[OpenPage]:
    """Factory: a new page at the dashboard. After the test, no page may have logged an error."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def keep_error(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def open_one(color_scheme: Literal["light", "dark"] = "light") -> Page:
        context = chromium.new_context(
            viewport={"width": 1280, "height": 900}, locale="en-US", color_scheme=color_scheme
        )
        contexts.append(context)
        page = context.new_page()
        page.on("console", keep_error)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{dashboard}/")
        return page

    yield open_one
    for context in contexts:
        context.close()
    assert errors == [], "errors on the page"


def drawn(page: Page, name: str) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = page.evaluate(DRAWN, name)
    return data


def folder_rows(folder: Path) -> list[dict[str, int]]:
    """The run folder's seconds: the counts of ``timeseries.csv``."""
    counts = ("t", "offered", "sent", "acked", "failed", "connected", "fleet")
    with (folder / "timeseries.csv").open(newline="", encoding="utf-8") as file:
        return [{name: int(row[name]) for name in counts} for row in csv.DictReader(file)]


def figures(text: str) -> list[float | None]:
    """A card's "1,234.5 % / - ms" as [1234.5, None]."""
    parts = [part.split()[0] for part in text.split(" / ")]
    return [None if part == "-" else float(part.replace(",", "")) for part in parts]


def assert_charts_have_axes(page: Page) -> None:
    charts = page.locator(".chart .uplot")
    expect(charts).to_have_count(3)
    for index in range(3):
        expect(charts.nth(index).locator("canvas")).to_have_count(1)
        expect(charts.nth(index).locator(".u-axis")).to_have_count(2)


def assert_axes_ticked(page: Page) -> None:
    """The rate chart's ticks as the dashboard writes them: seconds on x, compact figures on y."""
    ticks = page.evaluate("() => window.charts.rate.plot.axes.map((axis) => axis._values)")
    assert ticks[0], "no x ticks"
    assert all(tick.endswith(" s") and tick[:-2].isdigit() for tick in ticks[0]), ticks[0]
    assert ticks[1], "no y ticks"
    assert all(tick.replace(".", "").rstrip("kM").isdigit() for tick in ticks[1]), ticks[1]
    assert page.evaluate("() => window.charts.rate.plot.axes[1].label") == "msg/s"


def assert_hover_shows_the_second(page: Page) -> None:
    """Away from the chart the legend has no figures; over it, those of the second under the cursor."""
    values = page.locator("#rate-chart .u-legend .u-value")
    assert not any(any(c.isdigit() for c in text) for text in values.all_text_contents())
    plot = page.locator("#rate-chart .u-over")
    box = plot.bounding_box()
    assert box is not None
    plot.hover(position={"x": box["width"] * 0.7, "y": box["height"] / 2})
    hovered = page.wait_for_function(HOVERED, timeout=5_000).json_value()
    t, *counts = hovered["at"]
    assert hovered["values"] == [f"{t} s", *(f"{count:,}" for count in counts)]


def assert_cards_show(page: Page, pushed: Callable[[int], dict[str, Any]]) -> None:
    """The cards show the newest second drawn, as the dashboard pushed it to another client."""
    cards = page.evaluate(CARDS)
    second = pushed(cards["t"])
    assert cards["offered"] == f"{second['offered']:,}"
    assert cards["written"] == f"{second['sent']:,}"
    assert cards["acked"] == f"{second['acked']:,}"
    assert cards["connected"] == f"{second['connected']:,} / {second['fleet']:,}"
    assert cards["failed"] == f"{second['failed']:,}"
    assert cards["latency-label"] == "publish to ack p50 / p99 (ms)"
    # figures are shown with two decimals at most
    latency = [second["ack_p50_ms"], second["ack_p99_ms"]]
    assert figures(cards["latency"]) == pytest.approx(latency, abs=0.0051)
    generator = [second["cpu_percent"], second["loop_lag_ms"]]
    assert figures(cards["generator"]) == pytest.approx(generator, abs=0.0051)


def wait_not_live(port: int) -> None:
    """Until the dashboard has let go of the run that ended (its pages have been told)."""
    deadline = time.monotonic() + 45
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            if not json.load(answer)["live"]:
                return
        assert time.monotonic() < deadline, "the dashboard still shows the run as live"
        time.sleep(0.1)


def test_a_run_is_drawn_live_and_then_from_its_folder(
    dashboard: int, broker: PlainBroker, tmp_path: Path, env: dict[str, str], open_page: OpenPage
) -> None:
    page = open_page()
    expect(page.locator("#status")).to_have_text("waiting for a run", timeout=10_000)
    assert_charts_have_axes(page)
    pushes = dashboard_tests.Browser(dashboard)  # a Socket.IO client: the same pushes, in Python
    try:
        folder = tmp_path / "runs" / "live"
        run = dashboard_tests.start_run(broker, folder, env, "--devices", "4", "--duration", "6")
        expect(page.locator("#status")).to_have_text("live", timeout=20_000)
        started = pushes.wait_for("started")
        newest = pushes.wait_for("second", lambda s: s["phase"] == "run" and s["acked"] > 0 and s["t"] >= 3)
        page.wait_for_function(
            "t => window.charts.rate.plot.data[0].includes(t)", arg=newest["t"], timeout=10_000
        )

        pushed = [*started["seconds"], *pushes.of("second")]
        upto = [second for second in pushed if second["t"] <= newest["t"]]
        rate = drawn(page, "rate")
        assert list(rate) == list(RATE_LINES)
        for label, key in RATE_LINES.items():
            assert rate[label][: len(upto)] == [second[key] for second in upto], label
        latency = drawn(page, "latency")
        assert any(value is not None for value in latency["p99"])
        expect(page.locator("#latency-title")).to_have_text("Latency, publish to ack (ms)")
        assert 4 in drawn(page, "connected")["connected"]
        assert_axes_ticked(page)
        assert page.evaluate(AXIS_INK) < 100  # dark ticks on the light page

        def pushed_at(t: int) -> dict[str, Any]:
            second: dict[str, Any] = pushes.wait_for("second", lambda second: second["t"] == t)
            return second

        expect(page.locator("#acked-card")).to_be_visible()
        assert_cards_show(page, pushed_at)
        assert_hover_shows_the_second(page)

        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
    finally:
        pushes.close()
    expect(page.locator("#status")).to_have_text("last run", timeout=45_000)
    rows = folder_rows(folder)
    rate = drawn(page, "rate")
    for label, key in RATE_LINES.items():
        assert rate[label] == [row[key] for row in rows], label
    assert drawn(page, "connected")["fleet"] == [row["fleet"] for row in rows]


def test_a_page_opened_after_a_run_draws_it(
    dashboard: int, broker: PlainBroker, tmp_path: Path, env: dict[str, str], open_page: OpenPage
) -> None:
    folder = tmp_path / "runs" / "earlier"
    run = dashboard_tests.start_run(broker, folder, env, "--devices", "3", "--duration", "2", "--qos", "0")
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    wait_not_live(dashboard)

    page = open_page(color_scheme="dark")
    expect(page.locator("#status")).to_have_text("last run", timeout=10_000)
    expect(page.locator("#run")).to_contain_text("earlier")
    assert_charts_have_axes(page)
    rows = folder_rows(folder)
    rate = drawn(page, "rate")
    assert list(rate) == ["time", "written", "failed", "offered"]  # QoS 0: nothing to acknowledge
    assert rate["time"] == [row["t"] for row in rows]
    assert rate["offered"] == [row["offered"] for row in rows]
    assert drawn(page, "connected")["connected"] == [row["connected"] for row in rows]
    expect(page.locator("#acked-card")).to_be_hidden()
    expect(page.locator("#latency-title")).to_have_text("Latency, end to end (ms)")
    assert page.evaluate(AXIS_INK) > 155  # light ticks on the dark page

    wide = page.evaluate("() => window.charts.rate.plot.width")
    page.set_viewport_size({"width": 700, "height": 900})
    page.wait_for_function(FITS_NARROWER, arg=wide, timeout=5_000)
