"""Many browsers watching one lab: N live viewers of the portal, timed and checked for missed values.

Each viewer does what the portal's page does (``web/static/lib/live.js``): it connects to Socket.IO
with the signed-in session cookie and ``auth={"scopes": []}``, emits ``subscribe`` for its scope
(the site, a room or a device), gets a ``snapshot``, then batched ``values``. For every update
while watching it records ``latency = arrival - ts`` (``ts``: the device's own timestamp of a
``{"value", "ts"}`` payload, on this machine's clock) into a bounded
:class:`~stress.histogram.Histogram`. The event loop's own lag and CPU are measured too: when
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
import json
import math
import os
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from stress.errors import StressError, UsageError
from stress.histogram import Histogram
from stress.mqtt import codec
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import ConnectError, Session, open_session
from stress.portal_client import Viewer, ViewerError

ScopeKind = Literal["site", "room", "device"]
#: ``(room, device, attr)``
Key = tuple[str, str, str]
#: What a viewer last saw of an attribute: ``(ts in ms, value)``.
Seen = tuple[int, Any]

#: Most viewers one run may hold (file descriptors and memory of one process).
MAX_VIEWERS = 5000
#: Handshakes in progress at once.
CONNECT_CONCURRENCY = 100
#: A connection silent this long is dropped: longer than the portal's ping interval (25 s) and timeout.
SILENCE_S = 60.0
#: Added to two flush intervals before the first comparison: the portal's ingest linger and the network.
SETTLE_MARGIN_S = 0.3
#: Devices seen this recently are the ones viewers are dealt over (when any are).
ACTIVE_S = 60.0
#: Devices asked per page of ``GET /api/devices``, and most pages read (the lab's own cap on
#: devices, 100,000 by default, fits).
DEVICE_PAGE = 1000
MAX_DEVICE_PAGES = 200
#: How often viewers that still lack a final value are checked again while settling.
SETTLE_POLL_S = 0.1
#: Seconds a viewer's close may take (its WebSocket close handshake included).
CLOSE_S = 6.0
#: Topic filters per SUBSCRIBE packet of the reference.
FILTERS_PER_PACKET = 100
#: Period of the event-loop lag probe while watching.
LAG_TICK_S = 0.05
#: Above this event-loop lag (p99, ms) or CPU share, the generator's own delay is in the latency.
SATURATED_LAG_MS = 50.0
SATURATED_CPU = 0.9

_CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class ViewersError(StressError):
    """The portal or the broker refused, or could not be reached; the message is one line."""


class ViewersInputError(ViewersError, UsageError):
    """What was asked cannot be watched (a room that does not exist, say); the message is one line."""


# ---------------------------------------------------------------------------- what to watch


@dataclass(frozen=True, slots=True)
class Scope:
    """What one viewer subscribes to: the whole site, one room, or one device of a room."""

    kind: ScopeKind
    room: str | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The ``subscribe`` request, as the portal's page sends it."""
        found: dict[str, str] = {"scope": self.kind}
        if self.room is not None:
            found["room"] = self.room
        if self.device is not None:
            found["device"] = self.device
        return found

    def covers(self, key: Key) -> bool:
        """True when the attribute ``key`` belongs to this scope."""
        if self.kind == "site":
            return True
        return key[0] == self.room and (self.kind == "room" or key[1] == self.device)

    def topic_filter(self, root: str) -> str:
        """The MQTT filter of this scope's telemetry."""
        if self.kind == "site":
            return f"{root}/+/+/+"
        if self.kind == "room":
            return f"{root}/{self.room}/+/+"
        return f"{root}/{self.room}/{self.device}/+"

    def __str__(self) -> str:
        if self.kind == "site":
            return "site"
        return f"room {self.room}" if self.kind == "room" else f"device {self.room}/{self.device}"


