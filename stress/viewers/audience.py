"""Many browsers watching one lab: N live viewers of the portal, timed and checked for missed values.

Each viewer does what the portal's page does (``web/static/lib/live.js``): it connects to Socket.IO
with the signed-in session cookie and ``auth={"scopes": []}``, emits ``subscribe`` for its scope
(the site, a room or a device), gets a ``snapshot``, then batched ``values``. For every update
while watching it records ``latency = arrival - ts`` (``ts``: the device's own timestamp of a
``{"value", "ts"}`` payload, on this machine's clock) into a bounded
:class:`~stress.measure.histogram.Histogram`. The event loop's own lag and CPU are measured too: when
they are high, the generator, not the portal, is slow.

*Missed*: the portal coalesces (newest value per attribute, at most one update per flush
interval), so a viewer sees fewer updates than were published; that is expected. What must not
happen is an attribute whose final value never reaches a viewer. A reference MQTT subscriber on
the broker records the final value of every attribute in scope while the viewers watch. When
watching ends, the reference stops first; after two flush intervals (and then until every viewer
has caught up, or ``settle_s`` has passed) each viewer's last value of each such attribute is
compared with the reference's: one that is older, or another value, is missed.

All viewers share one event loop and one sign-in (the portal's session cookie, as the tabs of one
browser share it). This module prints nothing; progress goes through callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from stress.measure.histogram import Histogram
from stress.measure.saturation import saturated_by
from stress.viewers import ViewersInputError
from stress.viewers.portal import portal_rooms, sign_in
from stress.viewers.reference import BrokerAccount, Final, Key, Reference, missed_keys
from stress.viewers.scopes import assign_scopes
from stress.viewers.watcher import Watcher
from wire.scopes import Scope, ScopeKind

#: Most viewers one run may hold (file descriptors and memory of one process).
MAX_VIEWERS = 5000
#: Handshakes in progress at once.
CONNECT_CONCURRENCY = 100
#: Added to two flush intervals before the first comparison: the portal's ingest linger and the network.
SETTLE_MARGIN_S = 0.3
#: How often viewers that still lack a final value are checked again while settling.
SETTLE_POLL_S = 0.1
#: Period of the event-loop lag probe while watching.
LAG_TICK_S = 0.05


@dataclass(frozen=True)
class Plan:
    """One watch: who signs in where, how many viewers watch what, and for how long.

    Args:
        portal_url: ``http(s)://host:port`` of the portal.
        username, password: the portal account the viewers sign in with.
        count: viewers (1..``MAX_VIEWERS``).
        scope: what each viewer watches; ``room`` and ``device`` pick one, else they are dealt
            round-robin over the rooms (devices) the portal knows.
        duration: seconds of watching once every viewer has connected.
        connect_rate: viewers connected per second (0: as fast as handshakes go).
        connect_timeout: seconds any network step may take (sign-in, handshake, subscription).
        flush_s: the portal's flush interval (``PORTAL_LIVE_FLUSH_MS``).
        settle_s: longest wait, after watching, for final values to reach the viewers.
        reference: the broker account of the reference subscriber; None: missed is not measured.
    """

    portal_url: str
    username: str
    password: str
    count: int
    scope: ScopeKind = "room"
    room: str | None = None
    device: str | None = None
    duration: float = 30.0
    connect_rate: float = 0.0
    connect_timeout: float = 10.0
    flush_s: float = 0.1
    settle_s: float = 5.0
    reference: BrokerAccount | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_VIEWERS:
            raise ViewersInputError(f"count must be 1..{MAX_VIEWERS}, not {self.count}")
        for name in ("duration", "connect_timeout", "flush_s"):
            if not getattr(self, name) > 0:
                raise ViewersInputError(f"{name} must be more than 0")
        if self.connect_rate < 0 or self.settle_s < 0:
            raise ViewersInputError("connect_rate and settle_s must be 0 or more")


@dataclass
class Result:
    """What the audience saw; :meth:`as_dict` is the result file."""

    plan: Plan
    watchers: list[Watcher]
    watched_s: float
    stopped: str
    reference: Reference | None
    started_at: float
    #: The event loop's own delay while watching: high means the generator, not the portal, is slow.
    lag: Histogram
    cpu_s: float

    def generator(self) -> dict[str, Any]:
        """This process's health while watching: event-loop lag, CPU share, and whether saturated."""
        lag = self.lag.summary()
        cpu = self.cpu_s / self.watched_s if self.watched_s else 0.0
        saturated = saturated_by(cpu, (lag["p99"] or 0.0) / 1000)
        return {"loop_lag_ms": lag, "cpu_ratio": round(cpu, 3), "saturated": saturated}

    @property
    def seen(self) -> list[Watcher]:
        """Viewers that connected (including those dropped later)."""
        return [w for w in self.watchers if w.state in ("connected", "closed", "dropped")]

    def count(self, state: str) -> int:
        """Viewers in ``state``."""
        return sum(1 for w in self.watchers if w.state == state)

    def latency(self) -> Histogram:
        """Every timed update of every viewer."""
        merged = Histogram()
        for watcher in self.seen:
            merged.merge(watcher.latency)
        return merged

    def worst_p99(self) -> float | None:
        """The highest p99 latency of one viewer (ms)."""
        found = [p for p in (w.latency.percentile(0.99) for w in self.seen) if p is not None]
        return max(found) if found else None

    def updates(self) -> dict[str, float | None]:
        """Updates per connected viewer: min, median, max."""
        counts = [w.updates for w in self.seen]
        if not counts:
            return {"min": None, "median": None, "max": None}
        return {"min": min(counts), "median": statistics.median(counts), "max": max(counts)}

    def missed(self) -> tuple[int, int] | None:
        """Missed final values in all, and viewers with any; None when not measured."""
        if self.reference is None:
            return None
        counts = [w.missed or 0 for w in self.seen]
        return sum(counts), sum(1 for n in counts if n)

    def reasons(self, state: str) -> dict[str, int]:
        """Why viewers ended up ``refused`` or ``dropped``, most common first."""
        return dict(Counter(w.reason for w in self.watchers if w.state == state).most_common())

    def as_dict(self) -> dict[str, Any]:
        """The result file's content."""
        plan, missed = self.plan, self.missed()
        reference = self.reference
        return {
            "portal": plan.portal_url,
            "started_at": self.started_at,
            "scope": plan.scope,
            "room": plan.room,
            "device": plan.device,
            "viewers": plan.count,
            "connected": len(self.seen),
            "refused": self.count("refused"),
            "dropped": self.count("dropped"),
            "refused_by_reason": self.reasons("refused"),
            "dropped_by_reason": self.reasons("dropped"),
            "duration_s": plan.duration,
            "watched_s": round(self.watched_s, 3),
            "stopped": self.stopped,
            "generator": self.generator(),
            "flush_ms": round(plan.flush_s * 1000),
            "latency_ms": self.latency().summary(),
            "worst_viewer_p99_ms": self.worst_p99(),
            "updates_per_viewer": self.updates(),
            "missed": None if missed is None else missed[0],
            "viewers_with_missed": None if missed is None else missed[1],
            "reference": None
            if reference is None
            else {
                "attributes": len(reference.finals),
                "messages": reference.messages,
                "filters": reference.filters,
                "error": reference.error,
            },
            "per_viewer": [w.figures() for w in self.watchers],
        }


