"""``POST /api/devices/<room>/<device>/set/<attr>``: send a setpoint or a command to a device.

The portal publishes the value (QoS 1, not retained) on ``<root>/<room>/<device>/set/<attr>``,
the topic devices listen on (the demo device, and the stress tool's simulated devices, obey it).
The body is ``{"value": <number, true/false, or text>}``; the payload is its text (``22.5``,
``true``, ``eco``). Who sent what is logged.
"""

from __future__ import annotations

import json
import logging
import math

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from web.api import params
from web.api.params import ParamError
from web.auth import api_login_required
from web.portal import current_portal

log = logging.getLogger(__name__)

bp = Blueprint("commands", __name__)

#: The longest text value a command carries.
MAX_VALUE_LENGTH = 256


def payload_of(body: object) -> str:
    """The payload for a request body ``{"value": ...}``; :class:`ParamError` for anything else."""
    if not isinstance(body, dict) or set(body) != {"value"}:
        raise ParamError('the body must be a JSON object {"value": <number, true/false or text>}')
    value = body["value"]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ParamError("value must be a finite number")
        return json.dumps(value)
    if isinstance(value, str):
        if not value or len(value) > MAX_VALUE_LENGTH or "\x00" in value:
            raise ParamError(f"value must be 1 to {MAX_VALUE_LENGTH} characters, without NUL")
        return value
    raise ParamError("value must be a number, true/false or text")


@bp.post("/devices/<room>/<device>/set/<attr>")
@api_login_required
def send(room: str, device: str, attr: str) -> ResponseReturnValue:
    """Publish the command; 202 once the broker connection has it, 503 while it is down."""
    portal = current_portal()
    room, device = params.path_name("room", room), params.path_name("device", device)
    attr = params.path_name("attr", attr)
    payload = payload_of(request.get_json(silent=True))
    topic = "/".join([portal.settings.topic_root, room, device, "set", attr])
    if not portal.ingest.send(topic, payload.encode()):
        return jsonify(error="the portal is not connected to the broker: try again in a moment"), 503
    log.info("command user=%s topic=%s payload=%s", g.api_user, topic, payload[:80])
    return jsonify(topic=topic, payload=payload), 202
