"""Load shapes beyond steady, ramp and burst: a sine wave of rate, bursts at random instants."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from stress import Broker, Scenario, run, timeline
from stress.scenario import ScenarioError, Stage
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
