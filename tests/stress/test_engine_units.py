"""The engine, its timing wheel and its devices, without a broker.

Devices are given an in-memory link (:class:`MemoryLink`): its connection keeps what a device
writes, parsed back into PUBLISH packets, and the test acknowledges or drops them as a broker
would. What crosses a real network is tested against Mosquitto elsewhere (test_engine.py,
test_faults.py); here it is the engine's own logic: the grid, catching up, the window, the
backoff, giving up, a whole timeline counted exactly.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stress.behaviours import Behaviour, DeviceInfo, load
from stress.engine import Engine
from stress.engine.wheel import Wheel
from stress.fleet.device import CONNECTED, STOPPED, TAKEN_OVER_LIMIT, WAITING, Connection, Device, Fleet
from stress.fleet.links import Dial
from stress.measure.meter import Meter
from stress.mqtt import codec
from stress.mqtt.session import ConnectError
from stress.scenario import Broker, Scenario
from stress.shapes import Stage, timeline
from stress.targets.mqtt import MqttTarget
from wire.mqtt import split


class MemoryConnection:
    """A connection that keeps what is written: ``(topic, payload, packet id)`` per PUBLISH."""

    def __init__(self, receive_maximum: int = 65_535) -> None:
        self.connected = True
        self.paused = False
        self.receive_maximum = receive_maximum
        self.published: list[tuple[str, bytes, int]] = []
        self.closed = False

    def write(self, data: bytes, now: float) -> None:
        for first, body in split(bytearray(data)):
            message = codec.parse_publish(first, body, codec.MQTT311)
            self.published.append((message.topic, message.payload, message.packet_id))

    def keepalive_due(self, now: float) -> str | None:
        return None


@dataclass
class MemoryLink:
    """A device's link to a :class:`MemoryConnection` (or a refusal, when ``refuse`` is set)."""

    refuse: str | None = None
    opened_count: int = 0
    connections: list[MemoryConnection] = field(default_factory=list)
    version: int = codec.MQTT311
    send = None

    async def open(self, device: Device) -> MemoryConnection:
        self.opened_count += 1
        if self.refuse is not None:
            raise ConnectError(self.refuse, "refused in memory")
        connection = MemoryConnection()
        self.connections.append(connection)
        return connection

    async def opened(self, device: Device, connection: Connection) -> None:
        return

    def leave(self, device: Device, connection: Connection) -> None:
        assert isinstance(connection, MemoryConnection)
        connection.closed = True
        connection.connected = False

    def cut(self, device: Device, reason: str, now: float) -> None:
        if isinstance(device.session, MemoryConnection):
            device.session.connected = False
        device.dropped(reason, now)

    def stopped(self, device: Device) -> None:
        return


