"""``POST /api/devices/<room>/<device>/set/<attr>``: send a setpoint or a command to a device.

The portal publishes the value (QoS 1, not retained) on ``<root>/<room>/<device>/set/<attr>``,
the topic devices listen on (the demo device, and the stress tool's simulated devices, obey it).
The body is ``{"value": <number, true/false, or text>}``; the payload is its text (``22.5``,
``true``, ``eco``). Who sent what is logged.
"""

from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from web.api.fields import Name, Query, Value
from web.api.params import ParamError
from web.auth import api_login_required
from web.portal import current_portal

log = logging.getLogger(__name__)

bp = Blueprint("commands", __name__)

#: The longest text value a command carries.
MAX_VALUE_LENGTH = 256
#: The path: which device, and which of its attributes to set.
PATH = Query(
    Name("room", "the device's room"),
    Name("device", "the device"),
    Name("attr", "the attribute to set (the device listens on set/<attr>)"),
)
#: The body: the value to send.
BODY = Query(
    Value("value", "a number, true/false or text: the payload", required=True, max_length=MAX_VALUE_LENGTH)
)


def payload_of(body: object) -> str:
    """The payload for a request body ``{"value": ...}``; :class:`ParamError` for anything else."""
    if not isinstance(body, dict) or set(body) != {"value"}:
        raise ParamError('the body must be a JSON object {"value": <number, true/false or text>}')
    payload: str = BODY.read(body)["value"]
    return payload


@bp.post("/devices/<room>/<device>/set/<attr>")
@api_login_required
def send(room: str, device: str, attr: str) -> ResponseReturnValue:
    """Publish the command; 202 once the broker connection has it, 503 while it is down."""
    portal = current_portal()
    path = PATH.read({"room": room, "device": device, "attr": attr})
    payload = payload_of(request.get_json(silent=True))
    topic = "/".join([portal.settings.topic_root, path["room"], path["device"], "set", path["attr"]])
    if not portal.ingest.send(topic, payload.encode()):
        return jsonify(error="the portal is not connected to the broker: try again in a moment"), 503
    log.info("command user=%s topic=%s payload=%s", g.api_user, topic, payload[:80])
    return jsonify(topic=topic, payload=payload), 202
