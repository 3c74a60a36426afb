"""The run model: what the run writes (rows, the summary, the live seconds) reads back the same,
typed, in the report and the dashboard; a value of the wrong type is named, never guessed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from stress.control import live_second
from stress.dashboard.feed import run_folder
from stress.measure.meter import Second
from stress.results import summary as summaries
from stress.results.model import (
    COLUMNS,
    CannotStart,
    ClusterSummary,
    Observer,
    Row,
    RunFileError,
    RunSummary,
    WorkerSummary,
    read_summary,
)
from stress.results.report.charts import chart_data
from stress.results.report.loading import load_run
from stress.results.report.text import console_table
from stress.results.runfolder import RunFolder
from stress.results.timeline import Timeline
from stress.scenario import Broker, Scenario
from stress.shapes import timeline

#: A run folder as runs wrote it before the timeline, and before the end-to-end counts were
#: named observed and sampled (``delivered``, ``e2e_expected``; ``fleet`` for devices_started):
#: 4 devices every 0.5 s for 4 s, scaled to 6 from another shell at 3.3 s.
OLDER_RUN = Path(__file__).parent / "fixtures" / "run-without-timeline"


def ms(value: float) -> float:
    return value / 1000


def seconds() -> list[Second]:
    """A short run with samples, errors, a quiet second and the drain."""
    connecting = Second(0, phase="connect", connects=3, connected=3, fleet=3, wall_s=1.0, cpu_s=0.25)
    connecting.connect.record(ms(12))
    busy = Second(
        1, offered=30, sent=29, acked=27, failed=1, delivered=2, e2e_expected=3, connected=3, fleet=3
    )
    busy.wall_s, busy.cpu_s, busy.cpu_busiest_s = 1.0, 0.5, 0.5
    for value in (1.5, 2.25, 40.0):
        busy.ack.record(ms(value))
        busy.lateness.record(ms(value / 10))
    busy.e2e.record(ms(7))
    busy.lag.record(ms(3))
    busy.errors = {("ack", "timeout"): 1}
    busy.slowest = [(40.0, "dev00002"), (2.25, "dev00001")]
    quiet = Second(2, offered=0, connected=2, fleet=3, disconnects=1, wall_s=1.0)
    drain = Second(3, phase="drain", acked=2, connected=0, fleet=3, disconnects=2, wall_s=0.5)
    return [connecting, busy, quiet, drain]


def scenario() -> Scenario:
    return Scenario(target="mqtt", broker=Broker(port=1884), stages=timeline("steady", 3, 0.1, 2.0), qos=1)


def followed() -> Timeline:
    """The timeline of a run (:func:`written_run` scales it to 5 devices at 1.25 s)."""
    followed = Timeline(scenario(), lambda _event: None)
    followed.event({"event": "phase", "phase": "run", "t": 0.5})
    return followed


def facts() -> summaries.RunFacts:
    cluster = ClusterSummary(
        scheduler="tcp://10.0.0.5:8786",
        workers=(WorkerSummary(address="tcp://10.0.0.6:1", host="h1", devices=3, cpu_percent=12.5),),
        lost=("tcp://10.0.0.6:1",),
        start_alignment_ms=0.25,
    )
    return summaries.RunFacts(
        run_id="20261207-080000-mqtt-3",
        started_at=1_796_630_400.5,
        ended_at=1_796_630_404.0,
        run_seconds=2.0,
        notes=["a note"],
        cannot_start=CannotStart(reason="tcp-refused", attempts=4, message="no device could connect"),
        observer=Observer(state="refused", reason="connack-not-authorized", message="refused"),
        cluster=cluster,
        timeline=followed(),
    )


def written_run(folder: Path) -> tuple[list[Second], RunSummary]:
    """A run folder written by the run's own writer."""
    run = seconds()
    writer = RunFolder(folder)
    made = facts()
    assert made.timeline is not None
    for second in run:
        if second.t == 1:  # during the second, as the run tells its events
            made.timeline.event({"event": "control", "op": "scale", "devices": 5, "t": 1.25})
        made.timeline.second(second)
        writer.second(second)
    summary = summaries.build(scenario(), run, made)
    writer.finish(summary.to_json())
    return run, summary


