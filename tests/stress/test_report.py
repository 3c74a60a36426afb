"""The run report: reading a run folder, the console table, the self-contained HTML and its charts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from stress.results.report import report
from stress.results.report.charts import chart_data
from stress.results.report.html import write_html
from stress.results.report.loading import load_run
from stress.results.report.model import SATURATED_WARNING, ReportError
from stress.results.report.text import console_table
from web import vendor

RUN_ID = "20261122-153012-mqtt-1000"
COLUMNS = (
    "t,phase,offered,sent,acked,failed,observed,sampled,connected,connects,disconnects,lateness_p99_ms,"
    "ack_p50_ms,ack_p95_ms,ack_p99_ms,e2e_p50_ms,e2e_p99_ms,loop_lag_ms,cpu_percent,overruns,"
    "devices_started,devices,interval_s"
)
HOSTILE = "<script>alert(1)</script> & \"quoted\" 'single' ünï©ødé 漢字 \x1b[31m\r\n"


def summary(**changes: Any) -> dict[str, Any]:
    """A summary as the stress engine writes it, with ``changes`` applied."""
    data: dict[str, Any] = {
        "run_id": RUN_ID,
        "target": "mqtt",
        "host": "127.0.0.1",
        "port": 1883,
        "protocol": "3.1.1",
        "tls": False,
        "qos": 1,
        "shape": "steady",
        "interval_s": 1.0,
        "devices": 1000,
        "processes": 2,
        "behaviour": "thermostat",
        "started_at": "2026-11-22T15:30:12.123Z",
        "ended_at": "2026-11-22T15:31:22.456Z",
        "duration_s": 60.0,
        "stopped": "completed",
        "offered": 120000,
        "sent": 119990,
        "acked": 119980,
        "failed": 20,
        "observed": 5000,
        "sampled": 5000,
        "msgs_per_s": 1999.7,
        "offered_per_s": 2000.0,
        "latency_ms": {
            "connect": {"p50": 1.2, "p95": 3.4, "p99": 5.0, "max": 9.1, "count": 1000},
            "ack": {"p50": 2.5, "p95": 7.25, "p99": 12.5, "max": 48.0, "count": 119980},
            "e2e": {"p50": 3.1, "p95": 9.0, "p99": 15.0, "max": 61.5, "count": 5000},
            "lateness": {"p50": None, "p95": None, "p99": None, "max": None, "count": 0},
        },
        "connections_peak": 1000,
        "errors_by_reason": {"connack-bad-credentials": 3, "not-connected": 17},
        "errors_by_stage": {"connect": {"connack-bad-credentials": 3}, "publish": {"not-connected": 17}},
        "generator": {
            "loop_lag_p99_ms": 1.1,
            "loop_lag_max_ms": 4.0,
            "cpu_percent": 43.0,
            "overruns": 0,
            "saturated": False,
        },
        "collapse": None,
    }
    data.update(changes)
    return data


def row(t: int, phase: str = "run", **cells: object) -> dict[str, object]:
    """One second of a steady run at 2000 msgs/s, with ``cells`` changed."""
    values: dict[str, object] = {
        "t": t,
        "phase": phase,
        "offered": 2000,
        "sent": 2000,
        "acked": 1999,
        "failed": 0,
        "observed": 80,
        "sampled": 80,
        "connected": 1000,
        "connects": 0,
        "disconnects": 0,
        "lateness_p99_ms": 0.8,
        "ack_p50_ms": 2.5,
        "ack_p95_ms": 7.0,
        "ack_p99_ms": 12.0,
        "e2e_p50_ms": 3.0,
        "e2e_p99_ms": 14.0,
        "loop_lag_ms": 0.4,
        "cpu_percent": 40.0,
        "overruns": 0,
        "devices_started": 1000,
        "devices": 1000,
        "interval_s": 0.5,
    }
    values.update(cells)
    return values


def steady_rows() -> list[dict[str, object]]:
    """Ten seconds: two connecting, six running, two draining."""
    rows = [
        row(t, "connect", offered=0, sent=0, acked=0, connected=500 * (t + 1), connects=500) for t in (0, 1)
    ]
    rows += [row(t) for t in range(2, 8)]
    rows += [row(t, "drain", offered=0, sent=0, acked=3) for t in (8, 9)]
    return rows


def write_run(
    folder: Path,
    summary_data: object = None,
    rows: Iterable[Mapping[str, object]] | None = None,
    events: Iterable[object] | None = None,
) -> Path:
    """Write a run folder; ``None`` leaves a file out, a ``str`` event is written as is."""
    folder.mkdir(parents=True, exist_ok=True)
    if summary_data is not None:
        text = summary_data if isinstance(summary_data, str) else json.dumps(summary_data)
        (folder / "summary.json").write_text(text, encoding="utf-8")
    if rows is not None:
        lines = [COLUMNS]
        lines += [",".join("" if r[c] is None else str(r[c]) for c in COLUMNS.split(",")) for r in rows]
        (folder / "timeseries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if events is not None:
        lines = [event if isinstance(event, str) else json.dumps(event) for event in events]
        (folder / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def normal_events() -> list[object]:
    return [
        {"t": 0.01, "event": "phase", "phase": "connect"},
        {"t": 0.53, "event": "connected", "device": "d00001", "ms": 1.9},
        {
            "t": 0.61,
            "event": "error",
            "device": "d00002",
            "stage": "connect",
            "reason": "connack-bad-credentials",
            "detail": "CONNACK 4: bad user name or password",
        },
        {"t": 0, "event": "errors", "stage": "connect", "reason": "connack-bad-credentials", "count": 1},
        {"t": 2.0, "event": "phase", "phase": "run"},
        {"t": 3.2, "event": "published", "device": "d00007", "topic": "office/r01/d00007/temperature"},
        {"t": 5, "event": "errors", "stage": "publish", "reason": "not-connected", "count": 12},
        {"t": 6, "event": "errors", "stage": "publish", "reason": "not-connected", "count": 5},
        {"t": 8.0, "event": "phase", "phase": "drain"},
        {"t": 10.0, "event": "phase", "phase": "done"},
    ]


@pytest.fixture
def normal_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / RUN_ID, summary(), steady_rows(), normal_events())


def kv(label: str, value: str) -> str:
    """A line of facts in the console table: labels padded to the longest, "observed end to end"."""
    return f"{label:<19}  {value}"


def chart_count(page: str) -> int:
    """Charts the page's script draws (a chart without values says so instead)."""
    return page.count('<div class="chart" data-chart=')


