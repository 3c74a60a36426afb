"""Coalescing live updates: the newest value per attribute, flushed at most once per interval.

Stored values arrive from the batch writer far faster than a browser can use them. The
:class:`Coalescer` keeps only the newest pending value of each attribute and lets them out in
flushes at most once per ``interval_s``: a value that arrives after a quiet period goes out at once
(leading edge), later ones wait for the end of the interval (trailing edge), so an attribute is
never sent twice within one interval and its final value is never held back for long.

A flush is routed to *channels*, the Socket.IO rooms clients join through a :class:`Scope`:
``site:values`` (everything), ``room:<room>`` and ``device:<room>/<device>``. (The plain room
``site`` holds every signed-in client, whatever it subscribed to: alarms go there.) Only channels somebody
listens to are built. Everything here is pure logic with an injectable clock; the thread and the
sockets live in :mod:`web.live`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

from web.cache import LatestValue
from wire.scopes import SITE_CHANNEL, Scope


def minimal_cover(scopes: Iterable[Scope]) -> set[Scope]:
    """The scopes not covered by another one: joining only these delivers each value once."""
    unique = set(scopes)
    return {scope for scope in unique if not any(o != scope and o.covers(scope) for o in unique)}


def channels_of(value: LatestValue) -> tuple[str, str, str]:
    """Every channel that carries ``value``."""
    return (SITE_CHANNEL, f"room:{value.room}", f"device:{value.room}/{value.device}")


class Coalescer:
    """Newest pending value per attribute, released in flushes at most once per interval.

    Thread-safe: :meth:`offer` is called by the batch writer, :meth:`flush` by one flusher.

    Args:
        interval_s: the shortest time between two flushes.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], LatestValue] = {}
        self._pending_since: float | None = None
        self._last_flush = float("-inf")

    def offer(self, values: Iterable[LatestValue]) -> None:
        """Keep each value unless a newer one of its attribute is already pending.

        On equal timestamps the value offered last wins (as in storage).
        """
        with self._lock:
            pending = self._pending
            was_empty = not pending
            for value in values:
                key = (value.room, value.device, value.attr)
                current = pending.get(key)
                if current is None or value.ts >= current.ts:
                    pending[key] = value
            if was_empty and pending:
                self._pending_since = self._clock()

    @property
    def pending(self) -> int:
        """How many attributes wait for the next flush."""
        return len(self._pending)

    def waiting_since(self) -> float | None:
        """When the values now pending began to wait (clock seconds), or ``None`` if none are."""
        with self._lock:
            return self._pending_since if self._pending else None

    def wait_s(self) -> float | None:
        """Seconds until a flush is due: ``None`` when nothing is pending, 0 when due now."""
        with self._lock:
            if not self._pending:
                return None
            return max(0.0, self._last_flush + self.interval_s - self._clock())

    def flush(self, listened: Collection[str]) -> dict[str, list[dict[str, Any]]] | None:
        """Take what is pending, if a flush is due, as events per listened-to channel.

        Args:
            listened: the channels that have at least one subscriber; others are skipped.

        Returns:
            ``None`` when no flush is due yet (the pending values stay); otherwise
            ``{channel: [event, ...]}`` with events in the shape of
            :meth:`web.cache.LatestValue.as_event`, possibly empty when nobody listens.
        """
        with self._lock:
            now = self._clock()
            if not self._pending or now < self._last_flush + self.interval_s:
                return None
            taken, self._pending = self._pending, {}
            self._pending_since = None
            self._last_flush = now
        return route(taken.values(), listened)


def route(values: Iterable[LatestValue], listened: Collection[str]) -> dict[str, list[dict[str, Any]]]:
    """Group ``values`` by the listened-to channels that carry them (each event built once)."""
    routed: dict[str, list[dict[str, Any]]] = {}
    if not listened:
        return routed
    for value in values:
        event: dict[str, Any] | None = None
        for channel in channels_of(value):
            if channel in listened:
                if event is None:
                    event = value.as_event()
                routed.setdefault(channel, []).append(event)
    return routed
