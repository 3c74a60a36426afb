"""The portal's JSON API under ``/api`` (and ``/metrics``), described by ``/api/openapi.json``.

Every route but the OpenAPI document needs a session or a bearer token (:mod:`web.auth`).
Errors are JSON ``{"error": "<one line>"}``: 400 for a bad parameter (naming it), 401 without
credentials, 403 without the CSRF header on a session's state-changing call, 404 for an unknown
route or object, 503 while the database or the broker is unreachable.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from web.api import alarms, commands, devices, history, latest, metrics
from web.api import openapi as openapi_document
from web.api.params import ParamError, Unavailable
from web.db_errors import first_line

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")
for _child in (devices.bp, commands.bp, latest.bp, history.bp, alarms.bp, openapi_document.bp):
    bp.register_blueprint(_child)


def error(status: int, message: str) -> Response:
    """A JSON error response."""
    response = jsonify(error=message)
    response.status_code = status
    return response


@bp.errorhandler(ParamError)
@metrics.bp.errorhandler(ParamError)
def _bad_parameter(exc: ParamError) -> Response:
    return error(400, str(exc))


@bp.errorhandler(Unavailable)
def _unavailable(exc: Unavailable) -> Response:
    return error(503, str(exc))


@bp.errorhandler(SQLAlchemyError)
@metrics.bp.errorhandler(SQLAlchemyError)
def _database_down(exc: SQLAlchemyError) -> Response:
    log.error("%s %s: database unavailable: %s", request.method, request.path, first_line(exc))
    return error(503, "database unavailable; try again shortly")


def _http_error(exc: HTTPException) -> HTTPException | Response:
    """JSON instead of HTML for errors under /api (unknown routes, wrong methods, bad bodies)."""
    if not request.path.startswith("/api/") and request.path != "/api":
        return exc
    if exc.response is not None:
        return exc
    response = error(exc.code or 500, exc.name if exc.code == 404 else (exc.description or exc.name))
    for header, value in exc.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value
    return response


def init_app(app: Flask) -> None:
    """Register the API routes, ``/metrics`` and the JSON error handlers."""
    app.register_blueprint(bp)
    app.register_blueprint(metrics.bp)
    app.register_error_handler(HTTPException, _http_error)
