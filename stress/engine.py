"""The fleet engine of one process: one asyncio loop, no thread or task per device.

The engine owns the clock. A timing wheel of one-millisecond slots holds each device under
the slot of its next due message; every millisecond the engine fires the devices whose
slots have come, then those that were waiting for their connection to take more (the
"ready" list). Connections are opened by a connector that bounds how many handshakes run at
once and how many start per second. Once a second a housekeeper closes the meter's second,
sends keep-alive pings and expires unacknowledged messages; a lag probe measures how late
the loop itself runs, so a saturated generator is visible in the results.

The timeline (stages of fleet size, interval and shape) is followed in order; the run then
drains (waits for acknowledgements and end-to-end deliveries) and every device disconnects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import heapq
import ipaddress
import logging
import math
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from stress.behaviours import DeviceInfo, load
from stress.device import CONNECTED, CONNECTING, IDLE, STOPPED, WAITING, Device, pick_sampled
from stress.meter import Meter, Second
from stress.mqtt.codec import ConnectOptions
from stress.mqtt.session import Session, SessionHandler, open_session, wait_closed
from stress.observer import Observer
from stress.scenario import MAX_DEVICES, Broker, Scenario, ScenarioError, Stage, device_name
from stress.targets import build

log = logging.getLogger(__name__)

TICK = 0.001
#: A millionth of a tick: how far below a boundary a reading of the clock still counts as on it.
_NUDGE = 1e-6
#: Most time one tick spends on the ready list before letting the loop breathe.
READY_BUDGET = 0.02
#: Devices each second names as the slowest (the dashboard shows them).
SLOWEST = 10
#: Connection attempts the connector starts before it lets the rest of the loop run.
CONNECT_BATCH = 32
GOLDEN = (math.sqrt(5) - 1) / 2
#: Seconds between looks at the ``--active`` list.
ACTIVE_POLL_S = 0.5
T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (several times faster I/O), else asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - uvloop is in the stress extra; plain asyncio works too
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def read_active(path: Path) -> list[str]:
    """The names and shell patterns of an ``--active`` list (blank lines and ``#`` comments skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def membership(patterns: list[str] | None) -> Callable[[str], bool]:
    """Whether a device name is on a list of names and patterns (everyone when there is no list)."""
    if patterns is None:
        return lambda _name: True
    return lambda name: any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def tls_context(broker: Broker) -> tuple[ssl.SSLContext | None, str | None]:
    """The TLS context of connections to ``broker`` (None without TLS), and the name to check."""
    if not broker.tls:
        return None, None
    context = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
    if broker.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context, broker.host


class Engine:
    """Runs one process's share of a fleet: ``await engine.run()``."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        indexes: range | None = None,
        on_second: Callable[[Second], None] | None = None,
        meter: Meter | None = None,
        gate: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.scenario = scenario
        self.loop = asyncio.get_running_loop()
        #: Which devices of the fleet this process runs (all of them unless split over processes).
        #: (``stress scale`` may grow the fleet past the timeline's largest, so the share is open-ended.)
        share = indexes if indexes is not None else range(scenario.devices)
        self.indexes = range(share.start, MAX_DEVICES, share.step)
        self.meter = meter or Meter(self.loop.time())
        self.start = self.meter.start
        self.on_second = on_second
        #: Awaited once every device of the first stage has tried to connect; returns the time
        #: publishing starts (processes of one run agree on it). Default: at once.
        self.gate = gate
        self.target = build(scenario)
        self.behaviour_class = load(scenario.behaviour)
        self.qos = scenario.qos
        self.interval = scenario.stages[0].interval
        self.burst = scenario.stages[0].burst
        self.anchor = math.inf
        self.tls, self.server_hostname = tls_context(scenario.broker)
        #: Where devices connect: the broker's host, its name looked up once (``_look_up``).
        self.address = scenario.broker.host
        self.rng = random.Random(scenario.seed * 7_919 + self.indexes.start)
        self.devices: dict[int, Device] = {}
        self.sampled = {i for i in pick_sampled(scenario.devices, scenario.e2e_devices) if i in self.indexes}
        self.sample_countdown = scenario.sample_every
        self.publishing = False
        #: Messages are due only before the end of the current stage.
        self.publish_until = math.inf
        self.stopped: str | None = None
        self._skip_drain = False
        self._stop = asyncio.Event()
        self._wheel: dict[int, list[Device]] = {}
        self._ready: deque[Device] = deque()
        self._last_slot = int(self.loop.time() / TICK)
        self._connect_queue: deque[Device] = deque()
        #: Devices of the fleet not created yet (the connector creates them as it goes).
        self._unborn: deque[int] = deque()
        self._unborn_set: set[int] = set()
        self._connect_wakeup = asyncio.Event()
        self._connecting = 0
        self._first_attempts = 0
        self._first_done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.observer: Observer | None = None
        #: Devices paused by ``stress pause`` (indexes; those not created yet are paused at birth).
        self.held: set[int] = set()
        #: The fleet size and interval asked by ``stress scale`` and ``stress rate``, for the
        #: current stage (the timeline's next stage brings its own).
        self._asked_size: int | None = None
        self._asked_interval: float | None = None
        self._stage = scenario.stages[0]
        self._stage_number = 0
        #: Whether the current stage changes the interval as it goes (a wave, random bursts).
        self._modulated = False
        self._burst_rng = random.Random(0)
        self._burst_next = math.inf
        self.seconds: list[Second] = []
        #: Whether a device takes part (the ``--active`` list; everyone without one).
        self.takes_part: Callable[[str], bool] = lambda _name: True

    # ------------------------------------------------------------------ setup

    async def _look_up(self) -> None:
        """Look the broker's name up once, not once per connection (a fleet of thousands would
        send a DNS query each): its first address that takes a TCP connection is used for the
        whole run. An address given as such, or a name that does not resolve or connect, is used
        as it is, so each attempt reports its own failure."""
        broker = self.scenario.broker
        try:
            ipaddress.ip_address(broker.host)
            return
        except ValueError:
            pass
        try:
            found = await self.loop.getaddrinfo(broker.host, broker.port, type=socket.SOCK_STREAM)
        except OSError:
            return
        for address in dict.fromkeys(str(entry[4][0]) for entry in found):
            try:
                async with asyncio.timeout(self.scenario.connect_timeout):
                    transport, _ = await self.loop.create_connection(asyncio.Protocol, address, broker.port)
            except (OSError, TimeoutError):
                continue
            transport.close()
            self.address = address
            return

    async def open_session(self, options: ConnectOptions, handler: SessionHandler) -> Session:
        """A connection to the target's broker (raises :class:`ConnectError`)."""
        return await open_session(
            self.address,
            self.scenario.broker.port,
            options,
            handler,
            tls=self.tls,
            server_hostname=self.server_hostname,
            timeout=self.scenario.connect_timeout,
        )

    def info(self, index: int) -> DeviceInfo:
        """Who device ``index`` of the fleet is: ``<prefix>00001`` in ``room-01``..."""
        scenario = self.scenario
        return DeviceInfo(
            index,
            device_name(scenario.prefix, index, scenario.devices),
            f"room-{index % scenario.rooms + 1:02d}",
        )

    def _device(self, index: int) -> Device:
        info = self.info(index)
        behaviour = self.behaviour_class(info, random.Random(self.scenario.seed * 1_000_003 + index))
        return self.target.make_device(self, info, behaviour, sampled=index in self.sampled)

    # ------------------------------------------------------------------ clock

    def schedule(self, device: Device) -> None:
        """File ``device`` under the wheel slot of its next due time (the first tick at or after it)."""
        slot = -math.floor(-device.due // TICK)  # (floor of a float: cheaper than int())
        if slot <= self._last_slot:
            self.ready(device)
            return
        device.slot = slot
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = [device]
        else:
            bucket.append(device)

    def ready(self, device: Device) -> None:
        """Fire ``device`` at the next tick (its connection takes more again)."""
        device.blocked = False
        if not device.queued:
            device.queued = True
            self._ready.append(device)

    def _tick(self) -> None:
        loop = self.loop
        now = loop.time()
        if self.publishing:
            if self._modulated:
                self._modulate(now)
            self._fire_due(min(now, self.publish_until))
        if not self._stop.is_set() or self.publishing:
            # The next millisecond boundary. uvloop's clock counts whole milliseconds, so ``now``
            # is often a hair below one: without the nudge the tick would be re-armed half a
            # millisecond on, which its millisecond timers round to "at once" (a wasted tick)
            boundary = (math.floor(now / TICK + _NUDGE) + 1) * TICK
            loop.call_at(max(now + TICK / 2, boundary), self._tick)

    def _modulate(self, now: float) -> None:
        """A wave's interval now; or, at a random burst's instant, the gap to the next one
        (devices firing at it add that gap to reach the next burst)."""
        stage = self._stage
        if stage.wave is not None:
            period, amplitude = stage.wave
            self.interval = stage.interval / (
                1 + amplitude * math.sin(math.tau * (now - self.anchor) / period)
            )
            return
        while now >= self._burst_next:
            gap = self._burst_gap()
            self.interval = gap
            self._burst_next += gap

    def _burst_gap(self) -> float:
        """Seconds to the next random burst: exponential, ``interval`` on average, a tick at least."""
        return max(2 * TICK, self._burst_rng.expovariate(1.0 / self._stage.interval))

    def _fire_due(self, now: float) -> None:
        """Fire the devices due by ``now``, then those ready to send again."""
        epoch_ms = time.time() * 1000
        slot = int(now / TICK)
        wheel = self._wheel
        first, self._last_slot = self._last_slot + 1, max(slot, self._last_slot)
        for number in range(first, slot + 1):  # reschedules during the loop go to ready
            bucket = wheel.pop(number, None)
            if bucket:
                for device in bucket:
                    if device.slot == number and device.state != STOPPED:
                        device.slot = -1
                        device.fire(now, epoch_ms)
        self._fire_ready(now, epoch_ms)

    def _fire_stage_end(self, now: float) -> None:
        """The stage ends at ``now``: also fire those due in its last, partial millisecond."""
        self._fire_due(now)
        epoch_ms = time.time() * 1000
        number = self._last_slot + 1
        for device in self._wheel.get(number, ()):
            if device.slot == number and device.state != STOPPED and device.due <= now:
                device.slot = -1
                device.fire(now, epoch_ms)  # its next message is after ``now``: back on the wheel
        self._fire_ready(now, epoch_ms)

    def _fire_ready(self, now: float, epoch_ms: float) -> None:
        loop = self.loop
        ready = self._ready
        budget_end = loop.time() + READY_BUDGET
        fired = 0
        while ready:
            device = ready.popleft()
            device.queued = False
            if device.state == CONNECTED:
                device.fire(now, epoch_ms)
            fired += 1
            if not fired % 64 and loop.time() > budget_end:
                break

    def connected(self, device: Device, now: float) -> None:
        """A device's session is up: put it on the schedule."""
        if not self.publishing and math.isinf(self.anchor):
            return  # still in the connect phase: ``_begin_stage`` schedules everyone
        self._join(device, now)

    def _join(self, device: Device, now: float) -> None:
        if device.held:
            device.due = math.inf
            return
        interval = self.interval
        if interval <= 0:
            device.joined = True
            self.ready(device)
            return
        device.offset = 0.0 if self.burst else (device.info.index * GOLDEN % 1.0) * interval
        first = self.anchor + device.offset
        if self._stage.random_bursts:
            due = device.due if device.joined and device.due < math.inf else self._burst_next
            device.joined = True
        elif device.joined and device.due < math.inf:
            due = device.due  # a reconnecting device keeps its grid (missed slots were counted)
        else:
            due = first + max(0, math.ceil((now - first) / interval)) * interval
            device.joined = True
        device.due = due
        self.schedule(device)

    # ------------------------------------------------------------------ connections

    def request_connect(self, device: Device) -> None:
        """Queue a connection attempt."""
        self._connect_queue.append(device)
        self._connect_wakeup.set()

    def connect_failed(self, device: Device, now: float) -> None:
        """An attempt failed or a connection dropped: try again after a jittered backoff."""
        if device.state == STOPPED or self.stopped:
            return
        delay = device.backoff(self.rng.random())
        self.loop.call_at(now + delay, self._retry, device)

    def _retry(self, device: Device) -> None:
        if device.state == WAITING and not self.stopped and not device.offline:
            self.request_connect(device)

    async def _connector(self) -> None:
        scenario = self.scenario
        limit = scenario.connect_concurrency
        spacing = 1.0 / scenario.connect_rate if scenario.connect_rate else 0.0
        next_start = self.loop.time()
        started = 0
        while True:
            while not (self._connect_queue or self._unborn) or self._connecting >= limit or self.stopped:
                self._connect_wakeup.clear()
                await self._connect_wakeup.wait()
            if self._connect_queue:
                device = self._connect_queue.popleft()
                if device.state in (STOPPED, CONNECTED, CONNECTING) or device.offline:
                    continue
            else:
                index = self._unborn.popleft()
                try:
                    device = self._birth(index)
                except ScenarioError as exc:  # a device the target cannot make (no token, say)
                    self.meter.error("connect", "device-setup", self.loop.time(), detail=str(exc))
                    self._first_attempts -= 1
                    if self._first_attempts <= 0:
                        self._first_done.set()
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

    async def _attempt(self, device: Device) -> None:
        first = device.state == IDLE
        try:
            await device.connect()
        except Exception:
            log.exception("unexpected failure connecting %s", device.info.device_id)
        finally:
            self._connecting -= 1
            self._connect_wakeup.set()
            if first:
                if device.state != STOPPED:
                    device.counted = True
                    self.meter.fleet += 1
                self._first_attempts -= 1
                if self._first_attempts <= 0:
                    self._first_done.set()

    # ------------------------------------------------------------------ control (stress.control)

    def set_paused(self, indexes: Iterable[int], paused: bool) -> None:
        """Pause devices (connected and silent, nothing offered) or resume them on the grid."""
        now = self.loop.time()
        mine = [index for index in indexes if index in self.indexes]
        if paused:
            self.held.update(mine)
        else:
            self.held.difference_update(mine)
        for index in mine:
            device = self.devices.get(index)
            if device is None or device.held == paused:
                continue
            device.held = paused
            name = device.info.device_id
            self.meter.emit({"event": "paused" if paused else "resumed", "device": name}, now)
            device.joined = False
            device.due = math.inf
            device.slot = -1
            if not paused and device.state == CONNECTED and self.publishing:
                self._join(device, now)

    def scale(self, devices: int) -> None:
        """Make the fleet ``devices`` strong now (until the timeline's next stage)."""
        self._asked_size = devices
        self._resize(devices, self.loop.time())

    def set_interval(self, interval: float, anchor: float | None = None) -> None:
        """Publish every ``interval`` seconds from ``anchor`` (default now), until the next stage."""
        self._asked_interval = interval
        if self.publishing:
            now = self.loop.time()
            self._begin_stage(self._as_asked(self._stage), max(now, anchor if anchor is not None else now))

    def set_takes_part(self, takes_part: Callable[[str], bool]) -> None:
        """Deactivate the devices ``takes_part`` leaves out (they disconnect and stay away) and
        activate those it brings back (they reconnect and rejoin the schedule)."""
        self.takes_part = takes_part
        now = self.loop.time()
        for device in self.devices.values():
            if device.state == STOPPED:
                continue
            wanted = takes_part(device.info.device_id)
            if wanted != device.offline:
                continue
            device.offline = not wanted
            name = device.info.device_id
            self.meter.emit({"event": "activated" if wanted else "deactivated", "device": name}, now)
            if wanted:
                if device.state == WAITING:
                    self.request_connect(device)
                continue
            device.joined = False
            device.due = math.inf
            device.slot = -1
            device.drop("deactivated", now, abrupt=False)

    async def _watch_active(self, path: Path) -> None:
        """Read the ``--active`` list now and whenever it changes (checked twice a second)."""
        seen: tuple[int, int] | None = None
        while True:
            try:
                stat = path.stat()
                version: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                version = None
            except OSError:
                version = seen  # unreadable for now: keep what was read
            if version != seen:
                seen = version
                try:
                    patterns = read_active(path) if version is not None else None
                except (OSError, UnicodeDecodeError) as exc:
                    self.meter.emit({"event": "active-list-unreadable", "detail": str(exc)}, self.loop.time())
                else:
                    self.set_takes_part(membership(patterns))
            await asyncio.sleep(ACTIVE_POLL_S)

    def connected_count(self) -> int:
        """Devices connected now."""
        return self.meter.connected

    def _next_stage(self, number: int, planned: Stage) -> Stage:
        """Stage ``number`` of the timeline, as ``stress scale`` and ``rate`` asked (only until
        the timeline's next stage: a new stage forgets what was asked)."""
        if number:
            self._asked_size = self._asked_interval = None
        self._stage_number = number
        return self._as_asked(planned)

    def _as_asked(self, stage: Stage) -> Stage:
        if self._asked_size is not None:
            stage = dataclasses.replace(stage, devices=self._asked_size)
        if self._asked_interval is not None:
            stage = dataclasses.replace(stage, interval=self._asked_interval)
        return stage

    # ------------------------------------------------------------------ timeline

    def _resize(self, size: int, now: float) -> None:
        """Make the fleet ``size`` devices: new ones wait for the connector to create them."""
        indexes = self.indexes
        for index in range(indexes.start, min(indexes.stop, size), indexes.step):
            if index not in self.devices and index not in self._unborn_set:
                self._unborn.append(index)
                self._unborn_set.add(index)
                self._first_attempts += 1
        dropped = [i for i in self._unborn if i >= size]
        if dropped:
            self._unborn = deque(i for i in self._unborn if i < size)
            self._unborn_set.difference_update(dropped)
            self._first_attempts -= len(dropped)
        for index in [i for i in self.devices if i >= size]:
            device = self.devices.pop(index)
            if device.counted:
                self.meter.fleet -= 1
            device.stop(now)
        if self._first_attempts <= 0:
            self._first_done.set()
        else:
            self._first_done.clear()
            self._connect_wakeup.set()

    def _birth(self, index: int) -> Device:
        """Create device ``index`` (when its first connection is about to start, so a large
        fleet, or a ramp stage that adds thousands, never holds the loop while it is built)."""
        self._unborn_set.discard(index)
        device = self._device(index)
        device.held = index in self.held
        device.offline = not self.takes_part(device.info.device_id)
        device.slow = (index * GOLDEN) % 1.0 < self.scenario.slow_devices
        self.devices[index] = device
        device.behaviour.start(self.loop.time())
        return device

    def _begin_stage(self, stage: Stage, anchor: float) -> None:
        """Put every connected device on the stage's grid, which starts at ``anchor``."""
        self._stage = stage
        self.interval = stage.interval
        self.burst = stage.burst
        self.anchor = anchor
        self._modulated = stage.interval > 0 and (stage.wave is not None or stage.random_bursts)
        if stage.random_bursts:
            # The same instants in every process: a generator seeded by the run and the stage
            self._burst_rng = random.Random(f"{self.scenario.seed}:{self._stage_number}")
            self._burst_next = anchor + self._burst_gap()
        for device in self.devices.values():
            device.joined = False
            device.due = math.inf
            device.slot = -1
            if device.state == CONNECTED:
                self._join(device, anchor)

    async def run(self) -> list[Second]:
        """Run the whole timeline, drain, disconnect; returns every second measured."""
        loop = self.loop
        scenario = self.scenario
        helpers = [
            asyncio.create_task(self._connector()),
            asyncio.create_task(self._housekeeper()),
            asyncio.create_task(self._lag_probe()),
        ]
        self.loop.call_soon(self._tick)
        self.meter.set_phase("connect", loop.time())
        try:
            await self._look_up()
            await self._start_observer()
            stages = scenario.stages
            self._resize(self._asked_size if self._asked_size is not None else stages[0].devices, loop.time())
            await self._wait_or_stop(self._first_done.wait())
            begin = loop.time()
            if self.gate is not None and not self.stopped:
                begin = await self._wait_or_stop(self.gate()) or begin
            await self._wait_or_stop(asyncio.sleep(max(0.0, begin - loop.time())))
            self.meter.set_phase("run", loop.time())
            helpers += self._start_faults(begin)
            for number, planned in enumerate(stages):
                if self.stopped:
                    break
                stage = self._next_stage(number, planned)
                # Stages follow each other on the clock from ``begin``, so processes stay in step
                self._resize(stage.devices, loop.time())
                self._begin_stage(stage, begin)
                self.publish_until = (
                    begin + stage.duration - 1e-9
                )  # a message due at the very end is not in it
                self.publishing = True
                begin += stage.duration
                await self._wait_or_stop(asyncio.sleep(max(0.0, begin - loop.time())))
                # The stage is over: whatever was due in it goes now (the loop's clock may read
                # a hair early, and a device due in the last millisecond is still in the stage)
                self._fire_stage_end(self.publish_until if not self.stopped else loop.time())
            self.publishing = False
            self._count_unsent(loop.time())
            self.meter.set_phase("drain", loop.time())
            await self._drain()
        finally:
            now = loop.time()
            sessions = list(
                {id(d.session): d.session for d in self.devices.values() if d.session is not None}.values()
            )
            for device in self.devices.values():
                device.stop(now)
            if self.observer is not None:
                if self.observer.session is not None:
                    sessions.append(self.observer.session)
                self.observer.close()
            self._stop.set()
            self.meter.set_phase("done", now)
            for task in helpers:
                task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*helpers, *self._tasks, return_exceptions=True)
            # The broker closes each connection after its DISCONNECT (this machine's ports stay free)
            await wait_closed(sessions)
            await self.target.close()
            self._close_second(final=True)
        return self.seconds

    def stop(self, reason: str, *, drain: bool = True) -> None:
        """End the run early (a signal, a collapse): the timeline stops, the run drains.

        A second stop, or ``drain=False``, skips the drain: nobody waits for acknowledgements.
        """
        if self.stopped is None:
            self.stopped = reason
        else:
            drain = False
        if not drain:
            self._skip_drain = True
        self._stop.set()

    async def _wait_or_stop(self, waitable: Awaitable[T]) -> T | None:
        """What ``waitable`` returns, or None when the run is stopped first."""
        task = asyncio.ensure_future(waitable)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stop):
                if not pending.done():
                    pending.cancel()
        return task.result() if task.done() and not task.cancelled() else None

    def _count_unsent(self, now: float) -> None:
        """Messages that were due but never sent (the connection held them back)."""
        if self.interval <= 0:
            return
        for device in self.devices.values():
            if device.blocked and device.state == CONNECTED and device.due <= now:
                samples = math.floor((now - device.due) / self.interval) + 1
                count = samples * device.per_sample
                self.meter.current.offered += count
                self.meter.error("publish", "back-pressure", now, count=count)
                device.due = math.inf

    async def _drain(self) -> None:
        loop = self.loop
        deadline = loop.time() + self.scenario.drain
        while loop.time() < deadline and not self._skip_drain:
            waiting = any(device.inflight for device in self.devices.values())
            observer = self.observer
            # (a refused or lost observer has no deliveries to wait for)
            if (
                observer is not None
                and observer.session is not None
                and observer.delivered < observer.expected()
            ):
                waiting = True
            if not waiting:
                break
            await asyncio.sleep(0.02)
        now = loop.time()
        for device in self.devices.values():
            if device.inflight:
                self.meter.error("ack", "unacked-at-end", now, count=len(device.inflight))
                device.inflight.clear()

    async def _start_observer(self) -> None:
        options = self.target.observer_options()
        if options is None or not self.sampled:
            return
        attributes = self.behaviour_class.attributes
        topics = [
            topic.topic
            for index in sorted(self.sampled)
            for topic in self.target.topics(self.info(index), attributes)
        ]
        self.observer = Observer(self, options, topics)
        await self.observer.start()

    # ------------------------------------------------------------------ faults

    def _start_faults(self, begin: float) -> list[asyncio.Task[None]]:
        """Schedule the storms, and start the churn, of a run publishing from ``begin``."""
        for at in self.scenario.storms:
            self.loop.call_at(begin + at, self._storm)
        tasks = [asyncio.create_task(self._churn(begin))] if self.scenario.churn else []
        if self.scenario.active is not None:  # devices leaving and coming back, by the list
            tasks.append(asyncio.create_task(self._watch_active(self.scenario.active)))
        return tasks

    async def _churn(self, begin: float) -> None:
        """Each second of publishing, drop ``churn / 60`` of the fleet (at random) and let it back."""
        loop = self.loop
        owed = 0.0
        t = 1
        while True:
            await asyncio.sleep(max(0.0, begin + t - loop.time()))
            t += 1
            if not self.publishing:
                continue
            now = loop.time()
            connected = [d for d in self.devices.values() if d.state == CONNECTED and not d.held]
            owed += self.scenario.churn * len(self.devices) / 60
            count = min(int(owed), len(connected))
            owed -= count
            for device in self.rng.sample(connected, count):
                device.drop("churn", now, abrupt=False)
                self.connect_failed(device, now)  # back after a jittered backoff

    def _storm(self) -> None:
        """Every connected device drops at once, as in a network outage; all reconnect at once."""
        if not self.publishing or self.stopped:
            return
        now = self.loop.time()
        dropped = [d for d in self.devices.values() if d.state == CONNECTED]
        for device in dropped:
            device.drop("storm", now, abrupt=True)
        self.meter.emit({"event": "storm", "devices": len(dropped)}, now)
        for device in dropped:
            self.request_connect(device)

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeper(self) -> None:
        loop = self.loop
        t = 1
        while True:
            await asyncio.sleep(max(0.0, self.start + t - loop.time()))
            now = loop.time()
            ack_timeout = self.scenario.ack_timeout
            slowest: list[tuple[float, str]] = []  # a heap of the SLOWEST slowest, least first
            for device in self.devices.values():
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
                        self.meter.error("ack", "ack-timeout", now, count=expired)
                        if device.blocked:
                            self.ready(device)
            if self.observer is not None:
                self.observer.keepalive(now)
            self.meter.current.slowest = [
                (round(w * 1000, 3), name) for w, name in sorted(slowest, reverse=True)
            ]
            self._close_second(t=t)
            t += 1

    def _close_second(self, t: int | None = None, *, final: bool = False) -> None:
        number = t if t is not None else self.meter.current.t + 1
        second = self.meter.roll(number)
        idle = not (second.sent or second.acked or second.failed or second.connects or second.disconnects)
        if final and idle and self.seconds:
            return  # the stub of a second after the last one that counted
        self.seconds.append(second)
        if self.on_second is not None:
            self.on_second(second)

    async def _lag_probe(self) -> None:
        loop = self.loop
        period = 0.05
        while True:
            before = loop.time()
            await asyncio.sleep(period)
            self.meter.current.lag.record(max(0.0, loop.time() - before - period))