def assign_scopes(
    kind: ScopeKind,
    count: int,
    rooms: Mapping[str, Sequence[str]],
    room: str | None = None,
    device: str | None = None,
    *,
    active: Collection[tuple[str, str]] = (),
) -> list[Scope]:
    """The scope of each of ``count`` viewers, dealt round-robin over what exists.

    Args:
        kind: what each viewer watches.
        count: viewers.
        rooms: the portal's rooms and the devices of each.
        room: watch only this room (``room``), or this room's devices (``device``).
        device: watch only this device of ``room``.
        active: (room, device) pairs seen lately; when there are any, viewers are dealt over
            these rooms and devices only, not over ones that fell silent long ago.

    Raises:
        ViewersInputError: a room or device that the portal does not know, or nothing to watch.
    """
    if kind == "site":
        return [Scope("site")] * count
    if room is not None and room not in rooms:
        known = ", ".join(sorted(rooms)[:5]) or "none yet"
        raise ViewersInputError(f"the portal knows no room {room!r} (rooms: {known})")
    if active and device is None:
        lively = {
            name: [each for each in rooms[name] if (name, each) in active]
            for name in ([room] if room is not None else rooms)
        }
        rooms = {name: names for name, names in lively.items() if names} or rooms
    if kind == "room":
        names = [room] if room is not None else sorted(rooms)
        if not names:
            raise ViewersInputError(
                "the portal knows no rooms yet: publish some values first, or use --scope site"
            )
        return [Scope("room", names[index % len(names)]) for index in range(count)]
    if device is not None:
        if room is None:
            raise ViewersInputError("--device needs --room: device names are per room")
        if device not in rooms[room]:
            raise ViewersInputError(f"the portal knows no device {device!r} in room {room!r}")
        return [Scope("device", room, device)] * count
    pairs = [(name, each) for name in ([room] if room else sorted(rooms)) for each in sorted(rooms[name])]
    if not pairs:
        raise ViewersInputError("the portal knows no devices there yet: publish some values first")
    return [Scope("device", *pairs[index % len(pairs)]) for index in range(count)]


def topic_filters(scopes: Iterable[Scope], root: str) -> list[str]:
    """The fewest MQTT filters that cover ``scopes`` (a room makes its devices' filters needless)."""
    unique = set(scopes)
    if any(scope.kind == "site" for scope in unique):
        return [Scope("site").topic_filter(root)]
    rooms = {scope.room for scope in unique if scope.kind == "room"}
    kept = [scope for scope in unique if scope.kind == "room" or scope.room not in rooms]
    return sorted(scope.topic_filter(root) for scope in kept)


# ---------------------------------------------------------------------------- final values


@dataclass(frozen=True, slots=True)
class Final:
    """The last value of an attribute that the reference saw.

    ``ts`` is the device's own timestamp when the payload carried one (``stamped``), else the
    reference's arrival time, which is close to the portal's own stamp but not equal to it.
    """

    value: float | str
    ts: int
    stamped: bool


def read_value(payload: bytes) -> tuple[float | str, int | None] | None:
    """The value and device timestamp (ms) of a payload, as the portal reads it; None if it refuses.

    JSON numbers become floats and booleans 1.0 / 0.0, strings stay strings; ``{"value": v,
    "ts": ms}`` carries its own timestamp; plain text is a number or one word.
    """
    try:
        text = payload.decode("utf-8").strip()
        document = json.loads(text)
    except UnicodeDecodeError:
        return None
    except ValueError:
        if _PLAIN_NUMBER.fullmatch(text):
            return float(text), None
        plain = text and text[0] not in '{["' and not any(char.isspace() for char in text)
        return (text, None) if plain else None
    ts: int | None = None
    if isinstance(document, dict):
        stamp = document.get("ts", 0)
        valid_stamp = isinstance(stamp, int | float) and not isinstance(stamp, bool) and math.isfinite(stamp)
        if "value" not in document or not set(document) <= {"value", "ts"} or not valid_stamp:
            return None
        ts = round(stamp) if "ts" in document else None
        document = document["value"]
    value = _scalar(document)
    return None if value is None else (value, ts)


def _scalar(document: Any) -> float | str | None:
    if isinstance(document, bool):
        return 1.0 if document else 0.0
    if isinstance(document, int | float):
        try:
            number = float(document)
        except OverflowError:  # an integer beyond a double, which the portal refuses too
            return None
        return number if math.isfinite(number) else None
    return document if isinstance(document, str) else None


