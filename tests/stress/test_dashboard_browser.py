"""``stress dashboard`` in Chromium: a real run drawn live with uPlot, its cards and hover legend,
the changes of its timeline marked as they happen, and finished runs from their folders: whole,
with their errors, their report, and the controls off."""

from __future__ import annotations

import csv
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from stress.results.model import COLUMNS, CannotStart, Change, Row, RunSummary
from stress.results.timeline import change_json
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
    counts = ("t", "offered", "sent", "acked", "failed", "connected", "devices")
    with (folder / "timeseries.csv").open(newline="", encoding="utf-8") as file:
        return [{name: int(row[name]) for name in counts} for row in csv.DictReader(file)]


def figures(text: str) -> list[float | None]:
    """A card's "1,234.5 % / - ms" as [1234.5, None]."""
    parts = [part.split()[0] for part in text.split(" / ")]
    return [None if part == "-" else float(part.replace(",", "")) for part in parts]


def assert_charts_have_axes(page: Page) -> None:
    charts = page.locator(".chart .uplot")
    expect(charts).to_have_count(4)
    for index in range(4):
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
    assert cards["connected"] == f"{second['connected']:,} / {second['devices']:,}"
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
    assert drawn(page, "connected")["devices asked"] == [row["devices"] for row in rows]


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


#: The marks chart ``name`` drew: each change's time, kind and x on the canvas.
MARKS_DRAWN = "name => window.charts[name].drawn"
#: The share of the rate chart's plot height, in the canvas column at ``x``, of colour ``rgb``.
COLUMN_SHARE = """([x, rgb]) => {
  const plot = window.charts.rate.plot;
  const box = plot.bbox;
  const pixels = plot.ctx.getImageData(x, box.top, 1, box.height).data;
  let matching = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const near = [0, 1, 2].every((k) => Math.abs(pixels[i + k] - rgb[k]) < 40);
    if (near && pixels[i + 3] > 200) matching += 1;
  }
  return matching / box.height;
}"""
#: The colours of the marks (dashboard.js), as r, g, b.
MARK_RGB = {"scale": (0x1F, 0x9E, 0xCE), "rate": (0xC9, 0x3C, 0x9B), "storm": (0x95, 0x38, 0x00)}


def assert_controls(page: Page, *, enabled: bool) -> None:
    """Every input and button of the controls on, or off."""
    controls = page.locator("#controls input, #controls button")
    expect(controls).to_have_count(8)
    for control in controls.all():
        if enabled:
            expect(control).to_be_enabled()
        else:
            expect(control).to_be_disabled()


