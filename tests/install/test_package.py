"""``stress`` installed on its own: ``pip install '.[stress]'``, a wheel, nothing of the checkout.

Every test runs the installed programs from a temporary folder (no ``.env``, no checkout
files): the lab target (fleet account and provisioned accounts), the MQTT target, ThingsBoard
over each transport, a shipped scenario example by name and the dashboard all work from the
package and its package data, and a name that is no file nor example is one line.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from labctl.config import ROOT, free_ports
from tests.conftest import RunningLab
from tests.install.conftest import PythonEnv
from tests.tbemu.emulator import Emulator

pytestmark = pytest.mark.integration  # every test needs the environment pip builds, most a lab

TB_USER, TB_PASSWORD = "tenant@thingsboard.org", "tenant-secret"
#: The portal's extra brings these; a stress-only install must neither hold nor need them.
PORTAL_ONLY = ("sqlalchemy", "psycopg", "alembic", "gunicorn", "gevent", "paho", "pydantic_settings")
EXAMPLES = ("broker-capacity", "lab-morning", "ramp-steps")

WHERE = """
import importlib.util, json, sys
import stress, stress.cli.main, stress.scenario, wire.names, labctl
print(json.dumps({
    "files": {name: sys.modules[name].__file__ for name in ("stress", "wire.names", "labctl")},
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1:]),
    "installed": [name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None],
    "path": sys.path,
}))
"""


def summary_of(folder: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return summary


def all_acknowledged(summary: dict[str, Any]) -> bool:
    """Every message sent was acknowledged, and none failed."""
    return bool(summary["sent"] > 0 and summary["acked"] == summary["sent"] and summary["failed"] == 0)


# ---------------------------------------------------------------------------- the install


def test_installed_from_a_wheel_not_the_checkout(stress_env: PythonEnv, tmp_path: Path) -> None:
    done = stress_env.run("python", "-c", WHERE, *PORTAL_ONLY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    site = stress_env.venv / "lib"
    for name, file in found["files"].items():
        assert Path(file).is_relative_to(site), f"{name} is imported from {file}, not the install"
    assert not any(Path(entry).resolve() == ROOT for entry in found["path"] if entry)
    assert found["installed"] == [], "the portal's dependencies are in a stress-only install"
    assert found["loaded"] == []
    # A wheel install records no source folder (an editable one does, in direct_url.json).
    (record,) = stress_env.venv.glob("lib/python*/site-packages/iot_lab-*.dist-info")
    direct = record / "direct_url.json"
    assert not direct.exists() or not json.loads(direct.read_text()).get("dir_info", {}).get("editable")
    assert not list(stress_env.venv.glob("lib/python*/site-packages/__editable__*"))


#: Files of stress/ that building an image needs, not the package.
NOT_PACKAGE_DATA = ("Dockerfile", ".dockerignore")


def _package_files() -> set[str]:
    """The files of the `stress` package in the checkout (tracked or new, never ignored), but
    what only an image build reads."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "stress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name for name in listed if (ROOT / name).is_file() and Path(name).name not in NOT_PACKAGE_DATA}


def test_the_package_carries_every_file_of_stress_and_the_browser_library(stress_env: PythonEnv) -> None:
    (site,) = stress_env.venv.glob("lib/python*/site-packages")
    missing = sorted(name for name in _package_files() if not (site / name).is_file())
    assert missing == []
    library = site / "web/assets/node_modules/socket.io-client/dist/socket.io.min.js"
    assert library.read_bytes() == (ROOT / "web" / library.relative_to(site / "web")).read_bytes()


