"""The cap on devices: how many the lab keeps per room and in all.

Any publisher with the fleet account can invent device names, and every new name costs memory in
the portal, rows in the database, a card on the overview and, a minute later, an offline alarm.
:class:`DeviceQuota` knows every device the lab keeps (loaded from the database, then each new one
as ingest admits it) and admits a new device only while its room holds fewer than
``PORTAL_MAX_DEVICES_PER_ROOM`` and the lab fewer than ``PORTAL_MAX_DEVICES``. Readings of a
device past the cap are refused (``device_limit``, counted and logged once per room per
:data:`LOG_EVERY_S`); so are alarms for it. Known devices go on as before.

Until the database has answered once, the devices already stored are not known: new ones are
admitted meanwhile and counted, so a lab started with its database down may end up a little
past the cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: A room (or the whole lab) that keeps hitting its cap is logged at most this often.
LOG_EVERY_S = 600.0


class DeviceQuota:
    """Admits new devices up to a cap per room and in all. Safe to call from any thread.

    Args:
        per_room: most devices in one room.
        total: most devices in the lab.
        on_new: called (outside the lock) each time a new device is admitted.
        clock: monotonic seconds, for the log's rate limit.
    """

    def __init__(
        self,
        per_room: int,
        total: int,
        on_new: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_room < 1 or total < 1:
            raise ValueError("caps must be 1 or more")
        self.per_room = per_room
        self.total = total
        self._on_new = on_new
        self._clock = clock
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        self._rooms: Counter[str] = Counter()
        self._logged: dict[str, float] = {}  # room ("" for the whole lab) -> when last logged
        self.refused = 0

    def load(self, devices: Iterable[tuple[str, str]]) -> None:
        """Add the devices the database holds (at start; more than the caps is fine)."""
        with self._lock:
            for key in devices:
                self._add(key)

    def admit(self, room: str, device: str) -> bool:
        """True if the device is known, or is new and fits under both caps (it is then known)."""
        key = (room, device)
        with self._lock:
            if key in self._known:
                return True
            full = self._full(room)
            if full is None:
                self._add(key)
            else:
                self.refused += 1
                log_now = self._clock() - self._logged.get(full, -LOG_EVERY_S) >= LOG_EVERY_S
                if log_now:
                    self._logged[full] = self._clock()
        if full is None:
            if self._on_new is not None:
                self._on_new()
            return True
        if log_now:
            self._log_cap(full, room)
        return False

    def allows(self, room: str, device: str) -> bool:
        """True if the device is known or would fit; admits nothing (for alarms)."""
        with self._lock:
            return (room, device) in self._known or self._full(room) is None

    def forget(self, devices: Iterable[tuple[str, str]]) -> None:
        """Make room again: these devices are no longer kept."""
        with self._lock:
            for key in devices:
                if key in self._known:
                    self._known.discard(key)
                    self._rooms[key[0]] -= 1
                    if self._rooms[key[0]] <= 0:
                        del self._rooms[key[0]]

    @property
    def devices(self) -> int:
        """Devices known."""
        return len(self._known)

    def _full(self, room: str) -> str | None:
        """Which cap a new device of `room` would break: the room's name, "" for the lab, or None."""
        if len(self._known) >= self.total:
            return ""
        if self._rooms[room] >= self.per_room:
            return room
        return None

    def _add(self, key: tuple[str, str]) -> None:
        if key not in self._known:
            self._known.add(key)
            self._rooms[key[0]] += 1

    def _log_cap(self, full: str, room: str) -> None:
        if full == "":
            log.warning(
                "the lab keeps %s devices (PORTAL_MAX_DEVICES): readings of new devices are refused "
                "(room %.60r and others); raise the cap in .env, or remove devices",
                self.total,
                room,
            )
        else:
            log.warning(
                "room %.60r holds %s devices (PORTAL_MAX_DEVICES_PER_ROOM): readings of new devices "
                "in it are refused; raise the cap in .env, or remove devices",
                room,
                self.per_room,
            )
