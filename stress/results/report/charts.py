"""The charts' data: per-second series of the run, bucketed to at most ``MAX_POINTS`` points."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stress.results.model import Row
from stress.results.report.model import (
    CHART_REASONS,
    MAX_POINTS,
    OTHER_REASONS,
    PHASES,
    Run,
    SecondErrors,
)


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


_Group = tuple[int, list[Row]]


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

    def line(name: str, value: Callable[[Row], float | None], fold: Callable[[list[float]], float]) -> Series:
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


def _group(seconds: Sequence[Row], bucket: int) -> list[_Group]:
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
    value: Callable[[Row], float | None],
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
    named = sorted((r for r in totals if r != OTHER_REASONS), key=lambda reason: (-totals[reason], reason))
    shown = named[:CHART_REASONS]
    if len(named) > len(shown) or OTHER_REASONS in totals:
        shown.append(OTHER_REASONS)
    buckets = int(end) // bucket + 1
    sums = {reason: [0] * buckets for reason in shown}
    for row in errors:
        reason = row.reason if row.reason in sums else OTHER_REASONS
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
