"""The run model: one row per second and one summary, the same types for whoever writes or reads.

A run writes them (``timeseries.csv`` a :class:`Row` a second, ``summary.json`` a
:class:`RunSummary` at the end, and each closed second as a row to the dashboard); the report,
the dashboard and ``stress report`` read them back with :meth:`Row.read` and
:func:`read_summary`, which judge every value by these annotations (:mod:`stress.results.typed`).
Every field but ``t`` and ``run_id`` has a default, so older or partial files still read; a
field that was renamed keeps its old names in its metadata (``was``), and a file that has only
an old name is read under the new one.

Three counts of messages are named apart everywhere: ``sent`` is what was written to the
socket, ``acked`` what the broker acknowledged (PUBACK at QoS 1), and ``observed`` what the
end-to-end observer saw of the messages of the sampled devices, out of ``sampled`` (what
those devices wrote): the observed share is only ever a share of the sample.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from stress.errors import StressError
from stress.measure.meter import Second
from stress.results.typed import WrongTypeError, quoted, read, to_json


class RunFileError(StressError):
    """A file of a run folder that cannot be read as the run model; the message says where."""


# ---------------------------------------------------------------------------- one second


@dataclass(frozen=True, slots=True)
class Row:
    """One second of a run: counts during second ``t``, percentiles of its samples in ms, and
    what was in force at its end.

    Written as a line of ``timeseries.csv`` (its fields are the columns, in order) and sent to
    the dashboard as JSON; ``None`` is a second without samples, an empty cell in the file.
    """

    t: int
    phase: str = ""
    offered: int = 0
    #: Written to the socket.
    sent: int = 0
    #: Acknowledged by the broker (QoS 1).
    acked: int = 0
    failed: int = 0
    #: Messages of the sampled devices seen by the end-to-end observer, of ``sampled`` written.
    observed: int = field(default=0, metadata={"was": ("delivered",)})
    sampled: int = 0
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
    #: Devices of the fleet that had had their first chance to connect by the end of the second.
    devices_started: int = field(default=0, metadata={"was": ("fleet",)})
    #: The fleet size asked (by the timeline, or ``stress scale``) and the interval in force at
    #: the end of the second (a wave's mean interval; ``None``: not recorded).
    devices: int = 0
    interval_s: float | None = None

    @classmethod
    def of(cls, second: Second) -> Row:
        """The row of a closed second."""
        return cls(
            t=second.t,
            phase=second.phase,
            offered=second.offered,
            sent=second.sent,
            acked=second.acked,
            failed=second.failed,
            observed=second.delivered,
            sampled=second.e2e_expected,
            connected=second.connected,
            connects=second.connects,
            disconnects=second.disconnects,
            lateness_p99_ms=_ms(second.lateness.percentile(0.99)),
            ack_p50_ms=_ms(second.ack.percentile(0.50)),
            ack_p95_ms=_ms(second.ack.percentile(0.95)),
            ack_p99_ms=_ms(second.ack.percentile(0.99)),
            e2e_p50_ms=_ms(second.e2e.percentile(0.50)),
            e2e_p99_ms=_ms(second.e2e.percentile(0.99)),
            loop_lag_ms=_ms(second.lag.max_us / 1000 if second.lag.count else None),
            cpu_percent=round(100 * second.cpu_s / second.wall_s, 1) if second.wall_s else 0.0,
            overruns=second.overruns,
            devices_started=second.fleet,
            devices=second.devices,
            interval_s=second.interval,
        )

    def cells(self) -> list[str | int]:
        """The row as ``timeseries.csv`` cells, in :data:`COLUMNS` order."""
        return [_cell(getattr(self, name)) for name in COLUMNS]

    def to_json(self) -> dict[str, Any]:
        """The row as the dashboard gets it: the columns by name."""
        out: dict[str, Any] = to_json(self)
        return out

    @classmethod
    def read(cls, cells: Mapping[str, str], where: str) -> Row:
        """A ``timeseries.csv`` line by column name (a column's old name will do, for files
        written before it was renamed); an empty count is 0, an empty figure None.

        Raises:
            RunFileError: ``t`` is missing, or a cell is not a finite number.
        """
        if not cells.get("t", "").strip():
            raise RunFileError(f"{where}: no value in column t")
        values: dict[str, Any] = {}
        for name, (kind, names) in _row_kinds().items():
            cell = next((cells[one] for one in names if one in cells), "").strip()
            if kind is str:
                values[name] = cell
                continue
            number = _number(cell, where, name)
            if kind is int:
                values[name] = round(number or 0)
            elif number is not None:
                values[name] = number
        return cls(**values)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@functools.cache
def _row_kinds() -> dict[str, tuple[type, tuple[str, ...]]]:
    """Each column, the kind of its cells (int: a count, float: a figure, or str), and the
    names it is read under: its own first, then those it had before."""
    hints = typing.get_type_hints(Row)
    kinds: dict[str, tuple[type, tuple[str, ...]]] = {}
    for column in fields(Row):
        hint = hints[column.name]
        kind = hint if hint in (int, str) else float
        kinds[column.name] = (kind, (column.name, *column.metadata.get("was", ())))
    return kinds


def _cell(value: Any) -> str | int:
    """A cell as written: figures were rounded when the row was made (ms to the µs, CPU to 0.1 %)."""
    if value is None:
        return ""
    return value if isinstance(value, int) else str(value)


def _number(cell: str, where: str, column: str) -> float | None:
    if not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RunFileError(f"{where}: {quoted(cell)} is not a number in column {column}")
    return value


#: The columns of ``timeseries.csv``, in order.
COLUMNS: Final = tuple(column.name for column in fields(Row))


# ---------------------------------------------------------------------------- the summary


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
    """The four latencies of a run: connect, PUBACK, end to end, lateness against the schedule."""

    connect: Latency = Latency()
    ack: Latency = Latency()
    e2e: Latency = Latency()
    lateness: Latency = Latency()


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage of the run's timeline."""

    devices: int = 0
    interval_s: float | None = None
    duration_s: float | None = None
    burst: bool = False


