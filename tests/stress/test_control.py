"""Steering a run in progress from another shell: stop, pause, resume, scale, rate, status."""

from __future__ import annotations

import contextlib
import csv
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from stress.control import find_run, runs_in_progress, send
from tests.mqtt_helpers import connect
from tests.stress.plain_broker import PlainBroker

pytestmark = pytest.mark.integration
ATTRIBUTES = 3  # the thermostat's


@pytest.fixture(autouse=True)
def control_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A control directory of this test's own (the runs it starts, and only those, are found)."""
    directory = tmp_path_factory.mktemp("control")
    monkeypatch.setenv("STRESS_CONTROL_DIR", str(directory))
    return directory


def stress(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Arrivals:
    """When each message arrived, by device (the second level of ``bench/<device>/<attr>``)."""

    times: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, device: str, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t in self.times.get(device, []) if start <= t < end)

    def devices(self) -> set[str]:
        with self.lock:
            return set(self.times)


@pytest.fixture
def arrivals(broker: PlainBroker) -> Iterator[Arrivals]:
    seen = Arrivals()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with seen.lock:
            seen.times.setdefault(message.topic.split("/")[1], []).append(time.monotonic())

    client.on_message = on_message
    connect(client, broker.port)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe("bench/#")
    assert subscribed.wait(5)
    yield seen
    client.disconnect()
    client.loop_stop()


