"""``GET /metrics``: the portal's Prometheus metrics (session or bearer token)."""

from __future__ import annotations

from flask import Blueprint, Response

from web.auth import api_login_required
from web.portal import current_portal

bp = Blueprint("metrics", __name__)

#: The Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@bp.get("/metrics")
@api_login_required
def metrics() -> Response:
    """Every metric of this portal process, in Prometheus text format."""
    body = current_portal().metrics.render()
    return Response(body, content_type=CONTENT_TYPE)
