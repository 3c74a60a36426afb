"""Removing devices: their rows, the portal's memory of them, and what the broker keeps for them.

A removal is a :class:`Selection`: one device, every device of a room, or every device whose name
starts with a prefix (in one room or in all). :class:`Removal` takes a selection away everywhere the
lab keeps it:

1. the database, in one transaction: the devices (their attributes, telemetry and latest values
   go with them), the selection's alarms with their history, and rooms left empty;
2. this portal's memory: the last-value cache, the cap on devices, the writer's id cache;
3. the rules (Node-RED), told on ``config/devices/removed`` (QoS 1, the selection as JSON), so
   they forget the devices' last-seen times and alarm states and raise no ``offline`` alarm for a
   device that is no longer there;
4. what the broker retains for them: their presence (``<root>/<room>/<device>/$state``) and their
   alarms (``alarms/<room>/<device>/<type>``), each replaced by an empty retained message, so
   they do not come back with the next subscription;
5. the pages: a ``removed`` live event with the selection, so pages showing those devices drop them.

A removal is refused (nothing removed) while the portal is not connected to the broker.

A removed device that publishes again simply comes back, as a new device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, exists, select

from web.errors import PortalError
from web.fanout import RemovedDevices
from web.presence import PRESENCE_ATTR
from web.schema import alarms, devices, rooms

if TYPE_CHECKING:
    from web.cache import LatestCache
    from web.ingest import Ingest
    from web.live import Live
    from web.quota import DeviceQuota
    from web.storage import Store

log = logging.getLogger(__name__)

#: Where the rules hear of a removal (not retained: a rule engine that starts later has nothing to forget).
REMOVED_TOPIC = "config/devices/removed"


class RemovalRefused(PortalError):  # noqa: N818 - an answer, not a failure
    """The removal cannot be done now; the message says why and what to do (the API answers 503)."""


@dataclass(frozen=True)
class Selection:
    """Which devices: ``device`` of ``room``; or ``room``'s devices, or every room's, whose name starts
    with ``prefix`` (no prefix: all of the room's). At least ``room`` or ``prefix`` is given."""

    room: str | None = None
    device: str | None = None
    prefix: str | None = None

    def __post_init__(self) -> None:
        if self.room is None and self.prefix is None:
            raise ValueError("a selection needs a room or a prefix")
        if self.device is not None and (self.room is None or self.prefix is not None):
            raise ValueError("one device is named by its room and name, without a prefix")

    def matches(self, room: str, device: str) -> bool:
        """True when this selection holds ``device`` of ``room``."""
        if self.room is not None and room != self.room:
            return False
        if self.device is not None:
            return device == self.device
        return self.prefix is None or device.startswith(self.prefix)

    def as_json(self) -> dict[str, str]:
        """The given fields (``room``, ``device``, ``prefix``)."""
        fields = {"room": self.room, "device": self.device, "prefix": self.prefix}
        return {key: value for key, value in fields.items() if value is not None}

    def where(self, room_column: Any, device_column: Any) -> list[Any]:
        """SQL conditions on a room name column and a device name column."""
        conditions = []
        if self.room is not None:
            conditions.append(room_column == self.room)
        if self.device is not None:
            conditions.append(device_column == self.device)
        elif self.prefix is not None:
            conditions.append(device_column.startswith(self.prefix, autoescape=True))
        return conditions


@dataclass(frozen=True)
class Removed:
    """What a removal took away from the database."""

    devices: list[tuple[str, str]]
    alarms: list[tuple[str, str, str]]  # (room, device, type) of each alarm removed


def delete_selection(engine: Engine, selection: Selection) -> Removed:
    """Delete the selection's devices (with everything that hangs on them), alarms and empty rooms."""
    with engine.begin() as connection:
        gone = connection.execute(
            delete(devices)
            .where(devices.c.room_id == rooms.c.id, *selection.where(rooms.c.name, devices.c.name))
            .returning(rooms.c.name, devices.c.name, rooms.c.id)
        ).all()
        alarm_rows = connection.execute(
            delete(alarms)
            .where(*selection.where(alarms.c.room, alarms.c.device))
            .returning(alarms.c.room, alarms.c.device, alarms.c.type)
        ).all()
        room_ids = sorted({row[2] for row in gone})
        if room_ids:
            connection.execute(
                delete(rooms).where(
                    rooms.c.id.in_(room_ids),
                    ~exists(select(devices.c.id).where(devices.c.room_id == rooms.c.id)),
                )
            )
    return Removed(
        devices=sorted((room, device) for room, device, _ in gone),
        alarms=sorted({(room or "", device or "", kind) for room, device, kind in alarm_rows}),
    )


class Removal:
    """Removes devices everywhere the lab keeps them (see the module's docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        store: Store,
        cache: LatestCache,
        quota: DeviceQuota,
        live: Live,
        ingest: Ingest,
        root: str,
    ) -> None:
        self._engine = engine
        self._root = root
        self._store = store
        self._cache = cache
        self._quota = quota
        self._live = live
        self._ingest = ingest
        #: With replicas: tells the others of each removal (:meth:`web.fanout.Fanout.removed`).
        self.share: Callable[[RemovedDevices], None] | None = None

    def forget(self, selection: Selection, devices: list[tuple[str, str]]) -> None:
        """Forget what this process keeps of removed devices: their ids, their latest values and
        their place under the device caps (every replica does, :mod:`web.fanout`)."""
        self._store.forget_ids_later()
        self._cache.forget(selection.matches)
        self._quota.forget(devices)

    def remove(self, selection: Selection, user: str) -> Removed:
        """Remove the selection; :class:`RemovalRefused` while the broker is out of reach.

        Raises:
            RemovalRefused: the broker connection is down (nothing was removed).
            sqlalchemy.exc.SQLAlchemyError: the database failed (nothing was removed from it).
        """
        if not self._ingest.connected:
            raise RemovalRefused(
                "the portal is not connected to the broker (the rules must hear of a removal): "
                "try again in a moment"
            )
        removed = delete_selection(self._engine, selection)
        self.forget(selection, removed.devices)
        if self.share is not None:
            self.share(RemovedDevices(selection.as_json(), removed.devices))
        if not self._ingest.send(REMOVED_TOPIC, json.dumps(selection.as_json()).encode()):
            log.warning("the rules were not told of a removal: the broker connection was lost")
        for room, device in removed.devices:
            topic = f"{self._root}/{room}/{device}/{PRESENCE_ATTR}"
            if not self._ingest.send(topic, b"", retain=True):
                log.warning("retained presence %.300s not deleted: the broker connection was lost", topic)
        for room, device, kind in removed.alarms:
            topic = f"alarms/{room}/{device}/{kind}"
            if room and device and not self._ingest.send(topic, b"", retain=True):
                log.warning("retained alarm %.300s not deleted: the broker connection was lost", topic)
        self._live.devices_removed(selection.as_json())
        log.info(
            "devices removed user=%s selection=%s devices=%s alarms=%s",
            user,
            json.dumps(selection.as_json())[:300],
            len(removed.devices),
            len(removed.alarms),
        )
        return removed
