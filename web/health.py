"""Health endpoints for launchers, Compose and load balancers (no sign-in).

``GET /healthz``
    200 ``{"status": "ok"}`` whenever the process answers.
``GET /readyz``
    200 ``{"status": "ready", "checks": {...}}`` when the broker connection is up and subscribed,
    the database answers ``SELECT 1`` and live updates are moving; otherwise 503 ``{"status":
    "unavailable", "checks": {"broker": "...", "database": "...", "live": "..."}}`` where each
    check is ``"ok"`` or says what is wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from web.db_errors import first_line
from web.portal import current_portal

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The portal can do its job: broker subscribed, database reachable, live updates moving."""
    portal = current_portal()
    checks: dict[str, Any] = {}
    checks["broker"] = "ok" if portal.ingest.ready else f"down: {portal.ingest.state}"
    try:
        portal.store.ping()
    except SQLAlchemyError as exc:
        checks["database"] = f"down: {first_line(exc)}"
    else:
        checks["database"] = "ok"
    stuck = portal.live.stuck_s()
    checks["live"] = "ok" if stuck is None else f"stuck: no live update sent for {stuck:.0f} s"
    if all(value == "ok" for value in checks.values()):
        return jsonify(status="ready", checks=checks)
    return jsonify(status="unavailable", checks=checks), 503
