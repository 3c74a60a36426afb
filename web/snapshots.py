"""Where a live subscription's snapshot comes from: the database, the last-value cache, or the newest
of several (:mod:`web.live` sends it; :mod:`web.app` chooses the source)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from web.cache import LatestCache, LatestValue
from wire.scopes import Scope

#: Returns at most ``limit`` latest values of a scope, ordered by room, device and attribute.
SnapshotSource = Callable[[Scope, int], list[LatestValue]]


class LatestValues(Protocol):
    """Latest values of a room or device, at most ``limit`` (the store's signature)."""

    def __call__(
        self, room: str | None = None, device: str | None = None, *, limit: int | None = None
    ) -> list[LatestValue]: ...


def store_snapshot(latest_values: LatestValues) -> SnapshotSource:
    """A snapshot source reading the database (:meth:`web.storage.Store.latest_values`)."""

    def snapshot(scope: Scope, limit: int) -> list[LatestValue]:
        return latest_values(scope.room, scope.device, limit=limit)

    return snapshot


def newest_of(*sources: SnapshotSource) -> SnapshotSource:
    """A snapshot source taking the newest value of each attribute among ``sources``.

    Each source gives at most ``limit`` values in the order of (room, device, attribute), so the
    first ``limit`` of their union are among them.
    """

    def snapshot(scope: Scope, limit: int) -> list[LatestValue]:
        newest: dict[tuple[str, str, str], LatestValue] = {}
        for source in sources:
            for value in source(scope, limit):
                key = (value.room, value.device, value.attr)
                current = newest.get(key)
                if current is None or value.ts > current.ts:
                    newest[key] = value
        return [newest[key] for key in sorted(newest)[:limit]]

    return snapshot


def cached(cache: LatestCache) -> SnapshotSource:
    """A snapshot source reading the last-value cache (empty until it is loaded)."""

    def snapshot(scope: Scope, limit: int) -> list[LatestValue]:
        return cache.values(room=scope.room, device=scope.device, limit=limit)

    return snapshot


def cache_snapshot(cache: LatestCache, fallback: SnapshotSource) -> SnapshotSource:
    """A snapshot source reading the last-value cache, or ``fallback`` until the cache is loaded."""
    values = cached(cache)

    def snapshot(scope: Scope, limit: int) -> list[LatestValue]:
        return values(scope, limit) if cache.loaded else fallback(scope, limit)

    return snapshot