class Audience:
    """The viewers of one :class:`Plan`, used as ``async with Audience(plan) as audience:``.

    Then :meth:`connect`, :meth:`watch`, and :meth:`result`; leaving the block closes everything.
    :func:`watch` does all of it.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.watchers: list[Watcher] = []
        self.reference: Reference | None = None
        self._session: aiohttp.ClientSession | None = None
        self._watched_s = 0.0
        self._cpu_s = 0.0
        self._lag = Histogram()
        self._stopped = "completed"
        self._keys: dict[Key, Key] = {}
        self._started_at = time.time()

    async def __aenter__(self) -> Audience:
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # the lab's portal is at an IP address
            connector=aiohttp.TCPConnector(limit=0),  # every viewer holds its connection
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.gather(*(watcher.close() for watcher in self.watchers))
        if self.reference is not None:
            self.reference.stop()
        if self._session is not None:
            await self._session.close()

    async def connect(
        self, on_connect: Callable[[int], None] | None = None, stop: asyncio.Event | None = None
    ) -> None:
        """Sign in, deal the scopes, start the reference, connect every viewer.

        ``on_connect(1)`` is called as each viewer connects or is refused.

        Raises:
            ViewersError: sign-in refused, portal or broker unreachable.
            ViewersInputError: a room or device the portal does not know.
        """
        plan, session = self.plan, self._session
        assert session is not None  # noqa: S101 - inside the async with block
        await sign_in(session, plan.portal_url, plan.username, plan.password, plan.connect_timeout)
        rooms: dict[str, list[str]] = {}
        active: set[tuple[str, str]] = set()
        if plan.scope != "site":
            rooms, active = await portal_rooms(session, plan.portal_url, plan.connect_timeout)
        scopes = assign_scopes(plan.scope, plan.count, rooms, plan.room, plan.device, active=active)
        if plan.reference is not None:
            self.reference = Reference(plan.reference, scopes)
            await self.reference.start(plan.connect_timeout)
        self._started_at = time.time()
        since_ms = self._started_at * 1000
        self.watchers = [Watcher(index, scope, since_ms, self._keys) for index, scope in enumerate(scopes)]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def one(watcher: Watcher) -> None:
            if plan.connect_rate:
                await asyncio.sleep(max(0.0, began + watcher.index / plan.connect_rate - loop.time()))
            if stop is not None and stop.is_set():
                watcher.state, watcher.reason = "refused", "not tried: stopped"
            else:
                async with gate:
                    await watcher.connect(session, plan.portal_url, plan.connect_timeout)
            if on_connect is not None:
                on_connect(1)

        await asyncio.gather(*(one(watcher) for watcher in self.watchers))

    async def watch(
        self, on_second: Callable[[], None] | None = None, stop: asyncio.Event | None = None
    ) -> None:
        """Watch for the plan's duration (less if ``stop`` is set); ``on_second()`` once a second."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        end = began + self.plan.duration
        for watcher in self.watchers:
            watcher.counting = True
        stop = stop or asyncio.Event()
        cpu = time.process_time()
        probe = asyncio.create_task(self._probe_lag())
        while (left := end - loop.time()) > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, left)):
                    await stop.wait()
            if on_second is not None and not stop.is_set():
                on_second()
        probe.cancel()
        self._watched_s += loop.time() - began
        self._cpu_s += time.process_time() - cpu
        if stop.is_set():
            self._stopped = "stopped"

    async def _probe_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_TICK_S)
            self._lag.record(loop.time() - before - LAG_TICK_S)

    def stop_reason(self, reason: str) -> None:
        """Record why watching ended early (``signal SIGINT``, say)."""
        self._stopped = reason

    async def result(self) -> Result:
        """Stop the reference, let the portal flush, compare the final values; the figures."""
        reference = self.reference
        watching = [w for w in self.watchers if w.state in ("connected", "dropped")]
        if reference is not None:
            reference.stop()
        await asyncio.sleep(2 * self.plan.flush_s + SETTLE_MARGIN_S)
        if reference is not None:
            by_scope: dict[Scope, list[tuple[Key, Final]]] = {}
            for watcher in watching:
                if watcher.scope not in by_scope:
                    by_scope[watcher.scope] = [
                        (key, final)
                        for key, final in reference.finals.items()
                        if watcher.scope.holds(key[0], key[1])
                    ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(0.0, self.plan.settle_s - 2 * self.plan.flush_s - SETTLE_MARGIN_S)
            lacking = [w for w in watching if w.watching]
            while True:
                lacking = [w for w in lacking if w.watching and missed_keys(by_scope[w.scope], w.last)]
                if not lacking or loop.time() >= deadline:
                    break
                await asyncio.sleep(SETTLE_POLL_S)
            for watcher in watching:
                watcher.missed = len(missed_keys(by_scope[watcher.scope], watcher.last))
        return Result(
            self.plan,
            self.watchers,
            self._watched_s,
            self._stopped,
            reference,
            self._started_at,
            self._lag,
            self._cpu_s,
        )


async def watch(
    plan: Plan,
    *,
    on_connect: Callable[[int], None] | None = None,
    on_second: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> Result:
    """Connect the plan's viewers, watch, and return what they saw (see :class:`Audience`)."""
    async with Audience(plan) as audience:
        await audience.connect(on_connect, stop)
        if stop is None or not stop.is_set():
            await audience.watch(on_second, stop)
        else:
            audience.stop_reason("stopped")
        return await audience.result()
