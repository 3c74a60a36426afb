"""Figures as text (counts, durations, rates, the run's facts) and the console table."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from stress.results.model import Change, Collapse, ErrorCount, Generator, Latency, RunSummary
from stress.results.report.model import (
    CLUSTER_HEADER,
    CONSOLE_ERROR_ROWS,
    CONSOLE_TEXT,
    CONSOLE_TIMELINE_ROWS,
    LATENCIES,
    PROBLEM_TEXT,
    SATURATED_WARNING,
    TIMELINE_HEADER,
    Run,
)
from stress.results.timeline import change_text


def count_text(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def ms_text(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def rate_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def percent_text(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return ""
    return f" ({100 * part / whole:.1f} %)"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"


def plural(n: int) -> str:
    return "" if n == 1 else "s"


def address_text(summary: RunSummary) -> str:
    if summary.host is None:
        return "-" if summary.port is None else f":{summary.port}"
    host = f"[{summary.host}]" if ":" in summary.host else summary.host
    return host if summary.port is None else f"{host}:{summary.port}"


def interval_text(interval: float | None) -> str:
    if interval is None:
        return "-"
    return f"{interval:g} s" + (" (capacity mode)" if interval == 0 else "")


def in_force(summary: RunSummary) -> tuple[str, str]:
    """The interval and the fleet size at the end of the run, and how they changed on the way
    (from the timeline: a summary written before it has neither)."""
    interval, devices = interval_text(summary.interval_s), count_text(summary.devices)
    timeline = summary.timeline
    if len(timeline) < 2:
        return interval, devices
    first = timeline[0]
    intervals = {change.interval_s for change in timeline if change.interval_s is not None}
    sizes = {change.devices for change in timeline if change.devices is not None}
    if len(intervals) > 1:
        start, shortest = interval_text(first.interval_s), interval_text(min(intervals))
        interval += f" at the end ({start} at the start, {shortest} at the shortest)"
    if len(sizes) > 1:
        devices += f" at the end ({count_text(first.devices)} at the start, {count_text(max(sizes))} at most)"
    return interval, devices


def run_facts(summary: RunSummary) -> list[tuple[str, str]]:
    protocol = summary.protocol or "-"
    if summary.tls:
        protocol += ", TLS"
    interval, devices = in_force(summary)
    facts = [
        ("run", summary.run_id),
        ("target", summary.target or "-"),
        ("broker", address_text(summary)),
        ("protocol", protocol),
        ("QoS", count_text(summary.qos)),
        ("shape", summary.shape or "-"),
        ("interval", interval),
        ("devices", devices),
        ("processes", count_text(summary.processes)),
    ]
    if summary.behaviour:
        facts.append(("behaviour", summary.behaviour))
    if summary.started_at:
        facts.append(("started", summary.started_at))
    if summary.ended_at:
        facts.append(("ended", summary.ended_at))
    facts += [("duration", duration_text(summary.duration_s)), ("stopped", summary.stopped or "-")]
    return facts


def observed_text(summary: RunSummary) -> str:
    """What the end-to-end observer saw, of what the sampled devices wrote (never of all written:
    the other devices are not watched), in all and per second."""
    if summary.e2e_refused is not None:
        return f"not measured (observer refused: {summary.e2e_refused})"
    if summary.observed is None or not summary.sampled:
        return "not measured (no device sampled)" if summary.sampled == 0 else count_text(summary.observed)
    share = percent_text(summary.observed, summary.sampled)
    text = f"{summary.observed:,} of {summary.sampled:,} sampled{share}"
    if summary.duration_s:
        per_s = [rate_text(count / summary.duration_s) for count in (summary.observed, summary.sampled)]
        text += f"; {per_s[0]}/s of {per_s[1]}/s"
    return text


def message_facts(summary: RunSummary) -> list[tuple[str, str]]:
    acked = count_text(summary.acked)
    if summary.acked is None and summary.qos == 0:
        acked = "- (QoS 0 is not acknowledged)"
    verb = "written" if summary.qos == 0 else "acknowledged"
    rate = f"{rate_text(summary.msgs_per_s)} {verb}/s of {rate_text(summary.offered_per_s)} offered/s"
    rate += percent_text(summary.msgs_per_s, summary.offered_per_s)
    return [
        ("offered", count_text(summary.offered)),
        ("written", count_text(summary.sent)),
        ("acknowledged", acked),
        ("failed", count_text(summary.failed)),
        ("observed end to end", observed_text(summary)),
        ("rate", rate),
        ("connections peak", count_text(summary.connections_peak)),
    ]


def timeline_rows(timeline: Sequence[Change]) -> list[list[str]]:
    """The timeline's changes as rows of :data:`TIMELINE_HEADER`."""
    return [
        [
            f"{change.t:.1f}",
            change_text(change),
            count_text(change.devices),
            interval_text(change.interval_s),
            count_text(change.paused),
        ]
        for change in timeline
    ]


def latency_rows(summary: RunSummary) -> list[list[str]]:
    rows = []
    for name in LATENCIES:
        latency: Latency = getattr(summary.latency_ms, name)
        figures = [ms_text(latency.p50), ms_text(latency.p95), ms_text(latency.p99), ms_text(latency.max)]
        rows.append([name, *figures, count_text(latency.count) if latency.count else "-"])
    return rows


def generator_facts(generator: Generator) -> list[tuple[str, str]]:
    return [
        (
            "loop lag",
            f"p99 {ms_text(generator.loop_lag_p99_ms)} ms, max {ms_text(generator.loop_lag_max_ms)} ms",
        ),
        ("CPU", "-" if generator.cpu_percent is None else f"{generator.cpu_percent:.1f} %"),
        ("overruns", count_text(generator.overruns)),
    ]


