"""Whole runs of the engine against a real plain Mosquitto: counts, failures, shapes, signals."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stress import Broker, Scenario, run, timeline
from stress.results.summary import Summary
from tests.stress.blackhole import Blackhole
from tests.stress.conftest import USERS
from tests.stress.plain_broker import PlainBroker

pytestmark = pytest.mark.integration
ATTRIBUTES = 3  # the thermostat publishes temperature, humidity and setpoint


def scenario(port: int, out: Path, **overrides: Any) -> Scenario:
    shape = overrides.pop("shape", "steady")
    devices = overrides.pop("devices", 20)
    interval = overrides.pop("interval", 0.5)
    duration = overrides.pop("duration", 3.0)
    stages = overrides.pop("stages", 4)
    return Scenario(
        target="mqtt",
        broker=Broker(port=port, protocol=overrides.pop("protocol", "3.1.1")),
        stages=timeline(shape, devices, interval, duration, stages),
        shape=shape,
        out=out,
        drain=overrides.pop("drain", 3.0),
        **overrides,
    )


def series(summary: Summary) -> list[dict[str, str]]:
    assert summary.folder is not None
    with (summary.folder / "timeseries.csv").open() as handle:
        return list(csv.DictReader(handle))


def events(summary: Summary) -> list[dict[str, Any]]:
    assert summary.folder is not None
    return [json.loads(line) for line in (summary.folder / "events.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 1])
def test_round_trip_every_message_counted(
    broker: PlainBroker, tmp_path: Path, qos: int, protocol: str
) -> None:
    summary = run(
        scenario(broker.port, tmp_path / "run", qos=qos, protocol=protocol, e2e_devices=5), quiet=True
    )
    assert summary["offered"] == summary["sent"] == 20 * 6 * ATTRIBUTES  # 3 s at 0.5 s, the end excluded
    assert summary["failed"] == 0
    assert summary["errors_by_reason"] == {}
    assert summary["acked"] == (summary["sent"] if qos else None)
    assert summary["sampled"] > 0
    assert summary["observed"] == summary["sampled"]
    latency = summary["latency_ms"]
    assert latency["connect"]["count"] == 20
    assert latency["e2e"]["count"] == summary["observed"]
    assert latency["ack"]["count"] == (summary["sent"] if qos else 0)
    assert summary["connections_peak"] == 20
    assert summary["collapse"] is None
    assert summary["stopped"] == "completed"
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["sent"] == summary["sent"]
    for key in ("run_id", "target", "devices", "duration_s", "msgs_per_s", "generator", "errors_by_reason"):
        assert key in written


def test_keepalive_two_seconds_over_five_idle_seconds(broker: PlainBroker, tmp_path: Path) -> None:
    # A burst at the start, then 5 s of silence: the broker drops a silent client after 1.5 x 2 s
    base = scenario(broker.port, tmp_path / "run", shape="burst", interval=60, duration=5, e2e_devices=0)
    summary = run(replace(base, broker=Broker(port=broker.port, keepalive=2)), quiet=True)
    assert summary["sent"] == 20 * ATTRIBUTES
    assert summary["connections_peak"] == 20
    assert not [e for e in events(summary) if e["event"] == "disconnected" and e["reason"] != "stopped"]


def test_the_fleet_reconnects_after_a_broker_restart(own_broker: PlainBroker, tmp_path: Path) -> None:
    def restart() -> None:
        time.sleep(2.0)
        own_broker.stop()
        time.sleep(1.5)
        own_broker.start()

    restarter = threading.Thread(target=restart)
    restarter.start()
    summary = run(
        scenario(own_broker.port, tmp_path / "run", duration=8, qos=1, reconnect_min=0.2, reconnect_max=1.0),
        quiet=True,
    )
    restarter.join()
    rows = series(summary)
    assert sum(int(row["disconnects"]) for row in rows if row["phase"] == "run") == 20
    assert sum(int(row["connects"]) for row in rows) >= 40
    assert int(rows[-2]["connected"]) == 20  # all back before the end
    assert summary["errors_by_stage"]["connection"]
    assert summary["errors_by_reason"].get("not-connected", 0) > 0  # messages due while away count as failed
    last_run = [row for row in rows if row["phase"] == "run"][-1]
    assert int(last_run["acked"]) > 0


def client_side(port: int, state: str | None = None) -> set[str]:
    """This machine's connections to ``port`` (remote port ``port``), in ``state`` if given
    (``06``: TIME_WAIT, the side that closed first)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(remote.rsplit(":", 1)[1], 16) == port and state in (None, fields[3]):
                found.add(f"{local}-{remote}")
    return found


