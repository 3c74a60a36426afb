"""The engine's once-a-second round, and the probe of how late its loop runs.

Every second of the run the housekeeper names the slowest devices of the second, sends the
keep-alive pings that are due, expires messages unacknowledged for ``--ack-timeout`` (a device
blocked on a full window gets its turn again), and closes the meter's second. The lag probe
measures how late the loop wakes from a short sleep, so a saturated generator shows in the
results rather than as the server's fault.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Protocol

from stress.fleet.device import CONNECTED, Device
from stress.measure.meter import Meter
from stress.scenario import Scenario

#: Devices each second names as the slowest (the dashboard shows them).
SLOWEST = 10
#: Seconds the lag probe sleeps between looks at the clock.
LAG_PERIOD_S = 0.05


class Run(Protocol):
    """What the housekeeper needs of the engine's run."""

    loop: asyncio.AbstractEventLoop
    meter: Meter
    scenario: Scenario
    devices: dict[int, Device]
    #: When the run's second 0 began (the loop's clock).
    start: float

    def ready(self, device: Device) -> None: ...

    def close_second(self, t: int) -> None: ...


async def housekeeper(run: Run, keepalive: Callable[[float], None]) -> None:
    """Once a second, at whole seconds of the run: slowest devices, pings, expiries, the second
    closed; ``keepalive`` pings the run's other connections (the end-to-end subscriber)."""
    loop = run.loop
    t = 1
    while True:
        await asyncio.sleep(max(0.0, run.start + t - loop.time()))
        now = loop.time()
        slowest = round_of(run, now)
        keepalive(now)
        run.meter.current.slowest = [(round(w * 1000, 3), name) for w, name in sorted(slowest, reverse=True)]
        run.close_second(t)
        t += 1


def round_of(run: Run, now: float) -> list[tuple[float, str]]:
    """One pass over the fleet: pings sent, expired messages failed; the slowest devices of the
    second (seconds, name), whose worst time starts again."""
    ack_timeout = run.scenario.ack_timeout
    meter = run.meter
    slowest: list[tuple[float, str]] = []  # a heap of the SLOWEST slowest, least first
    for device in run.devices.values():
        if device.worst:
            entry = (device.worst, device.info.device_id)
            if len(slowest) < SLOWEST:
                heapq.heappush(slowest, entry)
            elif entry > slowest[0]:
                heapq.heapreplace(slowest, entry)
            device.worst = 0.0
        session = device.session
        if session is not None and device.state == CONNECTED:
            session.keepalive_due(now)
        inflight = device.inflight
        if inflight:
            expired = 0
            for packet_id, sent in list(inflight.items()):
                if now - sent < ack_timeout:
                    break
                del inflight[packet_id]
                expired += 1
            if expired:
                meter.error("ack", "ack-timeout", now, count=expired)
                if device.blocked:
                    run.ready(device)
    return slowest


async def lag_probe(loop: asyncio.AbstractEventLoop, meter: Meter) -> None:
    """How late the loop wakes from a short sleep, recorded each time (until cancelled)."""
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_PERIOD_S)
        meter.current.lag.record(max(0.0, loop.time() - before - LAG_PERIOD_S))
