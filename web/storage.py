"""PostgreSQL storage of readings: one transaction per batch.

A batch is stored as: register new rooms, devices and attributes (``INSERT ... ON CONFLICT DO
NOTHING`` then read the ids back, so concurrent portals agree), move ``devices.last_seen`` (one
``UPDATE ... FROM unnest(...)``), copy one ``telemetry`` row per reading (``COPY ... FROM STDIN``
in binary format, the fastest way into PostgreSQL), and upsert ``latest`` where the new value is at
least as recent (one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT``). Once the ids of the
registry are known, a batch of any size costs three statements and a commit.

Registry ids are cached in memory once their transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from web.cache import DeviceSeen, LatestValue
from web.messages import Reading
from web.presence import PRESENCE_ATTR
from web.schema import attributes, devices, latest, rooms
from web.settings import DatabaseSettings
from wire.timestamps import epoch_ms
from wire.topics import Topic

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
class Committed:
    """What a stored batch changed.

    Attributes:
        latest: the values that became the latest of their attribute.
        seen: the new last-seen time of every device in the batch.
    """

    latest: list[LatestValue]
    seen: list[DeviceSeen]


_TOUCH_DEVICES = """
UPDATE devices AS d SET last_seen = greatest(d.last_seen, s.seen)
FROM unnest(%s::integer[], %s::timestamptz[]) AS s(id, seen)
WHERE d.id = s.id
"""
# Presence (web/presence.py): the newest by time wins; it never moves last_seen.
_SET_PRESENCE = """
UPDATE devices AS d SET presence = s.state, presence_at = s.at
FROM unnest(%s::integer[], %s::text[], %s::timestamptz[]) AS s(id, state, at)
WHERE d.id = s.id AND (d.presence_at IS NULL OR d.presence_at <= s.at)
RETURNING d.id
"""
_SET_UNITS = """
UPDATE attributes AS a SET unit = s.unit, unit_at = s.at
FROM unnest(%s::integer[], %s::text[], %s::timestamptz[]) AS s(id, unit, at)
WHERE a.id = s.id AND (a.unit_at IS NULL OR a.unit_at <= s.at)
"""
# Each batch is added to the per-minute rollups in its own transaction (db/migrations 0007).
_ADD_ROLLUPS = """
INSERT INTO telemetry_1m AS r (attribute_id, bucket, n_all, n, total, lo, hi, last_ts, last_num, last_text)
SELECT * FROM unnest(%s::integer[], %s::timestamptz[], %s::bigint[], %s::bigint[], %s::float8[],
                     %s::float8[], %s::float8[], %s::timestamptz[], %s::float8[], %s::text[])
ON CONFLICT (attribute_id, bucket) DO UPDATE SET
    n_all = r.n_all + excluded.n_all,
    n = r.n + excluded.n,
    total = CASE WHEN r.total IS NULL THEN excluded.total
                 WHEN excluded.total IS NULL THEN r.total
                 ELSE r.total + excluded.total END,
    lo = least(r.lo, excluded.lo),
    hi = greatest(r.hi, excluded.hi),
    last_ts = greatest(r.last_ts, excluded.last_ts),
    last_num = CASE WHEN excluded.last_ts >= r.last_ts THEN excluded.last_num ELSE r.last_num END,
    last_text = CASE WHEN excluded.last_ts >= r.last_ts THEN excluded.last_text ELSE r.last_text END