def test_help_both_ways_names_the_examples(stress_env: PythonEnv, tmp_path: Path) -> None:
    for program in (("stress",), ("python", "-m", "stress")):
        done = stress_env.run(*program, "--help", cwd=tmp_path)
        assert done.returncode == 0 and "usage: stress" in done.stdout, done.stderr
    run_help = stress_env.run("stress", "run", "--help", cwd=tmp_path)
    assert run_help.returncode == 0, run_help.stderr
    flags = run_help.stdout.split("options:", 1)[1]
    scenario = " ".join(flags.split("--scenario FILE", 1)[1].split("--duration-scale")[0].split())
    for name in EXAMPLES:
        assert name in scenario.replace("- ", "-")  # help wraps lines at hyphens


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("missing/lab-morning.yaml", "cannot read --scenario missing/lab-morning.yaml: no such file"),
        ("lab-evening", "cannot read --scenario lab-evening: no such file, nor an example"),
        ("lab-morning.toml", "cannot read --scenario lab-morning.toml: no such file"),
        (".", "--scenario . is a folder"),
        ("", "--scenario needs a file or the name of an example"),
        ("x" * 5000, "no such file"),
    ],
    ids=["missing-path", "unknown-name", "wrong-extension", "folder", "empty", "too-long"],
)
def test_a_scenario_that_is_no_file_nor_example_is_one_line(
    stress_env: PythonEnv, tmp_path: Path, given: str, says: str
) -> None:
    done = stress_env.run("stress", "run", "--scenario", given, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("stress run: error: ") and says in line, line
    assert f"(the examples are {', '.join(EXAMPLES)})" in line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- targets


def run_lab(env: PythonEnv, lab: RunningLab, folder: Path, *args: str) -> dict[str, Any]:
    """``stress run ARGS --out FOLDER`` with the lab's ``.env``; its summary."""
    done = env.run(
        "stress",
        "run",
        "--env-file",
        str(lab.config.env_file),
        *args,
        "--drain",
        "2",
        "--quiet",
        "--out",
        str(folder),
        cwd=folder.parent,
    )
    assert done.returncode == 0, done.stderr
    return summary_of(folder)


def test_the_lab_target(stress_env: PythonEnv, lab: RunningLab, unique_room: str, tmp_path: Path) -> None:
    summary = run_lab(
        stress_env,
        lab,
        tmp_path / "run",
        *("--target", "lab", "--devices", "5", "--prefix", unique_room),
        *("--interval", "0.5", "--duration", "2", "--qos", "1"),
    )
    assert all_acknowledged(summary)
    assert summary["observed"] == summary["sampled"] > 0  # the fleet account's subscriber saw them


def test_the_lab_target_on_accounts_of_its_own(
    stress_env: PythonEnv, lab: RunningLab, unique_room: str, tmp_path: Path
) -> None:
    """``stress provision --target lab`` gives each device the lab's device role, from the package."""
    accounts = ("--env-file", str(lab.config.env_file), "--prefix", unique_room)
    credentials = ("--credentials", str(tmp_path / "devices.csv"))
    made = stress_env.run("stress", "provision", *accounts, *credentials, "--devices", "3", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    summary = run_lab(
        stress_env,
        lab,
        tmp_path / "run",
        *("--target", "lab", "--devices", "3", "--prefix", unique_room, *credentials),
        *("--interval", "0.5", "--duration", "1", "--qos", "1", "--e2e-devices", "0"),
    )
    assert all_acknowledged(summary)
    removed = stress_env.run("stress", "deprovision", *accounts, "--yes", cwd=tmp_path)
    assert removed.returncode == 0 and "3 accounts deleted" in removed.stdout, removed.stderr


def test_the_mqtt_target_with_the_fleet_account(
    stress_env: PythonEnv, lab: RunningLab, unique_room: str, tmp_path: Path
) -> None:
    # The fleet account may publish and subscribe under the lab's topic root (mosquitto/roles.json).
    summary = run_lab(
        stress_env,
        lab,
        tmp_path / "run",
        *("--target", "mqtt", "--port", str(lab.port("MQTT_PORT")), "--root", lab.env["TOPIC_ROOT"]),
        *("--username", lab.env["LAB_FLEET_USER"], "--password", lab.env["LAB_FLEET_PASSWORD"]),
        *("--devices", "5", "--prefix", unique_room, "--interval", "0.5", "--duration", "2", "--qos", "1"),
    )
    assert all_acknowledged(summary)
    assert summary["target"] == "mqtt" and summary["observed"] == summary["sampled"] > 0


def test_a_shipped_example_by_name(
    stress_env: PythonEnv, lab: RunningLab, unique_room: str, tmp_path: Path
) -> None:
    # lab-morning.yaml: four stages of 50 to 200 devices, 170 s; a fiftieth of it here
    summary = run_lab(
        stress_env,
        lab,
        tmp_path / "run",
        *("--scenario", "lab-morning", "--duration-scale", "0.02", "--prefix", unique_room),
    )
    assert all_acknowledged(summary)
    assert summary["target"] == "lab" and summary["shape"] == "timeline"
    assert summary["devices"] == 200 and summary["qos"] == 1
    assert summary["duration_s"] == pytest.approx(170 * 0.02, abs=0.5)


@pytest.fixture
def tb() -> Iterator[Emulator]:
    with Emulator(username=TB_USER, password=TB_PASSWORD) as emulator:
        yield emulator


def test_thingsboard_over_every_transport(stress_env: PythonEnv, tb: Emulator, tmp_path: Path) -> None:
    names = [f"pk{i:05d}" for i in range(1, 5)]

    def stress(command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``stress COMMAND --target thingsboard`` with the emulator in the ``TB_*`` variables."""
        return stress_env.run(
            *("stress", command, "--target", "thingsboard", "--prefix", "pk", *args),
            cwd=tmp_path,
            TB_URL=tb.url,
            TB_USERNAME=TB_USER,
            TB_PASSWORD=TB_PASSWORD,
            TB_MQTT_HOST=tb.mqtt_host,
            TB_MQTT_PORT=str(tb.mqtt_port),
        )

    provisioned = stress("provision", "--devices", "4", "--gateways", "1")
    assert provisioned.returncode == 0, provisioned.stderr
    assert sorted(d.name for d in tb.devices()) == sorted([*names, "pk-gateway-01"])
    checked = stress("check", "--devices", "4")
    assert checked.returncode == 0 and "accepted pk00001" in checked.stdout, checked.stderr

    runs = {
        "mqtt": ("--transport", "mqtt"),
        "gateway": ("--transport", "gateway", "--gateways", "1"),
        "http": ("--transport", "http"),
    }
    stored = 0
    for transport, flags in runs.items():
        folder = tmp_path / transport
        ran = stress(
            "run",
            *flags,
            *("--devices", "4", "--interval", "0.5", "--duration", "1", "--qos", "1", "--drain", "2"),
            *("--quiet", "--out", str(folder)),
        )
        assert ran.returncode == 0, f"{transport}: {ran.stderr}"
        summary = summary_of(folder)
        assert all_acknowledged(summary), (transport, summary["errors_by_reason"])
        stored += summary["acked"]
        assert sum(len(tb.telemetry(name)) for name in names) == stored, transport

    removed = stress("deprovision", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert tb.devices() == []


# ---------------------------------------------------------------------------- the dashboard


@pytest.fixture
def dashboard(stress_env: PythonEnv, tmp_path: Path) -> Iterator[str]:
    """``stress dashboard`` of the install, serving an empty runs folder; its address."""
    (port,) = free_ports(1)
    runs = tmp_path / "runs"
    runs.mkdir()
    process = subprocess.Popen(
        [stress_env.bin("stress"), "dashboard", "--runs", str(runs), "--port", str(port)],
        cwd=tmp_path,
        env=stress_env.environ(STRESS_CONTROL_DIR=str(tmp_path / "control")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(f"{address}/healthz", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.communicate(timeout=10)


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return response.status, response.headers.get_content_type(), response.read()


def test_the_dashboard_serves_its_page_and_everything_it_loads(dashboard: str) -> None:
    status, kind, page = fetch(f"{dashboard}/")
    assert status == 200 and kind == "text/html" and b"stress dashboard" in page
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.decode())
    assert any("socket.io" in asset for asset in assets) and any("dashboard.js" in asset for asset in assets)
    for asset in assets:
        status, kind, body = fetch(f"{dashboard}{asset}")
        assert status == 200 and kind in ("text/javascript", "text/css"), asset
        assert len(body) > 1000 and b"<html" not in body[:200].lower(), asset
    states: list[Any] = []
    client = socketio.Client()
    client.on("state", states.append)
    client.connect(dashboard, wait_timeout=10)
    try:
        deadline = time.monotonic() + 10
        while not states and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
    assert states, "the dashboard pushed no state"
