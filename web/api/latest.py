"""``GET /api/latest``: the last value of every attribute, optionally of one room or device."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from web.api import params
from web.auth import api_login_required

bp = Blueprint("latest", __name__)


@bp.get("/latest")
@api_login_required
def get_latest() -> ResponseReturnValue:
    """Latest values, filtered by ``?room=`` and ``?device=`` (both optional)."""
    room = params.name(request.args, "room")
    device = params.name(request.args, "device")
    values = current_app.extensions["portal"].store.latest_values(room, device)
    return jsonify(values=[value.as_event() for value in values])
