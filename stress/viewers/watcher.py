"""One viewer: a Socket.IO client of the portal doing what its page does, and what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp

from stress.measure.histogram import Histogram
from stress.viewers.portal import failure_reason
from stress.viewers.portal_client import Viewer, ViewerError
from stress.viewers.reference import Key, Seen
from wire.scopes import Scope

#: A connection silent this long is dropped: longer than the portal's ping interval (25 s) and timeout.
SILENCE_S = 60.0
#: Seconds a viewer's close may take (its WebSocket close handshake included).
CLOSE_S = 6.0


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
                if not self.scope.holds(key[0], key[1]):
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
