"""``/api/alarms``: list alarms (filtered, a page at a time), one with its history, the counts for the
header; acknowledge and clear them one at a time or in bulk (``POST``, CSRF header for sessions).

Filters, in the query string of ``GET /api/alarms`` and in the JSON body of the bulk calls:
``state`` (``active``, ``cleared`` or ``all``), ``severity`` and ``type`` (one name, or several: a
comma-separated string, or a JSON list in a body), ``room``, ``device`` and ``acked`` (``true`` or
``false``). A list is newest first; ``before=<id>`` pages (pass the answer's ``next``).

The bulk calls (``POST /api/alarms/ack``, ``POST /api/alarms/clear``) take ``{"ids": [...]}`` or
filters (one at least; ``{"state": "all"}`` means every alarm), never both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from web.alarms import SEVERITIES, AlarmFilter
from web.api.fields import Choice, Flag, Ids, Integer, Name, Names, Query
from web.api.params import ParamError
from web.auth import api_login_required
from web.portal import current_portal
from wire.timestamps import ms_or_none

if TYPE_CHECKING:
    from web.alarm_messages import Alarm
    from web.alarms import Alarms

bp = Blueprint("alarms", __name__)

STATES = ("active", "cleared", "all")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_ID = 2**63 - 1
#: Most ids one bulk call names (filters reach any number).
MAX_IDS = 10_000
#: Most severities or types one filter names.
MAX_NAMES = 50

#: The filters, in a query string and in a bulk call's body.
FILTERS = Query(
    Choice("state", "active, cleared or all", options=STATES, default="all"),
    Names("severity", f"only this severity: {', '.join(SEVERITIES)}", allowed=SEVERITIES, most=MAX_NAMES),
    Names("type", "only this type", most=MAX_NAMES),
    Name("room", "only this room"),
    Name("device", "only this device"),
    Flag("acked", "only acknowledged (true) or not (false)"),
)
FILTER_KEYS = tuple(FILTERS.keys())
#: A page of the list.
PAGE = Query(
    Integer("limit", "most alarms returned", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
    Integer(
        "before", "only alarms older than this one (the next of the previous page)", minimum=1, maximum=MAX_ID
    ),
)
#: The ids of a bulk call's body.
IDS = Ids("ids", "alarm ids", most=MAX_IDS, maximum=MAX_ID)
#: One alarm's id in the path (an id beyond it is no alarm: 404).
ALARM_ID = Integer("id", "the alarm's id", minimum=1, maximum=MAX_ID)


def _alarms() -> Alarms:
    alarms = current_portal().alarms
    if alarms is None:  # create_app always makes them; a portal put together by hand may not
        raise RuntimeError("this portal has no alarms handler")
    return alarms


def _answer(alarm: Alarm | None) -> ResponseReturnValue:
    if alarm is None:
        return jsonify(error="no such alarm"), 404
    return jsonify(alarm.as_json())


def filter_of(source: Mapping[str, Any]) -> AlarmFilter:
    """The filter of a query string or a request body (see the module's docstring)."""
    asked = FILTERS.read(source)
    return AlarmFilter(
        state=None if asked["state"] == "all" else asked["state"],
        severities=asked["severity"],
        types=asked["type"],
        room=asked["room"],
        device=asked["device"],
        acked=asked["acked"],
    )


@bp.get("/alarms")
@api_login_required
def list_alarms() -> ResponseReturnValue:
    """Alarms newest first, filtered; at most ``limit``, older than ``before``; ``next`` and ``total``."""
    which = filter_of(request.args)
    page = PAGE.read(request.args)
    found, more, total = _alarms().store.find(which, before=page["before"], limit=page["limit"])
    following = found[-1].id if more and found else None
    return jsonify(alarms=[alarm.as_json() for alarm in found], next=following, total=total)


@bp.get("/alarms/summary")
@api_login_required
def summary() -> ResponseReturnValue:
    """``{"active": n, "unacked": m}``: the header's count."""
    return jsonify(_alarms().store.counts())


@bp.get("/alarms/<int:alarm_id>")
@api_login_required
def one_alarm(alarm_id: int) -> ResponseReturnValue:
    """One alarm, with ``events``: its history, oldest first."""
    alarm = _alarms().store.get(alarm_id) if alarm_id <= MAX_ID else None
    if alarm is None:
        return _answer(None)
    events = [
        {**event, "at": ms_or_none(event["at"]), "ts": ms_or_none(event["ts"])}
        for event in _alarms().store.events(alarm_id)
    ]
    return jsonify({**alarm.as_json(), "events": events})


@bp.post("/alarms/<int:alarm_id>/ack")
@api_login_required
def acknowledge(alarm_id: int) -> ResponseReturnValue:
    """Acknowledge an alarm as the calling user (a second acknowledgement changes nothing)."""
    if alarm_id > MAX_ID:
        return _answer(None)
    return _answer(_alarms().acknowledge(alarm_id, g.api_user))


@bp.post("/alarms/<int:alarm_id>/clear")
@api_login_required
def clear(alarm_id: int) -> ResponseReturnValue:
    """Clear an alarm as the calling user (clearing a cleared alarm changes nothing)."""
    if alarm_id > MAX_ID:
        return _answer(None)
    return _answer(_alarms().clear(alarm_id, g.api_user))


def _bulk_target() -> AlarmFilter | list[int]:
    """The ids or the filter of a bulk call's body."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not body:
        raise ParamError(
            'the body must be a JSON object: {"ids": [...]}, or filters such as {"state": "active"}'
        )
    unknown = sorted(set(body) - {*FILTER_KEYS, "ids"})
    if unknown:
        raise ParamError(f"unknown field {unknown[0]!r}: use ids, or {', '.join(FILTER_KEYS)}")
    if "ids" not in body:
        return filter_of(body)
    if len(body) > 1:
        raise ParamError("give ids or filters, not both")
    ids: list[int] = IDS.read(body)
    return ids


@bp.post("/alarms/ack")
@api_login_required
def acknowledge_many() -> ResponseReturnValue:
    """Acknowledge every alarm of the ids or filters not yet acknowledged: ``{"acknowledged": n}``."""
    return jsonify(acknowledged=_alarms().acknowledge_many(_bulk_target(), g.api_user))


@bp.post("/alarms/clear")
@api_login_required
def clear_many() -> ResponseReturnValue:
    """Clear every active alarm of the ids or filters: ``{"cleared": n}``."""
    return jsonify(cleared=_alarms().clear_many(_bulk_target(), g.api_user))
