"""The OpenAPI 3.1 description of the API, as data, served at ``GET /api/openapi.json``.

The query parameters, and the filters of the alarms' bulk calls, are the routes' own declarations
(:mod:`web.api.fields`): their bounds, defaults and choices are the ones the routes check. The rest
(paths, answers) is written here; a test checks that every ``/api`` route and ``/metrics`` is
described with its parameters, and validates the document with openapi-spec-validator.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from web.api import alarms, commands, devices, history, latest, params
from web.api.fields import MS_SCHEMA

bp = Blueprint("openapi", __name__)

_MS = MS_SCHEMA
_MS_OR_NULL = {**_MS, "type": ["integer", "null"]}
_UNIT = {
    "type": ["string", "null"],
    "description": "unit of measure: the one the device last sent, else web/units.json's for the name",
}
_VALUE = {"type": ["number", "string"], "description": "numbers (booleans as 1/0) or strings"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadParameter"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "503": {"$ref": "#/components/responses/DatabaseDown"},
}

_REMOVAL_ERRORS = {
    "400": {"$ref": "#/components/responses/BadParameter"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": _json({"$ref": "#/components/schemas/Error"}, "session call without the X-CSRF-Token header"),
    "503": _json(
        {"$ref": "#/components/schemas/Error"},
        "the database is unavailable, or the portal is not connected to the broker; nothing was removed",
    ),
}

_NEXT = {"type": ["string", "null"], "description": "cursor of the following page; null on the last"}


def _alarm_action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "Session callers must send the X-CSRF-Token header.",
            "parameters": [alarms.ALARM_ID.parameter("path")],
            "responses": {
                "200": _json(_ref("Alarm"), "the alarm after the change"),
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "403": _json(_ref("Error"), "session call without the X-CSRF-Token header"),
                "404": _json(_ref("Error"), "no such alarm"),
                "503": {"$ref": "#/components/responses/DatabaseDown"},
            },
        }
    }


_FILTER_BODY = {
    **alarms.FILTERS.body_schema(ids=alarms.IDS.body_schema()),
    "minProperties": 1,
    "description": 'ids, or filters (one at least; {"state": "all"} is every alarm), never both',
}


def _bulk_action(summary: str, counted: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": (
                "Session callers must send the X-CSRF-Token header. Every change is in the alarms' history."
            ),
            "requestBody": {"required": True, "content": {"application/json": {"schema": _FILTER_BODY}}},
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": [counted],
                        "properties": {counted: {"type": "integer", "minimum": 0}},
                    },
                    f"how many alarms were {counted}",
                ),
                "400": {"$ref": "#/components/responses/BadParameter"},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "403": _json(_ref("Error"), "session call without the X-CSRF-Token header"),
                "503": {"$ref": "#/components/responses/DatabaseDown"},
            },
        }
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "IoT lab portal API",
        "version": "1.0.0",
        "description": (
            "Devices, latest values, history and alarms of the lab. Authenticate with "
            "'Authorization: Bearer <token>' (create one with `python -m web.users token create NAME`) "
            "or a signed-in session (state-changing calls then need the X-CSRF-Token header). "
            "Timestamps are integers, milliseconds since 1970 UTC."
        ),
    },
    "security": [{"bearerAuth": []}, {"session": []}],
    "paths": {
        "/api/devices": {
            "get": {
                "summary": "A page of devices with their attributes' last values",
                "description": (
                    "Devices ordered by room and name, at most limit of them, each with at most "
                    f"{devices.MAX_ATTRIBUTES} attributes (attributes_truncated says when it has more). "
                    "Pass next as cursor for the following page."
                ),
                "parameters": devices.LIST_QUERY.parameters(),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["devices", "next", "total"],
                            "properties": {
                                "devices": {"type": "array", "items": _ref("Device")},
                                "next": _NEXT,
                                "total": {"type": "integer", "description": "devices matching the filters"},
                            },
                        },
                        "one page of devices",
                    ),
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Remove every device of a room and/or whose name starts with a prefix",
                "description": (
                    "At least room or prefix. Each device goes with its telemetry, latest values and "
                    "alarms (the broker's retained alarms too); the rules forget it. A removed device "
                    "that publishes again comes back as a new one. Session callers must send the "
                    "X-CSRF-Token header."
                ),
                "parameters": devices.REMOVE_QUERY.parameters(),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["deleted"],
                            "properties": {"deleted": {"type": "integer", "minimum": 0}},
                        },
                        "how many devices were removed",
                    ),
                    **_REMOVAL_ERRORS,
                },
            },
        },
        "/api/devices/{room}/{device}": {
            "delete": {
                "summary": "Remove one device with its telemetry, latest values and alarms",
                "description": (
                    "The rules forget it and the broker's retained alarms of it are deleted. If it "
                    "publishes again it comes back as a new device. Session callers must send the "
                    "X-CSRF-Token header."
                ),
                "parameters": devices.PATH.parameters("path"),
                "responses": {
                    "204": {"description": "removed"},
                    "404": _json(_ref("Error"), "no such device"),
                    **_REMOVAL_ERRORS,
                },
            }
        },
        "/api/latest": {
            "get": {
                "summary": "A page of the latest value of every attribute",
                "description": (
                    "Ordered by room, device and attribute. Pass next as cursor for the following page."
                ),
                "parameters": latest.QUERY.parameters(),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["values", "next"],
                            "properties": {
                                "values": {"type": "array", "items": _ref("LatestValue")},
                                "next": _NEXT,
                            },
                        },
                        "one page of values",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/api/history": {
            "get": {
                "summary": "History of one attribute, raw or downsampled",
                "description": (
                    "Without bucket: raw points in time order, at most limit. With bucket: one point "
                    "per non-empty bucket (aligned to 1970-01-01, ts = bucket start), aggregated by agg. "
                    "Both ends of the range are inclusive. Unknown names give no points."
                ),
                "parameters": history.QUERY.parameters(),
                "responses": {
                    "200": {
                        "description": "the points (as CSV with format=csv)",
                        "headers": {
                            "X-History-Truncated": {
                                "description": "with format=csv: true when limit cut the points",
                                "schema": {"type": "string", "enum": ["true", "false"]},
                            }
                        },
                        "content": {
                            "application/json": {"schema": _ref("History")},
                            "text/csv": {
                                "schema": {
                                    "type": "string",
                                    "description": (
                                        "a header line ts,time,value then one line per point: ms since "
                                        "1970, ISO 8601 UTC, the value (text that a spreadsheet would run "
                                        "as a formula begins with ')"
                                    ),
                                }
                            },
                        },
                    },
                    **_ERRORS,
                },
            }
        },
        "/api/alarms": {
            "get": {
                "summary": "Alarms, newest first, a page at a time",
                "description": (
                    "Filtered by state, severity, type, room, device and acked; at most limit of them, "
                    "older than the alarm before (pass the answer's next for the following page)."
                ),
                "parameters": [*alarms.FILTERS.parameters(), *alarms.PAGE.parameters()],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["alarms", "next", "total"],
                            "properties": {
                                "alarms": {"type": "array", "items": _ref("Alarm")},
                                "next": {
                                    "type": ["integer", "null"],
                                    "description": "before for the following page; null on the last",
                                },
                                "total": {"type": "integer", "description": "alarms matching the filters"},
                            },
                        },
                        "alarms",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/api/alarms/summary": {
            "get": {
                "summary": "How many alarms are active, and how many of those are not acknowledged",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["active", "unacked"],
                            "properties": {"active": {"type": "integer"}, "unacked": {"type": "integer"}},
                        },
                        "the counts",
                    ),
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "503": {"$ref": "#/components/responses/DatabaseDown"},
                },
            }
        },
        "/api/alarms/ack": _bulk_action("Acknowledge every alarm of the ids or filters", "acknowledged"),
        "/api/alarms/clear": _bulk_action("Clear every active alarm of the ids or filters", "cleared"),
        "/api/devices/{room}/{device}/set/{attr}": {
            "post": {
                "summary": "Send a setpoint or command to a device",
                "description": (
                    "Publishes the value on <root>/<room>/<device>/set/<attr> (QoS 1, not retained), "
                    "the topic devices obey. Session callers must send the X-CSRF-Token header."
                ),
                "parameters": commands.PATH.parameters("path"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": commands.BODY.body_schema()}},
                },
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["topic", "payload"],
                            "properties": {"topic": {"type": "string"}, "payload": {"type": "string"}},
                        },
                        "published to the broker",
                    ),
                    "400": {"$ref": "#/components/responses/BadParameter"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": _json(_ref("Error"), "session call without the X-CSRF-Token header"),
                    "503": _json(_ref("Error"), "the portal is not connected to the broker; try again"),
                },
            }
        },
        "/api/alarms/{id}": {
            "get": {
                "summary": "One alarm with its history",
                "parameters": [alarms.ALARM_ID.parameter("path")],
                "responses": {
                    "200": _json(_ref("AlarmWithHistory"), "the alarm and its events, oldest first"),
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": _json(_ref("Error"), "no such alarm"),
                    "503": {"$ref": "#/components/responses/DatabaseDown"},
                },
            }
        },
        "/api/alarms/{id}/ack": _alarm_action("Acknowledge an alarm"),
        "/api/alarms/{id}/clear": _alarm_action("Clear an alarm"),
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this portal process",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "503": {"$ref": "#/components/responses/DatabaseDown"},
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API token"},
            "session": {"type": "apiKey", "in": "cookie", "name": "session", "description": "signed in"},
        },
        "responses": {
            "BadParameter": _json(_ref("Error"), "a parameter is missing or wrong (the message names it)"),
            "Unauthorized": _json(_ref("Error"), "no valid session or bearer token"),
            "DatabaseDown": _json(_ref("Error"), "the database is unreachable; try again"),
            "BadRequest": _json(_ref("Error"), "a malformed request (answered by the server itself)"),
            "UriTooLong": _json(
                _ref("Error"),
                f"the request line is longer than {params.MAX_REQUEST_LINE} bytes "
                "(answered by the server itself)",
            ),
            "HeadersTooLarge": _json(
                _ref("Error"), "a header line is too long, or there are too many headers"
            ),
            "InternalError": _json(_ref("Error"), "a fault in the portal (logged with its traceback)"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "AttributeValue": {
                "type": "object",
                "required": ["attr", "value", "ts", "unit"],
                "properties": {
                    "attr": {"type": "string"},
                    "value": {"type": ["number", "string", "null"]},
                    "ts": _MS_OR_NULL,
                    "unit": _UNIT,
                },
            },
            "Device": {
                "type": "object",
                "required": [
                    "room",
                    "device",
                    "first_seen",
                    "last_seen",
                    "presence",
                    "attributes",
                    "attributes_truncated",
                ],
                "properties": {
                    "room": {"type": "string"},
                    "device": {"type": "string"},
                    "first_seen": _MS_OR_NULL,
                    "last_seen": _MS_OR_NULL,
                    "presence": {
                        "type": ["object", "null"],
                        "description": (
                            "what the device last said of its connection on <root>/<room>/<device>/$state: "
                            "online, offline (it left cleanly) or lost (its Last Will); null if it never said"
                        ),
                        "required": ["state", "at"],
                        "properties": {
                            "state": {"type": "string", "enum": ["online", "offline", "lost"]},
                            "at": _MS,
                        },
                    },
                    "attributes": {"type": "array", "items": _ref("AttributeValue")},
                    "attributes_truncated": {"type": "boolean"},
                },
            },
            "LatestValue": {
                "type": "object",
                "required": ["room", "device", "attr", "value", "ts"],
                "properties": {
                    "room": {"type": "string"},
                    "device": {"type": "string"},
                    "attr": {"type": "string"},
                    "value": _VALUE,
                    "ts": _MS,
                },
            },
            "History": {
                "type": "object",
                "required": [
                    "room",
                    "device",
                    "attr",
                    "from",
                    "to",
                    "bucket",
                    "agg",
                    "unit",
                    "points",
                    "truncated",
                ],
                "properties": {
                    "room": {"type": "string"},
                    "device": {"type": "string"},
                    "attr": {"type": "string"},
                    "from": _MS,
                    "to": _MS,
                    "bucket": {"type": ["integer", "null"]},
                    "agg": {"type": ["string", "null"], "enum": [*history.AGGREGATES, None]},
                    "unit": _UNIT,
                    "points": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ts", "value"],
                            "properties": {"ts": {"type": "integer"}, "value": _VALUE},
                        },
                    },
                    "truncated": {"type": "boolean"},
                },
            },
            "Alarm": {
                "type": "object",
                "required": [
                    "id",
                    "room",
                    "device",
                    "type",
                    "severity",
                    "state",
                    "value",
                    "ts",
                    "raised_at",
                    "received_at",
                    "acked_at",
                    "acked_by",
                    "cleared_at",
                ],
                "properties": {
                    "id": {"type": "integer"},
                    "room": {"type": ["string", "null"]},
                    "device": {"type": ["string", "null"]},
                    "type": {"type": "string"},
                    "severity": {"type": ["string", "null"]},
                    "state": {"type": "string", "enum": ["active", "cleared"]},
                    "value": {"type": ["number", "string", "null"]},
                    "ts": {**_MS_OR_NULL, "description": "the latest message about it, by the rule's clock"},
                    "raised_at": {**_MS, "description": "when it was raised, by the rule's clock"},
                    "received_at": _MS,
                    "acked_at": _MS_OR_NULL,
                    "acked_by": {"type": ["string", "null"]},
                    "cleared_at": _MS_OR_NULL,
                    "cleared_by": {
                        "type": ["string", "null"],
                        "description": "the user who cleared it; null when the rule cleared it",
                    },
                },
            },
            "AlarmWithHistory": {
                "allOf": [
                    _ref("Alarm"),
                    {
                        "type": "object",
                        "required": ["events"],
                        "properties": {"events": {"type": "array", "items": _ref("AlarmEvent")}},
                    },
                ],
            },
            "AlarmEvent": {
                "type": "object",
                "required": ["at", "kind", "actor", "severity", "value", "ts"],
                "properties": {
                    "at": _MS,
                    "kind": {"type": "string", "enum": ["raised", "updated", "acked", "cleared"]},
                    "actor": {
                        "type": ["string", "null"],
                        "description": "the user who acknowledged or cleared it; null for the rule",
                    },
                    "severity": {"type": ["string", "null"]},
                    "value": {"type": ["number", "string", "null"]},
                    "ts": _MS_OR_NULL,
                },
            },
        },
    },
}


#: Errors any request can meet, before or beside what its operation does.
_ANY_REQUEST = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "414": {"$ref": "#/components/responses/UriTooLong"},
    "431": {"$ref": "#/components/responses/HeadersTooLarge"},
    "500": {"$ref": "#/components/responses/InternalError"},
}


def _add_common_errors(document: dict[str, Any]) -> None:
    for item in document["paths"].values():
        for operation in item.values():
            for status, response in _ANY_REQUEST.items():
                operation["responses"].setdefault(status, response)


_add_common_errors(DOCUMENT)


@bp.get("/openapi.json")
def document() -> ResponseReturnValue:
    """The OpenAPI document (no sign-in needed)."""
    return jsonify(DOCUMENT)
