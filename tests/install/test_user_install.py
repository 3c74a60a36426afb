"""The product from the environment `./lab up` makes: no test extras, the lab's lock.

Each test runs the environment's own programs from a folder outside the checkout, so what
passes here is what a user gets: every module imports, every command's help prints, the
ThingsBoard commands work against the emulator, a fleet runs against a lab, and the portal
starts and serves from it.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker

from labctl import install
from labctl.config import ROOT, LabConfig
from labctl.lab import Lab
from tests.conftest import RunningLab
from tests.install.conftest import PythonEnv, cached_env
from tests.tbemu.emulator import Emulator

pytestmark = pytest.mark.integration

TB_USER, TB_PASSWORD = "tenant@thingsboard.org", "tenant-secret"
#: Only the test extras bring these; the user's environment must not hold them.
TEST_ONLY = ("pytest", "playwright", "hypothesis", "schemathesis", "mypy", "ruff", "aiomqtt", "gmqtt")

IMPORT_ALL = """
import importlib, json, pkgutil, sys
failed = {}
imported = []
tops, test_only = sys.argv[1].split(","), sys.argv[2:]
for top in tops:
    package = importlib.import_module(top)
    for module in pkgutil.walk_packages(package.__path__, top + "."):
        if module.name.endswith(".__main__"):
            continue  # runs its command when imported
        imported.append(module.name)
        try:
            importlib.import_module(module.name)
        except BaseException as exc:
            failed[module.name] = f"{type(exc).__name__}: {exc}"
test_only = [name for name in test_only if importlib.util.find_spec(name) is not None]
print(json.dumps({"imported": imported, "failed": failed, "test_only": test_only}))
"""


def _modules(*tops: str) -> set[str]:
    """Every module of these packages in the checkout, but the packages themselves and `__main__`."""
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for top in tops
        for path in (ROOT / top).rglob("*.py")
        if "node_modules" not in path.parts and path.name not in {"__main__.py"}
    } - set(tops)


def _import_all(env: PythonEnv, tops: tuple[str, ...], cwd: Path) -> dict[str, Any]:
    done = env.run("python", "-c", IMPORT_ALL, ",".join(tops), *TEST_ONLY, cwd=cwd)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert result["failed"] == {}
    assert result["test_only"] == [], "the environment holds test-only packages"
    assert set(result["imported"]) == _modules(*tops)
    return result


def test_every_module_imports_without_the_test_extras(lab_env: PythonEnv, tmp_path: Path) -> None:
    _import_all(lab_env, ("web", "stress", "labctl"), tmp_path)


def test_the_portal_imports_from_the_image_lock(tmp_path: Path) -> None:
    """The container image holds the portal's lock alone (web/Dockerfile): the portal and the
    launcher's broker-config renderer must import from it."""
    portal_env = cached_env("portal", lambda venv: install.ensure_python_env(ROOT, venv, "portal"))
    _import_all(portal_env, ("web", "labctl"), tmp_path)


