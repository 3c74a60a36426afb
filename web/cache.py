"""The last-value cache: every attribute's latest value and every device's last-seen time, in memory.

Snapshots (Socket.IO, REST ``/api/latest``) read from here instead of the database. The cache is
filled twice over:

* :meth:`LatestCache.load` merges what the ``latest`` table and ``devices.last_seen`` hold (the
  batch writer calls it when it starts, and again later if the database was down then);
* :meth:`LatestCache.record` merges what each committed batch changed (the writer calls it after
  every commit).

Both merge by time, newest wins, so their order does not matter: a load that comes after a few
batches never puts an older value back. Every method is thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wire.timestamps import epoch_ms


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The current value of one attribute."""

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
        """The JSON shape sent to clients: ``ts`` in milliseconds since 1970 (UTC)."""
        return {
            "room": self.room,
            "device": self.device,
            "attr": self.attr,
            "value": self.value,
            "ts": epoch_ms(self.ts),
        }


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """When the portal last received a message from a device (``last_seen`` in ms since 1970)."""

    room: str
    device: str
    last_seen: int


class LatestCache:
    """Latest value per (room, device, attr) and last-seen time per (room, device)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Keyed by device first, so one device's or one room's values are found without a full scan.
        self._values: dict[tuple[str, str], dict[str, LatestValue]] = {}
        self._seen: dict[tuple[str, str], int] = {}
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` has merged the database's values."""
        return self._loaded

    def load(self, values: Iterable[LatestValue], devices: Iterable[DeviceSeen]) -> None:
        """Merge values and last-seen times read from the database, and mark the cache loaded."""
        self._merge(values, devices)
        self._loaded = True

    def record(self, values: Iterable[LatestValue], devices: Iterable[DeviceSeen]) -> None:
        """Merge newer values (taken for storage) and last-seen times (of a committed batch)."""
        self._merge(values, devices)

    def values(
        self, room: str | None = None, device: str | None = None, limit: int | None = None
    ) -> list[LatestValue]:
        """Latest values, optionally of one room or one device, ordered by room, device, attr.

        Args:
            room: only this room's values.
            device: only this device's values (in every room, unless ``room`` is given too).
            limit: at most this many (the first ones in that order).
        """
        with self._lock:
            if room is not None and device is not None:
                keys = [(room, device)] if (room, device) in self._values else []
            else:
                keys = [
                    key
                    for key in self._values
                    if (room is None or key[0] == room) and (device is None or key[1] == device)
                ]
        keys.sort()  # outside the lock: a site of tens of thousands of devices takes milliseconds
        found: list[LatestValue] = []
        remaining = limit
        with self._lock:
            for key in keys:
                attrs = self._values.get(key, {})
                names = sorted(attrs)
                if remaining is not None:
                    names = names[:remaining]
                    remaining -= len(names)
                found.extend(attrs[name] for name in names)
                if remaining == 0:
                    break
        return found

    def newer(self, values: Iterable[LatestValue]) -> list[LatestValue]:
        """The values at least as recent as the cached value of their attribute (or not cached)."""
        with self._lock:
            fresh = []
            for value in values:
                current = self._values.get((value.room, value.device), {}).get(value.attr)
                if current is None or value.ts >= current.ts:
                    fresh.append(value)
            return fresh

    def forget(self, matches: Callable[[str, str], bool]) -> None:
        """Drop the values and last-seen times of every (room, device) that ``matches`` (removed)."""
        with self._lock:
            for key in [key for key in self._values if matches(*key)]:
                del self._values[key]
            for key in [key for key in self._seen if matches(*key)]:
                del self._seen[key]

    def devices(self) -> list[DeviceSeen]:
        """Every device seen, with its last-seen time, ordered by room and device."""
        with self._lock:
            seen = [DeviceSeen(room, device, last) for (room, device), last in self._seen.items()]
        seen.sort(key=lambda item: (item.room, item.device))
        return seen

    def _merge(self, values: Iterable[LatestValue], devices: Iterable[DeviceSeen]) -> None:
        with self._lock:
            for value in values:
                attrs = self._values.setdefault((value.room, value.device), {})
                current = attrs.get(value.attr)
                if current is None or value.ts >= current.ts:
                    attrs[value.attr] = value
            for item in devices:
                key = (item.room, item.device)
                if item.last_seen > self._seen.get(key, -1):
                    self._seen[key] = item.last_seen
