"""PostgreSQL storage of readings: one transaction per batch.

A batch is stored as: register new rooms, devices and attributes (``INSERT ... ON CONFLICT DO
NOTHING`` then read the ids back, so concurrent portals agree), move ``devices.last_seen``, insert
one ``telemetry`` row per reading, and upsert ``latest`` where the new value is at least as recent.
Registry ids are cached in memory once their transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    column,
    create_engine,
    func,
    select,
    text,
    tuple_,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import insert

from web.messages import Reading
from web.schema import attributes, devices, latest, rooms, telemetry
from web.settings import DatabaseSettings

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to PostgreSQL before calling it unreachable.
CONNECT_TIMEOUT_S = 3


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the portal's engine. No connection is opened until first use."""
    return create_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=10,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "lab-portal"},
    )


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The current value of one attribute, as the live page shows it."""

    room: str
    device: str
    attr: str
    value: float | str
    ts: datetime

    @property
    def key(self) -> str:
        """``<room>/<device>/<attr>``."""
        return f"{self.room}/{self.device}/{self.attr}"

    def as_event(self) -> dict[str, Any]:
        """The JSON shape sent to browsers: ``ts`` in milliseconds since 1970 (UTC)."""
        return {
            "room": self.room,
            "device": self.device,
            "attr": self.attr,
            "value": self.value,
            "ts": round(self.ts.timestamp() * 1000),
        }


def latest_per_attribute(readings: Iterable[Reading]) -> dict[tuple[str, str, str], Reading]:
    """The most recent reading of each (room, device, attr); on equal ``ts`` the later one wins."""
    result: dict[tuple[str, str, str], Reading] = {}
    for reading in readings:
        key = (reading.topic.room, reading.topic.device, reading.topic.attr)
        current = result.get(key)
        if current is None or reading.ts >= current.ts:
            result[key] = reading
    return result


def _columns(value: float | str) -> tuple[float | None, str | None]:
    return (value, None) if isinstance(value, float) else (None, value)


class Store:
    """Reads and writes the lab database; :meth:`write_batch` is called from one thread only."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._room_ids: dict[str, int] = {}
        self._device_ids: dict[tuple[int, str], int] = {}
        self._attribute_ids: dict[tuple[int, str], int] = {}

    def ping(self) -> None:
        """Run ``SELECT 1``; raises if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def forget_ids(self) -> None:
        """Drop the registry id cache (after an error that may mean it is stale)."""
        self._room_ids.clear()
        self._device_ids.clear()
        self._attribute_ids.clear()

    def latest_values(self) -> list[LatestValue]:
        """Every attribute's last value, ordered by room, device and attribute name."""
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
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            LatestValue(room, device, attr, num if num is not None else text_value, ts)
            for room, device, attr, num, text_value, ts in rows
        ]

    def write_batch(self, readings: Sequence[Reading]) -> list[LatestValue]:
        """Store readings in one transaction.

        Returns:
            The values that became the latest of their attribute, to push to browsers.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: nothing of the batch is stored; retrying is safe.
        """
        if not readings:
            return []
        new_rooms: dict[str, int] = {}
        new_devices: dict[tuple[int, str], int] = {}
        new_attributes: dict[tuple[int, str], int] = {}
        with self.engine.begin() as connection:
            room_ids = self._resolve_rooms(connection, readings, new_rooms)
            device_ids = self._resolve_devices(connection, readings, room_ids, new_devices)
            attribute_ids = self._resolve_attributes(connection, readings, device_ids, new_attributes)
            self._touch_devices(connection, readings, device_ids)
            self._insert_telemetry(connection, readings, attribute_ids)
            changed = self._upsert_latest(connection, readings, attribute_ids)
        # Only now are the new ids real for every other connection.
        self._room_ids.update(new_rooms)
        self._device_ids.update(new_devices)
        self._attribute_ids.update(new_attributes)
        return changed

    # -- registry -------------------------------------------------------------------------

    def _resolve_rooms(
        self, connection: Connection, readings: Sequence[Reading], new: dict[str, int]
    ) -> dict[str, int]:
        names = {reading.topic.room for reading in readings}
        missing = sorted(names - self._room_ids.keys())
        if missing:
            connection.execute(
                insert(rooms).values([{"name": name} for name in missing]).on_conflict_do_nothing()
            )
            found = connection.execute(select(rooms.c.name, rooms.c.id).where(rooms.c.name.in_(missing)))
            new.update(dict(found.tuples().all()))
        return {name: self._room_ids.get(name) or new[name] for name in names}

    def _resolve_devices(
        self,
        connection: Connection,
        readings: Sequence[Reading],
        room_ids: dict[str, int],
        new: dict[tuple[int, str], int],
    ) -> dict[tuple[str, str], int]:
        first_seen: dict[tuple[int, str], datetime] = {}
        for reading in readings:
            key = (room_ids[reading.topic.room], reading.topic.device)
            if key not in self._device_ids:
                seen = first_seen.get(key)
                first_seen[key] = reading.received_at if seen is None else min(seen, reading.received_at)
        if first_seen:
            missing = sorted(first_seen)
            connection.execute(
                insert(devices)
                .values(
                    [
                        {"room_id": room_id, "name": name, "first_seen": first_seen[(room_id, name)]}
                        for room_id, name in missing
                    ]
                )
                .on_conflict_do_nothing(index_elements=["room_id", "name"])
            )
            found = connection.execute(
                select(devices.c.room_id, devices.c.name, devices.c.id).where(
                    tuple_(devices.c.room_id, devices.c.name).in_(missing)
                )
            )
            new.update({(room_id, name): device_id for room_id, name, device_id in found})
        result: dict[tuple[str, str], int] = {}
        for reading in readings:
            room, device = reading.topic.room, reading.topic.device
            key = (room_ids[room], device)
            result[(room, device)] = self._device_ids.get(key) or new[key]
        return result

    def _resolve_attributes(
        self,
        connection: Connection,
        readings: Sequence[Reading],
        device_ids: dict[tuple[str, str], int],
        new: dict[tuple[int, str], int],
    ) -> dict[tuple[str, str, str], int]:
        wanted = {
            (device_ids[(reading.topic.room, reading.topic.device)], reading.topic.attr)
            for reading in readings
        }
        missing = sorted(wanted - self._attribute_ids.keys())
        if missing:
            connection.execute(
                insert(attributes)
                .values([{"device_id": device_id, "name": name} for device_id, name in missing])
                .on_conflict_do_nothing(index_elements=["device_id", "name"])
            )
            found = connection.execute(
                select(attributes.c.device_id, attributes.c.name, attributes.c.id).where(
                    tuple_(attributes.c.device_id, attributes.c.name).in_(missing)
                )
            )
            new.update({(device_id, name): attribute_id for device_id, name, attribute_id in found})
        result: dict[tuple[str, str, str], int] = {}
        for reading in readings:
            topic = reading.topic
            key = (device_ids[(topic.room, topic.device)], topic.attr)
            result[(topic.room, topic.device, topic.attr)] = self._attribute_ids.get(key) or new[key]
        return result

    # -- values ---------------------------------------------------------------------------

    def _touch_devices(
        self,
        connection: Connection,
        readings: Sequence[Reading],
        device_ids: dict[tuple[str, str], int],
    ) -> None:
        last_seen: dict[int, datetime] = {}
        for reading in readings:
            device_id = device_ids[(reading.topic.room, reading.topic.device)]
            seen = last_seen.get(device_id)
            last_seen[device_id] = reading.received_at if seen is None else max(seen, reading.received_at)
        seen_rows = values(column("id", Integer), column("seen", DateTime(timezone=True)), name="seen").data(
            sorted(last_seen.items())
        )
        connection.execute(
            update(devices)
            .where(devices.c.id == seen_rows.c.id)
            .values(last_seen=func.greatest(devices.c.last_seen, seen_rows.c.seen))
        )

    def _insert_telemetry(
        self,
        connection: Connection,
        readings: Sequence[Reading],
        attribute_ids: dict[tuple[str, str, str], int],
    ) -> None:
        rows = []
        for reading in readings:
            topic = reading.topic
            value_num, value_text = _columns(reading.value)
            rows.append(
                {
                    "ts": reading.ts,
                    "attribute_id": attribute_ids[(topic.room, topic.device, topic.attr)],
                    "value_num": value_num,
                    "value_text": value_text,
                }
            )
        connection.execute(insert(telemetry), rows)

    def _upsert_latest(
        self,
        connection: Connection,
        readings: Sequence[Reading],
        attribute_ids: dict[tuple[str, str, str], int],
    ) -> list[LatestValue]:
        newest = latest_per_attribute(readings)
        by_attribute: dict[int, Reading] = {attribute_ids[key]: reading for key, reading in newest.items()}
        rows = []
        for attribute_id, reading in sorted(by_attribute.items()):
            value_num, value_text = _columns(reading.value)
            rows.append(
                {
                    "attribute_id": attribute_id,
                    "ts": reading.ts,
                    "value_num": value_num,
                    "value_text": value_text,
                }
            )
        statement = insert(latest).values(rows)
        upsert = statement.on_conflict_do_update(
            index_elements=[latest.c.attribute_id],
            set_={
                "ts": statement.excluded.ts,
                "value_num": statement.excluded.value_num,
                "value_text": statement.excluded.value_text,
            },
            # An older value arriving late (a device's own ts) is stored but does not win.
            where=latest.c.ts <= statement.excluded.ts,
        ).returning(latest.c.attribute_id)
        changed = connection.execute(upsert).scalars().all()
        return [
            LatestValue(
                reading.topic.room,
                reading.topic.device,
                reading.topic.attr,
                reading.value,
                reading.ts,
            )
            for reading in (by_attribute[attribute_id] for attribute_id in changed)
        ]