def test_rows_and_summary_read_back_as_written(tmp_path: Path) -> None:
    run, summary = written_run(tmp_path / "run")
    read = load_run(tmp_path / "run")
    assert read.summary == summary
    assert read.seconds == tuple(Row.of(second) for second in run)
    assert read.notes == ()


def test_the_file_has_one_column_per_field_of_the_row(tmp_path: Path) -> None:
    run, _ = written_run(tmp_path / "run")
    with (tmp_path / "run" / "timeseries.csv").open(newline="") as file:
        lines = list(csv.DictReader(file))
    assert tuple(lines[0]) == COLUMNS
    busy = lines[1]
    assert (busy["t"], busy["acked"], busy["devices_started"], busy["cpu_percent"]) == (
        "1",
        "27",
        "3",
        "50.0",
    )
    assert (busy["observed"], busy["sampled"]) == ("2", "3")
    assert busy["ack_p99_ms"] == str(Row.of(run[1]).ack_p99_ms)
    assert lines[2]["ack_p50_ms"] == ""  # a second without samples has no percentile, not 0


def test_a_live_second_is_the_row_with_its_errors_and_slowest_devices() -> None:
    busy = seconds()[1]
    live = live_second(busy)
    assert {key: live[key] for key in COLUMNS} == Row.of(busy).to_json()
    assert live["errors"] == [["ack", "timeout", 1]]
    assert live["slowest"] == [[40.0, "dev00002"], [2.25, "dev00001"]]
    json.dumps(live, allow_nan=False)  # what goes over the socket is plain JSON


def test_the_dashboard_shows_a_finished_run_as_rows_like_the_live_ones(tmp_path: Path) -> None:
    run, summary = written_run(tmp_path / "run")
    shown = run_folder(tmp_path / "run")
    assert shown["run"]["summary"] == summary.to_json()
    assert [{key: s[key] for key in COLUMNS} for s in shown["seconds"]] == [Row.of(s).to_json() for s in run]
    assert shown["workers"][0]["worker"] == "tcp://10.0.0.6:1"
    assert shown["workers"][0]["lost"] is True


def test_the_summary_document_keeps_its_keys(tmp_path: Path) -> None:
    _, summary = written_run(tmp_path / "run")
    document = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert document["latency_ms"]["ack"]["count"] == 3
    assert document["cluster"]["workers"][0]["address"] == "tcp://10.0.0.6:1"
    assert document["cannot_start"]["attempts"] == 4
    assert document["stages"] == [{"devices": 3, "interval_s": 0.1, "duration_s": 2.0, "burst": False}]
    assert document["generator"]["cpus"] is None
    assert (document["devices"], document["interval_s"]) == (5, 0.1)  # in force at the end
    assert [(c["t"], c["what"], c["devices"]) for c in document["timeline"]] == [
        (0.0, "start", 3),
        (1.25, "scale", 5),
    ]
    assert summary.problems == ("no device could connect",)
    assert summary.e2e_refused == "connack-not-authorized"


def test_an_older_summary_reads_with_what_it_has() -> None:
    summary = read_summary({"run_id": "r", "sent": 5.0, "latency_ms": {"ack": {"p99": 3}}}, "here")
    assert summary.sent == 5
    assert summary.latency_ms.ack.p99 == 3.0
    assert summary.latency_ms.e2e.count == 0
    assert summary.generator is None
    assert summary.errors == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"run_id": "r", "sent": "many"}, "here: sent should be a number, got 'many'"),
        ({"run_id": "r", "sent": 1.5}, "here: sent should be a whole number, got 1.5"),
        ({"run_id": "r", "sent": True}, "here: sent should be a number, got True"),
        ({"run_id": "r", "tls": "yes"}, "here: tls should be true or false, got 'yes'"),
        ({"run_id": "r", "latency_ms": []}, "here: latency_ms should be an object, got []"),
        ({"run_id": "r", "latency_ms": {"ack": {"p99": "x"}}}, "here: latency_ms.ack.p99 should be a number"),
        ({"run_id": "r", "notes": ["a", {}]}, "here: notes[1] should be text, got {}"),
        ({"run_id": "r", "stages": [{"devices": []}]}, "here: stages[0].devices should be a number"),
        ({"run_id": "r", "errors_by_stage": {"ack": {"t": "x"}}}, "here: errors_by_stage.ack.t should be"),
        ({"run_id": "r", "cluster": {"workers": {}}}, "here: cluster.workers should be a list of objects"),
        ({"run_id": ""}, "here has no run_id"),
        ([], "here holds an array, not an object"),
    ],
)
def test_a_value_of_the_wrong_type_is_named(document: Any, message: str) -> None:
    with pytest.raises(RunFileError) as caught:
        read_summary(document, "here")
    assert str(caught.value).startswith(message)


