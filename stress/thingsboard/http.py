"""ThingsBoard's HTTP device API as a device's link: ``POST /api/v1/<token>/telemetry`` per sample.

Each device's requests share one connection pool (aiohttp, keep-alive) per process. A request
is "in flight" until its answer comes, bounded by ``--inflight`` per device like QoS 1
messages; a 200 is an acknowledgement (its time the publish-to-ack time), anything else a
failure named by what it means: ``rate-limited`` (429), ``http-401-unknown-token``,
``http-400-bad-request``, ``http-<status>``, or the network's ``http-connection`` and
``timeout``.
"""

from __future__ import annotations

import asyncio

import aiohttp

from stress.fleet.device import Connection, Device
from stress.mqtt.codec import MQTT311

#: Connections the pool of one process opens at most.
POOL_SIZE = 256
_REASONS = {429: "rate-limited", 401: "http-401-unknown-token", 400: "http-400-bad-request"}


def http_reason(status: int) -> str:
    """The failure reason of an HTTP answer."""
    return _REASONS.get(status, f"http-{status}")


class HttpPool:
    """The process's connection pool: the connection every HTTP device writes to. Requests go
    out as they are made (:meth:`HttpLink.send`), so there is nothing to write or to ping."""

    connected = True
    paused = False
    receive_maximum = 65_535

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

    async def close(self) -> None:
        """Cancel what is still in flight and close the pool."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()


class HttpLink:
    """One device's telemetry as requests to its own URL (its access token in it), on the pool."""

    __slots__ = ("pool", "url")

    #: (Replies and acks are MQTT's: an HTTP device receives no command.)
    version = MQTT311

    def __init__(self, pool: HttpPool, url: str) -> None:
        self.pool = pool
        self.url = url

    async def open(self, device: Device) -> HttpPool:
        """Nothing to open: requests go on the process's pool."""
        return self.pool

    async def opened(self, device: Device, connection: Connection) -> None:
        """No subscription, no presence."""

    def send(self, device: Device, payloads: list[bytes], now: float, qos: int) -> bytes:
        """Post each payload now, each request in flight until its answer; nothing to write."""
        for payload in payloads:
            device.packet_id = device.packet_id % device.id_span + 1
            device.inflight[device.packet_id] = now
            task = asyncio.create_task(self._post(device, device.packet_id, payload))
            self.pool.tasks.add(task)
            task.add_done_callback(self.pool.tasks.discard)
        return b""

    async def _post(self, device: Device, request_id: int, payload: bytes) -> None:
        pool = self.pool
        try:
            async with pool.client.post(
                self.url, data=payload, headers={"Content-Type": "application/json"}
            ) as answer:
                status = answer.status
                body = (await answer.read())[:200].decode("utf-8", "replace") if status != 200 else ""
        except TimeoutError:
            self._failed(device, request_id, "timeout", f"no answer from {pool.url} in time")
            return
        except aiohttp.ClientError as exc:
            self._failed(device, request_id, "http-connection", f"{pool.url}: {exc}")
            return
        if status == 200:
            device.on_puback(request_id, 0)
        else:
            detail = f"HTTP {status} {' '.join(body.split())}".strip()
            self._failed(device, request_id, http_reason(status), detail)

    @staticmethod
    def _failed(device: Device, request_id: int, reason: str, detail: str) -> None:
        if device.inflight.pop(request_id, None) is None:
            return  # already counted (timed out, or the run ended)
        fleet = device.fleet
        fleet.meter.error("ack", reason, fleet.loop.time(), device=device.info.device_id, detail=detail)
        if device.blocked and len(device.inflight) <= device.window // 2:
            fleet.ready(device)

    def leave(self, device: Device, connection: Connection) -> None:
        """A device leaving has nothing to close (the pool is the process's)."""

    def cut(self, device: Device, reason: str, now: float) -> None:
        """A storm cannot cut stateless requests: the device is only counted as dropped."""
        device.dropped(reason, now)

    def stopped(self, device: Device) -> None:
        """The pool is the process's: nothing of the device's to release."""
