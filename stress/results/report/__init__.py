"""The report of one stress run: a console summary and one self-contained ``report.html``.

A run folder (``data/runs/<run-id>/``) holds ``summary.json`` (the totals and the timeline of what
was in force), ``timeseries.csv`` (one row per second) and ``events.jsonl`` (what happened, one JSON
object a line). :func:`load_run` reads it once into frozen dataclasses; :func:`console_table`
renders them for a terminal and :func:`write_html` as a single HTML file from a Jinja2 template,
its five charts drawn by uPlot with the timeline's changes marked across them, which is inlined
into the page with the charts' data, so the file opens offline, from disk, on a phone or a laptop
(without uPlot installed, the page has its tables and says how to get the charts).
:func:`report` does all three. The parts:
:mod:`~stress.results.report.model` (what is read, the limits), :mod:`~stress.results.report.loading`,
:mod:`~stress.results.report.text` (figures as text, the console table),
:mod:`~stress.results.report.charts` (the series) and :mod:`~stress.results.report.html`.

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

from pathlib import Path

from stress.results.report.html import write_html
from stress.results.report.loading import load_run
from stress.results.report.text import console_table


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