@dataclass(frozen=True, slots=True)
class Generator:
    """Health of the load generator itself: when saturated, it and not the target set the pace."""

    loop_lag_p99_ms: float | None = None
    loop_lag_max_ms: float | None = None
    cpu_percent: float | None = None
    busiest_process_cpu_percent: float | None = None
    overruns: int | None = None
    #: The CPUs the run was pinned to (``--cpus``), or None.
    cpus: tuple[int, ...] | None = None
    saturated: bool = False


@dataclass(frozen=True, slots=True)
class Collapse:
    """The second the target was judged to collapse (``None`` when not known), and why."""

    t: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CannotStart:
    """Why no device could connect: the most frequent failure, and the one line that says so."""

    reason: str = ""
    detail: str = ""
    attempts: int = 0
    #: Whether the run stopped itself for it (else it ran to its end, or was stopped).
    gave_up: bool = False
    message: str = "no device could connect"


@dataclass(frozen=True, slots=True)
class Observer:
    """The end-to-end observer: ``measured``, ``off`` (none asked, or the target has none), or
    ``refused`` by the broker (with its ``reason``, ``detail``, ``account`` and the one-line
    ``message``)."""

    state: str = "off"
    reason: str | None = None
    detail: str | None = None
    account: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """One Dask worker of a ``--cluster`` run: where it ran and what its own seconds say."""

    address: str = "-"
    host: str = "-"
    devices: int | None = None
    #: This worker's clock minus the parent's, and the uncertainty of that measure.
    clock_offset_ms: float | None = None
    clock_uncertainty_ms: float | None = None
    sent: int | None = None
    acked: int | None = None
    failed: int | None = None
    errors: int | None = None
    connections_peak: int | None = None
    msgs_per_s: float | None = None
    cpu_percent: float | None = None
    loop_lag_p99_ms: float | None = None
    saturated_seconds: int = 0
    run_seconds: int = 0


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """A ``--cluster`` run: its scheduler, its workers, those lost, how closely they started."""

    scheduler: str | None = None
    workers: tuple[WorkerSummary, ...] = ()
    lost: tuple[str, ...] = ()
    #: The common start is one instant on every worker within this (half its clock round trip).
    start_alignment_ms: float | None = None


#: What a :class:`Change` of the timeline can be.
CHANGES: Final = ("start", "stage", "scale", "rate", "pause", "resume", "storm", "stop")