def is_missed(final: Final, seen: Seen | None) -> bool:
    """True when a viewer's last value ``seen`` of an attribute is not its ``final`` value (or newer)."""
    if seen is None:
        return True
    seen_ts, seen_value = seen
    if seen_value == final.value and (seen_ts >= final.ts or not final.stamped):
        return False
    # Another value: fine only when it is newer (published after the reference stopped).
    return seen_ts <= final.ts


def missed_keys(finals: Iterable[tuple[Key, Final]], last: Mapping[Key, Seen]) -> list[Key]:
    """The attributes of ``finals`` whose final value a viewer with ``last`` values lacks."""
    return [key for key, final in finals if is_missed(final, last.get(key))]


# ---------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class BrokerAccount:
    """Where the reference subscriber reads the lab's telemetry."""

    host: str
    port: int
    username: str
    password: str
    root: str = "office"


class Reference:
    """An MQTT subscriber recording the final value of every attribute in the viewers' scopes."""

    def __init__(self, account: BrokerAccount, scopes: Iterable[Scope]) -> None:
        self.account = account
        self.filters = topic_filters(scopes, account.root)
        self.finals: dict[Key, Final] = {}
        self.messages = 0
        self.error: str | None = None
        self._session: Session | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self, timeout: float) -> None:
        """Connect and subscribe.

        Raises:
            ViewersError: the broker refused the account or the subscription, or did not answer.
        """
        account = self.account
        options = ConnectOptions(
            client_id=f"stress-viewers-{uuid.uuid4().hex[:8]}",
            username=account.username,
            password=account.password,
            keepalive=30,
        )
        where = f"the broker at {account.host}:{account.port}"
        try:
            self._session = await open_session(account.host, account.port, options, self, timeout=timeout)
            for start in range(0, len(self.filters), FILTERS_PER_PACKET):
                chunk = [(each, 1) for each in self.filters[start : start + FILTERS_PER_PACKET]]
                granted = await self._session.subscribe(chunk, timeout=timeout)
                if any(code >= 0x80 for code in granted):
                    raise ViewersError(
                        f"{where} refused {account.username!r} a subscription to {chunk[0][0]} "
                        "(the reference needs the lab's fleet account)"
                    )
        except ConnectError as exc:
            raise ViewersError(f"the reference subscriber cannot use {where}: {exc.detail}") from None
        self._pinger = asyncio.create_task(self._keepalive())

    def stop(self) -> None:
        """Record nothing more, and disconnect."""
        self._stopped = True
        if self._pinger is not None:
            self._pinger.cancel()
        if self._session is not None:
            self._session.close()
            self._session = None

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while self._session is not None:
            self._session.keepalive_due(loop.time())
            await asyncio.sleep(1.0)

    # SessionHandler

    def on_message(self, message: codec.Publish) -> None:
        """Keep the value if it is the attribute's newest (by timestamp, as the portal does)."""
        if message.qos and self._session is not None:
            self._session.ack(message.packet_id)
        if self._stopped or message.retain:  # retained: published before the reference began
            return
        levels = message.topic.split("/")
        if len(levels) != 4 or levels[0] != self.account.root:
            return
        read = read_value(message.payload)
        if read is None:
            return
        value, stamp = read
        key = (levels[1], levels[2], levels[3])
        final = Final(value, stamp if stamp is not None else round(time.time() * 1000), stamp is not None)
        current = self.finals.get(key)
        if current is None or final.ts >= current.ts or not final.stamped:
            self.finals[key] = final
        self.messages += 1

    def on_puback(self, packet_id: int, reason: int) -> None:
        """The reference publishes nothing."""

    def on_lost(self, reason: str, detail: str) -> None:
        """Remembered: the comparison is then incomplete."""
        self.error = f"{reason}: {detail}"
        self._session = None

    def on_writable(self) -> None:
        """Nothing is queued here."""


# ---------------------------------------------------------------------------- one viewer


class PageViewer(Viewer):
    """A :class:`Viewer` that can also emit events, as the page emits ``subscribe``."""

    async def emit(self, event: str, data: Any) -> None:
        """Send one Socket.IO event (no acknowledgement asked, as the page asks none)."""
        if self._ws is None:
            raise ViewerError("emit() before connect()")
        await self._ws.send_str("42" + json.dumps([event, data]))


