"""Faults a run can inject: connection churn, reconnect storms, slow devices."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from stress import Broker, Scenario, run, timeline
from stress.errors import ScenarioError
from tests.mqtt_helpers import connect
from tests.stress.plain_broker import PlainBroker

pytestmark = pytest.mark.integration


def scenario(port: int, out: Path, devices: int = 20, duration: float = 6.0, **changes: Any) -> Scenario:
    return Scenario(
        target="mqtt",
        broker=Broker(port=port),
        stages=timeline("steady", devices, 0.5, duration),
        out=out,
        e2e_devices=0,
        drain=2.0,
        reconnect_min=0.2,
        reconnect_max=0.5,
        **changes,
    )


def events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_churn_drops_its_share_of_the_fleet_each_minute_and_they_come_back(
    broker: PlainBroker, tmp_path: Path
) -> None:
    # 3 x the fleet per minute = 1 device of 20 every second, for the 6 s of publishing
    summary = run(scenario(broker.port, tmp_path / "run", churn=3.0), quiet=True)
    log = events(tmp_path / "run")
    churned = [e for e in log if e["event"] == "disconnected" and e["reason"] == "churn"]
    assert len(churned) in (5, 6)  # one a second; the sixth falls on the end of publishing
    end = max(e["t"] for e in log if e["event"] == "phase" and e["phase"] == "drain")
    for drop in churned:
        if drop["t"] < end - 1.0:  # those churned in the last second may not be back by the end
            later = [e for e in log if e["event"] == "connected" and e["t"] > drop["t"]]
            assert drop["device"] in {e["device"] for e in later}, drop
    assert summary["latency_ms"]["connect"]["count"] >= 20 + len(churned) - 1
    assert not [e for e in log if e["event"] == "disconnected" and e["reason"] not in ("churn", "stopped")]
    assert summary["errors_by_stage"].get("connection") is None  # a drop on purpose is not an error


def test_a_storm_drops_every_device_at_once_and_all_come_back(broker: PlainBroker, tmp_path: Path) -> None:
    summary = run(scenario(broker.port, tmp_path / "run", storms=(2.0,)), quiet=True)
    log = events(tmp_path / "run")
    storms = [e for e in log if e["event"] == "storm"]
    assert [e["devices"] for e in storms] == [20]
    dropped = [e for e in log if e["event"] == "disconnected" and e["reason"] == "storm"]
    assert sorted(e["device"] for e in dropped) == [f"dev{n:05d}" for n in range(1, 21)]
    assert len({e["t"] for e in dropped}) == 1  # one instant
    back = {e["device"] for e in log if e["event"] == "connected" and e["t"] >= storms[0]["t"]}
    assert len(back) == 20
    assert summary["latency_ms"]["connect"]["count"] == 40
    rows = (tmp_path / "run" / "timeseries.csv").read_text().splitlines()
    assert rows[-1].split(",")[1] == "drain"


def test_two_storms(broker: PlainBroker, tmp_path: Path) -> None:
    summary = run(scenario(broker.port, tmp_path / "run", devices=5, storms=(1.0, 3.0)), quiet=True)
    storms = [e for e in events(tmp_path / "run") if e["event"] == "storm"]
    assert [e["devices"] for e in storms] == [5, 5]
    marked = [(c["t"], c["count"]) for c in summary["timeline"] if c["what"] == "storm"]
    assert marked == [(e["t"], 5) for e in storms]


def test_a_storm_over_two_processes_is_one_change_of_the_timeline(
    broker: PlainBroker, tmp_path: Path
) -> None:
    summary = run(scenario(broker.port, tmp_path / "run", devices=10, storms=(1.5,), processes=2), quiet=True)
    storms = [e for e in events(tmp_path / "run") if e["event"] == "storm"]
    assert sorted((e["process"], e["devices"]) for e in storms) == [(0, 5), (1, 5)]
    marked = [(c["what"], c["count"]) for c in summary["timeline"]]
    assert marked == [("start", None), ("storm", 10)]
    # (the time of the share told first: the processes' storms are one instant, give or take)
    assert summary["timeline"][1]["t"] in {e["t"] for e in storms}


@pytest.fixture
def one_in_flight() -> Iterator[PlainBroker]:
    """A broker that sends a client its next QoS 1 message only once it has acknowledged the last."""
    instance = PlainBroker(extra="max_inflight_messages 1\n")
    instance.start()
    yield instance
    instance.close()


def command_gap(broker: PlainBroker, tmp_path: Path, slow: float) -> float:
    """Seconds between a device's first and second command when both are sent at once."""
    out = tmp_path / f"run-{slow}"
    base = scenario(broker.port, out, devices=1, duration=4.0, qos=1, slow_devices=slow, slow_ack_delay=1.5)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    connect(client, broker.port)

    def commands_at_once() -> None:
        time.sleep(1.5)  # the device is connected and subscribed
        for value in ("21", "22"):
            client.publish("cmd/dev00001/setpoint", value, qos=1)

    sender = threading.Thread(target=commands_at_once)
    sender.start()
    run(replace(base, options={"command_topic": "cmd/{device}/{attr}"}), quiet=True)
    sender.join()
    client.disconnect()
    client.loop_stop()
    commands = [e for e in events(out) if e["event"] == "command"]
    assert [e["value"] for e in commands] == ["21", "22"]
    return float(commands[1]["t"] - commands[0]["t"])


def test_a_slow_device_acknowledges_its_commands_late(one_in_flight: PlainBroker, tmp_path: Path) -> None:
    # With one message in flight, the broker holds the second command until the first is acked
    assert command_gap(one_in_flight, tmp_path, slow=0.0) < 1.0
    assert command_gap(one_in_flight, tmp_path, slow=1.0) >= 1.4


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"churn": -1.0}, "--churn"),
        ({"churn": float("nan")}, "--churn"),
        ({"churn": 61.0}, "--churn"),
        ({"storms": (-2.0,)}, "--storm-at"),
        ({"slow_devices": 1.5}, "--slow-devices"),
        ({"slow_ack_delay": float("inf")}, "--slow-ack-delay"),
    ],
)
def test_bad_fault_settings_are_named(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ScenarioError, match=named):
        scenario(1883, Path("/nonexistent"), **changes)