@dataclass(frozen=True, slots=True)
class Change:
    """One moment of the run's timeline: what changed ``t`` seconds after the start, and what
    was in force from then on.

    ``what`` is one of :data:`CHANGES`: the ``start`` (the first stage's fleet and interval, at
    0), a ``stage`` of the timeline beginning (which forgets what ``scale`` and ``rate`` asked), a
    ``scale`` or ``rate`` asked from another shell or the dashboard, a ``pause`` or ``resume`` of
    ``count`` devices, a ``storm`` that dropped ``count`` devices at once, a ``stop``.
    """

    t: float
    what: str
    #: The fleet size asked and the interval (a wave's mean) in force from ``t``.
    devices: int | None = None
    interval_s: float | None = None
    #: Devices paused from ``t``.
    paused: int = 0
    #: The stage of the timeline in force, from 1.
    stage: int = 1
    #: Devices a pause or resume named, or a storm dropped.
    count: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """How many messages failed at one stage (``""`` when not known) for one reason."""

    stage: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class RunSummary:
    """``summary.json``: the run's settings and totals (``None`` where not known or not measured)."""

    run_id: str
    target: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    tls: bool | None = None
    qos: int | None = None
    shape: str | None = None
    #: The interval and the fleet size in force when the run ended (what ``stress rate`` and
    #: ``stress scale`` asked last, or the last stage's); ``timeline`` says when each changed,
    #: ``stages`` what was planned.
    interval_s: float | None = None
    stages: tuple[StageSummary, ...] = ()
    devices: int | None = None
    processes: int | None = None
    behaviour: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    stopped: str | None = None
    cannot_start: CannotStart | None = None
    #: Messages due by the schedule, written to the socket, acknowledged (None at QoS 0), failed.
    offered: int | None = None
    sent: int | None = None
    acked: int | None = None
    failed: int | None = None
    #: Messages of the sampled devices seen end to end by the observer (None: not measured), of
    #: ``sampled``, the messages those devices wrote.
    observed: int | None = field(default=None, metadata={"was": ("delivered",)})
    sampled: int | None = field(default=None, metadata={"was": ("e2e_expected",)})
    #: Acknowledged (written, at QoS 0) per second of the publishing phase, and offered.
    msgs_per_s: float | None = None
    offered_per_s: float | None = None
    latency_ms: Latencies = Latencies()
    connections_peak: int | None = None
    errors_by_reason: dict[str, int] | None = None
    errors_by_stage: dict[str, dict[str, int]] | None = None
    generator: Generator | None = None
    collapse: Collapse | None = None
    observer: Observer | None = None
    cluster: ClusterSummary | None = None
    #: Every change of fleet size, interval, pauses, storms and stages, in time order.
    timeline: tuple[Change, ...] = ()
    #: What the run itself noted, a line each.
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` document."""
        out: dict[str, Any] = to_json(self)
        return out

    @property
    def errors(self) -> tuple[ErrorCount, ...]:
        """Error counts by stage and reason (by reason alone in summaries without stages), most
        frequent first."""
        rows = [
            ErrorCount(stage, reason, count)
            for stage, reasons in (self.errors_by_stage or {}).items()
            for reason, count in reasons.items()
        ]
        if not rows:
            rows = [ErrorCount("", reason, count) for reason, count in (self.errors_by_reason or {}).items()]
        rows.sort(key=lambda row: (-row.count, row.stage, row.reason))
        return tuple(rows)

    @property
    def e2e_refused(self) -> str | None:
        """Why nothing was observed end to end: the reason the observer was refused, or None."""
        if self.observer is None or self.observer.state != "refused":
            return None
        return self.observer.reason or "no reason given"

    @property
    def problems(self) -> tuple[str, ...]:
        """What failed the run, a line each: no device could connect, the broker refused the
        end-to-end observer (said once: a run that could not start has said what the observer met)."""
        if self.cannot_start is not None:
            return (self.cannot_start.message or "no device could connect",)
        observer, refused = self.observer, self.e2e_refused
        if observer is not None and refused is not None:
            return (observer.message or f"end-to-end observer refused [{refused}]",)
        return ()


def read_summary(data: Any, where: str) -> RunSummary:
    """``summary.json``'s document as a :class:`RunSummary`.

    Raises:
        RunFileError: it is not an object with a ``run_id``, or a key has a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise RunFileError(f"{where} holds {_json_kind(data)}, not an object: is it a run summary?")
    if not data.get("run_id"):
        raise RunFileError(f"{where} has no run_id: is it a summary written by a stress run?")
    try:
        return read(RunSummary, data, where)
    except WrongTypeError as exc:
        raise RunFileError(str(exc)) from exc


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
