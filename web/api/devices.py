"""``GET /api/devices``: every device with its attributes' last values and last-seen times."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, select

from web.api import params
from web.auth import api_login_required
from web.schema import attributes, devices, latest, rooms

bp = Blueprint("devices", __name__)


def list_devices(engine: Engine, room: str | None = None) -> list[dict[str, Any]]:
    """Devices ordered by room and name, each with its attributes (ordered by name)."""
    query = (
        select(
            rooms.c.name,
            devices.c.name,
            devices.c.first_seen,
            devices.c.last_seen,
            attributes.c.name,
            latest.c.value_num,
            latest.c.value_text,
            latest.c.ts,
        )
        .select_from(devices)
        .join(rooms, rooms.c.id == devices.c.room_id)
        .outerjoin(attributes, attributes.c.device_id == devices.c.id)
        .outerjoin(latest, latest.c.attribute_id == attributes.c.id)
        .order_by(rooms.c.name, devices.c.name, attributes.c.name)
    )
    if room is not None:
        query = query.where(rooms.c.name == room)
    result: list[dict[str, Any]] = []
    with engine.connect() as connection:
        for room_name, device, first_seen, last_seen, attr, num, text, ts in connection.execute(query):
            if not result or (result[-1]["room"], result[-1]["device"]) != (room_name, device):
                result.append(
                    {
                        "room": room_name,
                        "device": device,
                        "first_seen": params.to_ms(first_seen),
                        "last_seen": params.to_ms(last_seen),
                        "attributes": [],
                    }
                )
            if attr is not None:
                value = num if num is not None else text
                result[-1]["attributes"].append({"attr": attr, "value": value, "ts": params.to_ms(ts)})
    return result


@bp.get("/devices")
@api_login_required
def get_devices() -> ResponseReturnValue:
    """Devices and their attributes, optionally of one room (``?room=``)."""
    room = params.name(request.args, "room")
    return jsonify(devices=list_devices(current_app.extensions["portal"].engine, room))
