"""Seconds and the run summary: merging across processes, the wire form, collapse and summary.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stress.measure.histogram import Histogram
from stress.measure.meter import COUNTERS, HISTOGRAMS, Meter, Second
from stress.results import summary as summaries
from stress.results.model import Collapse
from stress.results.summary import COLLAPSE_MIN_OFFERED, RunFacts, collapse, merge_by_second
from stress.scenario import Broker, Scenario
from stress.shapes import timeline

property_test = settings(database=None, deadline=None)


def ms(value: float) -> float:
    """``value`` milliseconds in seconds, recorded as exactly ``value * 1000`` µs."""
    return (round(value * 1000) + 0.5) / 1_000_000


def snapshot(second: Second) -> dict[str, Any]:
    """Everything merging must get exactly right (CPU and wall time aside)."""
    out: dict[str, Any] = {name: getattr(second, name) for name in COUNTERS}
    out.update(t=second.t, phase=second.phase, connected=second.connected, fleet=second.fleet)
    out["errors"] = dict(second.errors)
    for name in HISTOGRAMS:
        histogram: Histogram = getattr(second, name)
        out[name] = (list(histogram.counts), histogram.count, histogram.max_us)
    return out


def second(t: int, phase: str = "run", **values: Any) -> Second:
    return Second(t, phase=phase, **values)


# ---------------------------------------------------------------------------- Second


def test_merge_adds_counters_and_errors_and_merges_histograms() -> None:
    one = second(3, offered=10, sent=9, acked=8, failed=1, delivered=2, e2e_expected=3, connects=4)
    one.disconnects, one.overruns, one.connected, one.fleet = 1, 2, 50, 60
    one.cpu_s, one.cpu_busiest_s, one.wall_s = 0.25, 0.25, 1.0
    one.errors = {("ack", "timeout"): 1, ("connect", "refused"): 2}
    one.ack.record(ms(2))
    one.connect.record(ms(30))
    other = second(3, offered=5, sent=5, acked=5, delivered=1, e2e_expected=1, connects=1)
    other.disconnects, other.overruns, other.connected, other.fleet = 0, 1, 40, 40
    other.cpu_s, other.cpu_busiest_s, other.wall_s = 0.5, 0.5, 1.02
    other.errors = {("ack", "timeout"): 4, ("publish", "closed"): 1}
    other.ack.record(ms(9))
    other.lag.record(ms(1))
    one.merge(other)
    assert {name: getattr(one, name) for name in (*COUNTERS, "t", "phase", "connected", "fleet")} == {
        "t": 3,
        "phase": "run",
        "offered": 15,
        "sent": 14,
        "acked": 13,
        "failed": 1,
        "delivered": 3,
        "e2e_expected": 4,
        "connects": 5,
        "disconnects": 1,
        "overruns": 3,
        "connected": 90,
        "fleet": 100,
    }
    assert (one.lateness.count, one.e2e.count) == (0, 0)
    assert one.errors == {("ack", "timeout"): 5, ("connect", "refused"): 2, ("publish", "closed"): 1}
    assert (one.ack.count, one.ack.max_us, one.ack.percentile(0.5)) == (2, 9_000, 2.015)  # 2 ms' bucket
    assert (one.connect.count, one.lag.count, one.lag.max_us) == (1, 1, 1_000)
    assert one.cpu_s == 0.75
    assert one.cpu_busiest_s == 0.5  # the busiest process, so one saturated process stays visible
    assert one.wall_s == 1.02  # the longest, not the sum: the processes ran side by side
    assert other.errors == {("ack", "timeout"): 4, ("publish", "closed"): 1}  # the source is untouched
    assert other.ack.count == 1


def test_confirmed_is_acked_at_qos_1_and_sent_at_qos_0() -> None:
    assert second(1, sent=10, acked=7).confirmed(1) == 7
    assert second(1, sent=10).confirmed(1) == 0
    assert second(1, sent=10).confirmed(0) == 10


def filled_second() -> Second:
    filled = second(7, phase="drain", offered=100, sent=99, acked=97, failed=3, delivered=20, e2e_expected=21)
    filled.connects, filled.disconnects, filled.overruns, filled.connected, filled.fleet = 2, 1, 4, 99, 100
    filled.cpu_s, filled.cpu_busiest_s, filled.wall_s = 0.123456789, 0.1, 1.000001
    filled.errors = {
        ("ack", "timeout"): 2,
        ("publish", "back-pressure"): 1,
        ("connect", "refused, bad auth"): 5,
    }
    for value, name in [(0.5, "lateness"), (3, "ack"), (40, "e2e"), (12, "connect"), (0.2, "lag")]:
        getattr(filled, name).record(ms(value))
    filled.ack.record(ms(2_500_000))  # 41 minutes
    return filled


def test_the_wire_form_round_trips_through_json() -> None:
    original = filled_second()
    wire = json.loads(json.dumps(original.to_wire()))
    back = Second.from_wire(wire)
    assert snapshot(back) == snapshot(original)
    assert (back.cpu_s, back.cpu_busiest_s, back.wall_s) == (0.123456789, 0.1, 1.000001)
    assert back.errors == original.errors
    assert back.ack.percentile(0.99) == original.ack.percentile(0.99)
    assert back.to_wire() == original.to_wire()


def test_the_wire_form_of_an_empty_second() -> None:
    back = Second.from_wire(json.loads(json.dumps(Second(0, phase="connect").to_wire())))
    assert snapshot(back) == snapshot(Second(0, phase="connect"))


# ---------------------------------------------------------------------------- merge_by_second

#: One fact of a run: (process, second, what, amount or sample in ms).
facts = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 5),
        st.sampled_from([*COUNTERS, "connected", "fleet", *HISTOGRAMS, "error"]),
        st.integers(0, 50_000),
    ),
    max_size=200,
)


def record(seconds: dict[int, Second], t: int, what: str, amount: int) -> None:
    into = seconds.setdefault(t, Second(t))
    if what in HISTOGRAMS:
        getattr(into, what).record(ms(amount / 10))
    elif what == "error":
        key = ("ack" if amount % 2 else "connect", f"reason-{amount % 5}")
        into.errors[key] = into.errors.get(key, 0) + 1
    else:
        setattr(into, what, getattr(into, what) + amount)


@property_test
@given(facts)
def test_merging_processes_equals_one_process_that_recorded_everything(
    events: list[tuple[int, int, str, int]],
) -> None:
    processes: list[dict[int, Second]] = [{}, {}, {}]
    alone: dict[int, Second] = {}
    for process, t, what, amount in events:
        record(processes[process], t, what, amount)
        record(alone, t, what, amount)
    # each process hands its seconds over the wire, as the runner's workers do
    parts = [
        [Second.from_wire(json.loads(json.dumps(s.to_wire()))) for _t, s in sorted(seconds.items())]
        for seconds in processes
    ]
    merged = merge_by_second(parts)
    assert [s.t for s in merged] == sorted(alone)
    assert [snapshot(s) for s in merged] == [snapshot(alone[t]) for t in sorted(alone)]
    for s in merged:
        for name in HISTOGRAMS:
            assert getattr(s, name).summary() == getattr(alone[s.t], name).summary()


def test_merge_by_second_keeps_the_order_and_the_later_phase() -> None:
    first = [second(0, "connect", connects=3), second(1, "run", sent=5), second(3, "drain", acked=1)]
    other = [second(1, "run", sent=7), second(0, "run", sent=1), second(2, "run", sent=2)]
    merged = merge_by_second([first, other])
    assert [(s.t, s.phase, s.sent, s.connects) for s in merged] == [
        (0, "run", 1, 3),  # one process already publishing makes it a run second
        (1, "run", 12, 0),
        (2, "run", 2, 0),
        (3, "drain", 0, 0),
    ]
    assert first[1].sent == 5  # the parts are not changed
    assert merge_by_second([]) == []
    assert merge_by_second([[], []]) == []


# ---------------------------------------------------------------------------- collapse()


def healthy(t: int, offered: int = 100, fleet: int = 100) -> Second:
    return second(t, offered=offered, sent=offered, acked=offered, connected=fleet, fleet=fleet)


def test_no_collapse_when_healthy() -> None:
    seconds = [second(0, "connect", connected=100, fleet=100), *(healthy(t) for t in range(1, 10))]
    seconds.append(second(10, "drain", connected=100, fleet=100))
    assert collapse(seconds, 0.9) is None
    assert collapse([], 0.9) is None


def test_the_first_publishing_second_is_skipped() -> None:
    first = second(1, offered=100, sent=100, acked=10, connected=20, fleet=100)  # starts part-way
    assert collapse([second(0, "connect"), first, healthy(2)], 0.9) is None


def test_acknowledged_below_the_share_is_a_collapse_at_that_second() -> None:
    seconds = [second(0, "connect"), healthy(1), healthy(2), healthy(3)]
    seconds.append(second(4, offered=200, sent=150, acked=89, connected=100, fleet=100))
    seconds.append(second(5, offered=200, sent=0, connected=100, fleet=100))  # later, and worse
    assert collapse(seconds, 0.5, qos=1) == Collapse(
        t=4, reason="acknowledged 44% of offered (89 of 200; below 50%)"
    )
    assert collapse(seconds[:4], 0.5, qos=1) is None


def test_at_qos_0_what_reached_the_broker_is_what_was_written() -> None:
    seconds = [healthy(1), second(2, offered=100, sent=89, connected=10, fleet=10)]
    assert collapse(seconds, 0.9) == Collapse(t=2, reason="written 89% of offered (89 of 100; below 90%)")
    seconds[1].sent = 90
    assert collapse(seconds, 0.9) is None  # exactly the share is not below it


def test_a_quiet_second_is_never_a_collapse() -> None:
    quiet = second(2, offered=COLLAPSE_MIN_OFFERED - 1, sent=0, connected=10, fleet=10)
    assert collapse([healthy(1), quiet], 0.9) is None
    quiet.offered = COLLAPSE_MIN_OFFERED
    assert collapse([healthy(1), quiet], 0.9) == Collapse(
        t=2, reason="written 0% of offered (0 of 10; below 90%)"
    )


def test_connected_below_the_share_of_the_fleet_is_a_collapse() -> None:
    seconds = [healthy(1), healthy(2), second(3, offered=0, connected=79, fleet=100), healthy(4)]
    assert collapse(seconds, 0.8) == Collapse(t=3, reason="79 of 100 devices connected (below 80%)")
    seconds[2].connected = 80
    assert collapse(seconds, 0.8) is None


def test_only_publishing_seconds_count() -> None:
    connecting = second(5, "connect", offered=100, sent=0, connected=0, fleet=100)
    draining = second(9, "drain", offered=100, sent=0, connected=0, fleet=100)
    assert collapse([healthy(1), connecting, healthy(6), draining], 0.9) is None


def test_a_fleet_not_yet_started_is_not_a_collapse() -> None:
    assert collapse([healthy(1), second(2, offered=0, connected=0, fleet=0)], 0.9) is None


# ---------------------------------------------------------------------------- build()


def build(scenario: Scenario, seconds: Sequence[Second], facts: RunFacts) -> dict[str, Any]:
    """The ``summary.json`` document of a run."""
    return summaries.build(scenario, seconds, facts).to_json()


def scenario(qos: int = 1, **changes: Any) -> Scenario:
    return Scenario(
        target="mqtt",
        broker=Broker(host="broker.test", port=1884),
        stages=timeline("steady", 10, 1.0, 2.0),
        qos=qos,
        **changes,
    )


FACTS = RunFacts(
    run_id="20260101-000000-mqtt-10", started_at=1_767_225_600.25, ended_at=1_767_225_605.5, run_seconds=2.0
)


def run_seconds() -> list[Second]:
    """A small run: connecting, two publishing seconds, and the drain."""
    connecting = second(0, "connect", connects=10, connected=10, fleet=10)
    for value in range(1, 11):
        connecting.connect.record(ms(value))
    one = second(1, offered=10, sent=10, acked=8, failed=2, connected=10, fleet=10)
    one.errors = {("ack", "timeout"): 2}
    one.cpu_s, one.cpu_busiest_s, one.wall_s = 0.25, 0.25, 1.0
    one.lag.record(ms(2))
    two = second(2, offered=10, sent=10, acked=10, delivered=5, e2e_expected=5, connected=9, fleet=10)
    two.errors = {("connect", "timeout"): 1, ("connect", "refused"): 3}
    two.cpu_s, two.cpu_busiest_s, two.wall_s, two.overruns = 0.5, 0.5, 1.0, 3
    two.lag.record(ms(150))  # one stall: a saturated second
    for value in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18):
        (one if value <= 8 else two).ack.record(ms(value))
    for value in (20, 21, 22, 23, 24):
        two.e2e.record(ms(value))
    drain = second(3, "drain", acked=0, connected=0, fleet=10)
    return [connecting, one, two, drain]


def test_build_writes_every_key_of_the_summary() -> None:
    seconds = run_seconds()
    data = build(scenario(), seconds, FACTS)
    assert data["run_id"] == "20260101-000000-mqtt-10"
    assert data["target"] == "mqtt"
    assert (data["host"], data["port"], data["protocol"], data["tls"], data["qos"]) == (
        "broker.test",
        1884,
        "3.1.1",
        False,
        1,
    )
    assert data["devices"] == 10
    assert data["duration_s"] == 2.0
    assert (data["started_at"], data["ended_at"]) == ("2026-01-01T00:00:00.250Z", "2026-01-01T00:00:05.500Z")
    assert data["stages"] == [{"devices": 10, "interval_s": 1.0, "duration_s": 2.0, "burst": False}]
    assert (data["offered"], data["sent"], data["acked"], data["failed"]) == (20, 20, 18, 2)
    assert (data["observed"], data["sampled"]) == (5, 5)
    assert data["msgs_per_s"] == 9.0  # 18 acknowledged in 2 s
    assert data["offered_per_s"] == 10.0
    assert data["connections_peak"] == 10
    assert data["errors_by_reason"] == {"timeout": 3, "refused": 3}
    assert data["errors_by_stage"] == {"ack": {"timeout": 2}, "connect": {"refused": 3, "timeout": 1}}
    assert data["stopped"] == "completed"
    assert data["collapse"] is None
    json.dumps(data)  # summary.json


def test_build_gives_the_latency_percentiles_of_all_seconds() -> None:
    latency = build(scenario(), run_seconds(), FACTS)["latency_ms"]
    assert set(latency) >= {"connect", "ack", "e2e"}
    for name in ("connect", "ack", "e2e"):
        assert set(latency[name]) >= {"p50", "p95", "p99", "max"}
    assert latency["connect"] == Histogram.of(ms(v) for v in range(1, 11)).summary()
    assert latency["connect"]["p50"] == 5.055  # the upper edge of 5 ms's bucket (5.000-5.055)
    assert latency["connect"]["max"] == 10.0
    # p50 is the upper edge of its sample's bucket; p95 and p99 are capped by the exact maximum
    assert latency["ack"] == {"p50": 9.087, "p95": 18.0, "p99": 18.0, "max": 18.0, "count": 18}
    assert latency["e2e"] == {"p50": 22.015, "p95": 24.0, "p99": 24.0, "max": 24.0, "count": 5}
    assert latency["lateness"]["count"] == 0


def test_build_reports_the_generator_health() -> None:
    generator = build(scenario(), run_seconds(), FACTS)["generator"]
    assert set(generator) >= {"loop_lag_p99_ms", "cpu_percent", "overruns"}
    assert generator["loop_lag_p99_ms"] == 150.0
    assert generator["loop_lag_max_ms"] == 150.0
    assert generator["cpu_percent"] == 37.5  # 0.75 s of CPU over 2 s of publishing
    assert generator["busiest_process_cpu_percent"] == 37.5
    assert generator["overruns"] == 3
    assert generator["saturated"] is True  # one of two publishing seconds stalled 150 ms


def test_build_at_qos_0_has_no_acks_and_counts_what_was_written() -> None:
    seconds = run_seconds()
    for s in seconds:
        s.acked = 0
        s.ack = Histogram()
    data = build(scenario(qos=0), seconds, FACTS)
    assert data["acked"] is None
    assert data["msgs_per_s"] == 10.0  # 20 written in 2 s
    assert data["latency_ms"]["ack"] == {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}


def test_build_of_a_run_that_never_connected() -> None:
    seconds = [second(0, "connect", fleet=10), second(1, "drain", fleet=10)]
    seconds[0].errors = {("connect", "refused"): 10}
    data = build(scenario(), seconds, FACTS)
    assert (data["sent"], data["acked"], data["msgs_per_s"], data["connections_peak"]) == (0, 0, 0.0, 0)
    assert data["errors_by_reason"] == {"refused": 10}
    assert data["latency_ms"]["connect"]["p50"] is None
    assert data["generator"]["loop_lag_p99_ms"] is None
    assert data["generator"]["cpu_percent"] == 0.0
    assert data["generator"]["saturated"] is False
    assert data["collapse"] is None
    assert build(scenario(), [], FACTS)["connections_peak"] == 0


def test_build_reports_the_collapse_with_the_scenarios_share() -> None:
    seconds = [healthy(1, fleet=10), second(2, offered=100, sent=100, acked=60, connected=10, fleet=10)]
    assert build(scenario(collapse_share=0.5), seconds, FACTS)["collapse"] is None
    assert build(scenario(collapse_share=0.9), seconds, FACTS)["collapse"] == {
        "t": 2,
        "reason": "acknowledged 60% of offered (60 of 100; below 90%)",
    }


def test_a_broker_that_stops_acknowledging_at_qos_1_is_a_collapse() -> None:
    stalled = second(3, offered=100, sent=100, acked=0, connected=10, fleet=10)
    seconds: Sequence[Second] = [healthy(1, fleet=10), healthy(2, fleet=10), stalled]
    assert build(scenario(qos=1), seconds, FACTS)["collapse"] == {
        "t": 3,
        "reason": "acknowledged 0% of offered (0 of 100; below 90%)",
    }


def test_one_saturated_process_of_two_makes_the_generator_saturated() -> None:
    def publishing(t: int, cpu: float) -> Second:
        one = second(t, offered=10, sent=10, acked=10, connected=10, fleet=10)
        one.cpu_s, one.cpu_busiest_s, one.wall_s = cpu, cpu, 1.0
        return one

    busy = [publishing(1, 0.95), publishing(2, 0.95)]
    idle = [publishing(1, 0.1), publishing(2, 0.1)]
    merged = merge_by_second([busy, idle])
    generator = build(scenario(), merged, RunFacts(**{**vars(FACTS), "processes": 2}))["generator"]
    assert generator["cpu_percent"] == 105.0  # both processes, of one core
    assert generator["busiest_process_cpu_percent"] == 95.0
    assert generator["saturated"] is True


def test_the_connection_peak_counts_devices_connected_within_a_second() -> None:
    # A run stopped within its first second: every device connected, and left, in second 0
    meter = Meter(0.0)
    for name in ("dev00001", "dev00002", "dev00003"):
        meter.connected_device(name, 0.01, 0.1)
    for name in ("dev00001", "dev00002", "dev00003"):
        meter.disconnected_device(name, "stopped", 0.5)
    meter.connected_device("dev00001", 0.01, 0.6)
    only = meter.roll(1)
    assert (only.connected, only.connected_peak) == (1, 3)
    assert build(scenario(), [only], FACTS)["connections_peak"] == 3
    # Over processes the peaks add (they connect together), and so does the wire form
    other = Second.from_wire(json.loads(json.dumps(only.to_wire())))
    assert merge_by_second([[only], [other]])[0].connected_peak == 6
    # The next second starts from those still connected
    assert meter.current.connected_peak == 1
