"""``/api/alarms``: list alarms, one with its history; acknowledge and clear them (``POST``, CSRF
header for sessions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from web.api import params
from web.auth import api_login_required

if TYPE_CHECKING:
    from web.alarm_messages import Alarm
    from web.alarms import Alarms

bp = Blueprint("alarms", __name__)

STATES = ("active", "cleared", "all")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_ID = 2**63 - 1


def _alarms() -> Alarms:
    alarms: Alarms = current_app.extensions["portal"].alarms
    return alarms


def _answer(alarm: Alarm | None) -> ResponseReturnValue:
    if alarm is None:
        return jsonify(error="no such alarm"), 404
    return jsonify(alarm.as_json())


@bp.get("/alarms")
@api_login_required
def list_alarms() -> ResponseReturnValue:
    """Alarms newest first, filtered by ``state`` (default all), ``room``, ``device``; at most ``limit``."""
    state = params.choice(request.args, "state", STATES, "all")
    room = params.name(request.args, "room")
    device = params.name(request.args, "device")
    limit = params.integer(request.args, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    found = _alarms().store.find(state, room, device, limit)
    return jsonify(alarms=[alarm.as_json() for alarm in found])


@bp.get("/alarms/<int:alarm_id>")
@api_login_required
def one_alarm(alarm_id: int) -> ResponseReturnValue:
    """One alarm, with ``events``: its history, oldest first."""
    alarm = _alarms().store.get(alarm_id) if alarm_id <= MAX_ID else None
    if alarm is None:
        return _answer(None)
    events = [
        {**event, "at": params.to_ms(event["at"]), "ts": params.to_ms(event["ts"])}
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
