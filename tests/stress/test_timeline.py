"""The run's timeline: what was in force (fleet size, interval, pauses) and when it changed, from
the run's events and seconds alone; nothing here needs a broker."""

from __future__ import annotations

from typing import Any

from stress.control import RunControl
from stress.measure.meter import Event, Second
from stress.results.model import Change
from stress.results.timeline import MAX_CHANGES, Timeline, change_json, change_text
from stress.scenario import Broker, Scenario
from stress.shapes import Stage, timeline


def ramp() -> Scenario:
    """Two stages of 10 s: 10 devices every second, then 20 every half second."""
    stages = (Stage(10, 1.0, 10.0), Stage(20, 0.5, 10.0))
    return Scenario(target="mqtt", broker=Broker(port=1884), stages=stages)


class Run:
    """A timeline fed as a run feeds it: events through one path, which its own events join."""

    def __init__(self, scenario: Scenario) -> None:
        self.events: list[Event] = []
        self.timeline = Timeline(scenario, self.event)
        self.told: list[Change] = []
        self.timeline.on_change = self.told.append

    def event(self, event: Event) -> None:
        self.events.append(event)
        self.timeline.event(event)

    def control(self, t: float, **request: Any) -> None:
        self.event({"event": "control", **request, "t": t})

    def second(self, t: int) -> Second:
        second = Second(t)
        self.timeline.second(second)
        return second

    def what(self) -> list[tuple[float, str, int | None, float | None, int]]:
        return [(c.t, c.what, c.devices, c.interval_s, c.paused) for c in self.timeline.changes]


def test_the_start_is_the_first_stage() -> None:
    run = Run(ramp())
    assert run.what() == [(0.0, "start", 10, 1.0, 0)]
    first = run.second(0)
    assert (first.devices, first.interval) == (10, 1.0)


def test_each_stage_begins_on_the_clock_from_the_run_phase() -> None:
    run = Run(ramp())
    run.event({"event": "phase", "phase": "run", "t": 0.5})
    assert [run.second(t).devices for t in range(10)] == [10] * 10  # the stage begins at 10.5
    eleventh = run.second(10)
    assert (eleventh.devices, eleventh.interval) == (20, 0.5)
    assert run.what()[1:] == [(10.5, "stage", 20, 0.5, 0)]
    stage = next(event for event in run.events if event["event"] == "stage")
    assert stage == {"event": "stage", "stage": 2, "devices": 20, "interval_s": 0.5, "t": 10.5}


def test_scale_and_rate_are_in_force_until_the_next_stage() -> None:
    run = Run(ramp())
    run.event({"event": "phase", "phase": "run", "t": 0.0})
    run.control(3.25, op="scale", devices=25)
    run.control(4.5, op="rate", interval_s=2.0)
    assert (run.second(4).devices, run.second(5).interval) == (25, 2.0)
    run.control(10.2, op="pause", count=3, paused=3, devices=["dev00001"])  # after the stage began
    assert run.what() == [
        (0.0, "start", 10, 1.0, 0),
        (3.25, "scale", 25, 1.0, 0),
        (4.5, "rate", 25, 2.0, 0),
        (10.0, "stage", 20, 0.5, 0),  # the new stage forgets what was asked
        (10.2, "pause", 20, 0.5, 3),
    ]
    assert run.timeline.in_force == (20, 0.5)
    assert [change_text(change) for change in run.timeline.changes] == [
        "start: 10 devices every 1 s",
        "scale to 25 devices",
        "rate: every 2 s",
        "stage 2: 20 devices every 0.5 s",
        "pause 3 devices (3 paused)",
    ]
    assert run.told == run.timeline.changes[1:]  # the start was made before anyone listened


def test_a_run_that_stops_publishing_begins_no_more_stages() -> None:
    run = Run(ramp())
    run.event({"event": "phase", "phase": "run", "t": 0.0})
    run.control(4.0, op="stop")
    run.event({"event": "phase", "phase": "drain", "t": 4.1})
    for t in range(25):
        run.second(t)
    assert [c.what for c in run.timeline.changes] == ["start", "stop"]
    assert run.timeline.in_force == (10, 1.0)


