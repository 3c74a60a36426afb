"""Load shapes beyond steady, ramp and burst: a sine wave of rate, bursts at random instants."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from stress import Broker, Scenario, run, timeline
from stress.errors import ScenarioError
from stress.shapes import MIN_BURST_GAP, Bursts, Stage, first_due, interval_at, offset
from tests.stress.plain_broker import PlainBroker

ATTRIBUTES = 3


def scenario(port: int, out: Path, stages: tuple[Stage, ...], **changes: Any) -> Scenario:
    return Scenario(
        target="mqtt", broker=Broker(port=port), stages=stages, out=out, e2e_devices=0, drain=2.0, **changes
    )


def sent_per_second(out: Path) -> list[int]:
    with (out / "timeseries.csv").open() as handle:
        return [int(row["sent"]) for row in csv.DictReader(handle) if row["phase"] == "run"]


@pytest.mark.integration
def test_a_wave_swings_the_rate_around_its_mean(broker: PlainBroker, tmp_path: Path) -> None:
    # 10 devices every 0.1 s: 300 messages a second on average, swinging by 80 % every 4 s
    stages = timeline("wave", 10, 0.1, 8.0, wave=(4.0, 0.8))
    summary = run(scenario(broker.port, tmp_path / "run", stages, shape="wave"), quiet=True)
    sent = sent_per_second(tmp_path / "run")
    assert len(sent) == 8
    # second 0 also holds the connections, so it may be short of a whole second of publishing
    crests, troughs = sent[1:2] + sent[4:6], sent[2:4] + sent[6:8]
    assert sent[0] > 300
    assert min(crests) > 400  # the mean of 1 + 0.8 sin over a quarter period: 1.5 x 300
    assert max(troughs) < 200
    assert abs(summary["sent"] - 8 * 300) <= 0.03 * 8 * 300  # two whole periods: the mean rate
    assert summary["failed"] == 0


def bursts(out: Path, process: int) -> dict[float, list[str]]:
    """The devices of ``process`` by the instant they published (every message is sampled)."""
    by_instant: dict[float, list[str]] = {}
    for line in (out / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "published" and event.get("process", 0) == process:
            by_instant.setdefault(event["t"], []).append(event["device"])
    return by_instant


@pytest.mark.integration
def test_random_bursts_come_at_random_instants_with_every_device_in_each(
    broker: PlainBroker, tmp_path: Path
) -> None:
    stages = timeline("random-burst", 10, 0.5, 6.0)
    summary = run(
        scenario(broker.port, tmp_path / "run", stages, shape="random-burst", sample_every=1, processes=2),
        quiet=True,
    )
    # Each process's five devices publish in the same tick; both processes at the same instants
    first, second = bursts(tmp_path / "run", 0), bursts(tmp_path / "run", 1)
    assert 6 <= len(first) <= 24  # 12 on average over 6 s
    assert sorted(map(sorted, first.values())) == [[f"dev{n:05d}" for n in range(1, 11, 2)]] * len(first)
    assert sorted(map(sorted, second.values())) == [[f"dev{n:05d}" for n in range(2, 11, 2)]] * len(second)
    assert len(second) == len(first)
    assert all(abs(a - b) < 0.1 for a, b in zip(sorted(first), sorted(second), strict=True))
    gaps = {round(b - a, 2) for a, b in itertools.pairwise(sorted(first))}
    assert len(gaps) > len(first) // 2  # not a regular grid
    assert summary["sent"] == len(first) * 10 * ATTRIBUTES
    assert summary["latency_ms"]["lateness"]["max"] < 100


def test_a_wave_timeline_is_one_stage_with_its_wave() -> None:
    (stage,) = timeline("wave", 10, 1.0, 10.0, wave=(30.0, 0.25))
    assert (stage.wave, stage.burst, stage.random_bursts) == ((30.0, 0.25), False, False)
    (burst,) = timeline("random-burst", 10, 1.0, 10.0)
    assert (burst.wave, burst.burst, burst.random_bursts) == (None, True, True)


@pytest.mark.parametrize("wave", [(0.0, 0.5), (-1.0, 0.5), (float("inf"), 0.5), (10.0, 0.96), (10.0, -0.1)])
def test_bad_waves_are_refused(wave: tuple[float, float]) -> None:
    with pytest.raises(ScenarioError, match="a wave needs a period"):
        Stage(10, 1.0, 10.0, wave=wave)


# The shapes themselves, as pure functions of the clock (no broker).


def test_a_burst_puts_every_device_on_the_instant() -> None:
    assert {offset(index, 2.0, burst=True) for index in range(100)} == {0.0}


@pytest.mark.parametrize("fleet", [7, 100, 10_000])
def test_offsets_spread_a_fleet_evenly_over_the_interval(fleet: int) -> None:
    interval = 3.0
    offsets = sorted(offset(index, interval, burst=False) for index in range(fleet))
    assert offsets[0] >= 0.0 and offsets[-1] < interval
    assert len(set(offsets)) == fleet
    gaps = [later - earlier for earlier, later in itertools.pairwise([*offsets, offsets[0] + interval])]
    # The golden ratio's points: at most three gap lengths, none over 2.7 times the even share
    assert max(gaps) < 2.7 * interval / fleet


def test_an_offset_is_the_same_share_of_any_interval() -> None:
    assert offset(41, 2.0, burst=False) == pytest.approx(2 * offset(41, 1.0, burst=False))
    assert offset(0, 5.0, burst=False) == 0.0


@pytest.mark.parametrize(
    ("now", "expected"),
    [(5.0, 10.0), (10.0, 10.0), (10.5, 12.0), (12.0, 12.0), (12.000001, 14.0), (101.0, 102.0)],
)
def test_the_first_due_instant_is_the_next_on_the_grid(now: float, expected: float) -> None:
    assert first_due(10.0, 2.0, now) == pytest.approx(expected)


def test_a_steady_stage_keeps_its_interval() -> None:
    stage = Stage(10, 0.5, 60.0)
    assert [interval_at(stage, t) for t in (0.0, 7.3, 59.9)] == [0.5, 0.5, 0.5]


def test_a_waves_interval_follows_the_sine_of_its_rate() -> None:
    stage = Stage(10, 1.0, 60.0, wave=(20.0, 0.5))
    assert interval_at(stage, 0.0) == pytest.approx(1.0)
    assert interval_at(stage, 5.0) == pytest.approx(1 / 1.5)  # the crest: 1.5 times the rate
    assert interval_at(stage, 10.0) == pytest.approx(1.0)
    assert interval_at(stage, 15.0) == pytest.approx(1 / 0.5)  # the trough
    assert interval_at(stage, 25.0) == pytest.approx(interval_at(stage, 5.0))  # periodic
    # Over a whole period the rate averages the mean
    rates = [1 / interval_at(stage, t / 100) for t in range(2000)]
    assert sum(rates) / len(rates) == pytest.approx(1.0, abs=1e-9)


def test_random_bursts_are_the_same_for_one_run_and_stage() -> None:
    def instants(seed: int, stage_number: int) -> list[float]:
        bursts = Bursts(1.0, 100.0, seed, stage_number)
        found = []
        for _ in range(50):
            found.append(bursts.next)
            bursts.advance(bursts.next)
        return found

    assert instants(7, 0) == instants(7, 0)  # every process of the run
    assert instants(7, 0) != instants(7, 1)
    assert instants(7, 0) != instants(8, 0)
    assert instants(7, 0)[0] > 100.0


def test_random_bursts_are_interval_apart_on_average_and_never_closer_than_the_least_gap() -> None:
    bursts = Bursts(0.5, 0.0, 1, 0)
    gaps = [bursts.gap() for _ in range(20_000)]
    assert min(gaps) >= MIN_BURST_GAP
    assert statistics.fmean(gaps) == pytest.approx(0.5, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(0.5, rel=0.05)  # exponential: the spread is the mean


def test_passing_bursts_gives_the_gap_to_the_next_one() -> None:
    bursts = Bursts(1.0, 0.0, 3, 2)
    first = bursts.next
    assert bursts.advance(first - 0.001) is None and bursts.next == first
    gap = bursts.advance(first)
    assert gap is not None and bursts.next == pytest.approx(first + gap)
    # Far behind: every burst due is passed at once, and the gap is the last one's
    assert bursts.advance(first + 1_000.0) is not None
    assert bursts.next > first + 1_000.0