class Watcher:
    """One viewer: its connection, and what it saw.

    Args:
        index: its number in the audience.
        scope: what it subscribes to.
        since_ms: updates stamped before this (epoch ms) are counted but not timed (replays).
        keys: shared table of attribute keys, so thousands of viewers hold one copy of each.
    """

    def __init__(self, index: int, scope: Scope, since_ms: float, keys: dict[Key, Key]) -> None:
        self.index = index
        self.scope = scope
        self.since_ms = since_ms
        self.state = "waiting"  # connecting, connected, refused, dropped, closed
        self.reason = ""
        self.updates = 0
        self.snapshot_values = 0
        self.out_of_scope = 0
        self.latency = Histogram()
        self.last: dict[Key, Seen] = {}
        self.missed: int | None = None
        #: Updates are counted and timed only while this is set (from the start of watching).
        self.counting = False
        self.client: PageViewer | None = None
        self._keys = keys
        self._subscribed: asyncio.Future[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    @property
    def watching(self) -> bool:
        """Connected and not dropped."""
        return self.state == "connected"

    def on_event(self, name: str, data: Any) -> None:
        """Take one event; called by the connection for each frame."""
        if name == "values":
            self._take(data, live=True)
        elif name == "snapshot":
            self._take(data, live=False)
            if self._subscribed is not None and not self._subscribed.done():
                self._subscribed.set_result(None)
        elif name == "error" and isinstance(data, dict) and data.get("event") in ("subscribe", "connect"):
            refused = ViewerError(f"subscription refused: {data.get('error')}")
            if self._subscribed is not None and not self._subscribed.done():
                self._subscribed.set_exception(refused)

    def _take(self, items: Any, *, live: bool) -> None:
        if not isinstance(items, list):
            return
        now_ms = time.time() * 1000
        last, keys, record = self.last, self._keys, self.latency.record
        for item in items:
            try:
                key = (item["room"], item["device"], item["attr"])
                ts = item["ts"]
                value = item["value"]
            except (TypeError, KeyError):
                continue
            key = keys.setdefault(key, key)
            current = last.get(key)
            if current is None or ts >= current[0]:  # the page, too, ignores older values
                last[key] = (ts, value)
            if live and self.counting:
                self.updates += 1
                if not self.scope.covers(key):
                    self.out_of_scope += 1
                if ts >= self.since_ms:
                    record((now_ms - ts) / 1000)
            elif not live:
                self.snapshot_values += 1

    async def connect(self, session: aiohttp.ClientSession, portal_url: str, timeout: float) -> None:
        """Connect, subscribe and wait for the snapshot; a failure is recorded as ``refused``."""
        self.state = "connecting"
        self.client = client = PageViewer(portal_url, self.on_event, auth={"scopes": []})
        self._subscribed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await client.connect(session, timeout=SILENCE_S)
                self._listener = asyncio.create_task(self._listen())
                await client.emit("subscribe", self.scope.as_dict())
                await self._subscribed
        except (ViewerError, aiohttp.ClientError, OSError, ValueError, TimeoutError) as exc:
            self.state, self.reason = "refused", failure_reason(exc, timeout)
            await self._abandon()
            return
        self.state = "connected"

    async def _listen(self) -> None:
        client = self.client
        assert client is not None  # noqa: S101 - started by connect
        try:
            await client.listen()
            reason = "closed by the portal"
        except Exception as exc:  # whatever ends one connection (garbage from the portal too) drops it alone
            reason = failure_reason(exc, SILENCE_S)
        if self.state == "connected":
            self.state, self.reason = "dropped", reason
        if self._subscribed is not None and not self._subscribed.done():
            self._subscribed.set_exception(ViewerError(f"the portal closed the connection ({reason})"))

    async def _abandon(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self.client is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_S):
                    await self.client.close()

    async def close(self) -> None:
        """Leave, if still connected (a dropped viewer stays counted as dropped)."""
        if self.state == "connected":
            self.state = "closed"
        if self.client is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_S):
                    await self.client.close()
        if self._listener is not None and not self._listener.done():
            await asyncio.wait([self._listener], timeout=CLOSE_S)
            self._listener.cancel()

    def figures(self) -> dict[str, Any]:
        """This viewer's figures for the result file."""
        return {
            "index": self.index,
            "scope": self.scope.as_dict(),
            "state": self.state,
            "reason": self.reason,
            "updates": self.updates,
            "snapshot_values": self.snapshot_values,
            "out_of_scope": self.out_of_scope,
            "latency_ms": self.latency.summary(),
            "missed": self.missed,
        }


