"""The report of one stress run: a console summary and one self-contained ``report.html``.

A run folder (``data/runs/<run-id>/``) holds ``summary.json`` (the totals), ``timeseries.csv`` (one
row per second) and ``events.jsonl`` (what happened, one JSON object a line). :func:`load_run` reads
it once into frozen dataclasses; :func:`console_table` renders them for a terminal and
:func:`write_html` as a single HTML file whose four charts are inline SVG drawn here, so the file
opens offline, from disk, on a phone or a laptop. :func:`report` does all three.

How the input is judged:

* ``summary.json`` is required and must be a JSON object with a ``run_id``; any other key may be
  missing (older or partial summaries) and is then shown as ``-``. A key of the wrong type stops
  the report with the key's name: the figures would otherwise be wrong without a word.
* ``timeseries.csv`` and ``events.jsonl`` are optional: a run stopped early may have written
  neither, and the report shows what exists.
* A cell of ``timeseries.csv`` that is not a number stops the report, naming the line and the
  column, for the same reason. The one exception is a last line with fewer cells than the header,
  which is what an interrupted write leaves behind: it is skipped with a note.
* ``events.jsonl`` may hold millions of lines. It is streamed, and only what the charts need is
  kept: error counts per second and reason, the phase marks, the collapse mark and the first few
  errors with their device. Errors are counted from the per-second ``errors`` totals, which
  include the errors that also have an ``error`` event of their own; a log without totals is
  counted from its ``error`` events. Lines that mention none of these are checked for shape only (one
  ``{...}`` object) rather than parsed, which keeps a multi-million-line log to seconds. A
  malformed line is skipped and counted in a note, never fatal.
* Long runs are drawn with at most :data:`MAX_POINTS` points per series: counts become the mean
  per second over each interval, latencies keep the highest value (a spike stays visible), and
  the connected gauge keeps the lowest (a drop stays visible). Each chart's caption says so.
"""

from __future__ import annotations

import csv
import json
import math
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Final, TextIO, TypeGuard

from stress.errors import StressError

__all__ = [
    "LATENCIES",
    "MAX_POINTS",
    "PHASES",
    "SATURATED_WARNING",
    "Chart",
    "Charts",
    "Collapse",
    "ErrorCount",
    "ErrorSample",
    "Events",
    "Generator",
    "Latencies",
    "Latency",
    "ReportError",
    "Run",
    "Second",
    "SecondErrors",
    "Series",
    "Span",
    "Summary",
    "chart_data",
    "console_table",
    "load_run",
    "report",
    "write_html",
]

#: Most points drawn per series; longer runs are bucketed into intervals of whole seconds.
MAX_POINTS: Final = 2000
#: The run phases, in order, as named in ``timeseries.csv`` and the ``phase`` events.
PHASES: Final = ("connect", "run", "drain")
#: The latencies reported, in table order.
LATENCIES: Final = ("connect", "ack", "e2e", "lateness")

#: Said, in the console and the HTML, when the generator reports itself saturated.
SATURATED_WARNING: Final = (
    "the generator was saturated: these figures are bounded by the load generator, not by the target"
)

# A hostile run could name a new reason on every line; beyond this many distinct reasons the
# rest are counted together so memory stays bounded whatever the log holds.
_MAX_REASONS: Final = 50
_OTHER_REASONS: Final = "other reasons"
_REASON_CHARS: Final = 200
_ERROR_SAMPLES: Final = 10
_CHART_REASONS: Final = 8
_CONSOLE_TEXT: Final = 48
_CONSOLE_ERROR_ROWS: Final = 20
_HTML_TEXT: Final = 300
_HTML_ERROR_ROWS: Final = 100
#: A problem that failed the run is one line saying what to do: shown whole, up to this.
_PROBLEM_TEXT: Final = 1000


class ReportError(StressError):
    """A run folder the report cannot read; the message is one line saying what and where."""


# --- what a run folder holds -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of one latency in milliseconds; ``None`` where the run had no samples."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    count: int = 0


@dataclass(frozen=True, slots=True)
class Latencies:
    """The four latencies of a run (connect, PUBACK, end to end, lateness against the schedule)."""

    connect: Latency = Latency()
    ack: Latency = Latency()
    e2e: Latency = Latency()
    lateness: Latency = Latency()


@dataclass(frozen=True, slots=True)
class Generator:
    """Health of the load generator itself: when saturated, it and not the target set the pace."""

    loop_lag_p99_ms: float | None = None
    loop_lag_max_ms: float | None = None
    cpu_percent: float | None = None
    overruns: int | None = None
    saturated: bool = False


@dataclass(frozen=True, slots=True)
class Collapse:
    """The second the target was judged to collapse (``None`` when not known), and why."""

    t: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """How many messages failed at one stage (``""`` when not known) for one reason."""

    stage: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class Summary:
    """``summary.json``: the run's settings and totals; ``None`` for keys the file lacks."""

    run_id: str
    target: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    tls: bool | None = None
    qos: int | None = None
    shape: str | None = None
    interval_s: float | None = None
    devices: int | None = None
    processes: int | None = None
    behaviour: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    stopped: str | None = None
    offered: int | None = None
    sent: int | None = None
    acked: int | None = None
    failed: int | None = None
    delivered: int | None = None
    e2e_expected: int | None = None
    msgs_per_s: float | None = None
    offered_per_s: float | None = None
    latency: Latencies = Latencies()
    connections_peak: int | None = None
    #: By stage and reason when the summary has them, else by reason; most frequent first.
    errors: tuple[ErrorCount, ...] = ()
    generator: Generator | None = None
    collapse: Collapse | None = None
    #: What the run itself noted (``notes``, a list of text, in summaries that have it).
    notes: tuple[str, ...] = ()
    #: What failed the run, a line each: no device could connect (``cannot_start``), the broker
    #: refused the end-to-end observer (``observer``).
    problems: tuple[str, ...] = ()
    #: Why end-to-end delivery was not measured: the reason the observer was refused, or None.
    e2e_refused: str | None = None
    #: ``--cluster`` runs: the scheduler and one row per worker (see :func:`_cluster_rows`).
    scheduler: str | None = None
    workers: tuple[tuple[str, ...], ...] = ()
    #: How closely the workers' common start was aligned (half the worst clock round trip).
    alignment_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Second:
    """One row of ``timeseries.csv``: counts during second ``t``, percentiles of its samples."""

    t: int
    phase: str = ""
    offered: int = 0
    sent: int = 0
    acked: int = 0
    failed: int = 0
    delivered: int = 0
    connected: int = 0
    connects: int = 0
    disconnects: int = 0
    lateness_p99_ms: float | None = None
    ack_p50_ms: float | None = None
    ack_p95_ms: float | None = None
    ack_p99_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p99_ms: float | None = None
    loop_lag_ms: float | None = None
    cpu_percent: float | None = None
    overruns: int = 0


