"""ThingsBoard's MQTT device API: its topics, and server-side RPC read as device commands.

A device publishes telemetry to ``v1/devices/me/telemetry``; RPC arrives on
``v1/devices/me/rpc/request/<id>`` and is answered on ``v1/devices/me/rpc/response/<id>``. A
gateway announces its devices on ``v1/gateway/connect`` and ``disconnect``, publishes their
telemetry to ``v1/gateway/telemetry`` and gets their RPC on ``v1/gateway/rpc``. The RPC methods
devices obey: ``set<Attribute>`` with the value as params, and ``set`` with an object of
attribute: value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from stress.messages import Command

TELEMETRY = "v1/devices/me/telemetry"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
GATEWAY_CONNECT = "v1/gateway/connect"
GATEWAY_DISCONNECT = "v1/gateway/disconnect"
GATEWAY_TELEMETRY = "v1/gateway/telemetry"
GATEWAY_RPC = "v1/gateway/rpc"
_SETTER = re.compile(r"set([A-Z_a-z][A-Za-z0-9_]*)")


def text_of(value: object) -> str:
    """An RPC parameter as the text a behaviour's command takes."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def parse_rpc(request: object) -> tuple[tuple[str, str], ...] | str:
    """The settings an RPC request asks for, or why it cannot be obeyed (a sentence)."""
    if not isinstance(request, Mapping) or not isinstance(request.get("method"), str):
        return "an RPC request is a JSON object with a method"
    method, params = request["method"], request.get("params")
    if method == "set":
        if not isinstance(params, Mapping) or not params:
            return 'method "set" takes an object of attribute: value'
        return tuple((str(attr), text_of(value)) for attr, value in params.items())
    match = _SETTER.fullmatch(method)
    if match is None:
        return f"unknown method {method[:60]!r}: use set<Attribute> or set with {{attribute: value}}"
    name = match.group(1)
    return ((name[0].lower() + name[1:], text_of(params)),)


def rpc_command(request_id: str, request: object, reply_topic: str, device: str = "") -> Command:
    """The command an RPC request is; its answer goes to ``reply_topic``."""
    parsed = parse_rpc(request)
    settings = parsed if isinstance(parsed, tuple) else ()
    error = parsed if isinstance(parsed, str) else ""
    return Command(settings, reply_topic, {"id": request_id, "device": device, "error": error})