def _pins(lock: Path) -> dict[str, str]:
    """`name: version` of every package a lock file pins for this interpreter (names normalised).

    A pin whose environment marker does not hold here (`; python_full_version < '3.11.3'`, say) is
    not installed, and not expected; the user's environment is built with this same Python.
    """
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", line)
        if match and (match[3] is None or Marker(match[3].strip()).evaluate()):
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_versions_are_the_locks_pins(lab_env: PythonEnv, tmp_path: Path) -> None:
    done = lab_env.run(
        "python",
        "-c",
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    installed = {re.sub(r"[-_.]+", "-", name).lower(): v for name, v in json.loads(done.stdout).items()}
    wanted = {**_pins(ROOT / "locks" / "build.txt"), **_pins(ROOT / "locks" / "lab.txt")}
    assert {name: installed.get(name) for name in wanted} == wanted
    assert installed.pop("iot-lab") == "0.1.0"
    # Beside the pins: only what a virtual environment brings itself.
    assert set(installed) - set(wanted) <= {"pip"}


def _subcommands(help_text: str) -> list[str]:
    """The commands a `--help` lists in its `{a,b,c}` or indented COMMAND table."""
    listed = re.search(r"\{([a-z,-]+)\}", help_text)
    if listed:
        return listed[1].split(",")
    table = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^    ([a-z][a-z-]*)", table, flags=re.MULTILINE)


def test_help_of_every_command(lab_env: PythonEnv, tmp_path: Path) -> None:
    main = lab_env.run("stress", "--help", cwd=tmp_path)
    assert main.returncode == 0 and "usage: stress" in main.stdout, main.stderr
    commands = _subcommands(main.stdout)
    assert {"check", "run", "provision", "deprovision", "dashboard", "viewers", "report"} <= set(commands)
    for command in commands:
        done = lab_env.run("stress", command, "--help", cwd=tmp_path)
        assert done.returncode == 0, f"stress {command} --help: {done.stderr}"
        assert f"usage: stress {command}" in done.stdout and not done.stderr

    lab = subprocess.run(
        [str(ROOT / "lab"), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert lab.returncode == 0 and "usage: ./lab" in lab.stdout, lab.stderr
    lab_commands = _subcommands(lab.stdout)
    assert set(lab_commands) == {
        *(
            "up",
            "down",
            "status",
            "logs",
            "start",
            "stop",
            "restart",
            "env",
            "users",
            "devices",
            "test",
            "lock",
        )
    }
    for command in lab_commands:
        done = subprocess.run(
            [str(ROOT / "lab"), command, "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0 and "usage: ./lab" in done.stdout, (
            f"./lab {command} --help: {done.stderr}"
        )


# ---------------------------------------------------------------------------- ThingsBoard


@pytest.fixture
def tb() -> Iterator[Emulator]:
    with Emulator(username=TB_USER, password=TB_PASSWORD) as emulator:
        yield emulator


def test_thingsboard_commands(lab_env: PythonEnv, tb: Emulator, tmp_path: Path) -> None:
    """check, provision, run and deprovision, with the settings where users keep them: `.env`."""
    (tmp_path / ".env").write_text(
        f"TB_URL={tb.url}\nTB_USERNAME={TB_USER}\nTB_PASSWORD={TB_PASSWORD}\n"
        f"TB_MQTT_HOST={tb.mqtt_host}\nTB_MQTT_PORT={tb.mqtt_port}\n"
    )

    def stress(*args: str) -> subprocess.CompletedProcess[str]:
        return lab_env.run("stress", *args, "--target", "thingsboard", "--prefix", "ui", cwd=tmp_path)

    provisioned = stress("provision", "--devices", "4")
    assert provisioned.returncode == 0, provisioned.stderr
    assert sorted(d.name for d in tb.devices()) == ["ui00001", "ui00002", "ui00003", "ui00004"]
    tokens = json.loads((tmp_path / "data" / "provisioning" / "tokens.json").read_text())
    assert sorted(tokens) == ["ui00001", "ui00002", "ui00003", "ui00004"]

    checked = stress("check", "--devices", "4")
    assert checked.returncode == 0, checked.stderr
    assert "signed in" in checked.stdout and "accepted ui00001" in checked.stdout

    ran = stress("run", "--devices", "4", "--interval", "1", "--duration", "3", "--qos", "1", "--quiet")
    assert ran.returncode == 0, ran.stderr
    (folder,) = (tmp_path / "data" / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sent"] > 0 and summary["acked"] == summary["sent"] and summary["failed"] == 0
    assert sum(len(tb.telemetry(name)) for name in tokens) == summary["sent"]

    removed = stress("deprovision", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert tb.devices() == []


# ---------------------------------------------------------------------------- the lab


def test_a_fleet_against_a_lab(lab_env: PythonEnv, lab: RunningLab, unique_room: str, tmp_path: Path) -> None:
    done = lab_env.run(
        "stress",
        "run",
        "--target",
        "lab",
        "--env-file",
        str(lab.config.env_file),
        "--devices",
        "10",
        "--prefix",
        unique_room,
        "--interval",
        "1",
        "--duration",
        "3",
        "--qos",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sent"] > 0 and summary["acked"] == summary["sent"] and summary["failed"] == 0


@pytest.fixture
def lab_from_user_env(lab_env: PythonEnv, new_lab_config: Callable[..., LabConfig]) -> Iterator[RunningLab]:
    """A lab whose migrations and portal run from the user's environment."""
    config = replace(new_lab_config("user-env"), python_env=lab_env.venv)
    running = Lab(config)
    try:
        for service in ("db", "mosquitto", "web"):
            running.start(service)
        yield RunningLab(config, running)
    finally:
        running.down()


def test_the_portal_starts_and_serves(lab_from_user_env: RunningLab) -> None:
    lab = lab_from_user_env
    (web,) = [row for row in lab.lab.status() if row.name == "web"]
    assert web.running and web.health == "healthy"
    with urllib.request.urlopen(f"{lab.portal_url}/readyz", timeout=10) as response:  # noqa: S310
        assert response.status == 200
    with urllib.request.urlopen(f"{lab.portal_url}/login", timeout=10) as response:  # noqa: S310
        page = response.read().decode()
    assert "<form" in page
    # The live client and styles the page needs come from the same install.
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        with urllib.request.urlopen(f"{lab.portal_url}{asset}", timeout=10) as response:  # noqa: S310
            assert response.status == 200 and response.read(), asset
    assert web.pid is not None
    program = Path(f"/proc/{web.pid}/cmdline").read_bytes().split(b"\0")
    assert any(part.startswith(str(lab.config.venv / "bin").encode()) for part in program), program
