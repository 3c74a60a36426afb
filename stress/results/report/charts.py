"""The charts' data: per-second series of the run, bucketed to at most ``MAX_POINTS`` points,
and the marks of its timeline."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stress.results.buckets import bucket_width, fold, group, mean
from stress.results.model import Row
from stress.results.report.model import (
    CHART_REASONS,
    MAX_POINTS,
    OTHER_REASONS,
    PHASES,
    Run,
    SecondErrors,
)
from stress.results.timeline import change_text


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
    #: Whether its lines often coincide (offered, written and acknowledged, in a healthy run):
    #: each is then drawn wider than the next, so that all of them show.
    layered: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    """A run phase from second ``start`` to ``end``."""

    start: float
    end: float
    phase: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A change of the run's timeline, drawn as a line across every chart at ``t``."""

    t: float
    what: str
    text: str


@dataclass(frozen=True, slots=True)
class Charts:
    """The five charts of a run on one time axis (0 to ``end_s`` seconds, ``bucket_s`` per point)."""

    end_s: float
    bucket_s: int
    phases: tuple[Span, ...]
    collapse_t: float | None
    marks: tuple[Mark, ...]
    throughput: Chart
    observed: Chart
    latency: Chart
    connections: Chart
    errors: Chart

    def all(self) -> tuple[Chart, ...]:
        return (self.throughput, self.observed, self.latency, self.connections, self.errors)


def chart_data(run: Run, max_points: int = MAX_POINTS) -> Charts:
    """The series of the five charts, bucketed to at most ``max_points`` points each.

    Rows are grouped into intervals of ``bucket_s`` whole seconds (:mod:`stress.results.buckets`):
    counts become the mean per second over the seconds recorded in the interval, latencies its
    highest value, the connected gauge its lowest. A missing interval breaks the line rather than
    drawing a false zero.
    """
    events = run.events
    summary = run.summary
    collapse_t = _collapse_t(run)
    end = end_of(run)
    bucket = bucket_width(end, max_points)
    groups = group(run.seconds, bucket)

    def line(name: str, value: Callable[[Row], float | None], how: Callable[[list[float]], float]) -> Series:
        return Series(name, fold(groups, bucket, value, how))

    throughput = [
        line("offered", lambda s: s.offered, mean),
        line("written", lambda s: s.sent, mean),
        *([line("acknowledged", lambda s: s.acked, mean)] if summary.acked is not None else []),
    ]
    observed, observed_caption = _observed(run, line, bucket)
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
        line("connects", lambda s: s.connects, mean),
        line("disconnects", lambda s: s.disconnects, mean),
    ]
    if any(row.devices for row in run.seconds):  # (files written before the column have none)
        connections.append(line("devices asked", lambda s: s.devices, max))
    if events.errors:
        errors = _reason_series(events.errors, bucket, end)
        source = "From the error and errors events of events.jsonl, by reason."
    else:
        errors = [line("failed", lambda s: s.failed, mean)]
        source = "From the failed column of timeseries.csv: events.jsonl has no error events."
    rates = _caption(bucket, "the mean per second over the interval")
    return Charts(
        end_s=end,
        bucket_s=bucket,
        phases=_spans(run, end),
        collapse_t=collapse_t,
        marks=_marks(run),
        throughput=Chart(
            "Throughput per second",
            "messages per second",
            tuple(throughput),
            "Offered: due by the schedule; written: sent to the socket; acknowledged: by the broker. "
            + rates,
            layered=True,
        ),
        observed=Chart(
            "Observed end to end per second (sampled devices)",
            "messages per second",
            tuple(observed),
            f"{observed_caption} {rates}",
            layered=True,
        ),
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
            "Devices asked: the fleet size in force (the timeline's, or a scale's). "
            + _caption(
                bucket,
                "connected is the lowest in the interval, connects and disconnects the mean per second",
            ),
        ),
        errors=Chart("Errors per second", "errors per second", tuple(errors), f"{source} {rates}"),
    )


def _collapse_t(run: Run) -> float | None:
    collapse = run.summary.collapse
    return collapse.t if collapse is not None and collapse.t is not None else run.events.collapse_t


def end_of(run: Run) -> float:
    """The end of the charts' time axis: the last second, error, phase or collapse of the run."""
    events = run.events
    collapse_t = _collapse_t(run)
    ends = [0.0, *(float(second.t) for second in run.seconds[-1:])]
    ends += [float(errors.t) for errors in events.errors[-1:]]
    ends += [t for t, _ in events.phases] + ([collapse_t] if collapse_t is not None else [])
    return float(max(1, math.floor(max(ends))))


def _caption(bucket: int, how: str) -> str:
    if bucket == 1:
        return "One point per second."
    return f"Each point covers {bucket} s: {how}."


Line = Callable[[str, Callable[[Row], float | None], Callable[[list[float]], float]], Series]


def _observed(run: Run, line: Line, bucket: int) -> tuple[list[Series], str]:
    """The end-to-end chart: what the observer saw of the sampled devices' messages, beside what
    those devices wrote (never beside everything written: the rest was not watched)."""
    summary = run.summary
    if summary.e2e_refused is not None:
        return [], f"Not measured: the broker refused the observer ({summary.e2e_refused})."
    if not summary.sampled:
        return [], "Not measured: no device was sampled, or the target has no observer."
    observed = line("observed", lambda s: s.observed, mean)
    if not any(row.sampled for row in run.seconds):
        # A run folder written before the sampled column: per second, only what was observed
        return [observed], (
            "This run folder has no per-second count of what the sampled devices wrote: "
            "the summary gives the observed share for the whole run."
        )
    return [line("sampled", lambda s: s.sampled, mean), observed], (
        "Sampled: written by the devices the observer watches; observed: what it saw of them."
    )


def _marks(run: Run) -> tuple[Mark, ...]:
    """The changes of the timeline after the start (the start is the left edge of every chart)."""
    return tuple(
        Mark(change.t, change.what, change_text(change))
        for change in run.summary.timeline
        if change.what != "start"
    )


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