def chart_block(page: str) -> dict[str, Any]:
    """The charts' data, as the page's script reads it from its JSON block."""
    (block,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    data: dict[str, Any] = json.loads(block)
    return data


def uplot_files() -> tuple[str, str]:
    """uPlot's script and stylesheet as installed in web/assets."""
    script, style = (
        (vendor.ASSETS_DIR / vendor.ALLOWED[name]).read_text(encoding="utf-8")
        for name in ("uPlot.iife.min.js", "uPlot.min.css")
    )
    return script, style


# --- a normal run ------------------------------------------------------------------------------


def test_a_normal_run_is_read_whole(normal_run: Path) -> None:
    run = load_run(normal_run)
    assert run.summary.run_id == RUN_ID
    assert run.summary.latency_ms.ack.p99 == 12.5
    assert run.summary.latency_ms.lateness.p50 is None
    assert [s.t for s in run.seconds] == list(range(10))
    assert run.seconds[0].connects == 500
    assert run.seconds[0].phase == "connect"
    per_second = {(e.t, e.reason): e.count for e in run.events.errors}
    assert per_second == {
        (0, "connack-bad-credentials"): 1,
        (5, "not-connected"): 12,
        (6, "not-connected"): 5,
    }
    assert [p for _, p in run.events.phases] == ["connect", "run", "drain", "done"]
    assert run.events.samples[0].device == "d00002"
    assert run.events.malformed == 0
    assert run.notes == ()


def test_the_console_table_shows_the_figures(normal_run: Path) -> None:
    text = console_table(load_run(normal_run))
    lines = text.splitlines()
    assert kv("run", RUN_ID) in lines
    assert kv("broker", "127.0.0.1:1883") in lines
    assert kv("written", "119,990") in lines
    assert kv("acknowledged", "119,980") in lines
    assert kv("observed end to end", "5,000 of 5,000 sampled (100.0 %); 83.3/s of 83.3/s") in lines
    assert kv("rate", "1,999.7 acknowledged/s of 2,000.0 offered/s (100.0 %)") in lines
    assert kv("duration", "60.0 s") in lines
    latency = next(line for line in lines if line.startswith("ack "))
    assert latency.split() == ["ack", "2.50", "7.25", "12.5", "48.0", "119,980"]
    lateness = next(line for line in lines if line.startswith("lateness"))
    assert lateness.split() == ["lateness", "-", "-", "-", "-", "-"]
    errors = [line.split() for line in lines if "not-connected" in line or "connack-bad" in line]
    assert errors == [["17", "publish", "not-connected"], ["3", "connect", "connack-bad-credentials"]]
    assert kv("generator loop lag", "p99 1.10 ms, max 4.00 ms") in lines
    assert kv("generator CPU", "43.0 %") in lines
    assert SATURATED_WARNING not in text
    assert "collapse" not in text


def test_the_latency_table_is_aligned(normal_run: Path) -> None:
    lines = console_table(load_run(normal_run)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("latency (ms)"))
    table = lines[start : start + 5]
    assert [line.split()[0] for line in table[1:]] == ["connect", "ack", "e2e", "lateness"]
    # Right-aligned figures: every row ends in the same column as the header's "count".
    assert len({len(line) for line in table}) == 1


def test_the_html_is_one_self_contained_file_with_five_charts(normal_run: Path) -> None:
    before = set(normal_run.iterdir())
    path = write_html(load_run(normal_run), normal_run / "report.html")
    assert path == normal_run / "report.html"
    assert set(normal_run.iterdir()) - before == {path}
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert chart_count(page) == 5
    assert [chart["names"] for chart in chart_block(page)["charts"]] == [
        ["offered", "written", "acknowledged"],
        ["sampled", "observed"],
        ["ack p50", "ack p95", "ack p99", "e2e p50", "e2e p99", "lateness p99"],
        ["connected", "connects", "disconnects", "devices asked"],
        ["not-connected", "connack-bad-credentials"],
    ]
    assert f"<h1>Stress run {RUN_ID}</h1>" in page
    script, style = uplot_files()
    assert f"<script>{script}</script>" in page
    assert f"<style>{style}</style>" in page
    # Besides uPlot's own files (its licence line names its home page), nothing points outside.
    own = page.replace(script, "").replace(style, "")
    for outside in ("src=", "href=", "http:", "https:", "@import", "url(", "<link"):
        assert outside not in own, outside
    assert set(re.findall(r"<script\b[^>]*>", page)) == {
        "<script>",
        '<script type="application/json" id="report-data">',
    }
    assert "<td>119,990</td>" in page
    assert "<td>connack-bad-credentials</td>" in page
    assert "CONNACK 4: bad user name or password" in page
    for title in (
        "Throughput per second",
        "Observed end to end per second (sampled devices)",
        "Latency percentiles per second",
        "Connected devices per second",
    ):
        assert title in page
    assert "Errors per second" in page


def test_without_uplot_the_report_has_its_tables_and_says_how_to_get_the_charts(
    normal_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "assets"
    empty.mkdir()
    monkeypatch.setattr(vendor, "ASSETS_DIR", empty)
    page = write_html(load_run(normal_run), normal_run / "report.html").read_text(encoding="utf-8")
    assert "<td>119,990</td>" in page
    assert "<td>connack-bad-credentials</td>" in page
    assert "CONNACK 4: bad user name or password" in page
    assert page.count("<figure>") == 5
    assert chart_count(page) == 0
    assert page.count("The charts need uPlot, which is not installed here: run <code>npm ci</code>") == 5
    assert "<script" not in page


def test_the_charts_have_axes_legend_and_phases(normal_run: Path) -> None:
    run = load_run(normal_run)
    charts = chart_data(run)
    assert charts.bucket_s == 1
    assert charts.end_s == 10
    assert [(s.phase, s.start, s.end) for s in charts.phases] == [
        ("connect", 0.0, 2.0),
        ("run", 2.0, 8.0),
        ("drain", 8.0, 10.0),
    ]
    assert [s.name for s in charts.throughput.series] == ["offered", "written", "acknowledged"]
    assert [s.name for s in charts.observed.series] == ["sampled", "observed"]
    sent = dict(charts.throughput.series[1].points)
    assert sent[0.0] == 0
    assert sent[3.0] == 2000
    assert [s.name for s in charts.latency.series] == [
        "ack p50",
        "ack p95",
        "ack p99",
        "e2e p50",
        "e2e p99",
        "lateness p99",
    ]
    errors = {s.name: dict(s.points) for s in charts.errors.series}
    assert errors["not-connected"][5.0] == 12
    assert errors["not-connected"][4.0] == 0
    assert errors["connack-bad-credentials"][0.0] == 1
    page = write_html(run, normal_run / "report.html").read_text(encoding="utf-8")
    block = chart_block(page)
    assert block["phases"] == [
        {"start": 0.0, "end": 2.0, "phase": "connect"},
        {"start": 2.0, "end": 8.0, "phase": "run"},
        {"start": 8.0, "end": 10.0, "phase": "drain"},
    ]
    assert (block["end"], block["clock"]) == (10, "s")
    assert block["x_label"] == "time since the start (seconds)"
    throughput = block["charts"][0]
    assert throughput["unit"] == "messages per second"
    xs, _offered, sent_column, acked = throughput["data"]
    assert xs == list(range(10))
    assert sent_column == [0, 0, 2000, 2000, 2000, 2000, 2000, 2000, 0, 0]
    assert acked[8] == 3
    reasons = block["charts"][4]
    assert reasons["data"][reasons["names"].index("not-connected") + 1][4:7] == [0, 12, 5]
    for phase in ("connect", "run", "drain"):
        assert page.count(f'<li><span class="swatch {phase}"></span>{phase} phase</li>') == 5
    assert "collapse</li>" not in page


def test_report_writes_report_html_in_the_run_folder(normal_run: Path) -> None:
    text, path = report(normal_run)
    assert path == normal_run / "report.html"
    assert path.is_file()
    assert text == console_table(load_run(normal_run))
    assert RUN_ID in text


def test_report_without_html_writes_nothing(normal_run: Path) -> None:
    text, path = report(normal_run, html=False)
    assert path is None
    assert RUN_ID in text
    assert not (normal_run / "report.html").exists()


# --- partial and unusual runs -----------------------------------------------------------------


def test_a_qos0_run_has_no_acknowledgements(tmp_path: Path) -> None:
    latency = summary()["latency_ms"] | {
        "ack": {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    }
    rows = [row(t, acked=0, ack_p50_ms=None, ack_p95_ms=None, ack_p99_ms=None) for t in range(5)]
    folder = write_run(tmp_path / "qos0", summary(qos=0, acked=None, latency_ms=latency), rows, [])
    run = load_run(folder)
    assert run.summary.acked is None
    lines = console_table(run).splitlines()
    assert kv("acknowledged", "- (QoS 0 is not acknowledged)") in lines
    assert kv("rate", "1,999.7 written/s of 2,000.0 offered/s (100.0 %)") in lines
    assert next(line for line in lines if line.startswith("ack ")).split() == ["ack", "-", "-", "-", "-", "-"]
    charts = chart_data(run)
    assert [s.name for s in charts.throughput.series] == ["offered", "written"]
    assert [s.name for s in charts.latency.series] == ["e2e p50", "e2e p99", "lateness p99"]
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert chart_count(page) == 5
    assert chart_block(page)["charts"][0]["names"] == ["offered", "written"]


def test_a_summary_alone_still_makes_a_report(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "bare", summary())
    run = load_run(folder)
    assert run.seconds == ()
    assert run.events.lines == 0
    assert run.notes == (
        "no timeseries.csv: the charts have no per-second figures",
        "no events.jsonl: errors per second come from the failed column",
    )
    text, path = report(folder)
    assert "note: no timeseries.csv" in text
    assert path is not None
    page = path.read_text(encoding="utf-8")
    assert page.count("<figure>") == 5
    assert chart_count(page) == 0
    assert page.count("no data for this run") == 5


def test_an_older_summary_without_optional_keys(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "old", {"run_id": "old-1", "sent": 10})
    run = load_run(folder)
    assert run.summary.generator is None
    assert run.summary.errors == ()
    text = console_table(run)
    lines = text.splitlines()
    assert "written              10" in lines  # no generator: labels padded to "observed end to end"
    assert "broker               -" in lines
    assert "errors: none" in lines
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert "No generator figures in this summary." in page


def test_without_rows_the_phases_come_from_the_events(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "events-only", summary(), events=normal_events()))
    charts = chart_data(run)
    assert [(s.phase, s.start, s.end) for s in charts.phases] == [
        ("connect", 0.01, 2.0),
        ("run", 2.0, 8.0),
        ("drain", 8.0, 10.0),
    ]
    errors = {s.name: dict(s.points) for s in charts.errors.series}
    assert errors["not-connected"][5.0] == 12


@pytest.mark.parametrize("content", ["", COLUMNS + "\n"])
def test_an_empty_timeseries_has_no_rows(tmp_path: Path, content: str) -> None:
    folder = write_run(tmp_path / "empty", summary(), events=[])
    (folder / "timeseries.csv").write_text(content, encoding="utf-8")
    run = load_run(folder)
    assert run.seconds == ()
    assert "timeseries.csv has no rows: the run stopped before its first second" in run.notes
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert page.count("<figure>") == 5
    assert chart_count(page) == 0
    assert page.count("no data for this run") == 5


def test_a_single_second_is_drawn_as_dots(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "one", summary(), [row(0, "connect")], [])
    run = load_run(folder)
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert chart_count(page) == 5
    assert "no data for this run" not in page
    charts = chart_block(page)["charts"]
    assert [len(chart["names"]) for chart in charts] == [3, 2, 6, 4, 1]  # the last: failed
    for chart in charts:
        xs, *columns = chart["data"]
        assert xs == [0]
        assert all(len(column) == 1 and column[0] is not None for column in columns)


def test_a_million_devices(tmp_path: Path) -> None:
    rows = [row(t, connected=1_000_000, connects=0, sent=250_000) for t in range(60)]
    folder = write_run(tmp_path / "big", summary(devices=1_000_000, connections_peak=1_000_000), rows, [])
    run = load_run(folder)
    assert kv("devices", "1,000,000") in console_table(run).splitlines()
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    connected = chart_block(page)["charts"][3]["data"][1]
    assert connected == [1_000_000] * 60


def test_a_saturated_generator_is_called_out(tmp_path: Path) -> None:
    generator = summary()["generator"] | {"saturated": True, "overruns": 312, "cpu_percent": 99.5}
    folder = write_run(tmp_path / "saturated", summary(generator=generator), steady_rows(), [])
    run = load_run(folder)
    text = console_table(run)
    assert f"WARNING: {SATURATED_WARNING}" in text.splitlines()
    assert kv("generator overruns", "312") in text.splitlines()
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert f"<strong>Warning:</strong> {SATURATED_WARNING}." in page


def test_a_refused_observer_is_an_error_and_its_figures_not_measured(tmp_path: Path) -> None:
    message = (
        "end-to-end observer refused: the broker refused the subscription to a/b as 'fleet' [suback-refused]"
    )
    observer = {"state": "refused", "reason": "suback-refused", "account": "fleet", "message": message}
    folder = write_run(tmp_path / "refused", summary(observer=observer, observed=None), steady_rows(), [])
    run = load_run(folder)
    lines = console_table(run).splitlines()
    assert kv("observed end to end", "not measured (observer refused: suback-refused)") in lines
    assert f"ERROR: {message}" in lines
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert "<strong>Error:</strong> end-to-end observer refused: " in page
    assert "not measured (observer refused: suback-refused)" in page


def test_a_run_that_could_not_start_says_why_once(tmp_path: Path) -> None:
    why = "no device could connect (60 attempts in 14 s): mqtt at mqtt://127.0.0.1:1883 ... [tcp-refused]"
    changes = {
        "stopped": "no device connected",
        "cannot_start": {"reason": "tcp-refused", "attempts": 60, "message": why},
        "observer": {
            "state": "refused",
            "reason": "tcp-refused",
            "message": "end-to-end observer refused: ...",
        },
    }
    run = load_run(write_run(tmp_path / "unstarted", summary(**changes), steady_rows(), []))
    errors = [line for line in console_table(run).splitlines() if line.startswith("ERROR: ")]
    assert errors == [f"ERROR: {why}"]  # the observer met the same broker: one line says it


def test_a_collapse_is_marked(tmp_path: Path) -> None:
    collapse = {"t": 6, "reason": "acknowledged 52% of offered (below 90%)"}
    folder = write_run(
        tmp_path / "collapse", summary(collapse=collapse, stopped="collapse"), steady_rows(), []
    )
    run = load_run(folder)
    assert "collapse at 6 s: acknowledged 52% of offered (below 90%)" in console_table(run).splitlines()
    assert chart_data(run).collapse_t == 6
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert chart_block(page)["collapse"] == 6
    assert page.count('<li><span class="swatch collapse"></span>collapse</li>') == 5
    assert "collapse at 6 s: acknowledged 52% of offered (below 90%)" in page


def test_without_error_events_the_failed_column_is_charted(tmp_path: Path) -> None:
    rows = [row(t, failed=t * 2) for t in range(5)]
    folder = write_run(tmp_path / "failed", summary(), rows, [{"t": 0.0, "event": "phase", "phase": "run"}])
    charts = chart_data(load_run(folder))
    assert [s.name for s in charts.errors.series] == ["failed"]
    assert [y for _, y in charts.errors.series[0].points] == [0, 2, 4, 6, 8]
    assert charts.errors.caption.startswith("From the failed column of timeseries.csv")


# --- text from the run is data, never markup -----------------------------------------------------


def test_hostile_text_is_escaped_in_html_and_kept_on_its_line_in_the_console(tmp_path: Path) -> None:
    long_reason = "x" * 5000
    errors = {"publish": {HOSTILE: 7, long_reason: 2}}
    events = [
        {
            "t": 1.0,
            "event": "error",
            "device": HOSTILE,
            "stage": "connect",
            "reason": HOSTILE,
            "detail": HOSTILE,
        },
        {"t": 2, "event": "errors", "stage": "publish", "reason": long_reason, "count": 2},
        {"t": 3, "event": "errors", "stage": "publish", "reason": HOSTILE, "count": 7},
    ]
    folder = write_run(
        tmp_path / "hostile",
        summary(run_id=HOSTILE, stopped=HOSTILE, behaviour=HOSTILE, errors_by_stage=errors),
        steady_rows(),
        events,
    )
    run = load_run(folder)
    assert run.summary.run_id == HOSTILE
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert page.count("</script>") == 3  # uPlot, the data block and the page's script: none from the run
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quoted&#34; &#39;single&#39; ünï©ødé 漢字" in page
    )
    assert chart_count(page) == 5
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e \\u0026" in page
    reasons = chart_block(page)["charts"][4]["names"]
    assert "<script>alert(1)</script> & \"quoted\" 'single' ünï©ødé 漢字 \\x1b[31m\\r\\n" in reasons
    assert "x" * 301 not in page  # very long text is clipped
    text = console_table(run)
    assert "\x1b" not in text
    assert "\r" not in text
    assert "<script>alert(1)</script> & \"quoted\" 'single' ünï©ødé 漢字 \\x1b[31m\\r\\n" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    error_rows = [line for line in text.splitlines() if line.lstrip().startswith(("7 ", "2 "))]
    assert len(error_rows) == 2
    assert error_rows[1].endswith("x" * 47 + "…")


# --- what stops the report, what is skipped ------------------------------------------------------


def test_a_folder_without_summary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as caught:
        load_run(tmp_path)
    assert str(caught.value) == f"no summary.json in {tmp_path}: is this a run folder (data/runs/<run-id>/)?"


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="is not a folder"):
        load_run(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"run_id": "r",\n\n "sent": }', "is not valid JSON (line 3): Expecting value"),
        ("[1, 2]", "holds an array, not an object"),
        ("null", "holds null, not an object"),
        ('{"sent": 3}', "has no run_id"),
        ('{"run_id": ""}', "has no run_id"),
        ('{"run_id": "r", "sent": "many"}', "sent should be a number, got 'many'"),
        ('{"run_id": "r", "latency_ms": {"ack": {"p99": "slow"}}}', "latency_ms.ack.p99 should be a number"),
        ('{"run_id": "r", "generator": [1]}', "generator should be an object"),
        ('{"run_id": "r", "notes": "one"}', "notes should be a list of text"),
    ],
)
def test_a_malformed_summary_is_refused_in_one_line_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    folder = write_run(tmp_path / "bad", content)
    with pytest.raises(ReportError) as caught:
        load_run(folder)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"summary.json in {folder}")
    assert message in text


