"""Reading a run folder into the report's model: ``summary.json``, ``timeseries.csv`` and
``events.jsonl``, judged as the package docstring says."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO, TypeGuard

from stress.results.report.model import (
    ERROR_SAMPLES,
    MAX_REASONS,
    OTHER_REASONS,
    REASON_CHARS,
    Collapse,
    ErrorCount,
    ErrorSample,
    Events,
    Generator,
    Latencies,
    Latency,
    ReportError,
    Run,
    Second,
    SecondErrors,
    Summary,
)
from stress.results.report.text import clip, count_text, ms_text, one_line, plural, rate_text


def load_run(run_dir: Path) -> Run:
    """Read a run folder: ``summary.json`` (required), ``timeseries.csv`` and ``events.jsonl``.

    Raises:
        ReportError: the folder or its summary is missing or unreadable, or a figure in the
            summary or the time series is not a number (see the module notes).
    """
    if not run_dir.is_dir():
        raise ReportError(
            f"{one_line(str(run_dir))} is not a folder: pass a run folder (data/runs/<run-id>/)"
        )
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
        shown = clip(repr(self._data[key]), 40)
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
    where = f"summary.json in {one_line(str(run_dir))}"
    if not path.is_file():
        raise ReportError(
            f"no summary.json in {one_line(str(run_dir))}: is this a run folder (data/runs/<run-id>/)?"
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
                count_text(worker.integer("devices")),
                rate_text(worker.number("msgs_per_s")),
                _percent_value(worker.number("cpu_percent")),
                ms_text(worker.number("loop_lag_p99_ms")),
                ms_text(worker.number("clock_offset_ms")),
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
        raise ReportError(f"timeseries.csv in {one_line(str(run_dir))} is not UTF-8 text") from exc
    except OSError as exc:
        raise ReportError(f"cannot read timeseries.csv in {one_line(str(run_dir))}: {exc}") from exc
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
            raise ReportError(f"timeseries.csv line 1: no 't' column in the header {clip(repr(header), 60)}")
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
                f"timeseries.csv line {line}: {clip(repr(cell), 40)} is not a number in column {column}"
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
        raise ReportError(f"cannot read events.jsonl in {one_line(str(run_dir))}: {exc}") from exc
    events = digest.result()
    if events.malformed:
        notes.append(
            f"events.jsonl: {events.malformed:,} malformed line{plural(events.malformed)} "
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
        if not is_number(t) or t < 0 or not isinstance(kind, str):
            return False
        if kind == "error":
            return self._error(t, event, 1)
        if kind == "errors":
            count = event.get("count")
            return is_number(count) and count >= 0 and self._error(t, event, int(count))
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
        reason = reason[:REASON_CHARS]
        if reason not in self.reasons:
            if len(self.reasons) >= MAX_REASONS:
                reason = OTHER_REASONS
            self.reasons.add(reason)
        key = (int(t), reason)
        counts = self.singles if event.get("event") == "error" else self.totals
        counts[key] = counts.get(key, 0) + count
        if event.get("event") == "error" and len(self.samples) < ERROR_SAMPLES:
            self.samples.append(
                ErrorSample(
                    t=float(t),
                    device=str(event.get("device", ""))[:REASON_CHARS],
                    stage=str(event.get("stage", ""))[:REASON_CHARS],
                    reason=reason,
                    detail=str(event.get("detail", ""))[:REASON_CHARS],
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


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
