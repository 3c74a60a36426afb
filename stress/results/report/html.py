"""The self-contained ``report.html``: the run's tables and five charts drawn by uPlot, with the
changes of its timeline marked across them.

The page is ``templates/report.html``, rendered with autoescape on, so text from the run is escaped
wherever it lands. The charts' data goes in as one JSON block (``<``, ``>`` and ``&`` written as
``\\u003c`` and so on, so no text from the run can end the block), and uPlot's script and
stylesheet are inlined from ``web/assets`` (see :mod:`web.vendor`) with the page's own script: the
file needs nothing else and opens offline, from disk. Without uPlot installed the report is still
written, with the tables and a line in place of each chart saying how to install it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from stress.results.model import Change, ErrorCount, RunSummary
from stress.results.report.charts import Chart, Charts, chart_data
from stress.results.report.model import (
    CLUSTER_HEADER,
    HTML_ERROR_ROWS,
    HTML_TEXT,
    HTML_TIMELINE_ROWS,
    PHASES,
    PROBLEM_TEXT,
    SATURATED_WARNING,
    TIMELINE_HEADER,
    ErrorSample,
    ReportError,
    Run,
)
from stress.results.report.text import (
    aligned,
    cluster_rows,
    collapse_text,
    count_text,
    generator_facts,
    latency_rows,
    message_facts,
    one_line,
    plain,
    run_facts,
    timeline_rows,
)

#: uPlot's files, by their names in :data:`web.vendor.ALLOWED`.
_UPLOT_SCRIPT: Final = "uPlot.iife.min.js"
_UPLOT_STYLE: Final = "uPlot.min.css"
#: Longest series name in a chart's legend (error reasons can be long).
_NAME_TEXT: Final = 80
#: Longest short word in a table (a stage, a worker's state).
_WORD_TEXT: Final = 40
#: How the time axis says a moment, by the run's length: (runs shorter than, ticks, in words).
_CLOCKS: Final = (
    (120, "s", "seconds"),
    (3600, "m:ss", "minutes:seconds"),
    (math.inf, "h:mm:ss", "hours:minutes:seconds"),
)


@dataclass(frozen=True, slots=True)
class _Table:
    """A table as the template draws it: plain text cells and a letter per column in ``kinds``.

    ``r`` figures (right, unbroken), ``l`` text (wraps anywhere when it must), ``k`` a short word
    such as a stage (unbroken, clipped), ``h`` row names.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    kinds: str


@dataclass(frozen=True, slots=True)
class _Figure:
    """A chart's frame in the page: its heading, its caption, and whether the run has a value for it."""

    title: str
    caption: str
    has_values: bool


@dataclass(frozen=True, slots=True)
class _Key:
    """What the shading and the lines across the charts mean, listed under each chart."""

    phases: tuple[str, ...]
    collapse: bool
    #: The kinds of change marked (``scale``, ``storm`` ...), in the timeline's order.
    marks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Cluster:
    """A ``--cluster`` run's workers: who scheduled them, how many, and a row each."""

    scheduler: str
    workers: str
    table: _Table


@dataclass(frozen=True, slots=True)
class _Library:
    """uPlot's script and stylesheet as the page inlines them (npm's files, as installed)."""

    js: Markup
    css: Markup


def render_html(run: Run) -> str:
    """The report of ``run`` as one self-contained HTML page (what :func:`write_html` writes)."""
    return _page(run)