def run_events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def test_the_changes_of_a_live_run_are_marked_when_they_happen(
    dashboard: int, broker: PlainBroker, tmp_path: Path, env: dict[str, str], open_page: OpenPage
) -> None:
    page = open_page()
    pushes = dashboard_tests.Browser(dashboard)
    try:
        folder = tmp_path / "runs" / "steered"
        run = dashboard_tests.start_run(broker, folder, env, "--devices", "4", "--duration", "12")
        expect(page.locator("#status")).to_have_text("live", timeout=20_000)
        assert_controls(page, enabled=True)
        pushes.wait_for("second", lambda s: s["phase"] == "run" and s["t"] >= 2)
        assert pushes.client.call("control", {"op": "scale", "devices": 6}, timeout=10)["ok"]
        pushes.wait_for("second", lambda s: s["connected"] == 6)
        assert pushes.client.call("control", {"op": "rate", "interval": 0.4}, timeout=10)["ok"]
        rated = pushes.wait_for("change", lambda c: c["what"] == "rate")
        after = pushes.wait_for("second", lambda s: s["t"] > rated["t"] + 1)
        page.wait_for_function(
            "t => window.charts.rate.plot.data[0].includes(t)", arg=after["t"], timeout=10_000
        )
        # While the run goes on: a mark on every chart at the time of each change, in its colour
        drawn = page.evaluate(MARKS_DRAWN, "rate")
        live_marks = [(mark["what"], mark["t"]) for mark in drawn]
        assert [what for what, _ in live_marks] == ["scale", "rate"]
        for name in ("latency", "connected", "errors"):
            assert [(m["what"], m["t"]) for m in page.evaluate(MARKS_DRAWN, name)] == live_marks
        for mark in drawn:
            assert page.evaluate(COLUMN_SHARE, [mark["x"], MARK_RGB[mark["what"]]]) > 0.5, mark
        cards = page.evaluate(CARDS)
        assert cards["connected"].endswith("/ 6")
        expect(page.locator("#interval")).to_have_text("every 0.4 s")
        expect(page.locator("#timeline")).to_contain_text("scale to 6 devices")
        expect(page.locator("#timeline")).to_contain_text("rate: every 0.4 s")
        # Offered (dashed) and written are both drawn, offered last so that it is never covered
        series = page.evaluate(
            "() => window.charts.rate.plot.series.map((s) => [s.label, s.show, s.dash || null])"
        )
        assert [label for label, *_ in series] == ["time", "written", "acknowledged", "failed", "offered"]
        assert all(show for _, show, _ in series)
        assert series[-1][2] is not None

        assert pushes.client.call("control", {"op": "stop"}, timeout=10)["ok"]
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
    finally:
        pushes.close()
    controls = {e["op"]: e["t"] for e in run_events(folder) if e["event"] == "control"}
    assert dict(live_marks) == {"scale": controls["scale"], "rate": controls["rate"]}
    expect(page.locator("#status")).to_have_text("last run", timeout=45_000)
    finished = [(mark["what"], mark["t"]) for mark in page.evaluate(MARKS_DRAWN, "rate")]
    assert finished == [*live_marks, ("stop", controls["stop"])]
    assert_controls(page, enabled=False)


