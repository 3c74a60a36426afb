"""The self-contained ``report.html``: the tables and four inline SVG charts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from html import escape
from pathlib import Path
from typing import Final

from stress.results.report.charts import Chart, Charts, Series, chart_data
from stress.results.report.model import (
    CLUSTER_HEADER,
    HTML_ERROR_ROWS,
    HTML_TEXT,
    PHASES,
    PROBLEM_TEXT,
    SATURATED_WARNING,
    ErrorCount,
    ErrorSample,
    ReportError,
    Run,
)
from stress.results.report.text import (
    aligned,
    collapse_text,
    count_text,
    generator_facts,
    latency_rows,
    message_facts,
    one_line,
    plain,
    run_facts,
)

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
        raise ReportError(f"cannot write {one_line(str(path))}: {exc.strerror or exc}") from exc
    return path


def _e(text: str, limit: int = HTML_TEXT) -> str:
    """Text from the run as HTML: control characters made visible, clipped, escaped."""
    return escape(plain(text, limit), quote=True)


def _page(run: Run) -> str:
    summary = run.summary
    charts = chart_data(run)
    warnings = [
        f'<p class="warning"><strong>Error:</strong> {_e(problem, PROBLEM_TEXT)}</p>'
        for problem in summary.problems
    ]
    if summary.generator is not None and summary.generator.saturated:
        warnings.append(f'<p class="warning"><strong>Warning:</strong> {escape(SATURATED_WARNING)}.</p>')
    if summary.collapse is not None:
        warnings.append(f'<p class="warning">{_e(collapse_text(summary.collapse))}</p>')
    latency = _html_table(["ms", "p50", "p95", "p99", "max", "count"], latency_rows(summary), "hrrrrr")
    health = "<p>No generator figures in this summary.</p>"
    if summary.generator is not None:
        health = _html_kv(generator_facts(summary.generator))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Stress run {_e(summary.run_id, 120)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Stress run {_e(summary.run_id)}</h1>",
        *warnings,
        '<div class="grid">',
        f"<section><h2>Run</h2>{_html_kv(run_facts(summary))}</section>",
        f"<section><h2>Messages</h2>{_html_kv(message_facts(summary))}</section>",
        "</div>",
        f'<section><h2>Latency</h2><div class="scroll">{latency}</div></section>',
        f"<section><h2>Errors</h2>{_html_errors(summary.errors)}{_html_samples(run.events.samples)}</section>",
        f"<section><h2>Load generator</h2>{health}</section>",
        *(
            [
                f"<section><h2>Cluster: {_e(summary.scheduler or '-')}</h2>"
                f'<p>{len(summary.workers)} workers{_e(aligned(summary))}</p><div class="scroll">'
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
    rows = [[count_text(row.count), row.stage or "-", row.reason] for row in errors[:HTML_ERROR_ROWS]]
    table = _html_table(["count", "stage", "reason"], rows, "rkl")
    rest = errors[HTML_ERROR_ROWS:]
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
