"""``GET /api/history``: one attribute over a time range, raw or downsampled in SQL.

Without ``bucket``, the stored points in time order (at most ``limit``; ``truncated`` says when
more exist). With ``bucket=SECONDS``, one point per non-empty bucket, computed by PostgreSQL
(``date_bin``); buckets are aligned to 1970-01-01T00:00Z, so the same bucket has the same start
in every query, and ``ts`` is that start. Both ends of the range are inclusive.

``format=csv`` answers the same points as ``text/csv`` to download (``ts,time,value``; a text value
that a spreadsheet would run as a formula is written with a ``'`` first), with
``X-History-Truncated`` saying whether ``limit`` cut them.
"""

from __future__ import annotations

import csv
import io
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import (
    ColumnElement,
    Double,
    Engine,
    Interval,
    Text,
    bindparam,
    cast,
    exists,
    func,
    null,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

from web.api.fields import Choice, Integer, Name, Query, Timestamp
from web.api.params import ParamError
from web.auth import api_login_required
from web.portal import current_portal
from web.schema import attributes, devices, rooms, telemetry
from web.units import unit_of
from wire.timestamps import EPOCH, ms_or_none, to_datetime

bp = Blueprint("history", __name__)

AGGREGATES: Final = ("avg", "min", "max", "last", "count")
#: Aggregates that need numbers; asking them of text values is a 400.
NUMERIC_AGGREGATES: Final = frozenset({"avg", "min", "max"})
DEFAULT_RANGE_MS = 3_600_000
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
MAX_BUCKETS = 100_000
#: Widest bucket: about 31 years.
MAX_BUCKET_S = 1_000_000_000

QUERY = Query(
    Name("room", "room name", required=True),
    Name("device", "device name", required=True),
    Name("attr", "attribute name", required=True),
    Timestamp("from", "range start (default: to - 1 h)"),
    Timestamp("to", "range end (default: now)"),
    Integer(
        "bucket",
        f"bucket width in seconds; at most {MAX_BUCKETS} buckets in the range",
        minimum=1,
        maximum=MAX_BUCKET_S,
    ),
    Choice(
        "agg",
        "aggregate per bucket (only with bucket, then avg by default); avg, min, max need numbers",
        options=AGGREGATES,
    ),
    Integer(
        "limit",
        "most points returned; truncated is true when more exist",
        minimum=1,
        maximum=MAX_LIMIT,
        default=DEFAULT_LIMIT,
    ),
    Choice("format", "csv: the points as a CSV file to download", options=("json", "csv"), default="json"),
)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated history request."""

    room: str
    device: str
    attr: str
    start_ms: int
    end_ms: int
    bucket_s: int | None
    agg: str | None
    limit: int

    @classmethod
    def from_args(cls, args: Any, now_ms: int) -> HistoryQuery:
        """Validate query parameters; ParamError (one line naming the parameter) when wrong."""
        asked = QUERY.read(args)
        end = asked["to"] if asked["to"] is not None else now_ms
        start = asked["from"] if asked["from"] is not None else max(0, end - DEFAULT_RANGE_MS)
        if start > end:
            raise ParamError("from must not be after to")
        bucket, agg = asked["bucket"], asked["agg"]
        if bucket is None:
            if agg is not None:
                raise ParamError("agg needs bucket")
        else:
            agg = agg or "avg"
            bucket_ms = bucket * 1000
            if end // bucket_ms - start // bucket_ms + 1 > MAX_BUCKETS:
                raise ParamError(f"bucket too small for this range: at most {MAX_BUCKETS} buckets")
        return cls(asked["room"], asked["device"], asked["attr"], start, end, bucket, agg, asked["limit"])


def _attribute_id(query: HistoryQuery) -> Any:
    return (
        select(attributes.c.id)
        .join(devices, devices.c.id == attributes.c.device_id)
        .join(rooms, rooms.c.id == devices.c.room_id)
        .where(
            rooms.c.name == query.room,
            devices.c.name == query.device,
            attributes.c.name == query.attr,
        )
        .scalar_subquery()
    )


def stored_unit(engine: Engine, query: HistoryQuery) -> str | None:
    """The unit the attribute's device last sent, if any."""
    statement = select(attributes.c.unit).where(attributes.c.id == _attribute_id(query))
    with engine.connect() as connection:
        return connection.execute(statement).scalar_one_or_none()


def _in_range(query: HistoryQuery) -> list[ColumnElement[bool]]:
    return [
        telemetry.c.attribute_id == _attribute_id(query),
        telemetry.c.ts >= to_datetime(query.start_ms),
        telemetry.c.ts <= to_datetime(query.end_ms),
    ]


def _value(num: float | None, text: str | None) -> float | str | None:
    return num if num is not None else text


def history(
    engine: Engine, query: HistoryQuery, *, rollups: bool = True
) -> tuple[list[dict[str, Any]], bool]:
    """The points of `query` and whether they were cut at ``limit``. Buckets of whole minutes are
    summed up from the per-minute rollups (``rollups``; the same points as from the stored values).

    Raises:
        ParamError: a numeric aggregate was asked of an attribute with text values in the range.
    """
    if rollups and query.bucket_s is not None and query.bucket_s % 60 == 0:
        return _from_rollups(engine, query)
    with engine.connect() as connection:
        if query.bucket_s is None:
            statement = (
                select(telemetry.c.ts, telemetry.c.value_num, telemetry.c.value_text)
                .where(*_in_range(query))
                .order_by(telemetry.c.ts)
                .limit(query.limit + 1)
            )
            rows = connection.execute(statement).all()
            points = [{"ts": ms_or_none(ts), "value": _value(num, text)} for ts, num, text in rows]
        else:
            if query.agg in NUMERIC_AGGREGATES:
                has_text = exists().where(*_in_range(query), telemetry.c.value_text.is_not(None))
                if connection.execute(select(has_text)).scalar():
                    raise ParamError(f"agg={query.agg} needs numbers, and {query.attr} has text values")
            rows = connection.execute(_bucketed(query)).all()
            points = [{"ts": ms_or_none(start), "value": _value(num, text)} for start, num, text in rows]
    return points[: query.limit], len(points) > query.limit


#: A range's whole minutes come from telemetry_1m, the minutes it cuts at its ends from telemetry;
#: each part is a partial aggregate (count, sum, least, greatest, newest) of one output bucket.
_ROLLUP_PARTS = """
WITH attribute AS (
    SELECT a.id FROM attributes a JOIN devices d ON d.id = a.device_id JOIN rooms r ON r.id = d.room_id
    WHERE r.name = :room AND d.name = :device AND a.name = :attr
), parts AS (
    SELECT date_bin(:stride, m.bucket, :epoch) AS b, m.n_all, m.n, m.total, m.lo, m.hi,
           m.last_ts, m.last_num, m.last_text
    FROM telemetry_1m m
    WHERE m.attribute_id = (SELECT id FROM attribute) AND m.bucket >= :inner_from AND m.bucket < :inner_to
    UNION ALL
    SELECT date_bin(:stride, t.ts, :epoch), 1, (t.value_num IS NOT NULL)::int, t.value_num, t.value_num,
           t.value_num, t.ts, t.value_num, t.value_text
    FROM telemetry t
    WHERE t.attribute_id = (SELECT id FROM attribute) AND t.ts >= :start AND t.ts <= :end
      AND (t.ts < :inner_from OR t.ts >= :inner_to)
)
"""
_ROLLUP_VALUES = {
    "avg": "sum(total) / nullif(sum(n), 0), NULL::text",
    "min": "min(lo), NULL::text",
    "max": "max(hi), NULL::text",
    "count": "CAST(sum(n_all) AS double precision), NULL::text",
    "last": "(array_agg(last_num ORDER BY last_ts DESC))[1], (array_agg(last_text ORDER BY last_ts DESC))[1]",
}
# Built once from the constants above (no request text goes into SQL: it is all bound parameters).
_ROLLUP_QUERIES = {
    agg: text(_ROLLUP_PARTS + f"SELECT b, {values} FROM parts GROUP BY b ORDER BY b LIMIT :limit")  # noqa: S608
    for agg, values in _ROLLUP_VALUES.items()
}
_ROLLUP_HAS_TEXT = text(_ROLLUP_PARTS + "SELECT EXISTS (SELECT 1 FROM parts WHERE n_all > n)")  # noqa: S608


def _from_rollups(engine: Engine, query: HistoryQuery) -> tuple[list[dict[str, Any]], bool]:
    start, end = to_datetime(query.start_ms), to_datetime(query.end_ms)
    inner_from = _minute(start + timedelta(minutes=1) - timedelta(microseconds=1))  # the first whole minute
    inner_to = _minute(end + timedelta(microseconds=1))  # after the last whole minute
    inner_to = max(inner_to, inner_from)
    bound = {
        "room": query.room,
        "device": query.device,
        "attr": query.attr,
        "stride": timedelta(seconds=query.bucket_s or 60),
        "epoch": EPOCH,
        "start": start,
        "end": end,
        "inner_from": inner_from,
        "inner_to": inner_to,
        "limit": query.limit + 1,
    }
    with engine.connect() as connection:
        if query.agg in NUMERIC_AGGREGATES:
            has_text = connection.execute(_ROLLUP_HAS_TEXT, bound).scalar()
            if has_text:
                raise ParamError(f"agg={query.agg} needs numbers, and {query.attr} has text values")
        rows = connection.execute(_ROLLUP_QUERIES[query.agg or "avg"], bound).all()
    points = [
        {"ts": ms_or_none(bucket), "value": _count(query, _value(num, text_value))}
        for bucket, num, text_value in rows
    ]
    return points[: query.limit], len(points) > query.limit


def _count(query: HistoryQuery, value: float | str | None) -> float | str | None:
    """A count as the stored values' path gives it: a whole number."""
    return int(value) if query.agg == "count" and isinstance(value, float) else value


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _bucketed(query: HistoryQuery) -> Any:
    stride = bindparam("stride", timedelta(seconds=query.bucket_s or 1), type_=Interval)
    start = func.date_bin(stride, telemetry.c.ts, EPOCH).label("bucket")
    num, text = telemetry.c.value_num, telemetry.c.value_text
    value_num: ColumnElement[Any]
    value_text: ColumnElement[Any] = cast(null(), Text)
    if query.agg == "avg":
        value_num = func.avg(num)
    elif query.agg == "min":
        value_num = func.min(num)
    elif query.agg == "max":
        value_num = func.max(num)
    elif query.agg == "count":
        value_num = func.count()
    else:  # last: the value of the newest row of the bucket
        value_num = func.array_agg(aggregate_order_by(num, telemetry.c.ts.desc()), type_=ARRAY(Double))[1]
        value_text = func.array_agg(aggregate_order_by(text, telemetry.c.ts.desc()), type_=ARRAY(Text))[1]
    return (
        select(start, value_num, value_text)
        .where(*_in_range(query))
        .group_by(start)
        .order_by(start)
        .limit(query.limit + 1)
    )


#: Text that a spreadsheet would run as a formula begins with one of these (written with a ' first).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def as_csv(query: HistoryQuery, points: list[dict[str, Any]], truncated: bool) -> Response:
    """The points as CSV: ``ts`` (ms since 1970), ``time`` (ISO 8601, UTC) and ``value``, one row each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["ts", "time", "value"])
    for point in points:
        moment = to_datetime(point["ts"]).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        writer.writerow([point["ts"], moment, _csv_text(point["value"])])
    response = Response(out.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"{query.room}-{query.device}-{query.attr}.csv"
    fallback = "".join(char if char.isascii() and (char.isalnum() or char in "-_.") else "_" for char in name)
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    )
    response.headers["X-History-Truncated"] = "true" if truncated else "false"
    return response


@bp.get("/history")
@api_login_required
def get_history() -> ResponseReturnValue:
    """History of one attribute; see the module docstring and the OpenAPI document."""
    query = HistoryQuery.from_args(request.args, now_ms=int(time.time() * 1000))
    as_text = QUERY.read(request.args)["format"] == "csv"
    portal = current_portal()
    points, truncated = history(portal.engine, query)
    if as_text:
        return as_csv(query, points, truncated)
    return jsonify(
        {
            "room": query.room,
            "device": query.device,
            "attr": query.attr,
            "from": query.start_ms,
            "to": query.end_ms,
            "bucket": query.bucket_s,
            "agg": query.agg,
            "unit": unit_of(query.attr, stored_unit(portal.engine, query), portal.units),
            "points": points,
            "truncated": truncated,
        }
    )
