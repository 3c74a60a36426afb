"""``GET /api/latest``: the last value of every attribute, a page at a time.

Ordered by room, device and attribute; at most ``limit`` values, and ``next``, the cursor of the
following page (``null`` on the last).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from web.api import params
from web.api.fields import Cursor, Integer, Name, Query
from web.auth import api_login_required
from web.portal import current_portal

bp = Blueprint("latest", __name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000

QUERY = Query(
    Name("room", "only this room"),
    Name("device", "only this device"),
    Integer("limit", "most values in the page", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
    Cursor("cursor", "the next of the previous page (omit for the first)"),
)


@bp.get("/latest")
@api_login_required
def get_latest() -> ResponseReturnValue:
    """Latest values, filtered by ``?room=`` and ``?device=`` (both optional), paged."""
    asked = QUERY.read(request.args)
    limit = asked["limit"]
    after = params.cursor(asked["cursor"], "cursor", 3)
    store = current_portal().store
    values = store.latest_values(asked["room"], asked["device"], after=after, limit=limit + 1)
    more = len(values) > limit
    values = values[:limit]
    following = params.make_cursor([values[-1].room, values[-1].device, values[-1].attr]) if more else None
    return jsonify(values=[value.as_event() for value in values], next=following)