def write_long_run(folder: Path, seconds: int) -> list[dict[str, Any]]:
    """A run folder made from the run model: ``seconds`` seconds of 100 devices every second
    (three messages each), scaled to 150 at 200 s, every 0.5 s from 400 s, a storm at 600 s,
    51 connections refused in its first seconds. Returns its timeline."""
    folder.mkdir(parents=True)
    changes = [
        Change(0.0, "start", 100, 1.0),
        Change(200.25, "scale", 150, 1.0),
        Change(400.5, "rate", 150, 0.5),
        Change(600.0, "storm", 150, 0.5, count=150),
    ]
    with (folder / "timeseries.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for t in range(seconds):
            devices = next(c.devices for c in reversed(changes) if c.t < t + 1)
            interval = next(c.interval_s for c in reversed(changes) if c.t < t + 1)
            assert devices is not None and interval is not None
            rate = round(devices * 3 / interval)
            phase = "connect" if t < 2 else "drain" if t == seconds - 1 else "run"
            sent = rate if phase == "run" else 0
            row = Row(t, phase, offered=sent, sent=sent, acked=sent, connected=devices - (t == 600) * devices)
            writer.writerow(
                replace(row, devices=devices, interval_s=interval, devices_started=devices).cells()
            )
    events = [
        {"t": t, "event": "errors", "stage": "connect", "reason": "tcp-refused", "count": 17}
        for t in (0, 1, 2)
    ]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    summary = RunSummary(
        run_id=folder.name,
        target="mqtt",
        qos=1,
        devices=150,
        interval_s=0.5,
        duration_s=seconds - 3,
        sent=1000,
        acked=1000,
        offered=1000,
        failed=0,
        errors_by_reason={"tcp-refused": 51},
        errors_by_stage={"connect": {"tcp-refused": 51}},
        timeline=tuple(changes),
    )
    (folder / "summary.json").write_text(json.dumps(summary.to_json()), encoding="utf-8")
    return [change_json(change) for change in changes]


def test_a_finished_run_is_shown_whole_with_its_errors_and_report(
    dashboard: int, tmp_path: Path, open_page: OpenPage
) -> None:
    timeline = write_long_run(tmp_path / "runs" / "long", 900)  # longer than a live view keeps
    page = open_page()
    expect(page.locator("#status")).to_have_text("last run", timeout=10_000)
    expect(page.locator("#run")).to_contain_text("long")
    rate = drawn(page, "rate")
    assert rate["time"] == list(range(900))  # every second
    assert rate["written"][300] == 450
    assert rate["written"][500] == 900
    assert drawn(page, "connected")["devices asked"][199:202] == [100, 150, 150]
    errors = drawn(page, "errors")["errors"]
    assert errors[:4] == [17, 17, 17, 0]
    assert [(mark["what"], mark["t"]) for mark in page.evaluate(MARKS_DRAWN, "rate")] == [
        (change["what"], change["t"]) for change in timeline[1:]
    ]
    expect(page.locator("#timeline tr")).to_have_count(4)
    expect(page.locator("#timeline")).to_contain_text("storm: 150 devices dropped at once")
    expect(page.locator("#errors")).to_contain_text("tcp-refused")
    expect(page.locator("#errors tr td").nth(2)).to_have_text("51")
    expect(page.locator("#errors-total")).to_have_text("51")
    expect(page.locator("#connected")).to_have_text("- / 150")  # no peak in this summary
    expect(page.locator("#interval")).to_have_text("every 0.5 s")
    assert_controls(page, enabled=False)
    expect(page.locator("#answer")).to_have_text("The run is over: its controls are off.")
    link = page.locator("#report-link")
    expect(link).to_be_visible()
    with page.expect_navigation():
        link.click()
    assert page.url.endswith("/report/long")
    expect(page.locator("h1")).to_have_text("Stress run long")
    expect(page.locator(".uplot")).to_have_count(3)  # no samples: no end-to-end nor latency chart
    marks = page.evaluate("JSON.parse(document.getElementById('report-data').textContent).marks")
    assert [mark["t"] for mark in marks] == [change["t"] for change in timeline[1:]]


def test_a_long_finished_run_is_bucketed_as_the_report_draws_it(
    dashboard: int, tmp_path: Path, open_page: OpenPage
) -> None:
    write_long_run(tmp_path / "runs" / "longer", 4500)
    page = open_page()
    expect(page.locator("#status")).to_have_text("last run", timeout=10_000)
    rate = drawn(page, "rate")
    assert rate["time"] == list(range(0, 4500, 3))  # 1,500 points of 3 s each
    assert rate["written"][200] == 900  # 600-602 s: the mean per second
    expect(page.locator("#bucket")).to_contain_text("Each point covers 3 s")
    assert drawn(page, "connected")["connected"][200] == 0  # the storm's drop kept: the lowest


def test_a_run_whose_connections_were_refused_shows_them(
    dashboard: int, tmp_path: Path, open_page: OpenPage
) -> None:
    folder = tmp_path / "runs" / "refused"
    folder.mkdir(parents=True)
    why = "no device could connect (51 attempts in 6 s): nothing listens on 127.0.0.1:1 [tcp-refused]"
    summary = RunSummary(
        run_id="refused",
        qos=1,
        devices=10,
        interval_s=1.0,
        sent=0,
        acked=0,
        failed=0,
        connections_peak=0,
        cannot_start=CannotStart(reason="tcp-refused", attempts=51, gave_up=True, message=why),
        errors_by_reason={"tcp-refused": 51},
        errors_by_stage={"connect": {"tcp-refused": 51}},
        timeline=(Change(0.0, "start", 10, 1.0),),
    )
    (folder / "summary.json").write_text(json.dumps(summary.to_json()), encoding="utf-8")
    with (folder / "timeseries.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for t in range(6):
            writer.writerow(Row(t, "connect", devices=10, interval_s=1.0, devices_started=10).cells())
    counts = [9, 8, 9, 8, 9, 8]
    events = [
        {"t": t, "event": "errors", "stage": "connect", "reason": "tcp-refused", "count": n}
        for t, n in enumerate(counts)
    ]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    page = open_page()
    expect(page.locator("#status")).to_have_text("last run", timeout=10_000)
    expect(page.locator("#problems")).to_have_text(why)
    expect(page.locator("#errors-total")).to_have_text("51")
    expect(page.locator("#errors")).to_contain_text("tcp-refused")
    assert drawn(page, "errors")["errors"] == counts
    expect(page.locator("#connected")).to_have_text("0 / 10")