def test_the_broker_closes_first_so_no_local_port_is_held_after_a_run(
    own_broker: PlainBroker, tmp_path: Path
) -> None:
    # The fixture's own readiness probe closed first: it may still be on its way to TIME_WAIT
    before = client_side(own_broker.port)
    summary = run(scenario(own_broker.port, tmp_path / "run", duration=1, e2e_devices=5), quiet=True)
    assert summary["connections_peak"] == 20
    assert summary["stopped"] == "completed"
    # Connections that are still closing (FIN_WAIT) have not chosen their side yet: wait for them
    deadline = time.monotonic() + 10
    while client_side(own_broker.port) - client_side(own_broker.port, "06") - before:
        assert time.monotonic() < deadline, "connections still closing after 10 s"
        time.sleep(0.05)
    # Every device (and the end-to-end subscriber) sent DISCONNECT and waited for the broker to close
    assert client_side(own_broker.port, "06") - before == set()


def test_a_broker_name_is_looked_up_and_connected_to(broker: PlainBroker, tmp_path: Path) -> None:
    # "localhost" may resolve to ::1 first, where the broker does not listen: 127.0.0.1 is used
    base = scenario(broker.port, tmp_path / "run", duration=1)
    summary = run(replace(base, broker=Broker(host="localhost", port=broker.port)), quiet=True)
    assert summary["connections_peak"] == 20
    assert summary["errors_by_reason"] == {}


def test_a_broker_name_that_does_not_resolve_is_classified(tmp_path: Path) -> None:
    base = scenario(1883, tmp_path / "run", duration=1, devices=3, connect_timeout=2.0)
    summary = run(replace(base, broker=Broker(host="no-such-host.invalid", port=1883)), quiet=True)
    assert summary["connections_peak"] == 0
    assert summary["errors_by_reason"].get("dns", 0) >= 3


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_bad_credentials_are_classified(auth_broker: PlainBroker, tmp_path: Path, protocol: str) -> None:
    bad = scenario(
        auth_broker.port,
        tmp_path / "run",
        devices=3,
        duration=1,
        protocol=protocol,
        options={"username": "fleet", "password": "wrong"},
        reconnect_min=5,
        reconnect_max=5,
    )
    summary = run(bad, quiet=True)
    assert summary["connections_peak"] == 0
    reasons = summary["errors_by_stage"]["connect"]
    assert set(reasons) <= {"connack-bad-credentials", "connack-not-authorized"}
    assert sum(reasons.values()) >= 3  # full-jitter backoff may have retried already
    refused = [e for e in events(summary) if e["event"] == "error" and e["stage"] == "connect"]
    assert {e["device"] for e in refused} == {"dev00001", "dev00002", "dev00003"}
    assert all("CONNACK" in e["detail"] for e in refused)


def test_good_credentials_from_flags_connect(auth_broker: PlainBroker, tmp_path: Path) -> None:
    good = scenario(
        auth_broker.port,
        tmp_path / "run",
        devices=3,
        duration=1,
        options={"username": "fleet", "password": USERS["fleet"]},
    )
    summary = run(good, quiet=True)
    assert summary["connections_peak"] == 3
    assert summary["failed"] == 0


BURST_BOUND_S = 0.1  # every message of a burst of 200 devices leaves within 100 ms of the burst instant


def test_bursts_are_aligned_and_the_first_is_not_late(broker: PlainBroker, tmp_path: Path) -> None:
    summary = run(
        scenario(
            broker.port, tmp_path / "run", shape="burst", devices=200, interval=1.0, duration=3, e2e_devices=0
        ),
        quiet=True,
    )
    assert summary["sent"] == 200 * ATTRIBUTES * 3  # bursts at 0, 1 and 2 s: the first one at once
    assert summary["latency_ms"]["lateness"]["max"] <= BURST_BOUND_S * 1000
    published = [row for row in series(summary) if int(row["sent"])]
    assert int(published[0]["sent"]) == 200 * ATTRIBUTES  # one whole burst in the run's first second


