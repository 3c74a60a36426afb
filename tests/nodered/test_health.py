"""Node-RED's health as ./lab status and Compose see it: GET /health on the flows answers 200
while rules.json is loaded with every rule valid and the broker connection is up, and names the
problem otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from labctl import health
from labctl.config import ROOT, free_ports
from tests.conftest import RunningLab

pytestmark = pytest.mark.integration


def test_the_running_flows_are_healthy(lab: RunningLab) -> None:
    answer = requests.get(f"http://127.0.0.1:{lab.port('NODERED_PORT')}/health", timeout=5)
    assert answer.status_code == 200, answer.text
    shipped = len(json.loads((ROOT / "nodered" / "rules.json").read_text())["rules"])
    assert answer.json() == {"status": "ok", "broker": "connected", "rules": shipped, "problem": ""}
    assert lab.lab.service("nodered").probe() is None


#: A rules file that is not JSON (the default of ``broken_nodered``).
NOT_JSON = '{"rules": {"temperature": '
#: Valid JSON with one good rule and one that names no known severity.
ONE_BAD_RULE = json.dumps(
    {
        "rules": {
            "temperature": {"type": "high-temperature", "levels": [{"severity": "major", "above": 30}]},
            "humidity": {"type": "humidity", "levels": [{"severity": "huge", "above": 80}]},
        }
    }
)


@pytest.fixture
def broken_nodered(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, Path]]:
    """A private Node-RED with the shipped flows, no broker, and a broken rules file: not JSON,
    or the text given by indirect parametrisation."""
    node = shutil.which("node")
    red = ROOT / "nodered" / "node_modules" / "node-red" / "red.js"
    if node is None or not red.exists():
        pytest.fail("Node-RED is not installed: ./lab test installs it with npm ci in nodered/")
    port, no_broker = free_ports(2)
    rules = tmp_path / "rules.json"
    rules.write_text(getattr(request, "param", NOT_JSON))
    log = tmp_path / "nodered.log"
    env = {
        "PATH": os.environ["PATH"],
        "NODERED_ADMIN_PASSWORD": "health-test-password",
        "NODERED_CREDENTIAL_SECRET": "health-test-secret",
        "NODERED_HOST": "127.0.0.1",
        "NODERED_PORT": str(port),
        "NODERED_RULES_FILE": str(rules),
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(no_broker),
        "MQTT_NODERED_PASSWORD": "unused",
    }
    argv = [
        node,
        str(red),
        "--settings",
        str(ROOT / "nodered" / "settings.js"),
        "--userDir",
        str(tmp_path / "user"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        yield port, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _settled_problem(port: int) -> str | None:
    """The problem /health names once the flows have tried the broker (until then it is "no
    answer" or "not connected yet"), waiting up to a minute."""
    deadline = time.monotonic() + 60
    problem = health.http_ok(f"http://127.0.0.1:{port}/health")
    while time.monotonic() < deadline and (
        problem is None or not problem.startswith("broker: ") or "yet" in problem
    ):
        time.sleep(0.5)
        problem = health.http_ok(f"http://127.0.0.1:{port}/health")
    return problem


def test_a_broken_rules_file_and_no_broker_are_named(broken_nodered: tuple[int, Path]) -> None:
    port, log = broken_nodered
    problem = _settled_problem(port)
    assert problem is not None and problem.startswith("broker: "), problem
    broker, rules = problem.split("; ")
    assert broker in ("broker: connecting", "broker: disconnected"), problem
    assert rules == "rules.json not loaded (see the Node-RED log)"
    answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy"
    # the log names the node that failed, and so the file
    assert "[json:parse rules.json]" in log.read_text()


@pytest.mark.parametrize("broken_nodered", [ONE_BAD_RULE], indirect=True)
def test_an_invalid_rule_is_left_out_and_named(broken_nodered: tuple[int, Path]) -> None:
    port, log = broken_nodered
    problem = _settled_problem(port)
    assert problem is not None and problem.startswith("broker: "), problem
    left_out = (
        'rules.json: rule "humidity" left out: '
        'level 1: "severity" must be one of critical, major, minor, warning'
    )
    assert problem.split("; ")[1:] == [left_out]
    answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["rules"] == 1  # the valid temperature rule is kept
    assert left_out in log.read_text()
