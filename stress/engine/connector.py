"""The engine's connector: connection attempts, bounded in number at once and in rate.

Devices of the fleet are created when their first attempt is about to start (so a large
fleet, or a ramp stage adding thousands, never holds the loop while it is built); attempts run
at most ``--connect-concurrency`` at once and start at most ``--connect-rate`` a second; a
failed attempt or a dropped connection is tried again after the device's jittered backoff.
The first attempt of every device of the fleet is awaited before publishing starts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable

from stress.errors import ScenarioError
from stress.fleet.device import CONNECTED, CONNECTING, IDLE, STOPPED, WAITING, Device
from stress.measure.meter import Meter
from stress.scenario import Scenario

log = logging.getLogger(__name__)

#: Connection attempts the connector starts before it lets the rest of the loop run.
CONNECT_BATCH = 32


class Connector:
    """Runs every connection attempt of one process's fleet."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        scenario: Scenario,
        meter: Meter,
        birth: Callable[[int], Device],
        rng: random.Random,
    ) -> None:
        self.loop = loop
        self.scenario = scenario
        self.meter = meter
        #: Creates device ``index`` of the fleet (raises ScenarioError when the target cannot).
        self.birth = birth
        self.rng = rng
        #: Set when the run stops: no attempt starts any more.
        self.stopped = False
        self._queue: deque[Device] = deque()
        #: Devices of the fleet not created yet (created as their turn comes).
        self._unborn: deque[int] = deque()
        self._unborn_set: set[int] = set()
        self._wakeup = asyncio.Event()
        self._connecting = 0
        self._first_attempts = 0
        #: Set once every device expected so far has had its first attempt.
        self.first_done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def expect(self, index: int) -> None:
        """Device ``index`` joins the fleet: created and connected in its turn."""
        if index not in self._unborn_set:
            self._unborn.append(index)
            self._unborn_set.add(index)
            self._first_attempts += 1

    def expecting(self, index: int) -> bool:
        """Whether device ``index`` waits to be created."""
        return index in self._unborn_set

    def forget_from(self, size: int) -> None:
        """Devices ``size`` and after, not created yet, no longer join."""
        dropped = [i for i in self._unborn if i >= size]
        if dropped:
            self._unborn = deque(i for i in self._unborn if i < size)
            self._unborn_set.difference_update(dropped)
            self._first_attempts -= len(dropped)

    def settle(self) -> None:
        """After the fleet's size changed: wait again for first attempts, if any are owed."""
        if self._first_attempts <= 0:
            self.first_done.set()
        else:
            self.first_done.clear()
            self._wakeup.set()

    def request(self, device: Device) -> None:
        """Queue a connection attempt."""
        self._queue.append(device)
        self._wakeup.set()

    def failed(self, device: Device, now: float) -> None:
        """An attempt failed or a connection dropped: try again after a jittered backoff."""
        if device.state == STOPPED or self.stopped:
            return
        delay = device.backoff(self.rng.random())
        self.loop.call_at(now + delay, self._retry, device)

    def _retry(self, device: Device) -> None:
        if device.state == WAITING and not self.stopped and not device.offline:
            self.request(device)

    async def run(self) -> None:
        """Start attempts as they are owed, within the limits (until cancelled)."""
        scenario = self.scenario
        limit = scenario.connect_concurrency
        spacing = 1.0 / scenario.connect_rate if scenario.connect_rate else 0.0
        next_start = self.loop.time()
        started = 0
        while True:
            while not (self._queue or self._unborn) or self._connecting >= limit or self.stopped:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._queue:
                device = self._queue.popleft()
                if device.state in (STOPPED, CONNECTED, CONNECTING) or device.offline:
                    continue
            else:
                index = self._unborn.popleft()
                self._unborn_set.discard(index)
                try:
                    device = self.birth(index)
                except ScenarioError as exc:  # a device the target cannot make (no token, say)
                    self.meter.error("connect", "device-setup", self.loop.time(), detail=str(exc))
                    self._first_attempt_done()
                    continue
            started += 1
            if not started % CONNECT_BATCH:
                await asyncio.sleep(0)  # the clock's tick goes first
            if spacing:
                next_start = max(next_start + spacing, self.loop.time())
                delay = next_start - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._connecting += 1
            task = asyncio.create_task(self._attempt(device))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _first_attempt_done(self) -> None:
        self._first_attempts -= 1
        if self._first_attempts <= 0:
            self.first_done.set()

    async def _attempt(self, device: Device) -> None:
        first = device.state == IDLE
        try:
            await device.connect()
        except Exception:
            log.exception("unexpected failure connecting %s", device.info.device_id)
        finally:
            self._connecting -= 1
            self._wakeup.set()
            if first:
                if device.state != STOPPED:
                    device.counted = True
                    self.meter.fleet += 1
                self._first_attempt_done()

    async def close(self) -> None:
        """Cancel the attempts under way."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
