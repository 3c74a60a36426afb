"""``stress run --cluster``: a fleet over Dask workers, against real brokers and a real scheduler.

``local:N`` starts its own cluster; the other tests start ``dask scheduler`` and ``dask worker``
processes of their own on loopback, and stop them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.config import ROOT, free_ports
from stress.control import runs_in_progress
from stress.scenario import Broker, Scenario
from stress.shapes import timeline
from tests.conftest import RunningLab
from tests.stress.plain_broker import PlainBroker
from tests.stress.test_control import Arrivals, Run, arrivals  # noqa: F401 - a fixture
from tests.stress.test_control import stress as control

pytestmark = pytest.mark.integration
ATTRIBUTES = 3  # the thermostat's
DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture(autouse=True)
def control_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A control directory of this test's own (the runs it starts, and only those, are found)."""
    directory = tmp_path_factory.mktemp("control")
    monkeypatch.setenv("STRESS_CONTROL_DIR", str(directory))
    return directory


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` processes, each in its own process group."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_ports(1)[0]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.logs = tmp_path
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 30
        while not _listening(self.port):
            assert self.scheduler.poll() is None, (self.logs / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not listen"
            time.sleep(0.1)
        self.workers: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        return subprocess.Popen(
            [DASK, name.split("-", maxsplit=1)[0], *args, "--no-dashboard"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )

    def worker(self, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One more worker (one thread, no nanny: killing it kills the worker)."""
        process = self._start(
            f"worker-{len(self.workers)}",
            self.address,
            "--nthreads",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            env=env,
        )
        self.workers.append(process)
        return process

    def wait_workers(self, count: int) -> None:
        from distributed import Client  # noqa: PLC0415

        with Client(self.address, timeout=20) as client:
            client.wait_for_workers(count, timeout=30)

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", "run", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def summary_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return data


def rows_of(out: Path) -> list[dict[str, str]]:
    with (out / "timeseries.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_local_cluster_merges_every_second_exactly(broker: PlainBroker, tmp_path: Path) -> None:
    common = ["--target", "mqtt", "--port", str(broker.port), "--devices", "40", "--interval", "0.5"]
    common += ["--duration", "4", "--qos", "1", "--e2e-devices", "4"]
    out = tmp_path / "cluster"
    done = run(*common, "--cluster", "local:2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = summary_of(out)
    expected = 40 * ATTRIBUTES * 2 * 4  # devices x attributes x messages per second x seconds
    assert summary["offered"] == summary["sent"] == summary["acked"] == expected
    assert summary["failed"] == 0 and summary["errors_by_reason"] == {}
    assert summary["observed"] == summary["sampled"] > 0
    assert summary["processes"] == 2
    cluster = summary["cluster"]
    assert cluster["scheduler"].startswith("tcp://127.0.0.1:")
    assert sorted(w["devices"] for w in cluster["workers"]) == [20, 20]
    assert all(abs(w["clock_offset_ms"]) < 50 for w in cluster["workers"])
    assert cluster["lost"] == []
    # Each worker's own figures, which add up to the whole
    assert sum(w["sent"] for w in cluster["workers"]) == expected
    assert sum(w["acked"] for w in cluster["workers"]) == expected
    assert all(w["connections_peak"] == 20 and w["run_seconds"] == 4 for w in cluster["workers"])
    assert all(w["cpu_percent"] > 0 and w["saturated_seconds"] == 0 for w in cluster["workers"])
    # workers.csv holds each worker's own seconds; the report shows one row per worker
    with (out / "workers.csv").open() as handle:
        own = list(csv.DictReader(handle))
    for worker in cluster["workers"]:
        assert sum(int(r["sent"]) for r in own if r["worker"] == worker["address"]) == worker["sent"]
    report = subprocess.run(
        [sys.executable, "-m", "stress", "report", str(out)], capture_output=True, text=True, check=False
    )
    assert report.returncode == 0, report.stderr
    assert f"cluster: {cluster['scheduler']}, 2 workers, start aligned within ±" in report.stdout
    assert 0 < cluster["start_alignment_ms"] < 50
    assert all(w["address"] in report.stdout for w in cluster["workers"])
    assert "<h2>Cluster: " in (out / "report.html").read_text()
    # Every second is the exact sum of both workers: the per-second rows add up to the totals,
    # and each whole second of publishing holds what 40 devices offer in it (the first and the
    # drain share the rest, by when publishing began).
    rows = [row for row in rows_of(out) if row["phase"] == "run"]
    assert sum(int(row["sent"]) for row in rows_of(out)) == expected
    assert [int(row["offered"]) for row in rows[1:]] == [40 * ATTRIBUTES * 2] * 3


def test_an_external_scheduler_with_two_workers_against_the_lab(
    dask_cluster: DaskProcesses, lab: RunningLab, tmp_path: Path
) -> None:
    dask_cluster.worker()
    dask_cluster.worker()
    dask_cluster.wait_workers(2)
    out = tmp_path / "run"
    done = run(
        *("--target", "lab", "--env-file", str(lab.config.env_file), "--prefix", "clu"),
        *("--devices", "30", "--interval", "1", "--duration", "3", "--qos", "1"),
        *("--cluster", dask_cluster.address, "--out", str(out)),
    )
    assert done.returncode == 0, done.stderr
    summary = summary_of(out)
    assert summary["sent"] == summary["acked"] == 30 * ATTRIBUTES * 3
    assert summary["observed"] == summary["sampled"] > 0
    workers = summary["cluster"]["workers"]
    assert summary["cluster"]["scheduler"] == dask_cluster.address
    assert len(workers) == 2 and sum(w["devices"] for w in workers) == 30
    assert {w["host"] for w in workers} == {"127.0.0.1"}
    with lab.db() as db:
        stored = db.execute("SELECT count(*) FROM readings WHERE device LIKE 'clu%'").fetchone()
    assert stored is not None and stored[0] == 30 * ATTRIBUTES * 3


def test_stop_and_scale_from_another_shell(broker: PlainBroker, tmp_path: Path) -> None:
    metrics_port = free_ports(1)[0]
    background = Run(
        broker.port,
        tmp_path / "steered",
        *("--devices", "10", "--interval", "0.5", "--duration", "60", "--cluster", "local:2"),
        *("--metrics-port", str(metrics_port)),
    )
    try:
        background.wait_listening(timeout=60)
        background.wait_connected(10, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
            exposition = answer.read().decode()
        per_worker = re.findall(
            r'^stress_worker_devices_connected\{worker="([^"]+)"\} (\d+)', exposition, re.M
        )
        assert sorted(int(count) for _, count in per_worker) == [5, 5], exposition
        grown = control("scale", "16")
        assert grown.returncode == 0, grown.stderr
        background.wait_connected(16, timeout=30)
        time.sleep(1.5)
        stopped = control("stop")
        assert stopped.returncode == 0, stopped.stderr
        summary = background.finish(timeout=60)
    finally:
        background.kill()
    assert summary["stopped"] == "stress stop"
    assert summary["connections_peak"] == 16
    assert summary["failed"] == 0
    assert sorted(w["devices"] for w in summary["cluster"]["workers"]) == [5, 5]
    assert runs_in_progress() == []


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_a_worker_lost_mid_run_is_named_and_the_run_goes_on_or_stops(
    dask_cluster: DaskProcesses, broker: PlainBroker, tmp_path: Path, policy: str
) -> None:
    dask_cluster.worker()
    doomed = dask_cluster.worker()
    dask_cluster.wait_workers(2)
    steered = Run(
        broker.port,
        tmp_path / "run",
        *("--devices", "20", "--interval", "0.5", "--duration", "8", "--cluster", dask_cluster.address),
        *("--on-worker-lost", policy),
    )
    try:
        steered.wait_listening(timeout=60)
        steered.wait_connected(20, timeout=60)
        time.sleep(2)
        os.killpg(doomed.pid, signal.SIGKILL)
        stdout, stderr = steered.process.communicate(timeout=90)
    finally:
        steered.kill()
    assert "Traceback" not in stderr
    summary = summary_of(tmp_path / "run")
    (lost,) = summary["cluster"]["lost"]
    assert lost in {w["address"] for w in summary["cluster"]["workers"]}
    assert any(lost in note and "lost" in note for note in summary["notes"])
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["worker"] for e in events if e["event"] == "worker-lost"] == [lost]
    assert f"worker {lost} lost" in stdout + stderr, (stdout, stderr)  # said on the console
    rows = [row for row in rows_of(tmp_path / "run") if row["phase"] == "run"]
    if policy == "continue":  # the other worker's devices went on to the end
        assert summary["stopped"] == "completed"
        assert summary["errors_by_reason"]["worker-lost"] > 0 and summary["failed"] > 0
        assert len(rows) == 8 and int(rows[-1]["sent"]) == 10 * ATTRIBUTES * 2
    else:
        assert summary["stopped"] == f"error: worker {lost} lost"
        assert len(rows) < 8


def test_files_the_scenario_reads_travel_with_the_work(tmp_path: Path) -> None:
    """Credentials, tokens and the CA go to the workers as contents, placed in a folder there."""
    from stress.cluster_share import placed_in, portable  # noqa: PLC0415

    (tmp_path / "devices.csv").write_text("dev00001,secret-1\n")
    (tmp_path / "tokens.json").write_text('{"dev00001": "token-1"}')
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    scenario = Scenario(
        target="lab",
        broker=Broker(tls=True, ca_file=tmp_path / "ca.pem"),
        stages=timeline("steady", 10, 1.0, 5.0),
        cluster="local:2",
        options={"credentials": str(tmp_path / "devices.csv"), "tokens": str(tmp_path / "tokens.json")},
    )
    shipped, files = portable(scenario)
    assert shipped.cluster is None and shipped.processes == 1
    assert set(files) == {"credentials", "tokens", "ca_file"}
    there = tmp_path / "worker"
    there.mkdir()
    placed = placed_in(shipped, files, there)
    assert Path(placed.options["credentials"]).read_text() == "dev00001,secret-1\n"
    assert Path(placed.options["tokens"]).parent == there
    assert placed.broker.ca_file is not None and placed.broker.ca_file.parent == there
    assert placed.broker.ca_file.read_text().startswith("-----BEGIN CERTIFICATE")
    assert oct(Path(placed.options["credentials"]).stat().st_mode & 0o777) == "0o600"


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    done = run("--target", "mqtt", "--cluster", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in line
    assert "dask scheduler" in line
    assert not (tmp_path / "run").exists()


def test_a_scheduler_without_workers_is_one_line(dask_cluster: DaskProcesses, tmp_path: Path) -> None:
    done = run("--target", "mqtt", "--cluster", dask_cluster.address, "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"no Dask worker is connected to the scheduler at {dask_cluster.address}" in line
    assert f"dask worker {dask_cluster.address}" in line


def test_a_worker_with_another_version_is_one_line(dask_cluster: DaskProcesses, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(ROOT / "stress", other / "stress", ignore=shutil.ignore_patterns("__pycache__"))
    with (other / "stress" / "engine.py").open("a") as handle:
        handle.write("\n# a change\n")
    dask_cluster.worker(env=dict(os.environ, PYTHONPATH=str(other)))
    dask_cluster.wait_workers(1)
    done = run("--target", "mqtt", "--cluster", dask_cluster.address, "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "Dask workers run another version of stress" in line
    assert "install the same locked version on every worker" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cluster", "local:2", "--processes", "2"], "--processes and --cluster do not go together"),
        (["--cluster", "local:0"], "local:N needs 1..256 workers"),
        (["--cluster", "10.0.0.5:8786"], "is not local:N or a Dask scheduler address"),
        (["--cluster", ""], "is not local:N or a Dask scheduler address"),
    ],
)
def test_bad_cluster_flags_are_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    done = run("--target", "mqtt", *flags, "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.splitlines()) <= 2  # (argparse adds its usage)


PLUGIN = """
from stress.behaviours import Behaviour


class Doorbell(Behaviour):
    attributes = ("pressed", "battery")

    def start(self, now):
        self.battery = 100.0

    def next_values(self, now):
        self.battery = max(0.0, self.battery - 0.01)
        return (self.rng.random() < 0.5, round(self.battery, 2))
"""


def test_a_behaviour_plug_in_travels_to_the_workers(
    dask_cluster: DaskProcesses, broker: PlainBroker, tmp_path: Path
) -> None:
    """The workers have never seen the plug-in: only this machine has it on its path."""
    dask_cluster.worker()
    dask_cluster.worker()
    dask_cluster.wait_workers(2)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "doorbells_of_mine.py").write_text(PLUGIN)
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stress",
            "run",
            "--quiet",
            *("--target", "mqtt", "--port", str(broker.port), "--behaviour", "doorbells_of_mine:Doorbell"),
            *("--devices", "10", "--interval", "1", "--duration", "3", "--qos", "1"),
            *("--cluster", dask_cluster.address, "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(plugins)),
    )
    assert done.returncode == 0, done.stderr
    summary = summary_of(out)
    assert summary["behaviour"] == "doorbells_of_mine:Doorbell"
    assert summary["sent"] == summary["acked"] == 10 * 2 * 3


def test_thingsboard_devices_with_their_tokens_over_a_cluster(tmp_path: Path) -> None:
    """The tokens file is read on this machine and travels to the workers with the work."""
    from tests.tbemu.emulator import Emulator  # noqa: PLC0415

    with Emulator(username="tenant@thingsboard.org", password="tenant-secret") as tb:
        env = dict(
            os.environ,
            TB_URL=tb.url,
            TB_USERNAME="tenant@thingsboard.org",
            TB_PASSWORD="tenant-secret",
            TB_MQTT_HOST=tb.mqtt_host,
            TB_MQTT_PORT=str(tb.mqtt_port),
        )
        files = ["--tokens", str(tmp_path / "tokens.json"), "--env-file", str(tmp_path / "none.env")]
        provisioned = subprocess.run(
            [
                sys.executable,
                "-m",
                "stress",
                "provision",
                "--target",
                "thingsboard",
                *files,
                "--devices",
                "6",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert provisioned.returncode == 0, provisioned.stderr
        out = tmp_path / "run"
        done = subprocess.run(
            [
                *(sys.executable, "-m", "stress", "run", "--quiet", "--target", "thingsboard", *files),
                *("--devices", "6", "--interval", "1", "--duration", "3", "--qos", "1"),
                *("--cluster", "local:2", "--out", str(out)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        summary = summary_of(out)
        assert summary["sent"] == summary["acked"] > 0 and summary["failed"] == 0
        assert sum(len(tb.telemetry(f"dev{n:05d}")) for n in range(1, 7)) == summary["sent"]
        assert sorted(w["devices"] for w in summary["cluster"]["workers"]) == [3, 3]


def test_the_active_list_reaches_every_worker_as_it_changes(
    broker: PlainBroker,
    arrivals: Arrivals,  # noqa: F811 - the fixture imported from test_control
    tmp_path: Path,
) -> None:
    active = tmp_path / "active.txt"
    active.write_text("dev00001\n")
    steered = Run(
        broker.port,
        tmp_path / "run",
        *("--devices", "6", "--interval", "0.5", "--duration", "60", "--cluster", "local:2"),
        *("--active", str(active)),
    )
    try:
        steered.wait_listening(timeout=60)
        deadline = time.monotonic() + 60
        while "dev00001" not in arrivals.devices():
            assert time.monotonic() < deadline, "dev00001 never published"
            time.sleep(0.2)
        time.sleep(1.5)
        assert arrivals.devices() == {"dev00001"}  # (dev00002 runs on the other worker)
        active.write_text("dev0000[1-4]\n")
        deadline = time.monotonic() + 20
        while arrivals.devices() != {"dev00001", "dev00002", "dev00003", "dev00004"}:
            assert time.monotonic() < deadline, arrivals.devices()
            time.sleep(0.2)
        stopped = control("stop")
        assert stopped.returncode == 0, stopped.stderr
        steered.finish(timeout=60)
    finally:
        steered.kill()
