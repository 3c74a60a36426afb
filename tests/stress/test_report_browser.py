"""report.html in Chromium, opened from disk: five uPlot charts with their axes, the legend's values
under the cursor, the timeline's changes marked across them, names from the run as text, no
request off the disk, and a phone-wide page."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

from stress.results.report.html import write_html
from stress.results.report.loading import load_run
from tests.chromium import launched
from tests.stress.test_report import RUN_ID, normal_events, row, steady_rows, steered, summary, write_run
from web import vendor

pytestmark = pytest.mark.browser

OpenReport = Callable[..., Page]

#: Keeps every chart the page makes in ``window.charts``, so a test can read its axes and scales.
#: It runs before the page's scripts: uPlot's ``var uPlot = ...`` goes through this setter.
KEEP_CHARTS = """
(() => {
  let wrapped;
  window.charts = [];
  Object.defineProperty(window, "uPlot", {
    configurable: true,
    get() { return wrapped; },
    set(library) {
      wrapped = function (...args) {
        const chart = new library(...args);
        window.charts.push(chart);
        return chart;
      };
      Object.assign(wrapped, library);
    },
  });
})();
"""
#: The colour drawn most often between two moments of a chart's plot, as "r,g,b".
MOST_DRAWN = """([index, from, to]) => {
  const chart = window.charts[index];
  const left = Math.ceil(chart.valToPos(from, "x", true)) + 2;
  const right = Math.floor(chart.valToPos(to, "x", true)) - 2;
  const box = chart.bbox;
  const pixels = chart.ctx.getImageData(left, box.top, right - left, box.height).data;
  const counts = new Map();
  for (let i = 0; i < pixels.length; i += 4) {
    const colour = pixels[i] + "," + pixels[i + 1] + "," + pixels[i + 2];
    counts.set(colour, (counts.get(colour) || 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1])[0][0];
}"""
#: Whether the page fits the window's width, with nothing to scroll sideways.
NO_SIDEWAYS_SCROLL = """() => {
  const page = document.documentElement;
  return page.scrollWidth <= page.clientWidth && document.body.scrollWidth <= document.body.clientWidth;
}"""
HOSTILE_REASON = "<img src=x onerror=window.pwned=1>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def open_report(browser: Browser) -> Iterator[OpenReport]:
    """Factory: a new page showing a report file (a phone-sized one with ``width=390``).

    After the test, no page may have logged an error, thrown one, or asked for anything but files.
    """
    contexts = []
    problems: list[str] = []

    def off_the_disk(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            problems.append(f"request: {route.request.url}")
            route.abort()

    def open_page(path: Path, width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        context.add_init_script(KEEP_CHARTS)
        context.route("**/*", off_the_disk)
        page = context.new_page()
        page.on("console", lambda message: console_error(message, problems))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.goto(path.as_uri())
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert problems == [], "errors or requests off the disk"


def console_error(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(f"console: {message.text}")


def report_file(folder: Path, *args: Any) -> Path:
    """``report.html`` of a run folder written with ``args`` as :func:`write_run` takes them."""
    run = load_run(write_run(folder, *args))
    return write_html(run, folder / "report.html")


def legend(page: Page, chart: int) -> dict[str, str]:
    """A chart's legend as shown: each series' label and its value."""
    rows = page.locator(".uplot").nth(chart).locator(".u-legend .u-series")
    labels = rows.locator(".u-label").all_inner_texts()
    values = rows.locator(".u-value").all_inner_texts()
    return dict(zip(labels, values, strict=True))


def hover(page: Page, chart: int, t: float) -> None:
    """The mouse over a chart at ``t`` seconds, halfway up."""
    page.locator(".uplot").nth(chart).scroll_into_view_if_needed()
    x, y = page.evaluate(
        """([index, t]) => {
          const chart = window.charts[index];
          const box = chart.over.getBoundingClientRect();
          return [box.left + chart.valToPos(t, "x"), box.top + box.height / 2];
        }""",
        [chart, t],
    )
    page.mouse.move(x, y)


def test_five_charts_draw_with_their_axes(open_report: OpenReport, tmp_path: Path) -> None:
    page = open_report(report_file(tmp_path / RUN_ID, summary(), steady_rows(), normal_events()))
    expect(page.locator(".uplot")).to_have_count(5)
    for chart in page.locator(".uplot").all():
        expect(chart.locator("canvas")).to_have_count(1)
        expect(chart.locator(".u-axis")).to_have_count(2)
    labels = page.evaluate("window.charts.map(chart => chart.axes.map(axis => axis.label))")
    assert labels == [
        ["time since the start (seconds)", "messages per second"],
        ["time since the start (seconds)", "messages per second"],
        ["time since the start (seconds)", "milliseconds"],
        ["time since the start (seconds)", "devices"],
        ["time since the start (seconds)", "errors per second"],
    ]
    ticks = page.evaluate("window.charts[0].axes.map(axis => axis._values)")
    assert ticks[0][:3] == ["0", "1", "2"]
    assert "2k" in ticks[1]
    assert list(legend(page, 0)) == ["time", "offered", "written", "acknowledged"]
    assert list(legend(page, 1)) == ["time", "sampled", "observed"]
    assert list(legend(page, 4)) == ["time", "not-connected", "connack-bad-credentials"]


def test_the_legend_shows_the_values_of_the_second_under_the_cursor(
    open_report: OpenReport, tmp_path: Path
) -> None:
    rows = [row(t, offered=2000 + t, sent=1900 + t, acked=1800 + t, observed=70 + t) for t in range(10)]
    page = open_report(report_file(tmp_path / "hover", summary(), rows, []))
    expect(page.locator(".uplot")).to_have_count(5)
    labels = {"offered": "offered", "written": "sent", "acknowledged": "acked"}
    for t in (6, 3):
        hover(page, 0, t)
        written = rows[t]
        expected = {"time": str(t), **{label: f"{written[name]:,}" for label, name in labels.items()}}
        assert legend(page, 0) == expected
        hover(page, 1, t)
        assert legend(page, 1) == {"time": str(t), "sampled": "80", "observed": f"{70 + t:,}"}


def test_phases_are_shaded_and_the_collapse_is_a_dashed_red_line(
    open_report: OpenReport, tmp_path: Path
) -> None:
    collapse = {"t": 6, "reason": "acknowledged 52% of offered (below 90%)"}
    page = open_report(report_file(tmp_path / "collapse", summary(collapse=collapse), steady_rows(), []))
    expect(page.locator(".uplot")).to_have_count(5)
    # The latency chart's lines are flat: between them, the plot shows its phase.
    assert page.evaluate(MOST_DRAWN, [2, 0, 2]) == "253,243,215"
    assert page.evaluate(MOST_DRAWN, [2, 2, 6]) == "232,243,234"
    assert page.evaluate(MOST_DRAWN, [2, 8, 9]) == "238,234,247"
    reddish = page.evaluate(
        """() => {
          const chart = window.charts[2];
          const x = Math.round(chart.valToPos(6, "x", true));
          const box = chart.bbox;
          const pixels = chart.ctx.getImageData(x - 1, box.top, 3, box.height).data;
          let rows = 0;
          for (let y = 0; y < box.height; y += 1) {
            for (let i = y * 12; i < y * 12 + 12; i += 4) {
              if (pixels[i] > 150 && pixels[i + 1] < 120 && pixels[i + 2] < 120) { rows += 1; break; }
            }
          }
          return rows / box.height;
        }"""
    )
    assert 0.4 < reddish < 0.8  # dashed: five pixels on, three off


def test_a_lone_second_is_drawn_as_a_dot(open_report: OpenReport, tmp_path: Path) -> None:
    rows = [row(t) for t in (0, 1, 2, 6, 8, 9)]
    page = open_report(report_file(tmp_path / "lone", summary(), rows, []))
    expect(page.locator(".uplot")).to_have_count(5)
    xs, dots = page.evaluate(
        "[window.charts[0].data[0], window.charts[0].series[2].points.filter(window.charts[0], 2, false)]"
    )
    assert [xs[i] for i in dots] == [6]


def test_names_from_the_run_are_text(open_report: OpenReport, tmp_path: Path) -> None:
    events = [{"t": 3, "event": "errors", "stage": "publish", "reason": HOSTILE_REASON, "count": 4}]
    errors = {"publish": {HOSTILE_REASON: 4}}
    folder = tmp_path / "hostile"
    page = open_report(report_file(folder, summary(errors_by_stage=errors), steady_rows(), events))
    expect(page.locator(".uplot")).to_have_count(5)
    assert list(legend(page, 4)) == ["time", HOSTILE_REASON]
    expect(page.get_by_role("cell", name=HOSTILE_REASON)).to_be_visible()
    expect(page.locator("img")).to_have_count(0)
    assert page.evaluate("window.pwned") is None


def test_without_uplot_each_chart_says_how_to_install_it(
    open_report: OpenReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "assets"
    empty.mkdir()
    monkeypatch.setattr(vendor, "ASSETS_DIR", empty)
    page = open_report(report_file(tmp_path / "bare", summary(), steady_rows(), normal_events()))
    notices = page.locator("figure .no-chart")
    expect(notices).to_have_count(5)
    for notice in notices.all():
        expect(notice).to_contain_text("The charts need uPlot")
        expect(notice).to_contain_text("npm ci")
        expect(notice).to_contain_text("./lab up")
    expect(page.locator(".uplot")).to_have_count(0)
    expect(page.get_by_role("cell", name="119,990")).to_be_visible()


def test_on_a_phone_the_charts_fit_the_screen(open_report: OpenReport, tmp_path: Path) -> None:
    reason = "no-break-" * 20  # a long name the legend must wrap
    events = [{"t": 4, "event": "errors", "stage": "publish", "reason": reason, "count": 2}]
    path = report_file(tmp_path / "phone", summary(), steady_rows(), [*normal_events(), *events])
    page = open_report(path, width=390, height=844)
    expect(page.locator(".uplot")).to_have_count(5)
    widths = page.evaluate("[...document.querySelectorAll('.uplot')].map(chart => chart.offsetWidth)")
    assert all(width <= 390 for width in widths), widths
    assert page.evaluate(NO_SIDEWAYS_SCROLL)


def test_the_charts_follow_the_page_width(open_report: OpenReport, tmp_path: Path) -> None:
    page = open_report(report_file(tmp_path / "resize", summary(), steady_rows(), normal_events()))
    expect(page.locator(".uplot")).to_have_count(5)
    wide = page.evaluate("window.charts.map(chart => chart.width)")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("window.charts.every(chart => chart.width < 390)")
    assert all(width > 900 for width in wide), wide
    assert page.evaluate(NO_SIDEWAYS_SCROLL)


def test_a_long_run_counts_time_in_hours(open_report: OpenReport, tmp_path: Path) -> None:
    rows = [row(t) for t in range(0, 20_000, 5)]
    page = open_report(report_file(tmp_path / "long", summary(), rows, []))
    expect(page.locator(".uplot")).to_have_count(5)
    ticks = page.evaluate("window.charts[0].axes[0]._values")
    assert ticks[0] == "0:00:00"
    assert all(re.fullmatch(r"\d:[0-5]\d:00", tick) for tick in ticks[1:]), ticks
    hover(page, 0, 7200)
    hours, minutes, seconds = map(int, legend(page, 0)["time"].split(":"))
    assert abs(hours * 3600 + minutes * 60 + seconds - 7200) <= 60  # a pixel spans 20 s here


#: The share of chart ``index``'s plot height, in the canvas column of moment ``t``, drawn in a
#: colour near ``rgb``.
MARKED = """([index, t, rgb]) => {
  const chart = window.charts[index];
  const x = Math.round(chart.valToPos(t, "x", true));
  const box = chart.bbox;
  let best = 0;
  for (const column of [x - 1, x, x + 1]) {
    const pixels = chart.ctx.getImageData(column, box.top, 1, box.height).data;
    let near = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      if ([0, 1, 2].every((k) => Math.abs(pixels[i + k] - rgb[k]) < 60)) near += 1;
    }
    best = Math.max(best, near / box.height);
  }
  return best;
}"""


def test_the_changes_of_the_timeline_are_marked_on_every_chart(
    open_report: OpenReport, tmp_path: Path
) -> None:
    data = summary(timeline=steered(), devices=1250, interval_s=2.0)
    page = open_report(report_file(tmp_path / "steered", data, steady_rows(), normal_events()))
    expect(page.locator(".uplot")).to_have_count(5)
    colours = {"scale": (0x1E, 0x3A, 0x8A), "rate": (0x70, 0x1A, 0x75), "pause": (0x85, 0x4D, 0x0E)}
    for chart in range(5):
        for t, what in ((3.5, "scale"), (5.0, "rate"), (6.0, "pause")):
            assert page.evaluate(MARKED, [chart, t, colours[what]]) > 0.6, (chart, what)
        assert page.evaluate(MARKED, [chart, 4.25, colours["scale"]]) < 0.2  # a line, not a band
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.get_by_role("cell", name="scale to 1,250 devices")).to_be_visible()
    expect(page.locator("ul.key").first).to_contain_text("scale")