class Run:
    """``stress run`` in the background, against the test broker (its progress shown unless
    ``quiet``)."""

    def __init__(self, port: int, out: Path, *flags: str, quiet: bool = True) -> None:
        self.out = out
        self.stdout = self.stderr = ""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stress",
                "run",
                "--target",
                "mqtt",
                "--port",
                str(port),
                "--topic",
                "bench/{device}/{attr}",
                "--e2e-devices",
                "0",
                *(["--quiet"] if quiet else []),
                "--out",
                str(out),
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not runs_in_progress():
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, "the run opened no control socket"
            time.sleep(0.05)

    def wait_connected(self, devices: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while status()["connected"] < devices:
            assert time.monotonic() < deadline, f"fewer than {devices} devices connected: {status()}"
            time.sleep(0.1)

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        stderr = self.stderr
        assert self.process.returncode == 0, stderr
        assert "Traceback" not in stderr
        summary: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return summary

    def rows(self) -> list[dict[str, str]]:
        with (self.out / "timeseries.csv").open() as handle:
            return list(csv.DictReader(handle))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def status() -> dict[str, Any]:
    answer = send(find_run(None), {"op": "status"})
    assert answer["ok"], answer
    result: dict[str, Any] = answer["status"]
    return result


@pytest.fixture
def background(broker: PlainBroker, tmp_path: Path) -> Iterator[Any]:
    started: list[Run] = []

    def start(*flags: str, name: str = "run", quiet: bool = True) -> Run:
        run = Run(broker.port, tmp_path / name, *flags, quiet=quiet)
        started.append(run)
        run.wait_listening()
        return run

    yield start
    for run in started:
        run.kill()


def test_pausing_one_device_leaves_the_others_unchanged(background: Any, arrivals: Arrivals) -> None:
    run = background("--devices", "10", "--interval", "0.2", "--duration", "9")
    run.wait_connected(10)
    time.sleep(1.5)
    paused = stress("pause", "dev00003")
    assert paused.returncode == 0, paused.stderr
    assert "paused dev00003; 1 paused in all" in paused.stdout
    assert status()["paused"] == ["dev00003"]
    during = time.monotonic() + 0.5  # what was already on its way has arrived
    time.sleep(3.0)
    resumed = stress("resume", "dev00003")
    assert resumed.returncode == 0, resumed.stderr
    after = time.monotonic()
    summary = run.finish()
    window = after - 0.2 - during
    expected = window / 0.2 * ATTRIBUTES
    assert arrivals.count("dev00003", during, after - 0.2) == 0
    for device in ("dev00001", "dev00002", "dev00004", "dev00010"):
        assert abs(arrivals.count(device, during, after - 0.2) - expected) <= 2 * ATTRIBUTES
    assert arrivals.count("dev00003", after + 0.3, after + 2.0) > 0  # publishing again
    assert summary["failed"] == 0  # a paused device offers nothing, so nothing failed
    assert summary["stopped"] == "completed"
    events = [json.loads(line) for line in (run.out / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["device"]) for e in events if e["event"] in ("paused", "resumed")] == [
        ("paused", "dev00003"),
        ("resumed", "dev00003"),
    ]
    assert not [e for e in events if e["event"] == "disconnected" and e["reason"] != "stopped"]


def test_scale_up_and_down_mid_run(background: Any, arrivals: Arrivals) -> None:
    run = background("--devices", "10", "--interval", "0.5", "--duration", "10")
    run.wait_connected(10)
    grown = stress("scale", "25")
    assert grown.returncode == 0, grown.stderr
    assert "the fleet becomes 25 devices" in grown.stdout
    run.wait_connected(25)
    assert status()["devices"] == 25
    time.sleep(1.5)  # a whole second at 25 (the peak is read at the end of each second)
    shrunk = stress("scale", "5")
    assert shrunk.returncode == 0, shrunk.stderr
    deadline = time.monotonic() + 10
    while status()["connected"] != 5:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shrunk_at = time.monotonic()
    time.sleep(1.5)
    summary = run.finish()
    assert summary["connections_peak"] == 25
    assert summary["failed"] == 0
    assert {f"dev{n:05d}" for n in range(1, 26)} <= arrivals.devices()
    assert not {f"dev{n:05d}" for n in range(26, 100)} & arrivals.devices()
    # After the shrink only the first five publish
    late = {d for d in arrivals.devices() if arrivals.count(d, shrunk_at + 0.3, shrunk_at + 1.5)}
    assert late == {f"dev{n:05d}" for n in range(1, 6)}
    connected = [int(row["connected"]) for row in run.rows() if row["phase"] == "run"]
    assert 25 in connected
    assert connected[-1] == 5


def test_rate_changes_every_devices_interval(background: Any) -> None:
    run = background("--devices", "10", "--interval", "0.5", "--duration", "8")
    run.wait_connected(10)
    time.sleep(2.5)
    changed = stress("rate", "0.1")
    assert changed.returncode == 0, changed.stderr
    assert "every 0.1 s" in changed.stdout
    assert status()["interval_s"] == 0.1
    run.finish()
    sent = [int(row["sent"]) for row in run.rows() if row["phase"] == "run"]
    slow, fast = 10 * ATTRIBUTES * 2, 10 * ATTRIBUTES * 10  # per second at 0.5 s, at 0.1 s
    assert sent[1] == slow
    assert sent[-2] == fast


def test_a_steered_run_says_what_was_in_force_each_second(background: Any) -> None:
    run = background("--devices", "10", "--interval", "0.5", "--duration", "9", quiet=False)
    run.wait_connected(10)
    time.sleep(1.0)
    assert stress("scale", "25").returncode == 0
    run.wait_connected(25)
    assert stress("rate", "0.25").returncode == 0
    summary = run.finish()

    timeline = summary["timeline"]
    assert [(c["what"], c["devices"], c["interval_s"], c["paused"]) for c in timeline] == [
        ("start", 10, 0.5, 0),
        ("scale", 25, 0.5, 0),
        ("rate", 25, 0.25, 0),
    ]
    scaled, rated = timeline[1]["t"], timeline[2]["t"]
    assert 0 < scaled < rated < 9
    events = [json.loads(line) for line in (run.out / "events.jsonl").read_text().splitlines()]
    controls = [e for e in events if e["event"] == "control"]
    assert [(e["op"], e["t"]) for e in controls] == [("scale", scaled), ("rate", rated)]
    assert (summary["devices"], summary["interval_s"]) == (25, 0.25)  # in force at the end

    rows = run.rows()
    for row in rows:  # each second says what was in force at its end
        end = int(row["t"]) + 1
        assert int(row["devices"]) == (25 if end > scaled else 10), row
        assert float(row["interval_s"]) == (0.25 if end > rated else 0.5), row
    after = [row for row in rows if row["phase"] == "run" and int(row["t"]) > rated + 1][1:-1]
    assert after
    assert {int(row["sent"]) for row in after} == {25 * ATTRIBUTES * 4}

    lines = run.stdout.splitlines()  # the console summary
    assert "devices              25 at the end (10 at the start, 25 at most)" in lines
    assert "interval             0.25 s at the end (0.5 s at the start, 0.25 s at the shortest)" in lines
    assert any(line.split()[1:] == ["scale", "to", "25", "devices", "25", "0.5", "s", "0"] for line in lines)
    assert any(line.split()[1:] == ["rate:", "every", "0.25", "s", "25", "0.25", "s", "0"] for line in lines)
    progress = [line for line in run.stderr.splitlines() if "connected " in line]
    assert progress
    for line in progress:  # never more devices connected than the fleet in force
        connected, fleet = line.split("connected ")[1].split()[0].split("/")
        assert int(connected) <= int(fleet), line
    assert any("connected 25/25" in line and "every 0.25 s" in line for line in progress), progress


def test_stop_from_another_shell_ends_every_process_with_the_summary(background: Any) -> None:
    run = background("--devices", "20", "--interval", "0.5", "--duration", "60", "--processes", "2")
    run.wait_connected(20)
    paused = stress("pause", "dev00001", "dev00002")  # one device of each process
    assert paused.returncode == 0, paused.stderr
    stopped = stress("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopping" in stopped.stdout
    summary = run.finish(timeout=30)
    assert summary["stopped"] == "stress stop"
    assert summary["processes"] == 2
    assert summary["duration_s"] < 60
    assert summary["connections_peak"] == 20
    events = [json.loads(line) for line in (run.out / "events.jsonl").read_text().splitlines()]
    assert {(e["device"], e["process"]) for e in events if e["event"] == "paused"} == {
        ("dev00001", 0),
        ("dev00002", 1),
    }
    # One command is one change of the timeline, whichever processes carried it out
    assert [(c["what"], c["count"], c["paused"]) for c in summary["timeline"]] == [
        ("start", None, 0),
        ("pause", 2, 2),
        ("stop", None, 2),
    ]
    assert runs_in_progress() == []  # the run left the control directory
    gone = stress("stop")
    assert gone.returncode == 1
    assert gone.stderr.startswith("stress stop: error: no run in progress")


def test_with_two_runs_the_command_names_one(background: Any) -> None:
    first = background("--devices", "2", "--interval", "1", "--duration", "30", "--prefix", "a", name="first")
    second = background(
        "--devices", "2", "--interval", "1", "--duration", "30", "--prefix", "b", name="second"
    )
    deadline = time.monotonic() + 10
    while len(runs_in_progress()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ambiguous = stress("stop")
    assert ambiguous.returncode == 1
    assert "2 runs in progress" in ambiguous.stderr
    assert "first" in ambiguous.stderr
    assert "second" in ambiguous.stderr
    assert "--run" in ambiguous.stderr
    assert stress("stop", "--run", "second").returncode == 0
    assert second.finish()["stopped"] == "stress stop"
    by_pid = stress("stop", "--run", str(first.process.pid))
    assert by_pid.returncode == 0, by_pid.stderr
    assert first.finish()["stopped"] == "stress stop"


def test_a_run_that_was_killed_leaves_nothing_behind_for_the_next_command(
    background: Any, control_dir: Path
) -> None:
    run = background("--devices", "2", "--interval", "1", "--duration", "30")
    run.kill()  # SIGKILL: no chance to remove its files
    assert list(control_dir.iterdir())
    result = stress("stop")
    assert result.returncode == 1
    assert "no run in progress" in result.stderr
    assert list(control_dir.iterdir()) == []


HOSTILE_COMMANDS = [
    (["pause", "dev1"], "not devices of this run: 'dev1'"),
    (["pause", "dev00099"], "not devices of this run: 'dev00099'"),
    (["pause", "dev00001", "../etc", "dev\u0661"], "'../etc'"),
    (["resume", "x" * 300], "not devices of this run"),
]


@pytest.mark.parametrize(
    ("words", "says"), HOSTILE_COMMANDS, ids=[w[0] + str(i) for i, (w, _) in enumerate(HOSTILE_COMMANDS)]
)
def test_bad_device_names_are_one_line_and_change_nothing(
    background: Any, words: list[str], says: str
) -> None:
    background("--devices", "10", "--interval", "1", "--duration", "30")
    result = stress(*words)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "its devices are dev00001 to dev00010" in lines[0]
    assert status()["paused"] == []
    assert stress("stop").returncode == 0


@pytest.mark.parametrize(
    "words",
    [["scale", "-1"], ["scale", "many"], ["rate", "-2"], ["rate", "nan"], ["rate", "inf"], ["pause"]],
)
def test_bad_values_are_refused_before_any_run_is_looked_for(words: list[str]) -> None:
    result = stress(*words)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) <= 2  # argparse: usage, then the error
    assert "error:" in result.stderr


def test_hostile_requests_on_the_socket_are_answered_and_the_run_goes_on(background: Any) -> None:
    run = background("--devices", "3", "--interval", "0.5", "--duration", "30")
    entry = find_run(None)
    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(entry.socket)
        reader = conn.makefile("rb")
        for line in [
            b"not json\n",
            b"[1, 2]\n",
            b'{"op": 5}\n',
            b'{"op": "reboot"}\n',
            b'{"op": "scale", "devices": "10"}\n',
            b'{"op": "scale", "devices": true}\n',
            b'{"op": "scale", "devices": 99999999999}\n',
            b'{"op": "rate", "interval": -1}\n',
            b'{"op": "rate", "interval": "fast"}\n',
            b'{"op": "pause", "devices": "dev00001"}\n',
            b'{"op": "pause", "devices": []}\n',
            b'{"op": "pause", "devices": [1, 2]}\n',
            b"\xff\xfe\n",
        ]:
            conn.sendall(line)
            answers.append(json.loads(reader.readline()))
    assert all(answer["ok"] is False and answer["error"] for answer in answers), answers
    assert "unknown op 'reboot'" in answers[3]["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(entry.socket)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(b"x" * (5 * 1024 * 1024))  # no newline, past the limit: cut off
        answer = json.loads(conn.makefile("rb").readline())
    assert answer == {"ok": False, "error": "request too long"}
    assert status()["devices"] == 3
    assert status()["connected"] == 3
    assert stress("stop").returncode == 0
    assert run.finish()["failed"] == 0


def test_the_control_socket_is_private(
    background: Any, control_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = control_dir / "made-by-the-run"
    monkeypatch.setenv("STRESS_CONTROL_DIR", str(private))
    background("--devices", "1", "--interval", "1", "--duration", "30")
    entry = find_run(None)
    assert private.stat().st_mode & 0o777 == 0o700
    assert Path(entry.socket).stat().st_mode & 0o777 == 0o600
    assert stress("stop").returncode == 0


def test_a_watcher_gets_every_second_and_the_events_a_live_view_shows(background: Any) -> None:
    run = background("--devices", "6", "--interval", "0.2", "--duration", "4", "--qos", "1")
    entry = find_run(None)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(entry.socket)
        conn.sendall(b'{"op": "watch"}\n')
        lines = conn.makefile("rb")
        first = json.loads(lines.readline())
        assert first["ok"] is True
        assert first["status"]["devices"] == 6
        run.wait_connected(6)
        assert stress("pause", "dev00002").returncode == 0
        messages = [json.loads(line) for line in lines]  # until the run ends and closes it
    seconds = [m["second"] for m in messages if "second" in m]
    events = [m["event"] for m in messages if "event" in m]
    summary = run.finish()
    assert sum(second["acked"] for second in seconds) == summary["acked"]
    assert [second["t"] for second in seconds] == list(range(seconds[0]["t"], seconds[0]["t"] + len(seconds)))
    publishing = [second for second in seconds if second["phase"] == "run" and second["acked"]]
    assert publishing
    for second in publishing:
        assert second["ack_p50_ms"] is not None
        assert second["ack_p50_ms"] <= second["ack_p95_ms"] <= second["ack_p99_ms"]
        slowest = second["slowest"]
        assert 1 <= len(slowest) <= 6
        assert [ms for ms, _ in slowest] == sorted((ms for ms, _ in slowest), reverse=True)
        assert {name for _, name in slowest} <= {f"dev{n:05d}" for n in range(1, 7)}
    assert {"event": "paused", "device": "dev00002"}.items() <= next(
        e for e in events if e["event"] == "paused"
    ).items()
    assert [e["phase"] for e in events if e["event"] == "phase"][-1] == "done"