class MemoryTarget(MqttTarget):
    """The mqtt target's topics and payloads, each device on a :class:`MemoryLink`."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.links: dict[str, MemoryLink] = {}

    def make_device(
        self, fleet: Fleet, dial: Dial, info: DeviceInfo, behaviour: Behaviour, *, sampled: bool
    ) -> Device:
        link = self.links[info.device_id] = MemoryLink()
        return self.device_on(link, fleet, info, behaviour, sampled=sampled)


def scenario(stages: tuple[Stage, ...], **changes: object) -> Scenario:
    return Scenario(
        target="mqtt",
        broker=Broker(port=1),  # never connected to
        stages=stages,
        e2e_devices=0,
        drain=0.5,
        out=Path("unused"),
        **changes,  # type: ignore[arg-type]
    )


class ClockFleet:
    """A fleet of one test's devices: a settable clock, the wheel's calls recorded."""

    def __init__(self, scenario: Scenario, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scenario = scenario
        self.meter = Meter(loop.time())
        self.qos = scenario.qos
        self.interval = scenario.stages[0].interval
        self.scheduled: list[float] = []
        self.readied = 0
        self.joined = 0
        self.failed = 0
        self.sent = 0

    def schedule(self, device: Device) -> None:
        self.scheduled.append(device.due)

    def ready(self, device: Device) -> None:
        device.blocked = False
        self.readied += 1

    def connected(self, device: Device, now: float) -> None:
        self.joined += 1

    def connect_failed(self, device: Device, now: float) -> None:
        self.failed += 1

    def published(self, device: Device, messages: int, now: float) -> None:
        self.sent += messages


def device_of(fleet: ClockFleet, link: MemoryLink | None = None, index: int = 0) -> Device:
    target = MqttTarget(fleet.scenario)
    behaviour_class = load("thermostat")
    info = DeviceInfo(index, f"dev{index + 1:05d}", "room-01")
    attributes = behaviour_class.attributes
    behaviour = behaviour_class(info, random.Random(index))
    behaviour.start(0.0)
    return Device(
        fleet,
        info,
        behaviour,
        link=link or MemoryLink(),
        dialect=target,
        topics=target.topics(info, attributes),
        encode=target.encoder(info, attributes),
        sampled=False,
    )


async def connected_device(fleet: ClockFleet) -> tuple[Device, MemoryConnection]:
    device = device_of(fleet)
    await device.connect()
    assert device.state == CONNECTED and isinstance(device.session, MemoryConnection)
    return device, device.session


def in_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in an event loop of its own."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


# ---------------------------------------------------------------------------- the device


@in_a_loop
async def test_a_device_on_time_sends_one_sample_and_files_the_next() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 2.0, 10.0)), asyncio.get_running_loop())
    device, connection = await connected_device(fleet)
    assert fleet.joined == 1
    device.due = 100.0
    device.fire(100.0, 1_000.0)
    assert [topic for topic, _, _ in connection.published] == [
        "stress/room-01/dev00001/temperature",
        "stress/room-01/dev00001/humidity",
        "stress/room-01/dev00001/setpoint",
    ]
    assert fleet.sent == 3 and fleet.meter.current.offered == 3
    assert device.due == 102.0 and fleet.scheduled == [102.0]
    assert fleet.meter.current.overruns == 0


@in_a_loop
async def test_a_late_device_sends_every_sample_it_owes_and_counts_them_late() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 1.0, 10.0)), asyncio.get_running_loop())
    device, connection = await connected_device(fleet)
    device.due = 100.0
    device.fire(103.5, 1_000.0)  # samples due at 100, 101, 102, 103
    assert len(connection.published) == 4 * 3
    assert device.due == 104.0
    assert fleet.meter.current.overruns == 3 * 3  # due 100, 101, 102: a whole interval late or more
    assert device.seq == 4


@in_a_loop
async def test_at_qos_1_the_window_holds_samples_back_until_acks_free_half_of_it() -> None:
    fleet = ClockFleet(
        scenario(timeline("steady", 1, 1.0, 10.0), qos=1, inflight=6), asyncio.get_running_loop()
    )
    device, connection = await connected_device(fleet)
    device.due = 100.0
    device.fire(104.0, 1_000.0)  # five samples due, the window takes two (six messages)
    assert len(connection.published) == 6 and len(device.inflight) == 6
    assert device.blocked and device.due == 102.0
    ids = [packet_id for _, _, packet_id in connection.published]
    assert ids == [1, 2, 3, 4, 5, 6]
    device.on_puback(1, 0)
    device.on_puback(2, 0)
    assert fleet.readied == 0  # four in flight: more than half the window
    device.on_puback(3, 0)
    assert fleet.readied == 1 and not device.blocked
    assert fleet.meter.current.acked == 3
    device.on_puback(3, 0)  # an ack for what is no longer in flight is ignored
    assert fleet.meter.current.acked == 3


@in_a_loop
async def test_a_refused_ack_is_an_error_named_by_its_reason() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 1.0, 10.0), qos=1), asyncio.get_running_loop())
    device, _connection = await connected_device(fleet)
    device.due = 100.0
    device.fire(100.0, 1_000.0)
    device.on_puback(1, 0x97)
    assert fleet.meter.current.errors == {("ack", "puback-quota-exceeded"): 1}


@in_a_loop
async def test_a_disconnected_device_counts_what_it_missed_as_failed() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 0.5, 10.0)), asyncio.get_running_loop())
    device = device_of(fleet)
    device.due = 10.0
    device.fire(11.2, 1_000.0)  # due 10.0, 10.5, 11.0: three samples of three messages
    assert fleet.meter.current.offered == 9
    assert fleet.meter.current.errors == {("publish", "not-connected"): 9}
    assert device.due == 11.5


@in_a_loop
async def test_a_refused_connection_is_counted_and_retried_through_the_fleet() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 1.0, 10.0)), asyncio.get_running_loop())
    device = device_of(fleet, MemoryLink(refuse="connack-not-authorized"))
    await device.connect()
    assert device.state == WAITING and fleet.failed == 1
    assert fleet.meter.current.errors == {("connect", "connack-not-authorized"): 1}


def test_the_backoff_grows_with_each_attempt_and_stays_within_its_bounds() -> None:
    fleet = ClockFleet(
        scenario(timeline("steady", 1, 1.0, 10.0), reconnect_min=0.5, reconnect_max=8.0),
        asyncio.new_event_loop(),
    )
    device = device_of(fleet)
    caps = [device.backoff(1.0) for _ in range(8)]
    assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert device.backoff(0.0) == pytest.approx(0.05)  # a tenth of the least, never 0
    fleet.loop.close()


@in_a_loop
async def test_a_device_taken_over_again_and_again_gives_up() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 1.0, 10.0)), asyncio.get_running_loop())
    device = device_of(fleet)
    for attempt in range(TAKEN_OVER_LIMIT):
        await device.connect()
        device.on_lost("server-disconnect-session-taken-over", "the broker ended it")
        assert (device.state == STOPPED) == (attempt == TAKEN_OVER_LIMIT - 1)
    assert fleet.failed == TAKEN_OVER_LIMIT - 1
    named = [event for event in fleet.meter.current.errors if event[0] == "connection"]
    assert named == [("connection", "session-taken-over")]


@in_a_loop
async def test_churn_leaves_cleanly_and_a_storm_cuts() -> None:
    fleet = ClockFleet(scenario(timeline("steady", 1, 1.0, 10.0), qos=1), asyncio.get_running_loop())
    device, connection = await connected_device(fleet)
    device.due = 100.0
    device.fire(100.0, 1_000.0)
    device.drop("churn", 100.1, abrupt=False)
    assert connection.closed and device.state == WAITING and not device.inflight
    assert fleet.meter.current.errors[("ack", "churn")] == 3
    await device.connect()
    again = device.session
    assert isinstance(again, MemoryConnection)
    device.drop("storm", 101.0, abrupt=True)
    assert not again.closed and not again.connected and device.state == WAITING


# ---------------------------------------------------------------------------- the wheel


@dataclass
class Due:
    """What the wheel needs of a device: when it is due, and a record of its firing."""

    due: float
    fired: list[float] = field(default_factory=list)
    slot: int = -1
    state: int = CONNECTED
    queued: bool = False
    blocked: bool = False

    def fire(self, now: float, epoch_ms: float) -> None:
        self.fired.append(now)


def test_the_wheel_fires_each_device_in_the_millisecond_it_is_due() -> None:
    clock = [100.0]
    wheel = Wheel(lambda: clock[0])
    early, late, later = Due(100.0025), Due(100.0101), Due(100.5)
    for item in (late, early, later):
        wheel.schedule(item)  # type: ignore[arg-type]
    wheel.fire_due(100.002)
    assert early.fired == [] and late.fired == []
    wheel.fire_due(100.003)
    assert early.fired == [100.003] and late.fired == []
    wheel.fire_due(100.011)
    assert late.fired == [100.011] and later.fired == []


def test_a_device_due_in_a_millisecond_already_fired_goes_to_the_ready_list() -> None:
    wheel = Wheel(lambda: 50.0)
    wheel.fire_due(50.0)
    past = Due(49.0)
    wheel.schedule(past)  # type: ignore[arg-type]
    assert past.queued
    wheel.fire_due(50.0)
    assert past.fired == [50.0] and not past.queued


def test_the_end_of_a_stage_fires_what_is_due_in_its_last_partial_millisecond() -> None:
    wheel = Wheel(lambda: 10.0)
    inside, outside = Due(10.0004), Due(10.0008)
    for item in (inside, outside):
        wheel.schedule(item)  # type: ignore[arg-type]
    wheel.fire_stage_end(10.0005)
    assert inside.fired == [10.0005] and outside.fired == []


def test_stopped_devices_and_moved_ones_are_not_fired_from_their_old_slot() -> None:
    wheel = Wheel(lambda: 0.0)
    stopped, moved = Due(0.0015), Due(0.0015)
    for item in (stopped, moved):
        wheel.schedule(item)  # type: ignore[arg-type]
    stopped.state = STOPPED
    moved.due = 0.0035
    wheel.schedule(moved)  # type: ignore[arg-type]
    wheel.fire_due(0.002)
    assert stopped.fired == [] and moved.fired == []
    wheel.fire_due(0.004)
    assert moved.fired == [0.004]


# ---------------------------------------------------------------------------- the engine


def run_engine(run: Scenario) -> tuple[Engine, MemoryTarget, list[int]]:
    target = MemoryTarget(run)

    async def main() -> tuple[Engine, list[int]]:
        engine = Engine(run, target)
        seconds = await engine.run()
        return engine, [second.sent for second in seconds]

    engine, sent = asyncio.run(main())
    return engine, target, sent


def test_a_whole_timeline_sends_exactly_what_it_is_due_without_a_broker() -> None:
    # 20 devices every 0.25 s for 3 s: 12 samples of 3 messages each
    run = scenario(timeline("steady", 20, 0.25, 3.0))
    engine, target, sent = run_engine(run)
    assert sum(sent) == 20 * 12 * 3
    assert engine.meter.fleet == 20
    for name, link in target.links.items():
        (connection,) = link.connections
        values = [payload for topic, payload, _ in connection.published if topic.endswith("/temperature")]
        assert len(values) == 12, name
        assert connection.closed  # every device left cleanly at the end


def test_a_ramp_grows_the_fleet_stage_by_stage() -> None:
    run = scenario(timeline("ramp", 12, 0.5, 3.0, stages=3))  # 4, 8, 12 devices for 1 s each
    engine, target, sent = run_engine(run)
    assert len(target.links) == 12
    assert sum(sent) == (4 + 8 + 12) * 2 * 3
    assert engine.meter.fleet == 12


def test_devices_that_cannot_connect_are_counted_and_the_run_still_ends() -> None:
    class Refusing(MemoryTarget):
        def make_device(
            self, fleet: Fleet, dial: Dial, info: DeviceInfo, behaviour: Behaviour, *, sampled: bool
        ) -> Device:
            device = super().make_device(fleet, dial, info, behaviour, sampled=sampled)
            self.links[info.device_id].refuse = "tcp-refused"
            return device

    run = scenario(timeline("steady", 5, 0.5, 2.0), reconnect_min=0.2, reconnect_max=0.4)
    target = Refusing(run)

    async def main() -> Engine:
        engine = Engine(run, target)
        await engine.run()
        return engine

    engine = asyncio.run(main())
    refused = sum(second.errors.get(("connect", "tcp-refused"), 0) for second in engine.seconds)
    assert refused >= 5 + 5  # every device, then again after its backoff
    assert sum(second.sent for second in engine.seconds) == 0
    assert all(link.opened_count >= 2 for link in target.links.values())
