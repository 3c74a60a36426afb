"""ThingsBoard's HTTP device API as a transport: ``POST /api/v1/<token>/telemetry`` per sample.

Each device's requests share one connection pool (aiohttp, keep-alive) per process. A request
is "in flight" until its answer comes, bounded by ``--inflight`` per device like QoS 1
messages; a 200 is an acknowledgement (its time the publish-to-ack time), anything else a
failure named by what it means: ``rate-limited`` (429), ``http-401-unknown-token``,
``http-400-bad-request``, ``http-<status>``, or the network's ``http-connection`` and
``timeout``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from stress.device import Device
from stress.mqtt.codec import MQTT311

#: Connections the pool of one process opens at most.
POOL_SIZE = 256
_REASONS = {429: "rate-limited", 401: "http-401-unknown-token", 400: "http-400-bad-request"}


def http_reason(status: int) -> str:
    """The failure reason of an HTTP answer."""
    return _REASONS.get(status, f"http-{status}")


class HttpLink:
    """What an HTTP device has instead of an MQTT session: the process's connection pool."""

    connected = True
    paused = False
    receive_maximum = 65_535
    version = MQTT311
    gone = None

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._client: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> aiohttp.ClientSession:
        """The pool (made on first use, inside the running loop)."""
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE), timeout=self.timeout
            )
        return self._client

    def write(self, data: bytes, now: float) -> None:
        """Nothing to write: each request went out as it was made."""

    def keepalive_due(self, now: float) -> str | None:
        """HTTP has no keep-alive to send."""
        return None

    def close(self) -> None:
        """A device leaving has nothing to close (the pool is the process's)."""

    def abort(self) -> None:
        """A storm cannot cut stateless requests."""

    async def close_pool(self) -> None:
        """Cancel what is still in flight and close the pool."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()


class HttpDevice(Device):
    """A device that posts its telemetry over HTTP."""

    __slots__ = ("link", "url")

    def __init__(self, *args: Any, link: HttpLink, url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link
        self.url = url

    async def _open(self) -> Any:
        return self.link

    def _sample(self, now: float, epoch_ms: float, qos: int) -> bytes:
        payloads = self.encode(self.behaviour.next_values(now), self.seq, epoch_ms)
        self.seq += 1
        self.last_payload = payloads[-1]
        for payload in payloads:
            self.packet_id = self.packet_id % self.id_span + 1
            self.inflight[self.packet_id] = now
            task = asyncio.create_task(self._post(self.packet_id, payload))
            self.link.tasks.add(task)
            task.add_done_callback(self.link.tasks.discard)
        return b""

    async def _post(self, request_id: int, payload: bytes) -> None:
        try:
            async with self.link.client.post(
                self.url, data=payload, headers={"Content-Type": "application/json"}
            ) as answer:
                status = answer.status
                body = (await answer.read())[:200].decode("utf-8", "replace") if status != 200 else ""
        except TimeoutError:
            self._failed(request_id, "timeout", f"no answer from {self.link.url} in time")
            return
        except aiohttp.ClientError as exc:
            self._failed(request_id, "http-connection", f"{self.link.url}: {exc}")
            return
        if status == 200:
            self.on_puback(request_id, 0)
        else:
            self._failed(request_id, http_reason(status), f"HTTP {status} {' '.join(body.split())}".strip())

    def _failed(self, request_id: int, reason: str, detail: str) -> None:
        if self.inflight.pop(request_id, None) is None:
            return  # already counted (timed out, or the run ended)
        engine = self.engine
        engine.meter.error("ack", reason, engine.loop.time(), device=self.info.device_id, detail=detail)
        if self.blocked and len(self.inflight) <= self.window // 2:
            engine.ready(self)
