"""Reading a run folder into the report's model: ``summary.json``, ``timeseries.csv`` and
``events.jsonl``, judged as the package docstring says."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO, TypeGuard

from stress.results.model import Row, RunFileError, RunSummary, read_summary
from stress.results.report.model import (
    ERROR_SAMPLES,
    MAX_REASONS,
    OTHER_REASONS,
    REASON_CHARS,
    ErrorSample,
    Events,
    ReportError,
    Run,
    SecondErrors,
)
from stress.results.report.text import clip, one_line, plural


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
    summary = load_summary(run_dir)
    seconds = load_rows(run_dir, notes)
    events = _load_events(run_dir, notes)
    return Run(path=run_dir, summary=summary, seconds=seconds, events=events, notes=tuple(notes))


def load_summary(run_dir: Path) -> RunSummary:
    """``summary.json`` of ``run_dir``.

    Raises:
        ReportError: it is missing or unreadable, or a key holds a value of the wrong type.
    """
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
    try:
        return read_summary(data, where)
    except RunFileError as exc:
        raise ReportError(str(exc)) from exc


def load_rows(run_dir: Path, notes: list[str]) -> tuple[Row, ...]:
    """``timeseries.csv`` of ``run_dir``, in time order; what was missing or skipped goes to ``notes``.

    Raises:
        ReportError: it is unreadable, or a cell is not a number.
    """
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


def _read_seconds(file: TextIO, notes: list[str]) -> tuple[Row, ...]:
    reader = csv.reader(file)
    try:
        header = next(reader, None)
        if header is None:
            return ()
        columns = [name.strip() for name in header]
        if "t" not in columns:
            raise ReportError(f"timeseries.csv line 1: no 't' column in the header {clip(repr(header), 60)}")
        seconds: list[Row] = []
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
            row = dict(zip(columns, cells, strict=True))
            try:
                seconds.append(Row.read(row, f"timeseries.csv line {reader.line_num}"))
            except RunFileError as exc:
                raise ReportError(str(exc)) from exc
    except csv.Error as exc:
        raise ReportError(f"timeseries.csv line {reader.line_num}: {exc}") from exc
    if cut_short is not None:
        notes.append(
            f"timeseries.csv: the last line ({cut_short[0]}) is cut short, as an interrupted write "
            "leaves it: skipped"
        )
    seconds.sort(key=lambda second: second.t)
    return tuple(seconds)


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
