"""`./lab` driving a real lab instance of its own: up twice, status, logs, restart, stop, down.

The tests in this module run in order on one instance, as a user would use the command.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labctl import health
from labctl.config import ROOT, LabConfig
from labctl.lab import Lab
from labctl.process import is_running
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect

pytestmark = pytest.mark.integration


def run_lab(config: LabConfig, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "lab"), "--env-file", str(config.env_file), "--data-dir", str(config.data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def own(new_lab_config: Callable[..., LabConfig]) -> Iterator[LabConfig]:
    config = new_lab_config("launcher")
    yield config
    Lab(config).down()  # whatever a failed test left running


def pids(config: LabConfig) -> dict[str, int | None]:
    return {row.name: row.pid for row in Lab(config).status()}


def test_up_starts_every_service_healthy(own: LabConfig) -> None:
    result = run_lab(own, "up", "--no-install")
    assert result.returncode == 0, result.stderr
    assert "The lab is up" in result.stdout
    assert str(own.env_file) in result.stdout, "says where the credentials are"
    assert all(row.health == "healthy" for row in Lab(own).status())


def test_second_up_starts_nothing_twice(own: LabConfig) -> None:
    before = pids(own)
    result = run_lab(own, "up", "--no-install")
    assert result.returncode == 0, result.stderr
    assert "Already running: db, mosquitto, nodered, web" in result.stdout
    assert pids(own) == before
    db_dir = own.state_dir("db", "postgres")
    postmasters = [p for p in _processes() if f"-D {db_dir} " in p]
    brokers = [p for p in _processes() if str(own.state_dir("mosquitto", "mosquitto")) in p]
    assert len(postmasters) == 1
    assert len(brokers) == 1


def _processes() -> list[str]:
    out = []
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(proc.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


def test_status_shows_each_service(own: LabConfig) -> None:
    result = run_lab(own, "status")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "PID", "PORT", "HEALTH"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"db", "mosquitto", "nodered", "web"}
    assert rows["mosquitto"][3] == own.env["MQTT_PORT"]
    assert all(row[1] == "running" and row[4] == "healthy" for row in rows.values())


def test_logs_show_a_service_log(own: LabConfig) -> None:
    result = run_lab(own, "logs", "mosquitto", "-n", "50")
    assert result.returncode == 0
    assert "==> mosquitto" in result.stdout
    assert "mosquitto version" in result.stdout


def test_restart_web_while_values_flow(own: LabConfig, unique_room: str) -> None:
    running = RunningLab(own, Lab(own))
    device, password = running.device
    topic = f"{own.env['TOPIC_ROOT']}/{unique_room}/{device}/counter"
    publisher = running.mqtt_client(device, password)
    assert not connect(publisher, own.port("MQTT_PORT")).is_failure
    stop = threading.Event()
    sent: list[int] = []

    def publish_forever() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            publisher.publish(topic, str(n), qos=1)
            sent.append(n)
            time.sleep(0.02)

    thread = threading.Thread(target=publish_forever)
    thread.start()
    try:
        time.sleep(0.5)
        old_pid = pids(own)["web"]
        result = run_lab(own, "restart", "web")
        assert result.returncode == 0, result.stderr
        assert pids(own)["web"] not in (None, old_pid)
        after_restart = len(sent)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
        publisher.disconnect()
        publisher.loop_stop()
    last = sent[-1]
    assert last > after_restart
    with running.db() as conn:
        deadline = time.monotonic() + 5
        stored: set[float] = set()
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT value_num FROM readings WHERE room = %s AND device = %s AND attr = 'counter'",
                (unique_room, device),
            ).fetchall()
            stored = {float(str(v)) for (v,) in rows if v is not None}
            if float(last) in stored:
                break
            time.sleep(0.1)
    new_values = set(range(after_restart + 1, last + 1))
    assert {float(v) for v in new_values} <= stored, "values published after the restart are stored"


def test_stop_and_start_one_service(own: LabConfig) -> None:
    assert run_lab(own, "stop", "nodered").returncode == 0
    result = run_lab(own, "status")
    assert result.returncode == 3, "status fails while a service is down"
    assert any(line.split()[:2] == ["nodered", "stopped"] for line in result.stdout.splitlines())
    assert not health.port_open(own.port("NODERED_PORT"))
    assert run_lab(own, "start", "nodered").returncode == 0
    assert run_lab(own, "status").returncode == 0


def test_up_refuses_a_port_in_use_before_starting_anything(own: LabConfig) -> None:
    assert run_lab(own, "stop", "web").returncode == 0
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", own.port("PORTAL_PORT")))
    blocker.listen()
    try:
        result = run_lab(own, "up", "--no-install")
    finally:
        blocker.close()
    assert result.returncode == 1
    assert f"port {own.env['PORTAL_PORT']} (PORTAL_PORT) is already in use" in result.stderr
    assert pids(own)["web"] is None


def test_down_leaves_no_process_and_no_open_port(own: LabConfig) -> None:
    assert run_lab(own, "up", "--no-install").returncode == 0
    running = [pid for pid in pids(own).values() if pid is not None]
    assert len(running) == 4
    result = run_lab(own, "down")
    assert result.returncode == 0
    assert not any(is_running(pid) for pid in running)
    for variable in ("MQTT_PORT", "MQTT_WS_PORT", "PORTAL_PORT", "NODERED_PORT", "POSTGRES_PORT"):
        assert not health.port_open(own.port(variable)), f"{variable} still open"
    assert not [p for p in _processes() if str(own.data_dir) in p]