def write_html(run: Run, path: Path) -> Path:
    """Write the report as one self-contained HTML file at ``path`` and return ``path``.

    The file needs nothing else (no fetched scripts, fonts, stylesheets or images): uPlot and the
    chart data are inlined. Every piece of text from the run is HTML-escaped by the template.

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
        raise ReportError(f"cannot write {one_line(str(path))}: {exc.strerror or exc}") from exc
    return path


@cache
def _templates() -> Environment:
    """The report's templates, loaded once; autoescape on, so text from the run is never markup."""
    return Environment(
        loader=PackageLoader("stress.results.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _chart_library() -> _Library | None:
    """uPlot from ``web/assets`` (``npm ci`` there installs it), or ``None`` when it is not there."""
    from web import vendor  # noqa: PLC0415 - the portal's allow-listed browser libraries, with Flask

    try:
        script, style = (
            (vendor.ASSETS_DIR / vendor.ALLOWED[name]).read_text(encoding="utf-8")
            for name in (_UPLOT_SCRIPT, _UPLOT_STYLE)
        )
    except FileNotFoundError:
        return None
    # npm's pinned files, inlined as they are: escaping would break them, and no run text is in them.
    return _Library(Markup(script), Markup(style))  # noqa: S704


def _page(run: Run) -> str:
    summary = run.summary
    charts = chart_data(run)
    saturated = summary.generator is not None and summary.generator.saturated
    return (
        _templates()
        .get_template("report.html")
        .render(
            title_id=plain(summary.run_id, 120),
            run_id=plain(summary.run_id, HTML_TEXT),
            problems=[plain(problem, PROBLEM_TEXT) for problem in summary.problems],
            saturated=SATURATED_WARNING if saturated else None,
            collapse=None if summary.collapse is None else plain(collapse_text(summary.collapse), HTML_TEXT),
            run_facts=_facts(run_facts(summary)),
            message_facts=_facts(message_facts(summary)),
            latency=_table(["ms", "p50", "p95", "p99", "max", "count"], latency_rows(summary), "hrrrrr"),
            errors=_errors(summary.errors),
            more_errors=_more_errors(summary.errors),
            samples=_samples(run.events.samples),
            generator=None if summary.generator is None else _facts(generator_facts(summary.generator)),
            cluster=_cluster(summary),
            timeline=_timeline(summary.timeline),
            figures=[
                _Figure(chart.title, plain(chart.caption, 600), _has_values(chart)) for chart in charts.all()
            ],
            key=_key(charts),
            notes=[plain(note, HTML_TEXT) for note in (*summary.notes, *run.notes)],
            data=_chart_block(charts),
            uplot=_chart_library(),
        )
    )


def _facts(facts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(plain(label, HTML_TEXT), plain(value, HTML_TEXT)) for label, value in facts]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], kinds: str) -> _Table:
    def line(cells: Sequence[str]) -> tuple[str, ...]:
        return tuple(
            plain(text, _WORD_TEXT if kind == "k" else HTML_TEXT)
            for text, kind in zip(cells, kinds, strict=True)
        )

    return _Table(line(header), tuple(line(row) for row in rows), kinds)


def _errors(errors: Sequence[ErrorCount]) -> _Table | None:
    if not errors:
        return None
    rows = [[count_text(row.count), row.stage or "-", row.reason] for row in errors[:HTML_ERROR_ROWS]]
    return _table(["count", "stage", "reason"], rows, "rkl")


def _more_errors(errors: Sequence[ErrorCount]) -> str | None:
    """What the errors table leaves out, in one line."""
    rest = errors[HTML_ERROR_ROWS:]
    if not rest:
        return None
    return f"… {len(rest):,} more reasons ({sum(row.count for row in rest):,} errors)."


def _samples(samples: Sequence[ErrorSample]) -> _Table | None:
    if not samples:
        return None
    rows = [[f"{s.t:.2f}", s.device or "-", s.stage or "-", s.reason, s.detail] for s in samples]
    return _table(["t (s)", "device", "stage", "reason", "detail"], rows, "rlkll")


def _cluster(summary: RunSummary) -> _Cluster | None:
    rows = cluster_rows(summary)
    if summary.cluster is None or not rows:
        return None
    return _Cluster(
        scheduler=plain(summary.cluster.scheduler or "-", HTML_TEXT),
        workers=plain(f"{len(rows)} workers{aligned(summary)}", HTML_TEXT),
        table=_table(CLUSTER_HEADER, rows, "lkrrrrrk"),
    )


def _timeline(timeline: Sequence[Change]) -> _Table | None:
    """The timeline's table, when something changed after the start."""
    if len(timeline) < 2:
        return None
    return _table(TIMELINE_HEADER, timeline_rows(timeline[:HTML_TIMELINE_ROWS]), "rlrrr")


def _has_values(chart: Chart) -> bool:
    return any(value is not None for series in chart.series for _, value in series.points)


def _key(charts: Charts) -> _Key | None:
    phases = tuple(phase for phase in PHASES if any(span.phase == phase for span in charts.phases))
    marks = tuple(dict.fromkeys(mark.what for mark in charts.marks))
    if not phases and charts.collapse_t is None and not marks:
        return None
    return _Key(phases, charts.collapse_t is not None, marks)


def _chart_block(charts: Charts) -> dict[str, Any]:
    """What the page's script draws: the time axis, the phases, the collapse and each chart's data."""
    clock, words = next((clock, words) for limit, clock, words in _CLOCKS if charts.end_s < limit)
    return {
        "end": charts.end_s,
        "clock": clock,
        "x_label": f"time since the start ({words})",
        "phases": [{"start": span.start, "end": span.end, "phase": span.phase} for span in charts.phases],
        "collapse": charts.collapse_t,
        "marks": [
            {"t": mark.t, "what": mark.what, "text": plain(mark.text, _NAME_TEXT)} for mark in charts.marks
        ],
        "charts": [_columns(chart) for chart in charts.all()],
    }


def _columns(chart: Chart) -> dict[str, Any]:
    """A chart as uPlot takes it: one x column for all its series, ``None`` where one has no value."""
    xs = sorted({t for series in chart.series for t, _ in series.points})
    columns = []
    for series in chart.series:
        values = dict(series.points)
        columns.append([values.get(t) for t in xs])
    return {
        "unit": chart.unit,
        "layered": chart.layered,
        "names": [plain(series.name, _NAME_TEXT) for series in chart.series],
        "data": [xs, *columns],
    }