def test_a_summary_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "latin1"
    folder.mkdir()
    (folder / "summary.json").write_bytes('{"run_id": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(ReportError) as caught:
        load_run(folder)
    assert str(caught.value) == f"summary.json in {folder} is not UTF-8 text (byte 15)"


def test_a_report_that_cannot_be_written_says_where(normal_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "report.html"
    with pytest.raises(ReportError) as caught:
        write_html(load_run(normal_run), target)
    assert str(caught.value) == f"cannot write {target}: No such file or directory"


def test_a_cell_that_is_not_a_number_stops_the_report_naming_line_and_column(tmp_path: Path) -> None:
    rows = steady_rows()
    rows[3]["sent"] = "abc"
    folder = write_run(tmp_path / "badcell", summary(), rows)
    with pytest.raises(ReportError) as caught:
        load_run(folder)
    assert str(caught.value) == "timeseries.csv line 5: 'abc' is not a number in column sent"


def test_an_infinite_latency_is_not_a_number(tmp_path: Path) -> None:
    rows = steady_rows()
    rows[0]["ack_p99_ms"] = "inf"
    folder = write_run(tmp_path / "inf", summary(), rows)
    with pytest.raises(
        ReportError, match=r"^timeseries.csv line 2: 'inf' is not a number in column ack_p99_ms$"
    ):
        load_run(folder)


def test_a_last_line_cut_short_is_skipped_with_a_note(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "cut", summary(), steady_rows())
    with (folder / "timeseries.csv").open("a", encoding="utf-8") as file:
        file.write("10,drain,0,0,3")
    run = load_run(folder)
    assert len(run.seconds) == 10
    assert run.notes == (
        "timeseries.csv: the last line (12) is cut short, as an interrupted write leaves it: skipped",
        "no events.jsonl: errors per second come from the failed column",
    )


def test_a_short_line_before_the_end_stops_the_report(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "short", summary(), steady_rows())
    lines = (folder / "timeseries.csv").read_text(encoding="utf-8").splitlines()
    lines[4] = "3,run,2000"
    (folder / "timeseries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match=r"^timeseries.csv line 5: 3 cells, the header has 23$"):
        load_run(folder)


def test_malformed_event_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    events: list[object] = [
        {"t": 1, "event": "errors", "stage": "publish", "reason": "not-connected", "count": 4},
        "not json at all",
        '{"t": 2, "event": "errors", "reason": "not-connected", "cou',  # cut short
        "[1, 2, 3]",
        '{"t": "soon", "event": "error", "reason": "x"}',
        '{"t": 3, "event": "errors", "reason": "not-connected", "count": "many"}',
        '{"t": 3, "event": "error", "reason": null}',
        '{"t": 3, "event": "published", "device": "d1"',  # cut short, not charted
        {"t": 3, "event": "error", "device": "d1", "stage": "connect", "reason": "timeout"},
        {"t": 3.5, "event": "published", "device": "d1", "topic": "a/b", "payload": "1"},
        {"t": 3.6, "event": "published", "device": "error", "topic": "phase/collapse", "payload": "1"},
        "",
    ]
    folder = write_run(tmp_path / "events", summary(), steady_rows(), events)
    run = load_run(folder)
    assert run.events.malformed == 7
    assert run.events.lines == 11
    assert {(e.t, e.reason): e.count for e in run.events.errors} == {(1, "not-connected"): 4}
    assert [(e.t, e.device, e.reason) for e in run.events.samples] == [(3.0, "d1", "timeout")]
    assert "events.jsonl: 7 malformed lines skipped (of 11)" in run.notes
    assert "note: events.jsonl: 7 malformed lines skipped (of 11)" in console_table(run).splitlines()


def test_errors_with_a_device_are_not_counted_twice(tmp_path: Path) -> None:
    # The per-second totals include the errors that also have an event of their own.
    events = [
        {"t": 2.5, "event": "error", "device": "d1", "stage": "connect", "reason": "refused"},
        {"t": 2.7, "event": "error", "device": "d2", "stage": "connect", "reason": "refused"},
        {"t": 2, "event": "errors", "stage": "connect", "reason": "refused", "count": 2},
        {"t": 2, "event": "errors", "stage": "publish", "reason": "not-connected", "count": 9},
    ]
    run = load_run(write_run(tmp_path / "both", summary(), steady_rows(), events))
    assert {(e.t, e.reason): e.count for e in run.events.errors} == {
        (2, "refused"): 2,
        (2, "not-connected"): 9,
    }
    assert len(run.events.samples) == 2


def test_a_log_without_totals_counts_its_error_events(tmp_path: Path) -> None:
    events = [
        {"t": 2.5, "event": "error", "device": "d1", "stage": "connect", "reason": "refused"},
        {"t": 2.7, "event": "error", "device": "d2", "stage": "connect", "reason": "refused"},
        {"t": 4.1, "event": "error", "device": "d2", "stage": "connect", "reason": "timeout"},
    ]
    run = load_run(write_run(tmp_path / "singles", summary(), steady_rows(), events))
    assert {(e.t, e.reason): e.count for e in run.events.errors} == {(2, "refused"): 2, (4, "timeout"): 1}


def test_the_runs_own_notes_are_shown(tmp_path: Path) -> None:
    notes = ["interval 0: capacity mode", "<b>bold</b> claim"]
    folder = write_run(tmp_path / "notes", summary(notes=notes), steady_rows(), [])
    run = load_run(folder)
    assert run.summary.notes == tuple(notes)
    lines = console_table(run).splitlines()
    assert lines[-2:] == ["note: interval 0: capacity mode", "note: <b>bold</b> claim"]
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert "<li>interval 0: capacity mode</li><li>&lt;b&gt;bold&lt;/b&gt; claim</li>" in page


def test_many_distinct_reasons_are_bounded(tmp_path: Path) -> None:
    events = [{"t": i % 10, "event": "errors", "reason": f"reason-{i:03d}", "count": 1} for i in range(120)]
    run = load_run(write_run(tmp_path / "reasons", summary(), steady_rows(), events))
    reasons = {e.reason for e in run.events.errors}
    assert len(reasons) == 51
    assert sum(e.count for e in run.events.errors if e.reason == "other reasons") == 70
    series = {s.name: s for s in chart_data(run).errors.series}
    # Eight lines of their own (each reason counted once, so in name order), the rest share one.
    assert list(series) == [f"reason-{i:03d}" for i in range(8)] + ["other reasons"]
    assert sum(y for _, y in series["other reasons"].points if y is not None) == 120 - 8


# --- long runs ---------------------------------------------------------------------------------


def test_a_long_run_is_downsampled_keeping_the_latency_spike(tmp_path: Path) -> None:
    rows = [row(t, sent=1000 + t % 7, ack_p99_ms=10.0 + t % 5) for t in range(20_000)]
    rows[12_345]["ack_p99_ms"] = 987.6
    rows[15_001]["connected"] = 3
    folder = write_run(tmp_path / "long", summary(), rows, [])
    run = load_run(folder)
    charts = chart_data(run)
    assert charts.bucket_s == 10
    for chart in charts.all():
        for series in chart.series:
            assert len(series.points) == 2000, series.name
    p99 = next(s for s in charts.latency.series if s.name == "ack p99")
    peak_t, peak = max(((t, y) for t, y in p99.points if y is not None), key=lambda point: point[1])
    assert peak == 987.6
    assert peak_t <= 12_345 < peak_t + charts.bucket_s
    highs = sorted({y for _, y in p99.points if y is not None})
    assert highs == [14.0, 987.6]  # every other bucket keeps its own highest, 10 + 4
    sent = next(s for s in charts.throughput.series if s.name == "written")
    sent_total = sum(1000 + t % 7 for t in range(20_000))
    # Mean per second times the seconds in each bucket gives back every message sent.
    covered = [min(charts.bucket_s, 20_000 - int(t)) for t, _ in sent.points]
    assert sum(
        y * n for (_, y), n in zip(sent.points, covered, strict=True) if y is not None
    ) == pytest.approx(sent_total)
    connected = next(s for s in charts.connections.series if s.name == "connected")
    assert min(y for _, y in connected.points if y is not None) == 3
    assert "Each point covers 10 s: the highest value in the interval" in charts.latency.caption
    page = write_html(run, folder / "report.html").read_text(encoding="utf-8")
    assert chart_count(page) == 5
    assert "time since the start (hours:minutes:seconds)" in page


def test_a_gap_in_the_rows_breaks_the_line(tmp_path: Path) -> None:
    rows = [row(t) for t in (0, 1, 2, 6, 7)]
    run = load_run(write_run(tmp_path / "gap", summary(), rows, []))
    sent = next(s for s in chart_data(run).throughput.series if s.name == "written")
    assert sent.points == ((0.0, 2000), (1.0, 2000), (2.0, 2000), (3.0, None), (6.0, 2000), (7.0, 2000))


# --- the timeline ------------------------------------------------------------------------------


def steered() -> list[dict[str, Any]]:
    """A timeline: 1,000 devices every 0.5 s, scaled to 1,250 at 3.5 s, every 2 s from 5 s,
    three devices paused at 6 s."""
    change = {"devices": 1000, "interval_s": 0.5, "paused": 0, "stage": 1, "count": None}
    return [
        {**change, "t": 0.0, "what": "start"},
        {**change, "t": 3.5, "what": "scale", "devices": 1250},
        {**change, "t": 5.0, "what": "rate", "devices": 1250, "interval_s": 2.0},
        {**change, "t": 6.0, "what": "pause", "devices": 1250, "interval_s": 2.0, "paused": 3, "count": 3},
    ]


def test_the_timeline_is_a_table_and_marks_across_the_charts(tmp_path: Path) -> None:
    data = summary(timeline=steered(), devices=1250, interval_s=2.0)
    run = load_run(write_run(tmp_path / "steered", data, steady_rows(), normal_events()))
    lines = console_table(run).splitlines()
    assert kv("devices", "1,250 at the end (1,000 at the start, 1,250 at most)") in lines
    assert kv("interval", "2 s at the end (0.5 s at the start, 0.5 s at the shortest)") in lines
    start = lines.index("t (s)  change                            devices  interval  paused")
    assert lines[start + 1 : start + 5] == [
        "  0.0  start: 1,000 devices every 0.5 s    1,000     0.5 s       0",
        "  3.5  scale to 1,250 devices              1,250     0.5 s       0",
        "  5.0  rate: every 2 s                     1,250       2 s       0",
        "  6.0  pause 3 devices (3 paused)          1,250       2 s       3",
    ]
    assert [(mark.t, mark.what) for mark in chart_data(run).marks] == [
        (3.5, "scale"),
        (5.0, "rate"),
        (6.0, "pause"),
    ]
    page = write_html(run, tmp_path / "steered" / "report.html").read_text(encoding="utf-8")
    assert chart_block(page)["marks"] == [
        {"t": 3.5, "what": "scale", "text": "scale to 1,250 devices"},
        {"t": 5.0, "what": "rate", "text": "rate: every 2 s"},
        {"t": 6.0, "what": "pause", "text": "pause 3 devices (3 paused)"},
    ]
    assert "<h2>Timeline</h2>" in page
    assert "<td>scale to 1,250 devices</td>" in page
    for what in ("scale", "rate", "pause"):
        assert page.count(f'<li><span class="swatch mark {what}"></span>{what}</li>') == 5


def test_a_run_that_changed_nothing_has_no_timeline_table(normal_run: Path) -> None:
    lines = console_table(load_run(normal_run)).splitlines()
    assert not any(line.startswith("t (s)") for line in lines)
    page = write_html(load_run(normal_run), normal_run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Timeline</h2>" not in page
    assert chart_block(page)["marks"] == []
