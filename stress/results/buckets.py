"""A long run drawn with a bounded number of points: its seconds grouped into buckets of whole
seconds, each column folded the way that keeps what matters visible.

The report's charts (:mod:`stress.results.report.charts`) and the dashboard's view of a finished
run fold alike: counts become the mean per second over the seconds recorded in the bucket,
latencies and other highs keep the highest value (a spike stays visible), the connected gauge
keeps the lowest (a drop stays visible), and what was in force keeps its value at the end of
the bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from stress.results.model import Row

#: One bucket: its number (its first second is ``number * width``) and its rows.
Group = tuple[int, list[Row]]
Fold = Callable[[list[float]], float]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def last(values: list[float]) -> float:
    return values[-1]


#: How each number column of a row is folded (the others are means per second).
FOLDS: Final[dict[str, Fold]] = {
    "connected": min,
    "devices_started": max,
    "devices": last,
    "interval_s": last,
    "lateness_p99_ms": max,
    "ack_p50_ms": max,
    "ack_p95_ms": max,
    "ack_p99_ms": max,
    "e2e_p50_ms": max,
    "e2e_p99_ms": max,
    "loop_lag_ms": max,
    "cpu_percent": max,
}


def bucket_width(end_s: float, max_points: int) -> int:
    """Whole seconds per point, for at most ``max_points`` points from 0 to ``end_s``."""
    return max(1, math.ceil((end_s + 1) / max(1, max_points)))


def group(rows: Sequence[Row], width: int) -> list[Group]:
    """Rows (in time order) by bucket; a bucket without rows is left out."""
    groups: list[Group] = []
    for row in rows:
        index = max(0, row.t) // width
        if groups and groups[-1][0] == index:
            groups[-1][1].append(row)
        else:
            groups.append((index, [row]))
    return groups


def fold(
    groups: Sequence[Group], width: int, value: Callable[[Row], float | None], how: Fold
) -> tuple[tuple[float, float | None], ...]:
    """One line's ``(t, value)`` points, a bucket each; a missing bucket breaks the line (``None``)
    rather than drawing a false zero."""
    points: list[tuple[float, float | None]] = []
    previous = None
    for index, rows in groups:
        if previous is not None and index > previous + 1:
            points.append((float((previous + 1) * width), None))
        values = [v for v in map(value, rows) if v is not None]
        points.append((float(index * width), how(values) if values else None))
        previous = index
    return tuple(points)


def folded_rows(rows: Sequence[Row], width: int) -> list[dict[str, Any]]:
    """The rows as JSON objects (:meth:`Row.to_json`), one per bucket when ``width`` is more than
    a second: each column folded as :data:`FOLDS` says, the phase the bucket ended in."""
    if width == 1:
        return [row.to_json() for row in rows]
    out = []
    for index, bucket in group(rows, width):
        shown: dict[str, Any] = bucket[-1].to_json()
        shown["t"] = index * width
        for name, value in shown.items():
            if name in ("t", "phase") or not isinstance(value, int | float | None):
                continue
            values = [v for v in (getattr(row, name) for row in bucket) if v is not None]
            shown[name] = FOLDS.get(name, mean)(values) if values else None
        out.append(shown)
    return out
