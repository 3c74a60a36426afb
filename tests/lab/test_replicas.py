"""Several portal replicas (PORTAL_REPLICAS=2) behind HAProxy, with Redis, as `./lab` runs them.

The first tests need nothing running: what each replica is given, and the configuration files.
The others run in order on one lab instance of their own (database, broker, Redis, two replicas,
the front; no Node-RED): it comes up healthy and on loopback only, the front keeps each client on
one replica and moves it when that replica dies, `./lab restart web` restarts the replicas one
after the other without a failed request, and `Lab.down()` leaves no process behind.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import requests

from labctl import health
from labctl.config import LabConfig, new_instance
from labctl.front import COOKIE, REPLICA_HEADER
from labctl.lab import Lab
from labctl.process import is_running
from labctl.replicas import PortalReplica, Redis
from labctl.services import Portal
from tests.conftest import RunningLab, own_lab
from tests.lab.test_launcher import run_lab
from tests.lab.test_listeners import TCP_LISTEN, _address, descendants

SERVICES = ("db", "mosquitto", "redis", "web-1", "web-2", "front")


# --- Without processes ----------------------------------------------------------------------------


def test_each_replica_is_the_portal_on_its_own_port_with_its_own_variables(tmp_path: Path) -> None:
    config = new_instance(tmp_path / "lab", PORTAL_REPLICAS="3", MQTT_CLIENT_ID="portal-x")
    single = Portal(config).spec()
    second = PortalReplica(config, 2).spec()
    port = config.port("PORTAL_REPLICA_PORT") + 1
    assert second.name == "web-2"
    assert second.argv == [
        f"127.0.0.1:{port}" if arg == f"127.0.0.1:{config.port('PORTAL_PORT')}" else arg
        for arg in single.argv
    ]
    added = {name: value for name, value in second.env.items() if single.env.get(name) != value}
    assert added == {
        "MQTT_CLIENT_ID": "portal-x-2",
        "MQTT_SHARE_GROUP": "portal-x",
        "MQTT_SHARE_PEERS": "portal-x-1,portal-x-2,portal-x-3",
        "REDIS_URL": f"redis://:{config.env['REDIS_PASSWORD']}@127.0.0.1:{config.port('REDIS_PORT')}/0",
        "PORTAL_REPLICA": "web-2",
    }


def test_a_single_portal_is_as_before(tmp_path: Path) -> None:
    config = new_instance(tmp_path / "lab")
    lab = Lab(config)
    assert list(lab.services) == ["db", "mosquitto", "nodered", "web"]
    assert lab.named("web") == [lab.service("web")]
    assert lab.service("web").spec().env == config.service_env()


def test_the_front_s_configuration_is_valid_haproxy(tmp_path: Path) -> None:
    lab = Lab(new_instance(tmp_path / "lab", PORTAL_REPLICAS="4"))
    assert list(lab.services) == [
        "db",
        "mosquitto",
        "nodered",
        "redis",
        "web-1",
        "web-2",
        "web-3",
        "web-4",
        "front",
    ]
    frontend = lab.service("front")
    frontend.prepare()
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(frontend.state_dir / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (frontend.state_dir / "haproxy.cfg").read_text()
    assert f"bind 127.0.0.1:{lab.config.port('PORTAL_PORT')}\n" in text
    for replica in lab.replicas:
        assert f"server {replica.name} 127.0.0.1:{replica.port} " in text
        assert f"cookie {replica.name}\n" in text


# --- One lab with two replicas --------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    with own_lab(new_lab_config, "replicas", SERVICES, PORTAL_REPLICAS="2") as lab:
        yield lab


def listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address a TCP socket listens on at `port`, from /proc/net."""
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == TCP_LISTEN and int(hex_port, 16) == port:
                found.append(_address(address))
    return found


@pytest.mark.integration
def test_every_service_is_healthy_on_loopback_with_its_own_port(replicas: RunningLab) -> None:
    rows = {row.name: row for row in replicas.lab.status()}
    assert list(rows) == ["db", "mosquitto", "nodered", "redis", "web-1", "web-2", "front"]
    assert rows["nodered"].health == "stopped"  # not started here
    assert {name: rows[name].health for name in SERVICES} == dict.fromkeys(SERVICES, "healthy")
    first = replicas.port("PORTAL_REPLICA_PORT")
    assert [rows["web-1"].port, rows["web-2"].port] == [first, first + 1]
    assert rows["front"].port == replicas.port("PORTAL_PORT")
    assert rows["redis"].port == replicas.port("REDIS_PORT")
    for name in ("web-1", "web-2"):
        answer = requests.get(f"http://127.0.0.1:{rows[name].port}/readyz", timeout=5)
        assert answer.status_code == 200, answer.text
        assert REPLICA_HEADER not in answer.headers, "straight from the replica, not through the front"
    assert requests.get(f"{replicas.portal_url}/readyz", timeout=5).status_code == 200
    for name in ("redis", "web-1", "web-2", "front"):
        addresses = listening(rows[name].port)
        assert addresses, f"nothing listens on {name}'s port"
        assert all(address == ipaddress.ip_address("127.0.0.1") for address in addresses), (name, addresses)