@dataclass(frozen=True, slots=True)
class SecondErrors:
    """Errors for one reason during second ``t`` (from ``error`` and ``errors`` events)."""

    t: int
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class ErrorSample:
    """One of the first ``error`` events of the run, with the device it happened to."""

    t: float
    device: str
    stage: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Events:
    """What the report keeps of ``events.jsonl``; ``lines`` counts the non-blank lines read."""

    errors: tuple[SecondErrors, ...] = ()
    phases: tuple[tuple[float, str], ...] = ()
    collapse_t: float | None = None
    samples: tuple[ErrorSample, ...] = ()
    lines: int = 0
    malformed: int = 0


@dataclass(frozen=True, slots=True)
class Run:
    """A run folder as read by :func:`load_run`; ``notes`` says what was missing or skipped."""

    path: Path
    summary: Summary
    seconds: tuple[Second, ...]
    events: Events
    notes: tuple[str, ...]


# --- reading a run folder ----------------------------------------------------------------------


def load_run(run_dir: Path) -> Run:
    """Read a run folder: ``summary.json`` (required), ``timeseries.csv`` and ``events.jsonl``.

    Raises:
        ReportError: the folder or its summary is missing or unreadable, or a figure in the
            summary or the time series is not a number (see the module notes).
    """
    if not run_dir.is_dir():
        raise ReportError(f"{_line(str(run_dir))} is not a folder: pass a run folder (data/runs/<run-id>/)")
    notes: list[str] = []
    summary = _load_summary(run_dir)
    seconds = _load_timeseries(run_dir, notes)
    events = _load_events(run_dir, notes)
    return Run(path=run_dir, summary=summary, seconds=seconds, events=events, notes=tuple(notes))


class _Fields:
    """Typed reads from one JSON object; a value of the wrong type is a ReportError naming it."""

    def __init__(self, data: dict[str, Any], where: str, prefix: str = "") -> None:
        self._data = data
        self._where = where
        self._prefix = prefix

    def _wrong(self, key: str, expected: str) -> ReportError:
        shown = _clip(repr(self._data[key]), 40)
        return ReportError(f"{self._where}: {self._prefix}{key} should be {expected}, got {shown}")

    def text(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._wrong(key, "text")
        return str(value)

    def number(self, key: str) -> float | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, "a number")
        # Python's json module writes NaN and Infinity unless told not to: shown as absent, like null.
        return float(value) if math.isfinite(value) else None

    def integer(self, key: str) -> int | None:
        value = self._data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = self.number(key)
        if number is None:
            return None
        if not number.is_integer():
            raise self._wrong(key, "a whole number")
        return int(number)

    def flag(self, key: str) -> bool | None:
        value = self._data.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self._wrong(key, "true or false")

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._wrong(key, "a list of text")
        return tuple(value)

    def objects(self, key: str) -> list[_Fields]:
        """A list of objects, each read as fields."""
        value = self._data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self._wrong(key, "a list of objects")
        return [_Fields(item, self._where, f"{self._prefix}{key}[{n}].") for n, item in enumerate(value)]

    def child(self, key: str) -> _Fields | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._wrong(key, "an object")
        return _Fields(value, self._where, f"{self._prefix}{key}.")

    def counts(self) -> dict[str, int]:
        """This object read as ``{name: count}``."""
        return {str(name): self.integer(name) or 0 for name in self._data}

    def names(self) -> list[str]:
        return [str(name) for name in self._data]