def test_the_storms_of_several_processes_are_one() -> None:
    run = Run(ramp())
    run.event({"event": "storm", "devices": 5, "t": 6.001, "process": 0})
    run.event({"event": "storm", "devices": 4, "t": 6.002, "process": 1})
    run.event({"event": "storm", "devices": 9, "t": 9.0, "process": 0})
    assert [(c.t, c.what, c.count) for c in run.timeline.changes[1:]] == [
        (6.001, "storm", 9),
        (9.0, "storm", 9),
    ]
    assert [(c.t, c.count) for c in run.told] == [(6.001, 5), (6.001, 9), (9.0, 9)]  # told again, whole
    assert change_text(run.timeline.changes[1]) == "storm: 9 devices dropped at once"


def test_other_events_change_nothing() -> None:
    run = Run(ramp())
    for event in (
        {"event": "connected", "device": "dev00001", "t": 1.0},
        {"event": "control", "op": "status", "t": 1.0},
        {"event": "control", "op": "scale", "devices": 5},  # no time: not one of the run's
        {"event": "error", "stage": "connect", "reason": "refused", "t": 2.0},
    ):
        run.event(event)
    assert run.what() == [(0.0, "start", 10, 1.0, 0)]


def test_the_changes_kept_are_bounded() -> None:
    run = Run(ramp())
    for n in range(MAX_CHANGES + 5):
        run.control(n / 100, op="pause" if n % 2 else "resume", count=1, paused=n % 2)
    assert len(run.timeline.changes) == MAX_CHANGES
    assert run.timeline.notes() == [f"timeline: 6 more changes happened after the first {MAX_CHANGES:,} kept"]
    assert run.timeline.paused == 0  # what is in force is still followed


class Controls:
    """What a run offers to be steered by, doing nothing."""

    def stop(self, reason: str) -> None: ...

    def set_paused(self, indexes: list[int], paused: bool) -> None: ...

    def scale(self, devices: int) -> None: ...

    def set_interval(self, interval: float) -> None: ...

    def connected_count(self) -> int:
        return 0


def test_each_request_carried_out_is_a_control_event() -> None:
    scenario = Scenario(target="mqtt", broker=Broker(port=1884), stages=timeline("steady", 50, 1.0, 60.0))
    recorded: list[Event] = []
    now = iter([1.5, 2.25, 3.0, 4.0, 5.0])
    control = RunControl(scenario, "run", Controls(), record=recorded.append, clock=lambda: next(now))
    assert control.handle({"op": "scale", "devices": 80})["ok"]
    assert control.handle({"op": "rate", "interval": 2})["ok"]
    assert control.handle({"op": "pause", "devices": [f"dev{n:05d}" for n in range(1, 13)]})["ok"]
    assert not control.handle({"op": "scale", "devices": -1})["ok"]  # refused: nothing recorded
    assert control.handle({"op": "status"})["ok"]  # asks, changes nothing
    assert control.handle({"op": "stop"})["ok"]
    assert control.handle({"op": "stop"})["ok"]  # the second skips the drain: the stop was recorded
    assert recorded == [
        {"event": "control", "op": "scale", "devices": 80, "t": 1.5},
        {"event": "control", "op": "rate", "interval_s": 2.0, "t": 2.25},
        {
            "event": "control",
            "op": "pause",
            "count": 12,
            "paused": 12,
            "devices": [f"dev{n:05d}" for n in range(1, 11)],
            "t": 3.0,
        },
        {"event": "control", "op": "stop", "t": 4.0},
    ]


def test_a_change_as_a_live_view_gets_it() -> None:
    change = Change(12.5, "rate", devices=250, interval_s=0.0, paused=2, stage=1)
    assert change_json(change) == {
        "t": 12.5,
        "what": "rate",
        "devices": 250,
        "interval_s": 0.0,
        "paused": 2,
        "stage": 1,
        "count": None,
        "text": "rate: as fast as the target takes",
    }
