"""The engine's timing wheel: devices filed under the millisecond of their next message.

A device due at ``t`` waits in the slot of the first tick at or after ``t``; each tick fires
the slots that have come, then the devices waiting for their connection to take more (the
"ready" list), within a time budget so the loop keeps breathing. The engine's tick says what
time it is; the wheel reads a clock only to keep to that budget.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from stress.fleet.device import CONNECTED, STOPPED, Device

TICK = 0.001
#: Most time one tick spends on the ready list before letting the loop breathe.
READY_BUDGET = 0.02


class Wheel:
    """Slots of one millisecond, and the ready list."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._slots: dict[int, list[Device]] = {}
        self._ready: deque[Device] = deque()
        #: The last slot fired: a device due in it or before goes straight to the ready list.
        self.last_slot = int(clock() / TICK)

    def schedule(self, device: Device) -> None:
        """File ``device`` under the slot of its next due time (the first tick at or after it)."""
        slot = -math.floor(-device.due // TICK)  # (floor of a float: cheaper than int())
        if slot <= self.last_slot:
            self.ready(device)
            return
        device.slot = slot
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [device]
        else:
            bucket.append(device)

    def ready(self, device: Device) -> None:
        """Fire ``device`` at the next tick (its connection takes more again)."""
        device.blocked = False
        if not device.queued:
            device.queued = True
            self._ready.append(device)

    def fire_due(self, now: float) -> None:
        """Fire the devices due by ``now``, then those ready to send again."""
        epoch_ms = time.time() * 1000
        slot = int(now / TICK)
        slots = self._slots
        first, self.last_slot = self.last_slot + 1, max(slot, self.last_slot)
        for number in range(first, slot + 1):  # reschedules during the loop go to ready
            bucket = slots.pop(number, None)
            if bucket:
                for device in bucket:
                    if device.slot == number and device.state != STOPPED:
                        device.slot = -1
                        device.fire(now, epoch_ms)
        self._fire_ready(now, epoch_ms)

    def fire_stage_end(self, now: float) -> None:
        """A stage ends at ``now``: also fire those due in its last, partial millisecond."""
        self.fire_due(now)
        epoch_ms = time.time() * 1000
        number = self.last_slot + 1
        for device in self._slots.get(number, ()):
            if device.slot == number and device.state != STOPPED and device.due <= now:
                device.slot = -1
                device.fire(now, epoch_ms)  # its next message is after ``now``: back on the wheel
        self._fire_ready(now, epoch_ms)

    def _fire_ready(self, now: float, epoch_ms: float) -> None:
        clock = self.clock
        ready = self._ready
        budget_end = clock() + READY_BUDGET
        fired = 0
        while ready:
            device = ready.popleft()
            device.queued = False
            if device.state == CONNECTED:
                device.fire(now, epoch_ms)
            fired += 1
            if not fired % 64 and clock() > budget_end:
                break
