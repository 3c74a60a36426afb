"""What the report reads of a run folder, as frozen dataclasses, and the limits it keeps to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from stress.errors import StressError

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
MAX_REASONS: Final = 50
OTHER_REASONS: Final = "other reasons"
REASON_CHARS: Final = 200
ERROR_SAMPLES: Final = 10
CHART_REASONS: Final = 8
CONSOLE_TEXT: Final = 48
CONSOLE_ERROR_ROWS: Final = 20
HTML_TEXT: Final = 300
HTML_ERROR_ROWS: Final = 100
#: A problem that failed the run is one line saying what to do: shown whole, up to this.
PROBLEM_TEXT: Final = 1000


class ReportError(StressError):
    """A run folder the report cannot read; the message is one line saying what and where."""


CLUSTER_HEADER = ["worker", "host", "devices", "msgs/s", "CPU %", "lag p99 ms", "offset ms", "state"]


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