def _load_summary(run_dir: Path) -> Summary:
    path = run_dir / "summary.json"
    where = f"summary.json in {_line(str(run_dir))}"
    if not path.is_file():
        raise ReportError(
            f"no summary.json in {_line(str(run_dir))}: is this a run folder (data/runs/<run-id>/)?"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportError(f"{where} is not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{where} is not valid JSON (line {exc.lineno}): {exc.msg}") from exc
    except (OSError, RecursionError) as exc:
        raise ReportError(f"cannot read {where}: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{where} holds {_json_kind(data)}, not an object: is it a run summary?")
    fields = _Fields(data, where)
    run_id = fields.text("run_id")
    if not run_id:
        raise ReportError(f"{where} has no run_id: is it a summary written by a stress run?")
    problems, e2e_refused = _problems(fields)
    return Summary(
        run_id=run_id,
        target=fields.text("target"),
        host=fields.text("host"),
        port=fields.integer("port"),
        protocol=fields.text("protocol"),
        tls=fields.flag("tls"),
        qos=fields.integer("qos"),
        shape=fields.text("shape"),
        interval_s=fields.number("interval_s"),
        devices=fields.integer("devices"),
        processes=fields.integer("processes"),
        behaviour=fields.text("behaviour"),
        started_at=fields.text("started_at"),
        ended_at=fields.text("ended_at"),
        duration_s=fields.number("duration_s"),
        stopped=fields.text("stopped"),
        offered=fields.integer("offered"),
        sent=fields.integer("sent"),
        acked=fields.integer("acked"),
        failed=fields.integer("failed"),
        delivered=fields.integer("delivered"),
        e2e_expected=fields.integer("e2e_expected"),
        msgs_per_s=fields.number("msgs_per_s"),
        offered_per_s=fields.number("offered_per_s"),
        latency=_latencies(fields.child("latency_ms")),
        connections_peak=fields.integer("connections_peak"),
        errors=_error_counts(fields),
        generator=_generator(fields.child("generator")),
        collapse=_collapse(fields.child("collapse")),
        notes=fields.texts("notes"),
        problems=problems,
        e2e_refused=e2e_refused,
        **_cluster(fields.child("cluster")),
    )


#: The per-worker table of a cluster run.
CLUSTER_HEADER = ["worker", "host", "devices", "msgs/s", "CPU %", "lag p99 ms", "offset ms", "state"]


def _cluster(fields: _Fields | None) -> dict[str, Any]:
    """``cluster`` of a ``--cluster`` run: its scheduler and a row per worker; {} otherwise."""
    if fields is None:
        return {}
    lost = set(fields.texts("lost"))
    rows = []
    for worker in fields.objects("workers"):
        address = worker.text("address") or "-"
        saturated = worker.integer("saturated_seconds") or 0
        state = "lost" if address in lost else f"saturated {saturated} s" if saturated else "ok"
        rows.append(
            (
                address,
                worker.text("host") or "-",
                _count(worker.integer("devices")),
                _rate(worker.number("msgs_per_s")),
                _percent_value(worker.number("cpu_percent")),
                _ms(worker.number("loop_lag_p99_ms")),
                _ms(worker.number("clock_offset_ms")),
                state,
            )
        )
    return {
        "scheduler": fields.text("scheduler"),
        "workers": tuple(rows),
        "alignment_ms": fields.number("start_alignment_ms"),
    }


def _percent_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _problems(fields: _Fields) -> tuple[tuple[str, ...], str | None]:
    """What failed the run, and the end-to-end observer's refusal reason (None: not refused)."""
    problems = []
    cannot_start = fields.child("cannot_start")
    if cannot_start is not None:
        problems.append(cannot_start.text("message") or "no device could connect")
    observer = fields.child("observer")
    refused = None
    if observer is not None and observer.text("state") == "refused":
        refused = observer.text("reason") or "no reason given"
        if not problems:  # (a run that could not start has said what the observer met too)
            problems.append(observer.text("message") or f"end-to-end observer refused [{refused}]")
    return tuple(problems), refused


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _latencies(fields: _Fields | None) -> Latencies:
    if fields is None:
        return Latencies()

    def one(name: str) -> Latency:
        latency = fields.child(name)
        if latency is None:
            return Latency()
        return Latency(
            p50=latency.number("p50"),
            p95=latency.number("p95"),
            p99=latency.number("p99"),
            max=latency.number("max"),
            count=latency.integer("count") or 0,
        )

    return Latencies(connect=one("connect"), ack=one("ack"), e2e=one("e2e"), lateness=one("lateness"))


def _error_counts(fields: _Fields) -> tuple[ErrorCount, ...]:
    by_stage = fields.child("errors_by_stage")
    rows: list[ErrorCount] = []
    if by_stage is not None:
        for stage in by_stage.names():
            reasons = by_stage.child(stage)
            if reasons is not None:
                rows.extend(ErrorCount(stage, reason, n) for reason, n in reasons.counts().items())
    if not rows:
        by_reason = fields.child("errors_by_reason")
        if by_reason is not None:
            rows = [ErrorCount("", reason, n) for reason, n in by_reason.counts().items()]
    rows.sort(key=lambda row: (-row.count, row.stage, row.reason))
    return tuple(rows)


def _generator(fields: _Fields | None) -> Generator | None:
    if fields is None:
        return None
    return Generator(
        loop_lag_p99_ms=fields.number("loop_lag_p99_ms"),
        loop_lag_max_ms=fields.number("loop_lag_max_ms"),
        cpu_percent=fields.number("cpu_percent"),
        overruns=fields.integer("overruns"),
        saturated=bool(fields.flag("saturated")),
    )


def _collapse(fields: _Fields | None) -> Collapse | None:
    if fields is None:
        return None
    return Collapse(t=fields.number("t"), reason=fields.text("reason") or "")


def _load_timeseries(run_dir: Path, notes: list[str]) -> tuple[Second, ...]:
    path = run_dir / "timeseries.csv"
    if not path.is_file():
        notes.append("no timeseries.csv: the charts have no per-second figures")
        return ()
    try:
        with path.open(encoding="utf-8", newline="") as file:
            seconds = _read_seconds(file, notes)
    except UnicodeDecodeError as exc:
        raise ReportError(f"timeseries.csv in {_line(str(run_dir))} is not UTF-8 text") from exc
    except OSError as exc:
        raise ReportError(f"cannot read timeseries.csv in {_line(str(run_dir))}: {exc}") from exc
    if not seconds:
        notes.append("timeseries.csv has no rows: the run stopped before its first second")
    return seconds


def _read_seconds(file: TextIO, notes: list[str]) -> tuple[Second, ...]:
    reader = csv.reader(file)
    try:
        header = next(reader, None)
        if header is None:
            return ()
        columns = [name.strip() for name in header]
        if "t" not in columns:
            raise ReportError(f"timeseries.csv line 1: no 't' column in the header {_clip(repr(header), 60)}")
        seconds: list[Second] = []
        cut_short: tuple[int, int] | None = None
        for cells in reader:
            if not cells:
                continue
            if cut_short is not None:
                line, count = cut_short
                raise ReportError(f"timeseries.csv line {line}: {count} cells, the header has {len(columns)}")
            if len(cells) < len(columns):
                cut_short = (reader.line_num, len(cells))
                continue
            if len(cells) > len(columns):
                line = reader.line_num
                raise ReportError(
                    f"timeseries.csv line {line}: {len(cells)} cells, the header has {len(columns)}"
                )
            seconds.append(_second(dict(zip(columns, cells, strict=True)), reader.line_num))
    except csv.Error as exc:
        raise ReportError(f"timeseries.csv line {reader.line_num}: {exc}") from exc
    if cut_short is not None:
        notes.append(
            f"timeseries.csv: the last line ({cut_short[0]}) is cut short, as an interrupted write "
            "leaves it: skipped"
        )
    seconds.sort(key=lambda second: second.t)
    return tuple(seconds)


def _second(cells: dict[str, str], line: int) -> Second:
    def number(column: str) -> float | None:
        cell = cells.get(column, "").strip()
        if not cell:
            return None
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ReportError(
                f"timeseries.csv line {line}: {_clip(repr(cell), 40)} is not a number in column {column}"
            )
        return value

    t = number("t")
    if t is None:
        raise ReportError(f"timeseries.csv line {line}: no value in column t")

    def count(column: str) -> int:
        # An empty count cell means nothing happened that second (percentiles stay None).
        return round(number(column) or 0)

    return Second(
        t=int(t),
        phase=cells.get("phase", "").strip(),
        offered=count("offered"),
        sent=count("sent"),
        acked=count("acked"),
        failed=count("failed"),
        delivered=count("delivered"),
        connected=count("connected"),
        connects=count("connects"),
        disconnects=count("disconnects"),
        lateness_p99_ms=number("lateness_p99_ms"),
        ack_p50_ms=number("ack_p50_ms"),
        ack_p95_ms=number("ack_p95_ms"),
        ack_p99_ms=number("ack_p99_ms"),
        e2e_p50_ms=number("e2e_p50_ms"),
        e2e_p99_ms=number("e2e_p99_ms"),
        loop_lag_ms=number("loop_lag_ms"),
        cpu_percent=number("cpu_percent"),
        overruns=count("overruns"),
    )


def _load_events(run_dir: Path, notes: list[str]) -> Events:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        notes.append("no events.jsonl: errors per second come from the failed column")
        return Events()
    digest = _EventDigest()
    try:
        with path.open("rb") as file:
            digest.read(file)
    except OSError as exc:
        raise ReportError(f"cannot read events.jsonl in {_line(str(run_dir))}: {exc}") from exc
    events = digest.result()
    if events.malformed:
        notes.append(
            f"events.jsonl: {events.malformed:,} malformed line{_plural(events.malformed)} "
            f"skipped (of {events.lines:,})"
        )
    return events


class _EventDigest:
    """Folds events.jsonl, one line at a time, into what the charts need."""

    def __init__(self) -> None:
        self.lines = 0
        self.malformed = 0
        # Per (second, reason): from the per-second ``errors`` totals, and from single ``error``
        # events. The totals include the errors that also have an event of their own.
        self.totals: dict[tuple[int, str], int] = {}
        self.singles: dict[tuple[int, str], int] = {}
        self.reasons: set[str] = set()
        self.phases: list[tuple[float, str]] = []
        self.collapse_t: float | None = None
        self.samples: list[ErrorSample] = []

    def read(self, lines: Iterable[bytes]) -> None:
        """Fold every line in; blank lines are not counted."""
        # Parsing every line would cost seconds per million: only lines that may hold a charted
        # event are parsed, the others are only checked to be one object (a line cut short is
        # not). This loop runs once a line, so it stays to a few operations.
        count = malformed = 0
        for line in lines:
            if b'"error' in line or b'"phase"' in line or b'"collapse"' in line:
                count += 1
                if not self._parse(line):
                    malformed += 1
            elif line.startswith(b"{") and line.rstrip().endswith(b"}"):
                count += 1
            elif line.strip():
                count += 1
                malformed += 1
        self.lines += count
        self.malformed += malformed

    def _parse(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            return False
        return self._take(event)

    def _take(self, event: Any) -> bool:
        """Keep what one event says; False when it is not a well-formed event."""
        if not isinstance(event, dict):
            return False
        t = event.get("t")
        kind = event.get("event")
        if not _is_number(t) or t < 0 or not isinstance(kind, str):
            return False
        if kind == "error":
            return self._error(t, event, 1)
        if kind == "errors":
            count = event.get("count")
            return _is_number(count) and count >= 0 and self._error(t, event, int(count))
        if kind == "phase":
            phase = event.get("phase")
            if not isinstance(phase, str):
                return False
            if len(self.phases) < 100:
                self.phases.append((float(t), phase))
        elif kind == "collapse" and self.collapse_t is None:
            self.collapse_t = float(t)
        return True

    def _error(self, t: float, event: dict[str, Any], count: int) -> bool:
        reason = event.get("reason")
        if not isinstance(reason, str):
            return False
        reason = reason[:_REASON_CHARS]
        if reason not in self.reasons:
            if len(self.reasons) >= _MAX_REASONS:
                reason = _OTHER_REASONS
            self.reasons.add(reason)
        key = (int(t), reason)
        counts = self.singles if event.get("event") == "error" else self.totals
        counts[key] = counts.get(key, 0) + count
        if event.get("event") == "error" and len(self.samples) < _ERROR_SAMPLES:
            self.samples.append(
                ErrorSample(
                    t=float(t),
                    device=str(event.get("device", ""))[:_REASON_CHARS],
                    stage=str(event.get("stage", ""))[:_REASON_CHARS],
                    reason=reason,
                    detail=str(event.get("detail", ""))[:_REASON_CHARS],
                )
            )
        return True

    def result(self) -> Events:
        # The per-second totals already count every error; single events are counted only in a
        # log without totals, so that no error is counted twice.
        counts = self.totals or self.singles
        errors = tuple(SecondErrors(t, reason, n) for (t, reason), n in sorted(counts.items()))
        return Events(
            errors=errors,
            phases=tuple(sorted(self.phases)),
            collapse_t=self.collapse_t,
            samples=tuple(self.samples),
            lines=self.lines,
            malformed=self.malformed,
        )


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- figures as text, shared by the console and the HTML ---------------------------------------


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _percent(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return ""
    return f" ({100 * part / whole:.1f} %)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def _address(summary: Summary) -> str:
    if summary.host is None:
        return "-" if summary.port is None else f":{summary.port}"
    host = f"[{summary.host}]" if ":" in summary.host else summary.host
    return host if summary.port is None else f"{host}:{summary.port}"


def _run_facts(summary: Summary) -> list[tuple[str, str]]:
    protocol = summary.protocol or "-"
    if summary.tls:
        protocol += ", TLS"
    interval = "-" if summary.interval_s is None else f"{summary.interval_s:g} s"
    if summary.interval_s == 0:
        interval += " (capacity mode)"
    facts = [
        ("run", summary.run_id),
        ("target", summary.target or "-"),
        ("broker", _address(summary)),
        ("protocol", protocol),
        ("QoS", _count(summary.qos)),
        ("shape", summary.shape or "-"),
        ("interval", interval),
        ("devices", _count(summary.devices)),
        ("processes", _count(summary.processes)),
    ]
    if summary.behaviour:
        facts.append(("behaviour", summary.behaviour))
    if summary.started_at:
        facts.append(("started", summary.started_at))
    if summary.ended_at:
        facts.append(("ended", summary.ended_at))
    facts += [("duration", _duration(summary.duration_s)), ("stopped", summary.stopped or "-")]
    return facts


def _message_facts(summary: Summary) -> list[tuple[str, str]]:
    acked = _count(summary.acked)
    if summary.acked is None and summary.qos == 0:
        acked = "- (QoS 0 is not acknowledged)"
    delivered = _count(summary.delivered)
    if summary.e2e_refused is not None:
        delivered = f"not measured (observer refused: {summary.e2e_refused})"
    elif summary.e2e_expected is not None:
        delivered += f" of {summary.e2e_expected:,} sampled"
        delivered += _percent(summary.delivered, summary.e2e_expected)
    rate = f"{_rate(summary.msgs_per_s)} msgs/s vs {_rate(summary.offered_per_s)} offered/s"
    rate += _percent(summary.msgs_per_s, summary.offered_per_s)
    return [
        ("offered", _count(summary.offered)),
        ("sent", _count(summary.sent)),
        ("acked", acked),
        ("failed", _count(summary.failed)),
        ("delivered", delivered),
        ("rate", rate),
        ("connections peak", _count(summary.connections_peak)),
    ]


def _latency_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for name in LATENCIES:
        latency: Latency = getattr(summary.latency, name)
        figures = [_ms(latency.p50), _ms(latency.p95), _ms(latency.p99), _ms(latency.max)]
        rows.append([name, *figures, _count(latency.count) if latency.count else "-"])
    return rows


def _generator_facts(generator: Generator) -> list[tuple[str, str]]:
    return [
        ("loop lag", f"p99 {_ms(generator.loop_lag_p99_ms)} ms, max {_ms(generator.loop_lag_max_ms)} ms"),
        ("CPU", "-" if generator.cpu_percent is None else f"{generator.cpu_percent:.1f} %"),
        ("overruns", _count(generator.overruns)),
    ]


def _collapse_text(collapse: Collapse) -> str:
    when = "" if collapse.t is None else f" at {collapse.t:g} s"
    return f"collapse{when}: {collapse.reason or 'no reason given'}"


# --- console -----------------------------------------------------------------------------------


def console_table(run: Run) -> str:
    """The run as aligned plain text for a terminal: settings, totals, latencies, errors, health.

    Text from the run (run id, reasons) is made printable and clipped, so control characters or
    very long names cannot break the layout.
    """
    summary = run.summary
    generator = [] if summary.generator is None else _generator_facts(summary.generator)
    facts = [
        [(label, _plain(value, 80)) for label, value in _run_facts(summary)],
        [(label, _plain(value, 80)) for label, value in _message_facts(summary)],
        [(f"generator {label}", value) for label, value in generator],
    ]
    # One label column for every block of facts, so the figures line up down the whole table.
    width = max(_width(label) for block in facts for label, _ in block)
    blocks = [
        _kv(facts[0], width),
        _kv(facts[1], width),
        _columns(["latency (ms)", "p50", "p95", "p99", "max", "count"], _latency_rows(summary), "lrrrrr"),
        _console_errors(summary.errors),
        _console_cluster(summary),
    ]
    health = [_kv(facts[2], width)] if generator else []
    if summary.generator is not None and summary.generator.saturated:
        health.append(f"WARNING: {SATURATED_WARNING}")
    if summary.collapse is not None:
        health.append(_plain(_collapse_text(summary.collapse), 160))
    health += [f"ERROR: {_plain(problem, _PROBLEM_TEXT)}" for problem in summary.problems]
    blocks.append("\n".join(health))
    notes = [*summary.notes, *run.notes]
    if notes:
        blocks.append("\n".join(f"note: {_plain(note, 160)}" for note in notes))
    return "\n\n".join(block for block in blocks if block) + "\n"


def _aligned(summary: Summary) -> str:
    if summary.alignment_ms is None:
        return ""
    return f", start aligned within ±{_ms(summary.alignment_ms)} ms"


def _console_cluster(summary: Summary) -> str:
    if not summary.workers:
        return ""
    rows = [[_plain(cell, _CONSOLE_TEXT) for cell in row] for row in summary.workers]
    title = f"cluster: {_plain(summary.scheduler or '-', 80)}, {len(rows)} workers{_aligned(summary)}"
    return title + "\n" + _columns(CLUSTER_HEADER, rows, "llrrrrrl")


def _console_errors(errors: Sequence[ErrorCount]) -> str:
    if not errors:
        return "errors: none"
    shown = errors[:_CONSOLE_ERROR_ROWS]
    rows = [
        [_count(row.count), _plain(row.stage or "-", 16), _plain(row.reason, _CONSOLE_TEXT)] for row in shown
    ]
    table = _columns(["errors", "stage", "reason"], rows, "rll")
    rest = errors[_CONSOLE_ERROR_ROWS:]
    if rest:
        table += f"\n... {len(rest)} more reasons ({sum(row.count for row in rest):,} errors)"
    return table


def _kv(facts: Sequence[tuple[str, str]], width: int) -> str:
    return "\n".join(f"{_pad(label, width, 'l')}  {value}".rstrip() for label, value in facts)


def _columns(header: list[str], rows: Sequence[list[str]], align: str) -> str:
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            _pad(cell, width, side) for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _pad(text: str, width: int, side: str) -> str:
    fill = " " * (width - _width(text))
    return fill + text if side == "r" else text + fill


def _width(text: str) -> int:
    """Columns a terminal gives the text: wide East Asian characters take two, marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def _plain(text: str, limit: int) -> str:
    """One printable line of at most ``limit`` columns: control and format characters escaped."""
    printable = "".join(
        char if not unicodedata.category(char).startswith("C") else repr(char)[1:-1] for char in text
    )
    return _clip(printable, limit)


def _clip(text: str, limit: int) -> str:
    if _width(text) <= limit:
        return text
    kept = []
    width = 0
    for char in text:
        width += _width(char)
        if width > limit - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _line(text: str) -> str:
    """A path or name as it may appear in a one-line message."""
    return _plain(text, 200)


# --- chart data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: ``(t, value)`` points; ``None`` breaks the line (no data there)."""

    name: str
    points: tuple[tuple[float, float | None], ...]


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: its title, the unit of its y axis, its lines and a caption saying how it is drawn."""

    title: str
    unit: str
    series: tuple[Series, ...]
    caption: str


@dataclass(frozen=True, slots=True)
class Span:
    """A run phase from second ``start`` to ``end``."""

    start: float
    end: float
    phase: str


@dataclass(frozen=True, slots=True)
class Charts:
    """The four charts of a run on one time axis (0 to ``end_s`` seconds, ``bucket_s`` per point)."""

    end_s: float
    bucket_s: int
    phases: tuple[Span, ...]
    collapse_t: float | None
    throughput: Chart
    latency: Chart
    connections: Chart
    errors: Chart

    def all(self) -> tuple[Chart, Chart, Chart, Chart]:
        return (self.throughput, self.latency, self.connections, self.errors)


_Group = tuple[int, list[Second]]


def chart_data(run: Run, max_points: int = MAX_POINTS) -> Charts:
    """The series of the four charts, bucketed to at most ``max_points`` points each.

    Rows are grouped into intervals of ``bucket_s`` whole seconds: counts become the mean per
    second over the seconds recorded in the interval, latencies its highest value, the connected
    gauge its lowest. A missing interval breaks the line rather than drawing a false zero.
    """
    events = run.events
    collapse_t = run.summary.collapse.t if run.summary.collapse is not None else None
    if collapse_t is None:
        collapse_t = events.collapse_t
    marks = [0.0, *(float(second.t) for second in run.seconds[-1:])]
    marks += [float(errors.t) for errors in events.errors[-1:]]
    marks += [t for t, _ in events.phases] + ([collapse_t] if collapse_t is not None else [])
    end = float(max(1, math.floor(max(marks))))
    bucket = max(1, math.ceil((end + 1) / max(1, max_points)))
    groups = _group(run.seconds, bucket)

    def line(
        name: str, value: Callable[[Second], float | None], fold: Callable[[list[float]], float]
    ) -> Series:
        return Series(name, _fold(groups, bucket, value, fold))

    throughput = [
        line("offered", lambda s: s.offered, _mean),
        line("sent", lambda s: s.sent, _mean),
        *([line("acked", lambda s: s.acked, _mean)] if run.summary.acked is not None else []),
        line("delivered", lambda s: s.delivered, _mean),
    ]
    latency = [
        line("ack p50", lambda s: s.ack_p50_ms, max),
        line("ack p95", lambda s: s.ack_p95_ms, max),
        line("ack p99", lambda s: s.ack_p99_ms, max),
        line("e2e p50", lambda s: s.e2e_p50_ms, max),
        line("e2e p99", lambda s: s.e2e_p99_ms, max),
        line("lateness p99", lambda s: s.lateness_p99_ms, max),
    ]
    connections = [
        line("connected", lambda s: s.connected, min),
        line("connects", lambda s: s.connects, _mean),
        line("disconnects", lambda s: s.disconnects, _mean),
    ]
    if events.errors:
        errors = _reason_series(events.errors, bucket, end)
        source = "From the error and errors events of events.jsonl, by reason."
    else:
        errors = [line("failed", lambda s: s.failed, _mean)]
        source = "From the failed column of timeseries.csv: events.jsonl has no error events."
    rates = _caption(bucket, "the mean per second over the interval")
    return Charts(
        end_s=end,
        bucket_s=bucket,
        phases=_spans(run, end),
        collapse_t=collapse_t,
        throughput=Chart("Throughput per second", "messages per second", tuple(throughput), rates),
        latency=Chart(
            "Latency percentiles per second (ms)",
            "milliseconds",
            tuple(series for series in latency if any(y is not None for _, y in series.points)),
            _caption(bucket, "the highest value in the interval, so a spike stays visible"),
        ),
        connections=Chart(
            "Connected devices per second",
            "devices",
            tuple(connections),
            _caption(
                bucket,
                "connected is the lowest in the interval, connects and disconnects the mean per second",
            ),
        ),
        errors=Chart("Errors per second", "errors per second", tuple(errors), f"{source} {rates}"),
    )


def _caption(bucket: int, how: str) -> str:
    if bucket == 1:
        return "One point per second."
    return f"Each point covers {bucket} s: {how}."


def _group(seconds: Sequence[Second], bucket: int) -> list[_Group]:
    groups: list[_Group] = []
    for second in seconds:
        index = max(0, second.t) // bucket
        if groups and groups[-1][0] == index:
            groups[-1][1].append(second)
        else:
            groups.append((index, [second]))
    return groups


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _fold(
    groups: Sequence[_Group],
    bucket: int,
    value: Callable[[Second], float | None],
    fold: Callable[[list[float]], float],
) -> tuple[tuple[float, float | None], ...]:
    points: list[tuple[float, float | None]] = []
    previous = None
    for index, rows in groups:
        if previous is not None and index > previous + 1:
            points.append((float((previous + 1) * bucket), None))
        values = [v for v in map(value, rows) if v is not None]
        points.append((float(index * bucket), fold(values) if values else None))
        previous = index
    return tuple(points)


def _reason_series(errors: Sequence[SecondErrors], bucket: int, end: float) -> list[Series]:
    totals: dict[str, int] = {}
    for row in errors:
        totals[row.reason] = totals.get(row.reason, 0) + row.count
    # The most frequent reasons get a line each; the rest share one, so the legend stays readable.
    named = sorted((r for r in totals if r != _OTHER_REASONS), key=lambda reason: (-totals[reason], reason))
    shown = named[:_CHART_REASONS]
    if len(named) > len(shown) or _OTHER_REASONS in totals:
        shown.append(_OTHER_REASONS)
    buckets = int(end) // bucket + 1
    sums = {reason: [0] * buckets for reason in shown}
    for row in errors:
        reason = row.reason if row.reason in sums else _OTHER_REASONS
        sums[reason][min(buckets - 1, row.t // bucket)] += row.count
    # Errors are only written when they happen: a second without one is a zero, not a gap.
    covered = [min(bucket, int(end) + 1 - index * bucket) for index in range(buckets)]
    return [
        Series(reason, tuple((float(i * bucket), n / covered[i]) for i, n in enumerate(sums[reason])))
        for reason in shown
    ]


def _spans(run: Run, end: float) -> tuple[Span, ...]:
    """The phases: from the rows, each of which says its phase, else from the phase events."""
    marks: list[tuple[float, str]] = []
    for second in run.seconds:
        if not marks or marks[-1][1] != second.phase:
            marks.append((float(second.t), second.phase))
    if not any(phase in PHASES for _, phase in marks):
        marks = list(run.events.phases)
    spans = []
    for i, (start, phase) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else end
        if phase in PHASES and stop > start:
            spans.append(Span(start, min(stop, end), phase))
    return tuple(spans)


# --- HTML --------------------------------------------------------------------------------------

_WIDTH: Final = 720
_HEIGHT: Final = 300
_LEFT: Final = 64
_RIGHT: Final = 16
_TOP: Final = 22
_BOTTOM: Final = 46
_COLOURS: Final = (
    "#2563eb",
    "#16a34a",
    "#dc2626",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#a16207",
    "#db2777",
    "#6b7280",
)
_PHASE_FILLS: Final = {"connect": "#fdf3d7", "run": "#e8f3ea", "drain": "#eeeaf7"}

_CSS: Final = """
* { box-sizing: border-box; }
body { margin: 0; color: #1f2937; background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 12px 16px 40px; }
h1 { font-size: 1.35rem; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .4rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 0 28px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { font-weight: 600; white-space: nowrap; overflow-wrap: normal; }
.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.k { white-space: nowrap; overflow-wrap: normal; }
.warning { border-left: 4px solid #dc2626; background: #fef2f2; padding: 8px 12px; }
.notes { color: #4b5563; }
figure { margin: 18px 0 30px; }
.chart svg { display: block; width: 100%; height: auto; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 18px; list-style: none; padding: 0; margin: 6px 0;
  font-size: .9rem; overflow-wrap: anywhere; }
.swatch { display: inline-block; width: 16px; height: 4px; margin-right: 6px; vertical-align: middle; }
figcaption { color: #6b7280; font-size: .85rem; }
@media (max-width: 640px) {
  main { padding: 8px 10px 32px; }
  th, td { padding: 4px 5px; }
  /* The charts shrink to the screen: text larger in chart units stays readable, and the
     y-axis title gives way to the tick labels (the unit is in the chart's heading too). */
  .chart svg text { font-size: 21px; }
  .chart svg .unit { display: none; }
}
"""


def write_html(run: Run, path: Path) -> Path:
    """Write the report as one self-contained HTML file at ``path`` and return ``path``.

    The file needs nothing else (no scripts, fonts, stylesheets or images): the four charts are
    inline SVG scaled to the page's width. Every piece of text from the run is HTML-escaped.

    Raises:
        ReportError: the file cannot be written.
    """
    page = _page(run)
    partial = path.with_name(path.name + ".partial")
    try:
        # Written aside then renamed, so a browser never opens half a report.
        partial.write_text(page, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        raise ReportError(f"cannot write {_line(str(path))}: {exc.strerror or exc}") from exc
    return path


def _e(text: str, limit: int = _HTML_TEXT) -> str:
    """Text from the run as HTML: control characters made visible, clipped, escaped."""
    return escape(_plain(text, limit), quote=True)


def _page(run: Run) -> str:
    summary = run.summary
    charts = chart_data(run)
    warnings = [
        f'<p class="warning"><strong>Error:</strong> {_e(problem, _PROBLEM_TEXT)}</p>'
        for problem in summary.problems
    ]
    if summary.generator is not None and summary.generator.saturated:
        warnings.append(f'<p class="warning"><strong>Warning:</strong> {escape(SATURATED_WARNING)}.</p>')
    if summary.collapse is not None:
        warnings.append(f'<p class="warning">{_e(_collapse_text(summary.collapse))}</p>')
    latency = _html_table(["ms", "p50", "p95", "p99", "max", "count"], _latency_rows(summary), "hrrrrr")
    health = "<p>No generator figures in this summary.</p>"
    if summary.generator is not None:
        health = _html_kv(_generator_facts(summary.generator))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Stress run {_e(summary.run_id, 120)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Stress run {_e(summary.run_id)}</h1>",
        *warnings,
        '<div class="grid">',
        f"<section><h2>Run</h2>{_html_kv(_run_facts(summary))}</section>",
        f"<section><h2>Messages</h2>{_html_kv(_message_facts(summary))}</section>",
        "</div>",
        f'<section><h2>Latency</h2><div class="scroll">{latency}</div></section>',
        f"<section><h2>Errors</h2>{_html_errors(summary.errors)}{_html_samples(run.events.samples)}</section>",
        f"<section><h2>Load generator</h2>{health}</section>",
        *(
            [
                f"<section><h2>Cluster: {_e(summary.scheduler or '-')}</h2>"
                f'<p>{len(summary.workers)} workers{_e(_aligned(summary))}</p><div class="scroll">'
                f"{_html_table(CLUSTER_HEADER, [list(row) for row in summary.workers], 'lkrrrrrk')}"
                "</div></section>"
            ]
            if summary.workers
            else []
        ),
        "<section><h2>Per second</h2>",
        *(_figure(chart, charts) for chart in charts.all()),
        "</section>",
    ]
    notes = [*summary.notes, *run.notes]
    if notes:
        items = "".join(f"<li>{_e(note)}</li>" for note in notes)
        parts.append(f'<section class="notes"><h2>Notes</h2><ul>{items}</ul></section>')
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _html_kv(facts: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in facts)
    return f"<table>{rows}</table>"


def _html_table(header: list[str], rows: Sequence[list[str]], align: str) -> str:
    """A table with a letter per column in ``align``.

    ``r`` figures (right, unbroken), ``l`` text (wraps anywhere when it must), ``k`` a short word
    such as a stage (unbroken, clipped), ``h`` row names.
    """

    def cell(tag: str, text: str, kind: str) -> str:
        if kind == "h":
            return f"<th>{_e(text)}</th>"
        if kind == "k":
            return f"<{tag} class=k>{_e(text, 40)}</{tag}>"
        return f"<{tag}{' class=n' if kind == 'r' else ''}>{_e(text)}</{tag}>"

    def cells(tag: str, row: list[str]) -> str:
        return "".join(cell(tag, text, kind) for text, kind in zip(row, align, strict=True))

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def _html_errors(errors: Sequence[ErrorCount]) -> str:
    if not errors:
        return "<p>No errors.</p>"
    rows = [[_count(row.count), row.stage or "-", row.reason] for row in errors[:_HTML_ERROR_ROWS]]
    table = _html_table(["count", "stage", "reason"], rows, "rkl")
    rest = errors[_HTML_ERROR_ROWS:]
    if rest:
        table += f"<p>… {len(rest):,} more reasons ({sum(row.count for row in rest):,} errors).</p>"
    return f'<div class="scroll">{table}</div>'


def _html_samples(samples: Sequence[ErrorSample]) -> str:
    if not samples:
        return ""
    rows = [[f"{s.t:.2f}", s.device or "-", s.stage or "-", s.reason, s.detail] for s in samples]
    table = _html_table(["t (s)", "device", "stage", "reason", "detail"], rows, "rlkll")
    return f'<h3>First errors</h3><div class="scroll">{table}</div>'


def _figure(chart: Chart, charts: Charts) -> str:
    legend = "".join(
        f'<li><span class="swatch" style="background:{_COLOURS[i % len(_COLOURS)]}"></span>'
        f"{_e(series.name, 80)}</li>"
        for i, series in enumerate(chart.series)
    )
    phases = "".join(
        f'<li><span class="swatch" style="background:{_PHASE_FILLS[phase]};height:10px"></span>'
        f"{phase} phase</li>"
        for phase in PHASES
        if any(span.phase == phase for span in charts.phases)
    )
    if charts.collapse_t is not None:
        phases += '<li><span class="swatch" style="background:#b91c1c;height:2px"></span>collapse</li>'
    return (
        f'<figure><h3>{_e(chart.title)}</h3><div class="chart">{_svg(chart, charts)}</div>'
        f'<ul class="legend">{legend}{phases}</ul><figcaption>{_e(chart.caption, 600)}</figcaption></figure>'
    )


def _svg(chart: Chart, charts: Charts) -> str:
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    values = [y for series in chart.series for _, y in series.points if y is not None]
    top, step = _nice_axis(max(values, default=0.0))

    def x(t: float) -> float:
        return _LEFT + plot_w * min(max(t, 0.0), charts.end_s) / charts.end_s

    def y(v: float) -> float:
        # The axis starts at 0: a negative count (a writer's bug) sits on it, not in the labels.
        return _TOP + plot_h * (1 - max(v, 0.0) / top)

    out = [
        f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{_e(chart.title)}" '
        'font-family="system-ui, sans-serif" font-size="12">'
    ]
    for span in charts.phases:
        x0, x1 = x(span.start), x(span.end)
        out.append(
            f'<rect class="phase-{span.phase}" x="{x0:.1f}" y="{_TOP}" width="{x1 - x0:.1f}" '
            f'height="{plot_h}" fill="{_PHASE_FILLS[span.phase]}"/>'
        )
        if x1 - x0 > 48:
            out.append(f'<text x="{x0 + 4:.1f}" y="{_TOP + 13}" fill="#6b7280">{span.phase}</text>')
    out.extend(_y_axis(top, step, y))
    out.extend(_x_axis(charts.end_s, x))
    out.append(
        f'<text class="unit" transform="translate(14 {_TOP + plot_h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle" fill="#374151">{_e(chart.unit)}</text>'
    )
    for i, series in enumerate(chart.series):
        out.extend(_paths(series, _COLOURS[i % len(_COLOURS)], x, y))
    if charts.collapse_t is not None:
        cx = x(charts.collapse_t)
        out.append(
            f'<line x1="{cx:.1f}" y1="{_TOP}" x2="{cx:.1f}" y2="{_TOP + plot_h}" stroke="#b91c1c" '
            'stroke-width="1.5" stroke-dasharray="5 3"/>'
        )
        anchor = "end" if cx > _LEFT + plot_w * 0.8 else "start"
        offset = -4 if anchor == "end" else 4
        out.append(
            f'<text x="{cx + offset:.1f}" y="{_TOP + 26}" text-anchor="{anchor}" '
            'fill="#b91c1c">collapse</text>'
        )
    if not values:
        out.append(
            f'<text x="{_LEFT + plot_w / 2:.0f}" y="{_TOP + plot_h / 2:.0f}" text-anchor="middle" '
            'fill="#6b7280" font-size="15">no data for this run</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _nice_axis(maximum: float) -> tuple[float, float]:
    """The top of a y axis starting at 0 and its tick step, both round numbers."""
    if maximum <= 0:
        return 1.0, 0.25
    raw = maximum / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude * (1 + 1e-9))
    return step * math.ceil(maximum / step - 1e-9), step


def _y_axis(top: float, step: float, y: Callable[[float], float]) -> Iterator[str]:
    ticks = round(top / step)
    for i in range(ticks + 1):
        value = i * step
        py = y(value)
        yield (
            f'<line x1="{_LEFT}" y1="{py:.1f}" x2="{_WIDTH - _RIGHT}" y2="{py:.1f}" '
            f'stroke="{"#9ca3af" if i == 0 else "#e5e7eb"}"/>'
        )
        yield (
            f'<text x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end" fill="#374151">{_short(value)}</text>'
        )


_TIME_STEPS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _x_axis(end: float, x: Callable[[float], float]) -> Iterator[str]:
    step = next((s for s in _TIME_STEPS if end / s <= 6), 86400 * math.ceil(end / 86400 / 6))
    bottom = _HEIGHT - _BOTTOM
    yield f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#9ca3af"/>'
    t = 0
    while t <= end:
        px = x(t)
        yield f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 5}" stroke="#9ca3af"/>'
        yield (
            f'<text x="{px:.1f}" y="{bottom + 18}" text-anchor="middle" fill="#374151">'
            f"{_clock(t, end)}</text>"
        )
        t += step
    unit = "seconds" if end < 120 else "minutes:seconds" if end < 3600 else "hours:minutes:seconds"
    yield (
        f'<text x="{_LEFT + (_WIDTH - _LEFT - _RIGHT) / 2:.0f}" y="{_HEIGHT - 6}" text-anchor="middle" '
        f'fill="#374151">time since the start ({unit})</text>'
    )


def _clock(t: int, end: float) -> str:
    if end < 120:
        return str(t)
    hours, rest = divmod(t, 3600)
    minutes, seconds = divmod(rest, 60)
    if end < 3600:
        return f"{minutes}:{seconds:02d}"
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _short(value: float) -> str:
    """A tick label: 2.5k, 1M, 0.25."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _paths(
    series: Series, colour: str, x: Callable[[float], float], y: Callable[[float], float]
) -> Iterator[str]:
    """The series as paths, broken where it has no value; a lone point is drawn as a dot."""
    segment: list[tuple[float, float]] = []
    for t, value in (*series.points, (0.0, None)):
        if value is not None:
            segment.append((x(t), y(value)))
            continue
        if len(segment) == 1:
            ((px, py),) = segment
            yield f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>'
        elif segment:
            d = "M" + "L".join(f"{px:.1f},{py:.1f}" for px, py in segment)
            yield (
                f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.6" '
                'stroke-linejoin="round" vector-effect="non-scaling-stroke"/>'
            )
        segment = []


# --- both --------------------------------------------------------------------------------------


def report(run_dir: Path, *, html: bool = True) -> tuple[str, Path | None]:
    """Read ``run_dir``; return the console text and, unless ``html`` is false, ``run_dir/report.html``.

    Raises:
        ReportError: the run folder cannot be read, or the report cannot be written.
    """
    run = load_run(run_dir)
    text = console_table(run)
    if not html:
        return text, None
    return text, write_html(run, run_dir / "report.html")
