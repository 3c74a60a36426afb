"""The fleet engine of one process: one asyncio loop, no thread or task per device.

The engine owns the clock and the timeline; its jobs are modules of this package:

* :mod:`~stress.engine.wheel`: a timing wheel of one-millisecond slots holds each device under
  the slot of its next due message; every millisecond the engine fires the slots that have
  come, then the devices that were waiting for their connection to take more;
* :mod:`~stress.engine.connector`: connections, bounded in how many handshakes run at once and
  how many start per second, retried after each device's backoff;
* :mod:`~stress.engine.faults`: storms, churn and the ``--active`` list;
* :mod:`~stress.engine.housekeeping`: once a second, keep-alive pings, expired messages and the
  meter's second closed; a lag probe measures how late the loop itself runs, so a saturated
  generator is visible in the results;
* :mod:`~stress.engine.drain`: what was never sent, and the wait for what is in flight;
* :mod:`~stress.engine.observer`: the end-to-end subscriber.

The timeline (stages of fleet size, interval and shape, :mod:`stress.shapes`) is followed in
order; the run then drains and every device disconnects. Devices see the engine only as their
:class:`~stress.fleet.device.Fleet`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from stress.behaviours import DeviceInfo, load
from stress.engine.connector import Connector
from stress.engine.drain import count_unsent, drain_in_flight
from stress.engine.faults import start_faults
from stress.engine.housekeeping import housekeeper, lag_probe
from stress.engine.observer import Observer
from stress.engine.wheel import TICK, Wheel
from stress.fleet.device import CONNECTED, STOPPED, WAITING, Device, pick_sampled
from stress.fleet.links import Dialer
from stress.measure.meter import Meter, Second
from stress.mqtt.session import Session, wait_closed
from stress.scenario import MAX_DEVICES, Scenario, device_name
from stress.shapes import GOLDEN, Bursts, Stage, first_due, interval_at, offset
from stress.targets.base import Target

#: A millionth of a tick: how far below a boundary a reading of the clock still counts as on it.
_NUDGE = 1e-6
T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (several times faster I/O), else asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - uvloop is in the stress extra; plain asyncio works too
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Engine:
    """Runs one process's share of a fleet: ``await engine.run()``."""

    def __init__(
        self,
        scenario: Scenario,
        target: Target,
        *,
        indexes: range | None = None,
        on_second: Callable[[Second], None] | None = None,
        meter: Meter | None = None,
        gate: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.scenario = scenario
        self.target = target
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
        self.behaviour_class = load(scenario.behaviour)
        self.qos = scenario.qos
        self.interval = scenario.stages[0].interval
        self.burst = scenario.stages[0].burst
        self.anchor = math.inf
        self.dialer = Dialer(scenario.broker, scenario.connect_timeout)
        self.rng = random.Random(scenario.seed * 7_919 + self.indexes.start)
        self.devices: dict[int, Device] = {}
        self.sampled = {i for i in pick_sampled(scenario.devices, scenario.e2e_devices) if i in self.indexes}
        #: Messages until the next one is told as a ``published`` event (one in ``sample_every``).
        self._until_told = scenario.sample_every
        self.publishing = False
        #: Messages are due only before the end of the current stage.
        self.publish_until = math.inf
        self.stopped: str | None = None
        self._skip_drain = False
        self._stop = asyncio.Event()
        self.wheel = Wheel(self.loop.time)
        #: (The fleet's ``schedule`` and ``ready`` are the wheel's own, called at every message.)
        self.schedule = self.wheel.schedule
        self.ready = self.wheel.ready
        self.connector = Connector(self.loop, scenario, self.meter, self._birth, self.rng)
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
        #: The instants of a random-burst stage (None in other stages).
        self._bursts: Bursts | None = None
        self.seconds: list[Second] = []
        #: Whether a device takes part (the ``--active`` list; everyone without one).
        self.takes_part: Callable[[str], bool] = lambda _name: True

    # ------------------------------------------------------------------ devices

    def info(self, index: int) -> DeviceInfo:
        """Who device ``index`` of the fleet is: ``<prefix>00001`` in ``room-01``..."""
        scenario = self.scenario
        return DeviceInfo(
            index,
            device_name(scenario.prefix, index, scenario.devices),
            f"room-{index % scenario.rooms + 1:02d}",
        )

    def _birth(self, index: int) -> Device:
        """Create device ``index`` (when its first connection is about to start, so a large
        fleet, or a ramp stage that adds thousands, never holds the loop while it is built)."""
        info = self.info(index)
        behaviour = self.behaviour_class(info, random.Random(self.scenario.seed * 1_000_003 + index))
        device = self.target.make_device(
            self, self.dialer.open, info, behaviour, sampled=index in self.sampled
        )
        device.held = index in self.held
        device.offline = not self.takes_part(device.info.device_id)
        device.slow = (index * GOLDEN) % 1.0 < self.scenario.slow_devices
        self.devices[index] = device
        device.behaviour.start(self.loop.time())
        return device

    # ------------------------------------------------------------------ the fleet, as devices see it

    def request_connect(self, device: Device) -> None:
        """Queue a connection attempt."""
        self.connector.request(device)

    def connect_failed(self, device: Device, now: float) -> None:
        """An attempt failed or a connection dropped: try again after a jittered backoff."""
        self.connector.failed(device, now)

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
        device.offset = offset(device.info.index, interval, self.burst)
        if self._bursts is not None:
            due = device.due if device.joined and device.due < math.inf else self._bursts.next
            device.joined = True
        elif device.joined and device.due < math.inf:
            due = device.due  # a reconnecting device keeps its grid (missed slots were counted)
        else:
            due = first_due(self.anchor + device.offset, interval, now)
            device.joined = True
        device.due = due
        self.schedule(device)

    def published(self, device: Device, messages: int, now: float) -> None:
        """Count ``messages`` written by ``device``; one in ``sample_every`` is told as an event."""
        current = self.meter.current
        current.sent += messages
        if device.sampled:
            current.e2e_expected += messages
        self._until_told -= messages
        if self._until_told <= 0:
            self._until_told = self.scenario.sample_every
            self.meter.emit(
                {
                    "event": "published",
                    "device": device.info.device_id,
                    "topic": device.topics[-1].topic,
                    "payload": device.last_payload[:200].decode("utf-8", "replace"),
                },
                now,
            )

    # ------------------------------------------------------------------ clock

    def _tick(self) -> None:
        loop = self.loop
        now = loop.time()
        if self.publishing:
            if self._modulated:
                self._modulate(now)
            self.wheel.fire_due(min(now, self.publish_until))
        if not self._stop.is_set() or self.publishing:
            # The next millisecond boundary. uvloop's clock counts whole milliseconds, so ``now``
            # is often a hair below one: without the nudge the tick would be re-armed half a
            # millisecond on, which its millisecond timers round to "at once" (a wasted tick)
            boundary = (math.floor(now / TICK + _NUDGE) + 1) * TICK
            loop.call_at(max(now + TICK / 2, boundary), self._tick)

    def _modulate(self, now: float) -> None:
        """A wave's interval now; or, at a random burst's instant, the gap to the next one
        (devices firing at it add that gap to reach the next burst)."""
        if self._bursts is None:
            self.interval = interval_at(self._stage, now - self.anchor)
            return
        gap = self._bursts.advance(now)
        if gap is not None:
            self.interval = gap

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
        connector = self.connector
        for index in range(indexes.start, min(indexes.stop, size), indexes.step):
            if index not in self.devices:
                connector.expect(index)
        connector.forget_from(size)
        for index in [i for i in self.devices if i >= size]:
            device = self.devices.pop(index)
            if device.counted:
                self.meter.fleet -= 1
            device.stop(now)
        connector.settle()

    def _begin_stage(self, stage: Stage, anchor: float) -> None:
        """Put every connected device on the stage's grid, which starts at ``anchor``."""
        self._stage = stage
        self.interval = stage.interval
        self.burst = stage.burst
        self.anchor = anchor
        self._modulated = stage.interval > 0 and (stage.wave is not None or stage.random_bursts)
        self._bursts = (
            Bursts(stage.interval, anchor, self.scenario.seed, self._stage_number)
            if stage.random_bursts and stage.interval > 0
            else None
        )
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
            asyncio.create_task(self.connector.run()),
            asyncio.create_task(housekeeper(self, self._keepalive)),
            asyncio.create_task(lag_probe(loop, self.meter)),
        ]
        self.loop.call_soon(self._tick)
        self.meter.set_phase("connect", loop.time())
        try:
            await self.dialer.look_up()
            await self._start_observer()
            stages = scenario.stages
            self._resize(self._asked_size if self._asked_size is not None else stages[0].devices, loop.time())
            await self._wait_or_stop(self.connector.first_done.wait())
            begin = loop.time()
            if self.gate is not None and not self.stopped:
                begin = await self._wait_or_stop(self.gate()) or begin
            await self._wait_or_stop(asyncio.sleep(max(0.0, begin - loop.time())))
            self.meter.set_phase("run", loop.time())
            helpers += start_faults(self, begin)
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
                self.wheel.fire_stage_end(self.publish_until if not self.stopped else loop.time())
            self.publishing = False
            count_unsent(self.devices.values(), self.interval, self.meter, loop.time())
            self.meter.set_phase("drain", loop.time())
            await drain_in_flight(
                self.devices,
                self.meter,
                scenario.drain,
                deliveries_owed=self._deliveries_owed,
                skip=lambda: self._skip_drain,
            )
        finally:
            now = loop.time()
            sessions = list(
                {
                    id(d.session): d.session for d in self.devices.values() if isinstance(d.session, Session)
                }.values()
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
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.connector.close()
            # The broker closes each connection after its DISCONNECT (this machine's ports stay free)
            await wait_closed(sessions)
            await self.target.close()
            self.close_second(final=True)
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
        self.connector.stopped = True
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

    def expected(self) -> int:
        """Messages the sampled devices have sent so far (all seconds, this process)."""
        return sum(second.e2e_expected for second in self.seconds) + self.meter.current.e2e_expected

    def _deliveries_owed(self) -> bool:
        """Whether the end-to-end subscriber still waits for messages (a refused or lost one has
        no deliveries to wait for)."""
        observer = self.observer
        return observer is not None and observer.session is not None and observer.delivered < self.expected()

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
        self.observer = Observer(
            self.dialer, self.meter, options, topics, qos=self.qos, sent_at=self.target.sent_at
        )
        await self.observer.start()

    def _keepalive(self, now: float) -> None:
        if self.observer is not None:
            self.observer.keepalive(now)

    def close_second(self, t: int | None = None, *, final: bool = False) -> None:
        """Close the meter's second ``t`` (default: the current one's next) and hand it on."""
        number = t if t is not None else self.meter.current.t + 1
        second = self.meter.roll(number)
        idle = not (second.sent or second.acked or second.failed or second.connects or second.disconnects)
        if final and idle and self.seconds:
            return  # the stub of a second after the last one that counted
        self.seconds.append(second)
        if self.on_second is not None:
            self.on_second(second)