def failure_reason(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed or lost connection."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status} at the WebSocket handshake"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return os.strerror(errno) if errno else f"cannot connect: {exc.os_error}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


# ---------------------------------------------------------------------------- the audience


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
        saturated = cpu > SATURATED_CPU or (lag["p99"] or 0.0) > SATURATED_LAG_MS
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
                        (key, final) for key, final in reference.finals.items() if watcher.scope.covers(key)
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


# ---------------------------------------------------------------------------- the portal's HTTP side


async def sign_in(
    session: aiohttp.ClientSession, portal_url: str, username: str, password: str, timeout: float
) -> None:
    """Sign in through the portal's form (with its CSRF token); the session keeps the cookie.

    Raises:
        ViewersError: the portal refused the account, or could not be reached in ``timeout``.
    """
    try:
        async with asyncio.timeout(timeout):
            async with session.get(f"{portal_url}/login", allow_redirects=False) as page:
                html = await page.text() if page.status == 200 else ""
                status = page.status
            found = _CSRF_FIELD.search(html)
            if found is None:
                raise ViewersError(
                    f"{portal_url} shows no sign-in form at /login (HTTP {status}): is it the lab's portal?"
                )
            form = {"username": username, "password": password, "csrf_token": found.group(1)}
            async with session.post(f"{portal_url}/login", data=form, allow_redirects=False) as answer:
                status = answer.status
    except TimeoutError:
        raise ViewersError(f"the portal at {portal_url} did not answer within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ViewersError(
            f"cannot reach the portal at {portal_url}: {failure_reason(exc, timeout)}"
        ) from None
    if status in (302, 303):
        return
    raise ViewersError(
        {
            401: f"the portal refused the sign-in of {username!r}: wrong user name or password",
            429: "the portal refuses sign-ins for now after too many failures: try again in a minute",
            503: "the portal cannot check sign-ins: its database is unreachable",
        }.get(status, f"the portal refused the sign-in: HTTP {status}")
    )


async def portal_rooms(
    session: aiohttp.ClientSession, portal_url: str, timeout: float
) -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """The portal's rooms and the devices of each (``GET /api/devices``, signed in, page by page),
    and the (room, device) pairs seen in the last ``ACTIVE_S`` seconds.

    Raises:
        ViewersError: the portal did not answer with its device list.
    """
    rooms: dict[str, list[str]] = {}
    active: set[tuple[str, str]] = set()
    lately = (time.time() - ACTIVE_S) * 1000
    cursor: str | None = None
    for _page in range(MAX_DEVICE_PAGES):
        body = await _devices_page(session, portal_url, cursor, timeout)
        for device in body.get("devices", []):
            rooms.setdefault(device["room"], []).append(device["device"])
            if isinstance(device.get("last_seen"), int | float) and device["last_seen"] >= lately:
                active.add((device["room"], device["device"]))
        cursor = body.get("next")
        if not isinstance(cursor, str):
            break
    return rooms, active


async def _devices_page(
    session: aiohttp.ClientSession, portal_url: str, cursor: str | None, timeout: float
) -> dict[str, Any]:
    params = {"limit": str(DEVICE_PAGE)} if cursor is None else {"limit": str(DEVICE_PAGE), "cursor": cursor}
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(f"{portal_url}/api/devices", params=params) as answer,
        ):
            if answer.status != 200:
                raise ViewersError(f"the portal did not list its devices: HTTP {answer.status}")
            body = await answer.json()
    except TimeoutError:
        raise ViewersError(f"the portal did not list its devices within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ViewersError(f"the portal did not list its devices: {failure_reason(exc, timeout)}") from None
    if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
        raise ViewersError("the portal's device list is not what this tool understands (GET /api/devices)")
    return body