@pytest.mark.integration
def test_each_replica_has_its_own_broker_session_in_one_share_group(replicas: RunningLab) -> None:
    group = replicas.env["MQTT_CLIENT_ID"]
    for number in (1, 2):
        log = replicas.lab.table.log_file(f"web-{number}").read_text()
        assert f"client_id={group}-{number} " in log
        assert f"$share/{group}/" in log


@pytest.mark.integration
def test_redis_wants_the_password_and_keeps_it_private(replicas: RunningLab) -> None:
    port = replicas.port("REDIS_PORT")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
        anonymous.sendall(b"PING\r\n")
        assert anonymous.recv(100).startswith(b"-NOAUTH")
    assert health.redis_ping(port, "not-the-password") == "password refused"
    assert redis.Redis(port=port, password=replicas.env["REDIS_PASSWORD"], socket_timeout=2).ping()
    changed = replace(replicas.config, env={**replicas.env, "REDIS_PASSWORD": "changed-in-env"})
    assert (Redis(changed).probe() or "").startswith("REDIS_PASSWORD in .env differs from the one")
    config = Redis(replicas.config).config_file
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert f'requirepass "{replicas.env["REDIS_PASSWORD"]}"\n' in config.read_text()


def served_by(session: requests.Session, url: str) -> str:
    answer = session.get(f"{url}/healthz", timeout=10)
    assert answer.status_code == 200
    return answer.headers[REPLICA_HEADER]


@pytest.mark.integration
def test_the_front_keeps_a_client_on_its_replica_until_that_one_dies(replicas: RunningLab) -> None:
    url = replicas.portal_url
    clients = [requests.Session(), requests.Session()]
    first = [served_by(client, url) for client in clients]
    assert sorted(first) == ["web-1", "web-2"], "two new clients, one on each replica"
    assert [client.cookies[COOKIE] for client in clients] == first
    for _ in range(5):
        assert [served_by(client, url) for client in clients] == first

    table = replicas.lab.table
    victim, survivor = first
    port = replicas.lab.service(victim).port
    table.stop(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while health.port_open(port):  # its worker goes a moment after it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    assert served_by(clients[0], url) == survivor
    assert time.monotonic() - started < 3
    assert clients[0].cookies[COOKIE] == survivor, "the cookie now names the live replica"
    assert served_by(clients[1], url) == survivor
    replicas.lab.start(victim)


@pytest.mark.integration
def test_restarting_web_restarts_each_replica_and_the_front_always_answers(replicas: RunningLab) -> None:
    before = {name: replicas.lab.pid(replicas.lab.service(name)) for name in ("web-1", "web-2", "front")}
    answers: list[int | str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                answers.append(requests.get(f"{replicas.portal_url}/healthz", timeout=10).status_code)
            except requests.RequestException as exc:
                answers.append(type(exc).__name__)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        result = run_lab(replicas.config, "restart", "web")
    finally:
        stop.set()
        poller.join()
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("  +") and "web-" in line]
    events = [("stop" if "stopping" in line else "start", "web-1" in line) for line in steps]
    assert events == [("stop", True), ("start", True), ("stop", False), ("start", False)], result.stdout
    after = {name: replicas.lab.pid(replicas.lab.service(name)) for name in before}
    assert after["front"] == before["front"]
    assert after["web-1"] not in (None, before["web-1"]) and after["web-2"] not in (None, before["web-2"])
    assert answers and set(answers) == {200}, answers


@pytest.mark.integration
def test_the_command_line_names_the_replicas(replicas: RunningLab) -> None:
    status = run_lab(replicas.config, "status")
    rows = [line.split()[0] for line in status.stdout.splitlines()[1:]]
    assert rows == ["db", "mosquitto", "nodered", "redis", "web-1", "web-2", "front"]
    logs = run_lab(replicas.config, "logs", "web", "-n", "3")
    assert logs.returncode == 0
    assert "==> web-1" in logs.stdout and "==> web-2" in logs.stdout and "==> db" not in logs.stdout
    unknown = run_lab(replicas.config, "logs", "web-3")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().count("\n") == 0, unknown.stderr
    assert "db, mosquitto, nodered, redis, web-1, web-2, front" in unknown.stderr


@pytest.mark.integration
def test_down_stops_every_process(replicas: RunningLab) -> None:
    processes = []
    for name in SERVICES:
        pid = replicas.lab.pid(replicas.lab.service(name))
        assert pid is not None, name
        processes += descendants(pid)  # the gunicorn workers too
    replicas.lab.down()
    deadline = time.monotonic() + 10
    while any(is_running(pid) for pid in processes):
        assert time.monotonic() < deadline, [pid for pid in processes if is_running(pid)]
        time.sleep(0.05)
    assert all(row.health == "stopped" for row in replicas.lab.status())
    for variable in ("PORTAL_PORT", "REDIS_PORT", "PORTAL_REPLICA_PORT"):
        assert not listening(replicas.port(variable)), variable
