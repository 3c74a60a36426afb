"""``GET /api/latest``: the last value of every attribute, optionally of one room or device."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, select

from web.api import params
from web.auth import api_login_required
from web.schema import attributes, devices, latest, rooms

bp = Blueprint("latest", __name__)


def latest_values(engine: Engine, room: str | None = None, device: str | None = None) -> list[dict[str, Any]]:
    """``{"room", "device", "attr", "value", "ts"}`` per attribute, ordered by room, device, attr."""
    query = (
        select(
            rooms.c.name,
            devices.c.name,
            attributes.c.name,
            latest.c.value_num,
            latest.c.value_text,
            latest.c.ts,
        )
        .select_from(latest)
        .join(attributes, attributes.c.id == latest.c.attribute_id)
        .join(devices, devices.c.id == attributes.c.device_id)
        .join(rooms, rooms.c.id == devices.c.room_id)
        .order_by(rooms.c.name, devices.c.name, attributes.c.name)
    )
    if room is not None:
        query = query.where(rooms.c.name == room)
    if device is not None:
        query = query.where(devices.c.name == device)
    with engine.connect() as connection:
        return [
            {
                "room": room_name,
                "device": device_name,
                "attr": attr,
                "value": num if num is not None else text,
                "ts": params.to_ms(ts),
            }
            for room_name, device_name, attr, num, text, ts in connection.execute(query)
        ]


@bp.get("/latest")
@api_login_required
def get_latest() -> ResponseReturnValue:
    """Latest values, filtered by ``?room=`` and ``?device=`` (both optional)."""
    room = params.name(request.args, "room")
    device = params.name(request.args, "device")
    return jsonify(values=latest_values(current_app.extensions["portal"].engine, room, device))
