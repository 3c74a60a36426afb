"""``stress run --cluster`` across a real network: two Dask workers, each in a network namespace
of its own with its own address, the scheduler and the broker in the root namespace behind a
bridge. The fleet's connections leave each worker's namespace through its veth pair, as they
would leave a machine. The test makes the namespaces, the bridge and every process in them, and
removes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labctl.config import free_ports
from tests.conftest import RunningLab
from tests.stress.plain_broker import PlainBroker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="network namespaces need root and iproute2 (`ip netns`)",
    ),
]
DASK = str(Path(sys.executable).parent / "dask")
ATTRIBUTES = 3  # the thermostat's


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Network:
    """A bridge in the root namespace (``.1``) and namespaces hanging off it (``.2``, ``.3`` ...)."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: str = field(default_factory=lambda: f"10.231.{secrets.randbelow(250) + 1}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"stb{self.tag}"

    @property
    def root_address(self) -> str:
        return f"{self.subnet}.1"

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.root_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def host(self) -> tuple[str, str]:
        """A new namespace on the bridge: its name and address."""
        number = len(self.namespaces) + 2
        name, outside, inside = f"stn{self.tag}{number}", f"stv{self.tag}{number}", f"stp{self.tag}{number}"
        address = f"{self.subnet}.{number}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("link", "set", outside, "master", self.bridge, "up")
        ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
        ip("-n", name, "link", "set", inside, "up")
        ip("-n", name, "link", "set", "lo", "up")
        return name, address

    def start(self, namespace: str | None, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*prefix, *argv], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for name in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
            for pid in pids.stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


@pytest.fixture
def network() -> Iterator[Network]:
    made = Network()
    try:
        made.up()
        yield made
    finally:
        made.down()


def _wait_for(port: int, address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(
        ["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"], capture_output=True, check=False
    ).returncode:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"nothing listens on {address}:{port}"
        time.sleep(0.2)


@dataclass
class Cluster:
    """A scheduler in the root namespace and two workers, each in a namespace of its own."""

    address: str
    hosts: list[str]


@pytest.fixture
def cluster(network: Network, tmp_path: Path) -> Cluster:
    (scheduler_port,) = free_ports(1)
    scheduler_log = tmp_path / "scheduler.log"
    scheduler = network.start(
        None,
        [DASK, "scheduler", "--host", network.root_address, "--port", str(scheduler_port), "--no-dashboard"],
        scheduler_log,
    )
    _wait_for(scheduler_port, network.root_address, scheduler, scheduler_log)
    address = f"tcp://{network.root_address}:{scheduler_port}"
    hosts = []
    for number in range(2):
        namespace, host = network.host()
        hosts.append(host)
        network.start(
            namespace,
            [DASK, "worker", address, "--host", host, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
            tmp_path / f"worker-{number}.log",
        )
    return Cluster(address, hosts)


def stress_run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "stress", "run", "--quiet", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=dict(os.environ, STRESS_CONTROL_DIR=str(tmp_path / "control")),
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_workers_in_their_own_namespaces_drive_one_fleet(
    network: Network, cluster: Cluster, tmp_path: Path
) -> None:
    (mqtt_port,) = free_ports(1)
    broker = PlainBroker(extra=f"listener {mqtt_port} {network.root_address}\n")
    broker.start()
    try:
        summary = stress_run(
            tmp_path,
            *("--target", "mqtt", "--host", network.root_address, "--port", str(mqtt_port)),
            *("--devices", "40", "--interval", "0.5", "--duration", "4", "--qos", "1"),
            *("--e2e-devices", "4", "--cluster", cluster.address),
        )
    finally:
        broker.stop()  # (which flushes its log)
        log = broker.log.read_text()
        broker.close()
    expected = 40 * ATTRIBUTES * 2 * 4
    assert summary["sent"] == summary["acked"] == expected and summary["failed"] == 0
    assert summary["observed"] == summary["sampled"] > 0
    workers = summary["cluster"]["workers"]
    assert sorted(w["host"] for w in workers) == sorted(cluster.hosts)
    assert all(w["devices"] == 20 for w in workers)
    # The devices' connections came from the namespaces' addresses, not from loopback
    sources = {match[1] for match in re.finditer(r"New client connected from ([\d.]+):\d+ as dev\d+", log)}
    assert sources == set(cluster.hosts), sources


class Relay:
    """A TCP relay from an address on the bridge to a port on loopback (where the lab listens),
    recording where each connection came from."""

    def __init__(self, host: str, port: int, target: int) -> None:
        self.host, self.port, self.target = host, port, target
        self.sources: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._pipe, self.host, self.port))
        self.ready.set()
        self.loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sources.add(writer.get_extra_info("peername")[0])
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_workers_in_their_own_namespaces_drive_one_fleet_against_the_lab(
    network: Network, cluster: Cluster, lab: RunningLab, tmp_path: Path
) -> None:
    """The lab's broker listens on loopback only: a relay on the bridge carries the workers'
    connections to it, as a load balancer in front of a lab would."""
    (port,) = free_ports(1)
    relay = Relay(network.root_address, port, lab.port("MQTT_PORT"))
    try:
        summary = stress_run(
            tmp_path,
            *("--target", "lab", "--env-file", str(lab.config.env_file), "--prefix", "nsl"),
            *("--host", network.root_address, "--port", str(port)),
            *("--devices", "20", "--interval", "1", "--duration", "3", "--qos", "1"),
            *("--cluster", cluster.address),
        )
    finally:
        relay.close()
    assert summary["sent"] == summary["acked"] == 20 * ATTRIBUTES * 3 and summary["failed"] == 0
    assert summary["observed"] == summary["sampled"] > 0
    assert relay.sources == set(cluster.hosts)
    with lab.db() as db:
        stored = db.execute("SELECT count(*) FROM readings WHERE device LIKE 'nsl%'").fetchone()
    assert stored is not None and stored[0] == 20 * ATTRIBUTES * 3