"""
_COPY_TELEMETRY = "COPY telemetry (ts, attribute_id, value_num, value_text) FROM STDIN (FORMAT BINARY)"
_TELEMETRY_TYPES = ("timestamptz", "int4", "float8", "text")
# An older value arriving late (a device's own ts) is stored in telemetry but does not win here.
_UPSERT_LATEST = """
INSERT INTO latest AS l (attribute_id, ts, value_num, value_text)
SELECT * FROM unnest(%s::integer[], %s::timestamptz[], %s::double precision[], %s::text[])
ON CONFLICT (attribute_id) DO UPDATE
SET ts = excluded.ts, value_num = excluded.value_num, value_text = excluded.value_text
WHERE l.ts <= excluded.ts
RETURNING attribute_id
"""


def latest_per_attribute(readings: Iterable[Reading]) -> dict[tuple[str, str, str], Reading]:
    """The most recent reading of each (room, device, attr); on equal ``ts`` the later one wins."""
    return {
        (topic.room, topic.device, topic.attr): item.newest for topic, item in _summarize(readings).items()
    }


def _array_literal(elements: Iterable[str]) -> str:
    """A PostgreSQL array literal of elements already in literal form.

    Array parameters go as one text literal each: psycopg's array adaptation costs about five times
    as much Python per element, and a batch touches every device and attribute it holds.
    """
    return "{" + ",".join(elements) + "}"


def _timestamps_literal(items: Iterable[datetime]) -> str:
    return _array_literal([item.isoformat() for item in items])


def _quoted(text: str) -> str:
    """``text`` as a double-quoted element of an array literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Store:
    """Reads and writes the lab database; :meth:`write_batch` is called from one thread only."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._room_ids: dict[str, int] = {}
        self._device_ids: dict[tuple[int, str], int] = {}
        self._attribute_ids: dict[tuple[int, str], int] = {}
        self._stale_ids = False

    def ping(self) -> None:
        """Run ``SELECT 1``; raises if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def forget_ids(self) -> None:
        """Drop the registry id cache (after an error that may mean it is stale)."""
        self._room_ids.clear()
        self._device_ids.clear()
        self._attribute_ids.clear()

    def forget_ids_later(self) -> None:
        """Drop the registry id cache before the next batch (any thread: devices were removed)."""
        self._stale_ids = True

    def latest_values(
        self,
        room: str | None = None,
        device: str | None = None,
        *,
        after: tuple[str, ...] | None = None,
        limit: int | None = None,
    ) -> list[LatestValue]:
        """Every attribute's last value (of one room or device), ordered by room, device and attribute.

        Args:
            after: only what comes after this (room, device, attr), for the next page.
            limit: at most this many.
        """
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
        if after is not None:
            query = query.where(tuple_(rooms.c.name, devices.c.name, attributes.c.name) > tuple_(*after))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            LatestValue(room, device, attr, num if num is not None else text_value, ts)
            for room, device, attr, num, text_value, ts in rows
        ]

    def devices_seen(self) -> list[DeviceSeen]:
        """Every device that sent something, with its last-seen time, ordered by room and device."""
        query = (
            select(rooms.c.name, devices.c.name, devices.c.last_seen)
            .select_from(devices)
            .join(rooms, rooms.c.id == devices.c.room_id)
            .where(devices.c.last_seen.is_not(None))
            .order_by(rooms.c.name, devices.c.name)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [DeviceSeen(room, device, epoch_ms(seen)) for room, device, seen in rows]

    def presences(self) -> list[LatestValue]:
        """Every device's presence, as the value of its attribute ``$state`` (see web/presence.py)."""
        query = (
            select(rooms.c.name, devices.c.name, devices.c.presence, devices.c.presence_at)
            .select_from(devices)
            .join(rooms, rooms.c.id == devices.c.room_id)
            .where(devices.c.presence.is_not(None))
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [LatestValue(room, device, PRESENCE_ATTR, state, at) for room, device, state, at in rows]

    def load_latest(self) -> tuple[list[LatestValue], list[DeviceSeen]]:
        """What the last-value cache starts from: :meth:`latest_values` (and every device's
        presence, as attribute ``$state``) and :meth:`devices_seen`."""
        return self.latest_values() + self.presences(), self.devices_seen()

    def write_batch(self, readings: Sequence[Reading]) -> Committed:
        """Store readings in one transaction.

        Returns:
            What changed: the values that became latest (to push to browsers) and the devices'
            new last-seen times.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: nothing of the batch is stored; retrying is safe.
        """
        if not readings:
            return Committed([], [])
        if self._stale_ids:
            self._stale_ids = False
            self.forget_ids()
        telemetry = [reading for reading in readings if reading.topic.attr != PRESENCE_ATTR]
        topics = _summarize(telemetry)
        statuses = _summarize(reading for reading in readings if reading.topic.attr == PRESENCE_ATTR)
        new_rooms: dict[str, int] = {}
        new_devices: dict[tuple[int, str], int] = {}
        new_attributes: dict[tuple[int, str], int] = {}
        with self.engine.begin() as connection:
            every = {**topics, **statuses}
            room_ids = self._resolve_rooms(connection, every, new_rooms)
            device_ids = self._resolve_devices(connection, every, room_ids, new_devices)
            attribute_ids = self._resolve_attributes(connection, topics, device_ids, new_attributes)
            # The hot path talks to psycopg directly, in the same transaction: COPY has no
            # SQLAlchemy equivalent, and array parameters spare compiling a statement per batch.
            raw = cast(psycopg.Connection[Any], connection.connection.driver_connection)
            seen: list[DeviceSeen] = []
            changed: list[LatestValue] = []
            try:
                with raw.cursor() as cursor:
                    if topics:
                        seen = self._touch_devices(cursor, topics, device_ids)
                        self._copy_telemetry(cursor, telemetry, attribute_ids)
                        self._add_rollups(cursor, telemetry, attribute_ids)
                        changed = self._upsert_latest(cursor, topics, attribute_ids)
                        self._set_units(cursor, telemetry, attribute_ids)
                    if statuses:
                        changed += self._set_presence(cursor, statuses, device_ids)
            except psycopg.Error as exc:
                raise _wrapped(exc) from exc
        # Only now are the new ids real for every other connection.
        self._room_ids.update(new_rooms)
        self._device_ids.update(new_devices)
        self._attribute_ids.update(new_attributes)
        return Committed(changed, seen)

    # -- registry -------------------------------------------------------------------------

    def _resolve_rooms(
        self, connection: Connection, topics: dict[Topic, _TopicSummary], new: dict[str, int]
    ) -> dict[str, int]:
        names = {topic.room for topic in topics}
        missing = sorted(names - self._room_ids.keys())
        if missing:
            connection.execute(
                insert(rooms).values([{"name": name} for name in missing]).on_conflict_do_nothing()
            )
            found = connection.execute(select(rooms.c.name, rooms.c.id).where(rooms.c.name.in_(missing)))
            new.update(dict(found.all()))
        return {name: self._room_ids.get(name) or new[name] for name in names}

    def _resolve_devices(
        self,
        connection: Connection,
        topics: dict[Topic, _TopicSummary],
        room_ids: dict[str, int],
        new: dict[tuple[int, str], int],
    ) -> dict[tuple[str, str], int]:
        first_seen: dict[tuple[int, str], datetime] = {}
        for topic, summary in topics.items():
            key = (room_ids[topic.room], topic.device)
            if key not in self._device_ids:
                seen = first_seen.get(key)
                first_seen[key] = summary.first_seen if seen is None else min(seen, summary.first_seen)
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
        for topic in topics:
            key = (room_ids[topic.room], topic.device)
            result[(topic.room, topic.device)] = self._device_ids.get(key) or new[key]
        return result

    def _resolve_attributes(
        self,
        connection: Connection,
        topics: dict[Topic, _TopicSummary],
        device_ids: dict[tuple[str, str], int],
        new: dict[tuple[int, str], int],
    ) -> dict[Topic, int]:
        keys = {topic: (device_ids[(topic.room, topic.device)], topic.attr) for topic in topics}
        missing = sorted(set(keys.values()) - self._attribute_ids.keys())
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
        return {topic: self._attribute_ids.get(key) or new[key] for topic, key in keys.items()}

    # -- values (psycopg cursor, inside the batch's transaction) -----------------------------

    @staticmethod
    def _touch_devices(
        cursor: psycopg.Cursor[Any],
        topics: dict[Topic, _TopicSummary],
        device_ids: dict[tuple[str, str], int],
    ) -> list[DeviceSeen]:
        last_seen: dict[tuple[str, str], datetime] = {}
        for topic, summary in topics.items():
            key = (topic.room, topic.device)
            seen = last_seen.get(key)
            if seen is None or summary.last_seen > seen:
                last_seen[key] = summary.last_seen
        # Sorted by id: concurrent writers (replicas) then lock rows in the same order.
        rows = sorted((device_ids[key], seen) for key, seen in last_seen.items())
        cursor.execute(
            _TOUCH_DEVICES,
            (_array_literal(str(row[0]) for row in rows), _timestamps_literal(row[1] for row in rows)),
        )
        return [DeviceSeen(room, device, epoch_ms(seen)) for (room, device), seen in last_seen.items()]

    @staticmethod
    def _set_presence(
        cursor: psycopg.Cursor[Any],
        statuses: dict[Topic, _TopicSummary],
        device_ids: dict[tuple[str, str], int],
    ) -> list[LatestValue]:
        by_device = {
            device_ids[(topic.room, topic.device)]: summary.newest for topic, summary in statuses.items()
        }
        ordered = sorted(by_device.items())
        cursor.execute(
            _SET_PRESENCE,
            (
                _array_literal(str(device_id) for device_id, _reading in ordered),
                _array_literal(_quoted(str(reading.value)) for _id, reading in ordered),
                _timestamps_literal(reading.ts for _id, reading in ordered),
            ),
        )
        return [
            LatestValue(reading.topic.room, reading.topic.device, PRESENCE_ATTR, reading.value, reading.ts)
            for reading in (by_device[row[0]] for row in cursor.fetchall())
        ]

    @staticmethod
    def _set_units(
        cursor: psycopg.Cursor[Any], readings: Sequence[Reading], attribute_ids: dict[Topic, int]
    ) -> None:
        """An attribute's unit is the one named by its newest value that named one (by ``ts``)."""
        newest: dict[int, Reading] = {}
        for reading in readings:
            if reading.unit is not None:
                attribute_id = attribute_ids[reading.topic]
                known = newest.get(attribute_id)
                if known is None or reading.ts >= known.ts:
                    newest[attribute_id] = reading
        if newest:
            ordered = sorted(newest.items())
            cursor.execute(
                _SET_UNITS,
                (
                    _array_literal(str(attribute_id) for attribute_id, _reading in ordered),
                    _array_literal(_quoted(str(reading.unit)) for _id, reading in ordered),
                    _timestamps_literal(reading.ts for _id, reading in ordered),
                ),
            )

    @staticmethod
    def _add_rollups(
        cursor: psycopg.Cursor[Any], readings: Sequence[Reading], attribute_ids: dict[Topic, int]
    ) -> None:
        """Add the batch to each attribute's per-minute rollup (count, sum, least, greatest, newest)."""
        minutes: dict[tuple[int, datetime], _Minute] = {}
        for reading in readings:
            key = (attribute_ids[reading.topic], reading.ts.replace(second=0, microsecond=0))
            minute = minutes.get(key)
            if minute is None:
                minutes[key] = _Minute(reading)
            else:
                minute.add(reading)
        rows = sorted(minutes.items())  # one order for every writer: no deadlock between replicas
        cursor.execute(
            _ADD_ROLLUPS,
            (
                _array_literal(str(attribute_id) for (attribute_id, _bucket), _m in rows),
                _timestamps_literal(bucket for (_id, bucket), _m in rows),
                _array_literal(str(m.n_all) for _key, m in rows),
                _array_literal(str(m.n) for _key, m in rows),
                _array_literal(_number(m.total if m.n else None) for _key, m in rows),
                _array_literal(_number(m.lo) for _key, m in rows),
                _array_literal(_number(m.hi) for _key, m in rows),
                _timestamps_literal(m.last.ts for _key, m in rows),
                _array_literal(
                    _number(m.last.value if isinstance(m.last.value, float) else None) for _key, m in rows
                ),
                _array_literal(
                    "NULL" if isinstance(m.last.value, float) else _quoted(m.last.value) for _key, m in rows
                ),
            ),
        )

    @staticmethod
    def _copy_telemetry(
        cursor: psycopg.Cursor[Any],
        readings: Sequence[Reading],
        attribute_ids: dict[Topic, int],
    ) -> None:
        with cursor.copy(_COPY_TELEMETRY) as copy:
            copy.set_types(list(_TELEMETRY_TYPES))
            write_row = copy.write_row
            for reading in readings:
                value = reading.value
                if isinstance(value, float):
                    write_row((reading.ts, attribute_ids[reading.topic], value, None))
                else:
                    write_row((reading.ts, attribute_ids[reading.topic], None, value))

    @staticmethod
    def _upsert_latest(
        cursor: psycopg.Cursor[Any],
        topics: dict[Topic, _TopicSummary],
        attribute_ids: dict[Topic, int],
    ) -> list[LatestValue]:
        by_attribute = {attribute_ids[topic]: summary.newest for topic, summary in topics.items()}
        ordered = sorted(by_attribute.items())
        cursor.execute(
            _UPSERT_LATEST,
            (
                _array_literal(str(attribute_id) for attribute_id, _reading in ordered),
                _timestamps_literal(reading.ts for _id, reading in ordered),
                _array_literal(
                    repr(reading.value) if isinstance(reading.value, float) else "NULL"
                    for _id, reading in ordered
                ),
                _array_literal(
                    "NULL" if isinstance(reading.value, float) else _quoted(reading.value)
                    for _id, reading in ordered
                ),
            ),
        )
        changed = [row[0] for row in cursor.fetchall()]
        return [
            LatestValue(
                reading.topic.room, reading.topic.device, reading.topic.attr, reading.value, reading.ts
            )
            for reading in (by_attribute[attribute_id] for attribute_id in changed)
        ]


def _number(value: float | None) -> str:
    return "NULL" if value is None else repr(value)


class _Minute:
    """One attribute's values of one minute in a batch, summed up as ``telemetry_1m`` keeps them."""

    __slots__ = ("hi", "last", "lo", "n", "n_all", "total")

    def __init__(self, reading: Reading) -> None:
        self.n_all = 0
        self.n = 0
        self.total = 0.0
        self.lo: float | None = None
        self.hi: float | None = None
        self.last = reading
        self.add(reading)

    def add(self, reading: Reading) -> None:
        self.n_all += 1
        value = reading.value
        if isinstance(value, float):
            self.n += 1
            self.total += value
            self.lo = value if self.lo is None or value < self.lo else self.lo
            self.hi = value if self.hi is None or value > self.hi else self.hi
        if reading.ts >= self.last.ts:  # on equal ts the later message wins, as in latest
            self.last = reading


class _TopicSummary:
    """One topic's part of a batch: its newest reading and when it was first and last received."""

    __slots__ = ("first_seen", "last_seen", "newest")

    def __init__(self, reading: Reading) -> None:
        self.newest = reading
        self.first_seen = self.last_seen = reading.received_at


def _summarize(readings: Iterable[Reading]) -> dict[Topic, _TopicSummary]:
    """Everything a batch needs per topic, in one pass (a batch holds thousands of readings)."""
    topics: dict[Topic, _TopicSummary] = {}
    for reading in readings:
        summary = topics.get(reading.topic)
        if summary is None:
            topics[reading.topic] = _TopicSummary(reading)
            continue
        if reading.ts >= summary.newest.ts:  # on equal ts the later message wins
            summary.newest = reading
        received = reading.received_at
        if received > summary.last_seen:
            summary.last_seen = received
        elif received < summary.first_seen:
            summary.first_seen = received
    return topics


def _wrapped(exc: psycopg.Error) -> SQLAlchemyError:
    """The SQLAlchemy exception the writer expects for a psycopg error raised on the raw connection."""
    error_class: type[SQLAlchemyError]
    if isinstance(exc, psycopg.IntegrityError):
        error_class = IntegrityError
    elif isinstance(exc, psycopg.DataError):
        error_class = DataError
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        error_class = OperationalError
    else:
        error_class = DBAPIError
    return error_class("COPY/upsert of a batch", None, exc)
