"""The end of a run's timeline: what was due and never sent, and the wait for what is in flight.

When publishing stops, messages a device still owed because its connection held them back are
counted as offered and failed (``back-pressure``). The drain then waits, up to ``--drain``
seconds, for acknowledgements and for the end-to-end subscriber's deliveries; what is still in
flight after it fails as ``unacked-at-end``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

from stress.fleet.device import CONNECTED, Device
from stress.measure.meter import Meter

#: Seconds between looks at what is still in flight.
DRAIN_POLL_S = 0.02


def count_unsent(devices: Iterable[Device], interval: float, meter: Meter, now: float) -> None:
    """Messages that were due by ``now`` but never sent (the connection held them back)."""
    if interval <= 0:
        return
    for device in devices:
        if device.blocked and device.state == CONNECTED and device.due <= now:
            samples = math.floor((now - device.due) / interval) + 1
            count = samples * device.per_sample
            meter.current.offered += count
            meter.error("publish", "back-pressure", now, count=count)
            device.due = math.inf


async def drain_in_flight(
    devices: dict[int, Device],
    meter: Meter,
    seconds: float,
    *,
    deliveries_owed: Callable[[], bool],
    skip: Callable[[], bool],
) -> None:
    """Wait up to ``seconds`` until nothing is in flight and ``deliveries_owed()`` is false (or
    ``skip()`` is true); then fail what is still in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not skip():
        if not any(device.inflight for device in devices.values()) and not deliveries_owed():
            break
        await asyncio.sleep(DRAIN_POLL_S)
    now = loop.time()
    for device in devices.values():
        if device.inflight:
            meter.error("ack", "unacked-at-end", now, count=len(device.inflight))
            device.inflight.clear()