def test_a_device_that_cannot_connect_does_not_delay_a_burst(broker: PlainBroker, tmp_path: Path) -> None:
    proxy = Blackhole(broker.port, swallow={"dev00003"})
    try:
        summary = run(
            scenario(
                proxy.port,
                tmp_path / "run",
                shape="burst",
                devices=50,
                interval=1.0,
                duration=4,
                connect_timeout=1.0,
                reconnect_min=0.3,
                reconnect_max=0.6,
                e2e_devices=0,
            ),
            quiet=True,
        )
    finally:
        proxy.close()
    assert proxy.swallowed >= 3  # it kept trying all along
    assert summary["sent"] == 49 * ATTRIBUTES * 4
    assert summary["errors_by_stage"]["connect"]["timeout"] >= 3
    assert summary["latency_ms"]["lateness"]["max"] <= BURST_BOUND_S * 1000
    phases = {e["phase"]: e["t"] for e in events(summary) if e["event"] == "phase"}
    assert phases["run"] - phases["connect"] <= 1.5  # the connect phase waits one timeout at most


def test_a_ramp_grows_the_fleet_stage_by_stage(broker: PlainBroker, tmp_path: Path) -> None:
    summary = run(
        scenario(
            broker.port, tmp_path / "run", shape="ramp", devices=40, stages=4, interval=0.25, duration=8
        ),
        quiet=True,
    )
    rows = [row for row in series(summary) if row["phase"] == "run"]
    connected = [int(row["connected"]) for row in rows]
    for stage, size in enumerate((10, 20, 30, 40)):
        assert size in connected[stage * 2 : stage * 2 + 3], connected
    assert connected == sorted(connected)
    assert summary["connections_peak"] == 40
    assert summary["failed"] == 0
    rates = [int(row["sent"]) for row in rows]
    assert rates[1] < rates[-2]
    # Each stage is a change of the timeline, 2 s apart from the start of publishing
    timeline = summary["timeline"]
    assert [(c["what"], c["stage"], c["devices"]) for c in timeline] == [
        ("start", 1, 10),
        ("stage", 2, 20),
        ("stage", 3, 30),
        ("stage", 4, 40),
    ]
    begun = next(e["t"] for e in events(summary) if e["event"] == "phase" and e["phase"] == "run")
    assert [c["t"] for c in timeline[1:]] == pytest.approx([begun + 2, begun + 4, begun + 6], abs=1e-3)
    stages = [e for e in events(summary) if e["event"] == "stage"]
    assert [(e["stage"], e["devices"], e["interval_s"]) for e in stages] == [
        (2, 20, 0.25),
        (3, 30, 0.25),
        (4, 40, 0.25),
    ]
    for row in rows:  # the fleet size in force at the end of each second
        in_force = [c["devices"] for c in timeline if c["t"] <= int(row["t"]) + 1][-1]
        assert int(row["devices"]) == in_force, row
    assert summary["devices"] == 40


def test_two_processes_split_the_fleet_and_merge_exactly(broker: PlainBroker, tmp_path: Path) -> None:
    devices, bursts = 60, 4
    summary = run(
        scenario(
            broker.port,
            tmp_path / "run",
            shape="burst",
            devices=devices,
            interval=0.5,
            duration=bursts * 0.5,
            qos=1,
            e2e_devices=10,
            processes=2,
        ),
        quiet=True,
    )
    assert summary["processes"] == 2
    expected = devices * bursts * ATTRIBUTES
    assert summary["offered"] == summary["sent"] == summary["acked"] == expected
    assert summary["failed"] == 0
    latency = summary["latency_ms"]
    assert latency["connect"]["count"] == devices
    assert latency["ack"]["count"] == latency["lateness"]["count"] == expected  # every sample, once
    assert summary["observed"] == summary["sampled"] == latency["e2e"]["count"] == 10 * bursts * ATTRIBUTES
    # One burst is one instant on the whole machine: the processes share the grid
    assert latency["lateness"]["max"] <= BURST_BOUND_S * 1000
    rows = series(summary)
    assert [int(row["t"]) for row in rows] == list(range(len(rows)))  # one merged row per second
    assert sum(int(row["sent"]) for row in rows) == expected
    assert summary["connections_peak"] == devices
    connected = [e for e in events(summary) if e["event"] == "connected"]
    by_process = {e["device"]: e["process"] for e in connected}
    assert len(connected) == len(by_process) == devices
    assert {device for device, process in by_process.items() if process == 0} == {
        f"dev{index + 1:05d}" for index in range(0, devices, 2)
    }
    assert [e["phase"] for e in events(summary) if e["event"] == "phase"] == [
        "connect",
        "run",
        "drain",
        "done",
    ]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two CPUs to tell apart")
