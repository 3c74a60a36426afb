"""``/api/devices``: devices with their attributes' last values, a page at a time; removing them.

A lab may hold tens of thousands of devices, so ``GET`` answers a page: at most ``limit`` devices
(ordered by room, then name), each with at most :data:`MAX_ATTRIBUTES` attributes, the total
that match the filters, and ``next``, the cursor of the following page (``null`` on the last).

``DELETE /api/devices/<room>/<device>`` removes one device, ``DELETE /api/devices?room=R&prefix=P``
every device of a room and/or whose name starts with a prefix, with their telemetry, latest values
and alarms (:mod:`web.removal`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import DateTime, Engine, Select, cast, func, literal, literal_column, or_, select, tuple_

from web.api import params
from web.api.fields import Choice, Cursor, Integer, Name, Prefix, Query, Text
from web.api.params import Unavailable
from web.auth import api_login_required
from web.portal import current_portal
from web.removal import Removal, RemovalRefused, Removed, Selection
from web.schema import attributes, devices, latest, rooms
from web.units import unit_of
from wire.timestamps import ms_or_none

bp = Blueprint("devices", __name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Most attributes listed per device (``attributes_truncated`` says when a device has more).
MAX_ATTRIBUTES = 100
#: Longest search text (``q``).
MAX_QUERY_CHARS = 200
#: Orders of a page: by room and name, or the longest silent first.
SORTS = ("name", "offline")

LIST_QUERY = Query(
    Name("room", "only this room"),
    Prefix("prefix", "only devices whose name starts with this"),
    Text("q", "only devices whose room or name holds this text (any case)", max_length=MAX_QUERY_CHARS),
    Integer("limit", "most devices in the page", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
    Choice(
        "sort",
        "name: by room and name; offline: the longest silent first (never seen, then oldest)",
        options=SORTS,
        default="name",
    ),
    Cursor("cursor", "the next of the previous page (omit for the first)"),
)
#: One device's path.
PATH = Query(Name("room", "the device's room"), Name("device", "the device"))
REMOVE_QUERY = Query(
    Name("room", "the devices of this room"),
    Prefix("prefix", "the devices whose name starts with this (in room, or in every room)"),
)


def _like(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(query: Select[Any], room: str | None, prefix: str | None, q: str | None) -> Select[Any]:
    if room is not None:
        query = query.where(rooms.c.name == room)
    if prefix is not None:
        query = query.where(devices.c.name.like(_like(prefix) + "%", escape="\\"))
    if q is not None:
        pattern = "%" + _like(q) + "%"
        query = query.where(
            or_(rooms.c.name.ilike(pattern, escape="\\"), devices.c.name.ilike(pattern, escape="\\"))
        )
    return query


def list_devices(
    engine: Engine,
    room: str | None = None,
    *,
    prefix: str | None = None,
    q: str | None = None,
    after: tuple[str, ...] | None = None,
    limit: int = DEFAULT_LIMIT,
    units: dict[str, str] | None = None,
    sort: str = "name",
) -> tuple[list[dict[str, Any]], bool, int, tuple[str, ...] | None]:
    """One page of devices, each with its attributes (by name), ordered by room and name, or (``sort``
    ``offline``) the longest silent first: never seen, then by last-seen time, then by room and name.

    Args:
        room: only this room.
        prefix: only devices whose name starts with this.
        q: only devices whose room or name holds this (any case).
        after: the sort key the previous page ended with (see :func:`cursor_size`).
        limit: most devices.
        units: units of measure by attribute name, for attributes whose device sent none.
        sort: ``name`` or ``offline``.

    Returns:
        The devices, whether more follow, how many match the filters in all, and the sort key of
        the last one (for the next page's ``after``).
    """
    page = _filtered(
        select(
            devices.c.id,
            rooms.c.name,
            devices.c.name,
            devices.c.first_seen,
            devices.c.last_seen,
            devices.c.presence,
            devices.c.presence_at,
        )
        .select_from(devices)
        .join(rooms, rooms.c.id == devices.c.room_id),
        room,
        prefix,
        q,
    )
    silence = func.coalesce(devices.c.last_seen, literal_column("'-infinity'::timestamptz"))
    order = [rooms.c.name, devices.c.name] if sort == "name" else [silence, rooms.c.name, devices.c.name]
    if after is not None:
        start = list(after) if sort == "name" else [_seen_bound(after[0]), after[1], after[2]]
        page = page.where(tuple_(*order) > tuple_(*start))
    page = page.order_by(*order).limit(limit + 1)
    total = _filtered(
        select(func.count()).select_from(devices).join(rooms, rooms.c.id == devices.c.room_id),
        room,
        prefix,
        q,
    )
    with engine.connect() as connection:
        found = connection.execute(page).all()
        more = len(found) > limit
        found = found[:limit]
        count = connection.execute(total).scalar_one()
        last_key: tuple[str, ...] | None = None
        if found:
            _id, last_room, last_device, _first, last_seen, *_rest = found[-1]
            seen_text = "-infinity" if last_seen is None else last_seen.isoformat()
            last_key = (last_room, last_device) if sort == "name" else (seen_text, last_room, last_device)
        by_id: dict[int, dict[str, Any]] = {}
        result = []
        for device_id, room_name, name, first_seen, last_seen, presence, presence_at in found:
            entry = {
                "room": room_name,
                "device": name,
                "first_seen": ms_or_none(first_seen),
                "last_seen": ms_or_none(last_seen),
                "presence": None if presence is None else {"state": presence, "at": ms_or_none(presence_at)},
                "attributes": [],
                "attributes_truncated": False,
            }
            by_id[device_id] = entry
            result.append(entry)
        if by_id:
            _attach_attributes(connection, by_id, units or {})
    return result, more, count, last_key


def cursor_size(sort: str) -> int:
    """How many parts a cursor of ``sort`` has: (room, device), or (last seen, room, device)."""
    return 2 if sort == "name" else 3


def _seen_bound(text: str) -> Any:
    """A last-seen time of a cursor, as SQL; ParamError for anything this API did not give out."""
    if text != "-infinity":
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise params.ParamError(
                "cursor is not a cursor this API gave out (use the 'next' of an answer)"
            ) from None
    return cast(literal(text), DateTime(timezone=True))


def _attach_attributes(connection: Any, by_id: dict[int, dict[str, Any]], units: dict[str, str]) -> None:
    """The first :data:`MAX_ATTRIBUTES` attributes of each device, by name, with latest values."""
    ranked = (
        select(
            attributes.c.device_id,
            attributes.c.name,
            latest.c.value_num,
            latest.c.value_text,
            latest.c.ts,
            attributes.c.unit,
            func.row_number()
            .over(partition_by=attributes.c.device_id, order_by=attributes.c.name)
            .label("rank"),
        )
        .select_from(attributes)
        .outerjoin(latest, latest.c.attribute_id == attributes.c.id)
        .where(attributes.c.device_id.in_(list(by_id)))
        .subquery()
    )
    query = (
        select(
            ranked.c.device_id,
            ranked.c.name,
            ranked.c.value_num,
            ranked.c.value_text,
            ranked.c.ts,
            ranked.c.rank,
            ranked.c.unit,
        )
        .where(ranked.c.rank <= MAX_ATTRIBUTES + 1)
        .order_by(ranked.c.device_id, ranked.c.name)
    )
    for device_id, attr, num, text, ts, rank, unit in connection.execute(query):
        entry = by_id[device_id]
        if rank > MAX_ATTRIBUTES:
            entry["attributes_truncated"] = True
            continue
        value = num if num is not None else text
        entry["attributes"].append(
            {"attr": attr, "value": value, "ts": ms_or_none(ts), "unit": unit_of(attr, unit, units)}
        )


@bp.get("/devices")
@api_login_required
def get_devices() -> ResponseReturnValue:
    """A page of devices with their attributes; ``?room=``, ``?prefix=``, ``?q=`` filter them, ``?sort=``
    orders them (``name``, or ``offline``: the longest silent first)."""
    asked = LIST_QUERY.read(request.args)
    sort = asked["sort"]
    after = params.cursor(asked["cursor"], "cursor", cursor_size(sort))
    portal = current_portal()
    found, more, total, last = list_devices(
        portal.engine,
        asked["room"],
        prefix=asked["prefix"],
        q=asked["q"],
        after=after,
        limit=asked["limit"],
        units=portal.units,
        sort=sort,
    )
    following = params.make_cursor(list(last)) if more and last else None
    return jsonify(devices=found, next=following, total=total)


def _removal() -> Removal:
    removal: Removal = current_portal().removal
    return removal


def _remove(selection: Selection) -> Removed:
    try:
        return _removal().remove(selection, g.api_user)
    except RemovalRefused as exc:
        raise Unavailable(str(exc)) from exc


@bp.delete("/devices/<room>/<device>")
@api_login_required
def remove_device(room: str, device: str) -> ResponseReturnValue:
    """Remove one device with its telemetry, latest values and alarms: 204, or 404 if unknown."""
    selection = Selection(**PATH.read({"room": room, "device": device}))
    if not _remove(selection).devices:
        return jsonify(error="no such device"), 404
    return "", 204


@bp.delete("/devices")
@api_login_required
def remove_devices() -> ResponseReturnValue:
    """Remove every device of ``room`` and/or whose name starts with ``prefix``: ``{"deleted": n}``."""
    asked = REMOVE_QUERY.read(request.args)
    room, prefix = asked["room"], asked["prefix"]
    if room is None and prefix is None:
        raise params.ParamError("room or prefix is required: say which devices to remove")
    if prefix == "":
        raise params.ParamError("prefix must not be empty (to remove a whole room, give only room)")
    return jsonify(deleted=len(_remove(Selection(room=room, prefix=prefix)).devices))