def test_figures_that_are_not_finite_read_as_not_measured() -> None:
    summary = read_summary(
        {"run_id": "r", "msgs_per_s": math.nan, "latency_ms": {"e2e": {"max": math.inf}}}, "x"
    )
    assert summary.msgs_per_s is None
    assert summary.latency_ms.e2e.max is None


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ({"t": "1", "sent": "lots"}, "line 2: 'lots' is not a number in column sent"),
        ({"t": "1", "ack_p99_ms": "nan"}, "line 2: 'nan' is not a number in column ack_p99_ms"),
        ({"t": "", "sent": "1"}, "line 2: no value in column t"),
    ],
)
def test_a_cell_that_is_not_a_number_is_named(cells: dict[str, str], message: str) -> None:
    with pytest.raises(RunFileError, match=message):
        Row.read(cells, "line 2")


def test_a_row_reads_with_the_columns_it_has() -> None:
    assert Row.read({"t": " 4 ", "sent": "2.0", "phase": "run"}, "x") == Row(t=4, sent=2, phase="run")


def test_the_seconds_say_what_was_in_force(tmp_path: Path) -> None:
    written_run(tmp_path / "run")
    with (tmp_path / "run" / "timeseries.csv").open(newline="") as file:
        lines = list(csv.DictReader(file))
    assert [(line["t"], line["devices"], line["interval_s"]) for line in lines] == [
        ("0", "3", "0.1"),
        ("1", "5", "0.1"),  # scaled at 1.25 s: in force at the end of second 1
        ("2", "5", "0.1"),
        ("3", "5", "0.1"),
    ]


def test_a_run_folder_written_before_the_timeline_still_reads() -> None:
    run = load_run(OLDER_RUN)
    summary = run.summary
    assert (summary.observed, summary.sampled) == (48, 48)  # read from delivered and e2e_expected
    assert (summary.devices, summary.interval_s, summary.timeline) == (4, 0.5, ())
    assert [row.observed for row in run.seconds] == [12, 12, 12, 12, 0]  # the delivered column
    assert [row.devices_started for row in run.seconds] == [4, 4, 4, 6, 6]  # the fleet column
    assert {row.sampled for row in run.seconds} == {0}  # not written then
    assert {row.devices for row in run.seconds} == {0}
    assert run.notes == ()
    lines = console_table(run).splitlines()
    assert "observed end to end  48 of 48 sampled (100.0 %); 12.0/s of 12.0/s" in lines
    assert "devices              4" in lines
    charts = chart_data(run)
    assert [series.name for series in charts.observed.series] == ["observed"]
    assert "no per-second count of what the sampled devices wrote" in charts.observed.caption
    assert [series.name for series in charts.connections.series] == ["connected", "connects", "disconnects"]
    assert charts.marks == ()


def test_the_dashboard_shows_a_run_folder_written_before_the_timeline() -> None:
    shown = run_folder(OLDER_RUN)
    assert shown["run"]["summary"]["observed"] == 48
    assert shown["run"]["timeline"] == []
    assert shown["run"]["report"] == "report/run"
    assert [second["observed"] for second in shown["seconds"]] == [12, 12, 12, 12, 0]


def test_an_older_summary_reads_its_old_names_and_prefers_the_new() -> None:
    older = read_summary({"run_id": "r", "delivered": 7, "e2e_expected": 9}, "here")
    assert (older.observed, older.sampled) == (7, 9)
    both = read_summary({"run_id": "r", "observed": 3, "delivered": 7}, "here")
    assert both.observed == 3
    with pytest.raises(RunFileError, match="here: delivered should be a number, got 'x'"):
        read_summary({"run_id": "r", "delivered": "x"}, "here")  # named as the file names it
    row = Row.read({"t": "1", "delivered": "4", "fleet": "9"}, "line 2")
    assert (row.observed, row.devices_started) == (4, 9)