def collapse_text(collapse: Collapse) -> str:
    when = "" if collapse.t is None else f" at {collapse.t:g} s"
    return f"collapse{when}: {collapse.reason or 'no reason given'}"


def console_table(run: Run) -> str:
    """The run as aligned plain text for a terminal: settings, totals, latencies, errors, health.

    Text from the run (run id, reasons) is made printable and clipped, so control characters or
    very long names cannot break the layout.
    """
    summary = run.summary
    generator = [] if summary.generator is None else generator_facts(summary.generator)
    facts = [
        [(label, plain(value, 80)) for label, value in run_facts(summary)],
        [(label, plain(value, 80)) for label, value in message_facts(summary)],
        [(f"generator {label}", value) for label, value in generator],
    ]
    # One label column for every block of facts, so the figures line up down the whole table.
    width = max(_width(label) for block in facts for label, _ in block)
    blocks = [
        _kv(facts[0], width),
        _kv(facts[1], width),
        _columns(["latency (ms)", "p50", "p95", "p99", "max", "count"], latency_rows(summary), "lrrrrr"),
        _console_timeline(summary.timeline),
        _console_errors(summary.errors),
        _console_cluster(summary),
    ]
    health = [_kv(facts[2], width)] if generator else []
    if summary.generator is not None and summary.generator.saturated:
        health.append(f"WARNING: {SATURATED_WARNING}")
    if summary.collapse is not None:
        health.append(plain(collapse_text(summary.collapse), 160))
    health += [f"ERROR: {plain(problem, PROBLEM_TEXT)}" for problem in summary.problems]
    blocks.append("\n".join(health))
    notes = [*summary.notes, *run.notes]
    if notes:
        blocks.append("\n".join(f"note: {plain(note, 160)}" for note in notes))
    return "\n\n".join(block for block in blocks if block) + "\n"


def aligned(summary: RunSummary) -> str:
    alignment = None if summary.cluster is None else summary.cluster.start_alignment_ms
    if alignment is None:
        return ""
    return f", start aligned within ±{ms_text(alignment)} ms"


def cluster_rows(summary: RunSummary) -> list[list[str]]:
    """A ``--cluster`` run's workers as rows of :data:`CLUSTER_HEADER` (none for other runs)."""
    if summary.cluster is None:
        return []
    lost = set(summary.cluster.lost)
    rows = []
    for worker in summary.cluster.workers:
        saturated = worker.saturated_seconds
        state = "lost" if worker.address in lost else f"saturated {saturated} s" if saturated else "ok"
        cpu = "-" if worker.cpu_percent is None else f"{worker.cpu_percent:.1f}"
        rows.append(
            [
                worker.address,
                worker.host,
                count_text(worker.devices),
                rate_text(worker.msgs_per_s),
                cpu,
                ms_text(worker.loop_lag_p99_ms),
                ms_text(worker.clock_offset_ms),
                state,
            ]
        )
    return rows


def _console_cluster(summary: RunSummary) -> str:
    rows = [[plain(cell, CONSOLE_TEXT) for cell in row] for row in cluster_rows(summary)]
    if not rows:
        return ""
    scheduler = summary.cluster.scheduler if summary.cluster is not None else None
    title = f"cluster: {plain(scheduler or '-', 80)}, {len(rows)} workers{aligned(summary)}"
    return title + "\n" + _columns(CLUSTER_HEADER, rows, "llrrrrrl")


def _console_timeline(timeline: Sequence[Change]) -> str:
    """The timeline, when something changed after the start."""
    if len(timeline) < 2:
        return ""
    rows = [[plain(cell, CONSOLE_TEXT) for cell in row] for row in timeline_rows(timeline)]
    shown = rows[:CONSOLE_TIMELINE_ROWS]
    table = _columns(TIMELINE_HEADER, shown, "rlrrr")
    if len(rows) > len(shown):
        table += f"\n... {len(rows) - len(shown)} more changes (summary.json has them all)"
    return table


def _console_errors(errors: Sequence[ErrorCount]) -> str:
    if not errors:
        return "errors: none"
    shown = errors[:CONSOLE_ERROR_ROWS]
    rows = [
        [count_text(row.count), plain(row.stage or "-", 16), plain(row.reason, CONSOLE_TEXT)] for row in shown
    ]
    table = _columns(["errors", "stage", "reason"], rows, "rll")
    rest = errors[CONSOLE_ERROR_ROWS:]
    if rest:
        table += f"\n... {len(rest)} more reasons ({sum(row.count for row in rest):,} errors)"
    return table


def _kv(facts: Sequence[tuple[str, str]], width: int) -> str:
    return "\n".join(f"{_pad(label, width, 'l')}  {value}".rstrip() for label, value in facts)


def _columns(header: list[str], rows: Sequence[list[str]], align: str) -> str:
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            _pad(cell, width, side) for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _pad(text: str, width: int, side: str) -> str:
    fill = " " * (width - _width(text))
    return fill + text if side == "r" else text + fill


def _width(text: str) -> int:
    """Columns a terminal gives the text: wide East Asian characters take two, marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def plain(text: str, limit: int) -> str:
    """One printable line of at most ``limit`` columns: control and format characters escaped."""
    printable = "".join(
        char if not unicodedata.category(char).startswith("C") else repr(char)[1:-1] for char in text
    )
    return clip(printable, limit)


def clip(text: str, limit: int) -> str:
    if _width(text) <= limit:
        return text
    kept = []
    width = 0
    for char in text:
        width += _width(char)
        if width > limit - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def one_line(text: str) -> str:
    """A path or name as it may appear in a one-line message."""
    return plain(text, 200)
