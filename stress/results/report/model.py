"""What the report reads of a run folder (the run model, and what it keeps of the events), and
the limits it keeps to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from stress.results.model import Row, RunFileError, RunSummary

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
CONSOLE_TIMELINE_ROWS: Final = 20
HTML_TIMELINE_ROWS: Final = 1000
HTML_TEXT: Final = 300
HTML_ERROR_ROWS: Final = 100
#: A problem that failed the run is one line saying what to do: shown whole, up to this.
PROBLEM_TEXT: Final = 1000


class ReportError(RunFileError):
    """A run folder the report cannot read; the message is one line saying what and where."""


CLUSTER_HEADER = ["worker", "host", "devices", "msgs/s", "CPU %", "lag p99 ms", "offset ms", "state"]
#: The columns of the timeline's table: what was in force from each change on.
TIMELINE_HEADER = ["t (s)", "change", "devices", "interval", "paused"]


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
    summary: RunSummary
    seconds: tuple[Row, ...]
    events: Events
    notes: tuple[str, ...]
