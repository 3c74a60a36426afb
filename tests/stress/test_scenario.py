"""Scenarios and timelines: the shapes, and every setting that cannot be run."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stress.errors import ScenarioError
from stress.scenario import Broker, Scenario, valid_level
from stress.shapes import SHAPES, Stage, timeline

property_test = settings(database=None, deadline=None)

STEADY = timeline("steady", 10, 1.0, 5.0)


def scenario(broker: Broker | None = None, **changes: Any) -> Scenario:
    return Scenario(target="mqtt", broker=broker or Broker(), stages=changes.pop("stages", STEADY), **changes)


# ---------------------------------------------------------------------------- timeline()


def test_steady_is_one_spread_stage() -> None:
    assert timeline("steady", 10, 1.0, 5.0) == (Stage(10, 1.0, 5.0, burst=False),)


def test_burst_is_one_stage_publishing_together() -> None:
    assert timeline("burst", 7, 0.5, 30.0) == (Stage(7, 0.5, 30.0, burst=True),)


def test_ramp_of_ten_devices_in_four_stages() -> None:
    stages = timeline("ramp", 10, 2.0, 60.0, stages=4)
    assert [stage.devices for stage in stages] == [3, 5, 8, 10]
    assert [stage.duration for stage in stages] == [15.0] * 4
    assert {stage.interval for stage in stages} == {2.0}
    assert not any(stage.burst for stage in stages)


def test_a_ramp_of_one_stage_is_the_whole_fleet() -> None:
    assert timeline("ramp", 5, 1.0, 10.0, stages=1) == (Stage(5, 1.0, 10.0),)


@property_test
@given(
    devices=st.integers(1, 100_000),
    stages=st.integers(1, 50),
    duration=st.floats(0.001, 1e6),
    interval=st.floats(0.0, 3600.0),
)
def test_a_ramp_climbs_to_the_fleet_and_lasts_the_whole_duration(
    devices: int, stages: int, duration: float, interval: float
) -> None:
    stages = min(stages, devices)
    ramp = timeline("ramp", devices, interval, duration, stages=stages)
    counts = [stage.devices for stage in ramp]
    assert len(ramp) == stages
    assert counts[0] >= 1
    assert counts[-1] == devices
    assert counts == sorted(counts)
    assert sum(stage.duration for stage in ramp) == pytest.approx(duration, rel=1e-12)
    assert all(stage.interval == interval for stage in ramp)
    # equal steps: stage k has the straight line's devices * k / stages, rounded up
    for k, count in enumerate(counts, start=1):
        line = devices * k / stages
        assert line <= count < line + 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("steady", 0, 1.0, 5.0), "--devices must be 1 or more, not 0"),
        (("burst", -3, 1.0, 5.0), "--devices must be 1 or more, not -3"),
        (("ramp", 3, 1.0, 5.0, 4), r"--stages must be 1\.\.3 \(one device at least per step\), not 4"),
        (("ramp", 10, 1.0, 5.0, 0), r"--stages must be 1\.\.10 .*, not 0"),
        (("ramp", 10, 1.0, 5.0, -1), r"--stages must be 1\.\.10 .*, not -1"),
        (("spike", 10, 1.0, 5.0), "unknown shape 'spike': choose one of steady, ramp, burst"),
        (("", 10, 1.0, 5.0), "unknown shape ''"),
    ],
)
def test_a_timeline_that_cannot_be_run_is_refused(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        timeline(*args)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("interval", "duration"), [(math.nan, 5.0), (math.inf, 5.0), (-1.0, 5.0), (1.0, 0.0), (1.0, math.nan)]
)
def test_a_timeline_refuses_bad_intervals_and_durations(shape: str, interval: float, duration: float) -> None:
    with pytest.raises(ScenarioError):
        timeline(shape, 10, interval, duration)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- Stage


def test_a_stage_may_have_no_devices_and_a_zero_interval() -> None:
    assert Stage(0, 0.0, 1.0).devices == 0  # capacity mode: publish as fast as possible


@pytest.mark.parametrize(
    ("devices", "interval", "duration", "match"),
    [
        (-1, 1.0, 1.0, "a stage needs 0 or more devices, not -1"),
        (1, -0.001, 1.0, "interval must be 0 .* or more seconds, not -0.001"),
        (1, math.nan, 1.0, "interval must be 0 .* not nan"),
        (1, math.inf, 1.0, "interval must be 0 .* not inf"),
        (1, -math.inf, 1.0, "interval must be 0 .* not -inf"),
        (1, 1.0, 0.0, "a stage lasts more than 0 seconds, not 0.0"),
        (1, 1.0, -5.0, "a stage lasts more than 0 seconds, not -5.0"),
        (1, 1.0, math.nan, "a stage lasts more than 0 seconds, not nan"),
        (1, 1.0, math.inf, "a stage lasts more than 0 seconds, not inf"),
    ],
)
def test_a_stage_that_cannot_be_run_is_refused(
    devices: int, interval: float, duration: float, match: str
) -> None:
    with pytest.raises(ScenarioError, match=match):
        Stage(devices, interval, duration)


# ---------------------------------------------------------------------------- Scenario


def test_a_default_scenario_is_valid_and_knows_its_fleet() -> None:
    ramp = scenario(stages=timeline("ramp", 10, 2.0, 60.0, 4), shape="ramp")
    assert (ramp.devices, ramp.duration, ramp.interval) == (10, 60.0, 2.0)
    plain = scenario()
    assert (plain.devices, plain.duration, plain.interval) == (10, 5.0, 1.0)
    assert (plain.qos, plain.behaviour, plain.prefix, plain.inflight) == (0, "thermostat", "dev", 20)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"stages": ()}, "the timeline has no stage"),
        ({"qos": 3}, "--qos must be 0, 1 or 2, not 3"),
        ({"qos": -1}, "--qos must be 0, 1 or 2, not -1"),
        ({"rooms": 0}, "--rooms must be 1 or more, not 0"),
        ({"inflight": 0}, r"--inflight must be 1\.\.65535, not 0"),
        ({"inflight": 65_536}, r"--inflight must be 1\.\.65535, not 65536"),
        ({"connect_timeout": 0.0}, "--connect-timeout must be more than 0 seconds"),
        ({"connect_timeout": -1.0}, "--connect-timeout"),
        ({"connect_timeout": math.nan}, "--connect-timeout"),
        ({"connect_rate": -0.5}, r"--connect-rate must be 0 \(no limit\) or more per second"),
        ({"connect_rate": math.nan}, "--connect-rate"),
        ({"connect_concurrency": 0}, "--connect-concurrency must be 1 or more"),
        ({"reconnect_min": 0.0}, "--reconnect-min must be more than 0 and at most --reconnect-max"),
        ({"reconnect_min": -1.0}, "--reconnect-min"),
        ({"reconnect_min": math.nan}, "--reconnect-min"),
        ({"reconnect_min": 31.0}, "--reconnect-min"),  # above the default --reconnect-max of 30
        ({"reconnect_min": 2.0, "reconnect_max": 1.0}, "--reconnect-min"),
        ({"reconnect_max": math.nan}, "--reconnect-min"),
        ({"ack_timeout": 0.0}, "--ack-timeout must be more than 0 seconds"),
        ({"ack_timeout": -30.0}, "--ack-timeout"),
        ({"ack_timeout": math.nan}, "--ack-timeout"),
        ({"drain": -0.1}, "--drain must be 0 or more seconds"),
        ({"drain": math.nan}, "--drain"),
        ({"drain": -math.inf}, "--drain"),
        ({"e2e_devices": -1}, "--e2e-devices must be 0 or more"),
        ({"collapse_share": 0.0}, "--collapse-share must be more than 0 and at most 1"),
        ({"collapse_share": 1.01}, "--collapse-share"),
        ({"collapse_share": -0.5}, "--collapse-share"),
        ({"collapse_share": math.nan}, "--collapse-share"),
        ({"collapse_share": math.inf}, "--collapse-share"),
        ({"sample_every": 0}, "--sample-every must be 1 or more"),
        ({"prefix": ""}, r"--prefix '' does not make valid device names \(empty name\)"),
        ({"prefix": "dev\u200b"}, "--prefix .* U\\+200B"),
        ({"prefix": " dev"}, "white space"),
        ({"prefix": "d" * 196}, r"longer than 200 characters"),
        ({"prefix": "a/b"}, "--prefix"),
        ({"prefix": "/"}, "--prefix"),
        ({"prefix": "dev+"}, "--prefix"),
        ({"prefix": "#"}, "--prefix"),
        ({"prefix": "d\x00"}, "--prefix"),
        ({"stages": (Stage(10_000_000, 1.0, 1.0),)}, "at most 9,999,999 devices"),
        ({"stages": (Stage(1, 1.0, 1.0), Stage(10_000_000, 1.0, 1.0))}, "at most 9,999,999 devices"),
    ],
)
def test_a_setting_that_cannot_be_run_is_refused_in_one_line(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ScenarioError, match=match) as caught:
        scenario(**changes)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("broker", "match"),
    [
        (Broker(port=0), r"--port must be 1\.\.65535, not 0"),
        (Broker(port=65_536), r"--port must be 1\.\.65535, not 65536"),
        (Broker(port=-1883), "--port"),
        (Broker(keepalive=-1), r"--keepalive must be 0\.\.65535 seconds"),
        (Broker(keepalive=65_536), "--keepalive"),
    ],
)
def test_a_broker_that_cannot_be_reached_is_refused(broker: Broker, match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        scenario(broker)


@pytest.mark.parametrize(
    "changes",
    [
        {"qos": 1},
        {"rooms": 1},
        {"inflight": 1},
        {"inflight": 65_535},
        {"connect_rate": 0.0},
        {"reconnect_min": 30.0, "reconnect_max": 30.0},
        {"drain": 0.0},
        {"e2e_devices": 0},
        {"collapse_share": 1.0},
        {"sample_every": 1},
        {"prefix": "sensor-ü.1"},
        {"stages": (Stage(9_999_999, 1.0, 1.0),)},
    ],
)
def test_the_edges_of_every_range_are_accepted(changes: dict[str, Any]) -> None:
    scenario(**changes)
    scenario(Broker(port=1, keepalive=0))
    scenario(Broker(port=65_535, keepalive=65_535))


@pytest.mark.parametrize(
    "changes",
    [
        {"connect_timeout": math.inf},
        {"ack_timeout": math.inf},
        {"drain": math.inf},
        {"reconnect_max": math.inf},
        {"reconnect_min": math.inf, "reconnect_max": math.inf},
    ],
)
def test_an_infinite_timeout_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ScenarioError):
        scenario(**changes)


def test_a_scenario_is_frozen() -> None:
    plain = scenario()
    with pytest.raises(AttributeError):
        plain.qos = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "ok"),
    [("office", True), ("a b", True), ("ü", True), ("", False), ("a/b", False), ("+", False), ("a#", False)],
)
def test_valid_level(text: str, ok: bool) -> None:
    assert valid_level(text) is ok