def test_cpus_pin_the_generator_and_each_worker_to_its_own(broker: PlainBroker, tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    first, second = sorted(before)[:2]
    seen: list[set[int]] = []
    workers: dict[int, set[int]] = {}

    def watch(_second: object) -> None:
        seen.append(os.sched_getaffinity(0))
        for child in multiprocessing.active_children():
            if child.name.startswith("stress-worker-") and child.pid is not None:
                workers[int(child.name.rsplit("-", 1)[1])] = os.sched_getaffinity(child.pid)

    alone = run(
        scenario(broker.port, tmp_path / "one", duration=1, cpus=(second,)), quiet=True, on_second=watch
    )
    assert seen and all(cpus == {second} for cpus in seen)
    assert alone["generator"]["cpus"] == [second]
    assert os.sched_getaffinity(0) == before  # given back after the run
    seen.clear()
    split = run(
        scenario(broker.port, tmp_path / "two", duration=1, processes=2, cpus=(first, second)),
        quiet=True,
        on_second=watch,
    )
    assert split["sent"] == 20 * 2 * ATTRIBUTES
    assert workers == {0: {first}, 1: {second}}
    assert all(cpus == {first, second} for cpus in seen)  # this process merges on both
    assert os.sched_getaffinity(0) == before


def test_a_signal_stops_every_process_once(broker: PlainBroker, tmp_path: Path) -> None:
    # A terminal's Ctrl-C reaches the whole process group: the run drains once, not twice
    out = tmp_path / "run"
    command = [sys.executable, "-m", "stress", "run", "--target", "mqtt", "--port", str(broker.port)]
    command += ["--devices", "40", "--interval", "0.2", "--duration", "600", "--qos", "1"]
    command += ["--processes", "2", "--quiet", "--out", str(out)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        row["phase"] == "run" and int(row["sent"]) for row in csv_rows(out)
    ):
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    written = json.loads((out / "summary.json").read_text())
    assert written["stopped"] == "signal SIGINT"
    assert written["processes"] == 2
    assert written["sent"] > 0
    assert written["acked"] == written["sent"]  # both processes drained before disconnecting


def test_a_worker_that_dies_ends_the_run_with_the_summary_written(
    broker: PlainBroker, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "stress", "run", "--target", "mqtt", "--port", str(broker.port)]
    command += ["--devices", "20", "--interval", "0.2", "--duration", "600", "--processes", "2"]
    command += ["--quiet", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        row["phase"] == "run" and int(row["sent"]) for row in csv_rows(out)
    ):
        time.sleep(0.1)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    workers = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2
    os.kill(int(workers[1]), signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    written = json.loads((out / "summary.json").read_text())
    assert written["stopped"].startswith("error: process "), written["stopped"]
    assert any("exited early" in note for note in written["notes"])
    assert written["sent"] > 0
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith("stress: error: process 1 exited early")


def csv_rows(folder: Path) -> list[dict[str, str]]:
    try:
        with (folder / "timeseries.csv").open() as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


@pytest.mark.parametrize(
    ("signum", "status", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_signal_ends_the_run_with_the_summary_written(
    broker: PlainBroker, tmp_path: Path, signum: int, status: int, name: str
) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "stress",
        "run",
        "--target",
        "mqtt",
        "--port",
        str(broker.port),
        "--devices",
        "20",
        "--interval",
        "0.2",
        "--duration",
        "600",
        "--qos",
        "1",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (out / "timeseries.csv").exists():
        time.sleep(0.1)
    time.sleep(2.0)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == status, stderr
    written = json.loads((out / "summary.json").read_text())
    assert written["stopped"] == f"signal {name}"
    assert written["sent"] > 0
    assert written["acked"] == written["sent"]  # the run drained before disconnecting
    assert (out / "report.html").exists()
    assert "run folder:" in stdout


HOSTILE = [
    (["--qos", "3"], "--qos"),
    (["--transport", "gateway"], "--transport"),
    (["--transport", "carrier-pigeon"], "--transport"),
    (["--transport", "websocket", "--ws-path", "no-slash"], "--ws-path"),
    (["--tls", "--cert", "/nonexistent.pem", "--key", "/nonexistent.key"], "--cert"),
    (["--tls", "--cert", "/etc/hostname"], "--key"),
    (["--cert", "/etc/hostname", "--key", "/etc/hostname"], "--tls"),
    (["--devices", "0"], "--devices"),
    (["--devices", "ten"], "--devices"),
    (["--interval", "-1"], "--interval"),
    (["--interval", "nan"], "--interval"),
    (["--duration", "0"], "--duration"),
    (["--duration", "inf"], "--duration"),
    (["--port", "70000"], "--port"),
    (["--shape", "zigzag"], "--shape"),
    (["--target", "coap"], "--target"),
    (["--protocol", "4"], "--protocol"),
    (["--behaviour", "no.such.module:Thing"], "--behaviour"),
    (["--behaviour", "kettle"], "--behaviour"),
    (["--collapse-share", "1.5"], "--collapse-share"),
    (["--stages", "9", "--shape", "ramp", "--devices", "3"], "--stages"),
    (["--prefix", "a/b"], "--prefix"),
    (["--topic", "{nope}/x"], "--topic"),
    (["--payload", "{value"], "--payload"),
    (["--reconnect-min", "5", "--reconnect-max", "1"], "--reconnect-min"),
    (["--processes", "0"], "--processes"),
    (["--processes", "many"], "--processes"),
    (["--processes", "5000"], "--processes"),
    (["--cpus", "two"], "--cpus"),
    (["--cpus", "3-1"], "--cpus"),
    (["--cpus", "-1"], "--cpus"),
    (["--cpus", "4096"], "--cpus"),
    (["--churn", "-1"], "--churn"),
    (["--churn", "100"], "--churn"),
    (["--storm-at", "soon"], "--storm-at"),
    (["--storm-at", "5,-1"], "--storm-at"),
    (["--slow-devices", "2"], "--slow-devices"),
    (["--slow-ack-delay", "-1"], "--slow-ack-delay"),
]


@pytest.mark.parametrize(("flags", "named"), HOSTILE, ids=[" ".join(f) for f, _ in HOSTILE])
def test_hostile_flags_give_one_line_and_status_2(tmp_path: Path, flags: list[str], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stress", "run", "--target", "mqtt", "--out", str(tmp_path / "x"), *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert (
        named in lines[0] or named.lstrip("-").replace("-", "_") in lines[0] or named.lstrip("-") in lines[0]
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("STRESS_DEVICES", "-5"), ("STRESS_QOS", "3"), ("STRESS_INTERVAL", "soon"), ("STRESS_TLS", "maybe")],
)
def test_hostile_environment_variables_are_named(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stress", "run", "--target", "mqtt"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, variable: value},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert variable in result.stderr


def test_flags_come_from_stress_variables(broker: PlainBroker, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STRESS_TARGET": "mqtt",
        "STRESS_PORT": str(broker.port),
        "STRESS_DEVICES": "4",
        "STRESS_DURATION": "1",
        "STRESS_QOS": "1",
        "STRESS_OUT": str(tmp_path / "run"),
        "STRESS_QUIET": "yes",
    }
    result = subprocess.run(
        [sys.executable, "-m", "stress", "run", "--devices", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (written["devices"], written["qos"], written["port"]) == (
        5,
        1,
        broker.port,
    )  # the flag wins over the variable
    assert result.stderr == ""  # quiet


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path, folder: str) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "stress", "report", str(tmp_path / folder)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "run folder" in result.stderr
