"""``stress check``: one line saying whether the target is reachable and takes the credentials."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningLab
from tests.stress.conftest import USERS
from tests.stress.plain_broker import PlainBroker, free_port

pytestmark = pytest.mark.integration


def check(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", "check", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_reachable_broker_is_ok_in_one_line(broker: PlainBroker) -> None:
    result = check("--target", "mqtt", "--port", str(broker.port))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"ok: mqtt at mqtt://127.0.0.1:{broker.port} (MQTT 3.1.1) accepted dev00001 anonymously in "
    )
    assert result.stdout.count("\n") == 1


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_credentials_are_checked(auth_broker: PlainBroker, protocol: str) -> None:
    common = ["--target", "mqtt", "--port", str(auth_broker.port), "--protocol", protocol]
    good = check(*common, "--username", "fleet", "--password", USERS["fleet"])
    assert good.returncode == 0, good.stderr
    assert "accepted dev00001 as 'fleet'" in good.stdout
    bad = check(*common, "--username", "fleet", "--password", "wrong")
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot connect as 'fleet'" in lines[0]
    assert "[connack-" in lines[0]
    assert "; check --username and --password" in lines[0]


def test_nothing_listening_is_named_with_what_to_check() -> None:
    port = free_port()
    result = check("--target", "mqtt", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"stress check: error: mqtt at mqtt://127.0.0.1:{port} (MQTT 3.1.1): cannot connect"
    )
    assert result.stderr.strip().endswith(
        f"[tcp-refused]; nothing listens on 127.0.0.1:{port}: is the broker running? "
        "(else check --host and --port)"
    )


def test_the_scenario_files_target_is_checked(broker: PlainBroker, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'target = "mqtt"\nport = {broker.port}\nprefix = "probe"\n')
    result = check("--scenario", str(path))
    assert result.returncode == 0, result.stderr
    assert "accepted probe00001" in result.stdout


def test_the_lab_takes_its_fleet_account(lab: RunningLab, tmp_path: Path) -> None:
    result = check("--target", "lab", "--env-file", str(lab.config.env_file))
    assert result.returncode == 0, result.stderr
    assert f"lab at mqtt://127.0.0.1:{lab.port('MQTT_PORT')}" in result.stdout
    assert f"as {lab.env['LAB_FLEET_USER']!r}" in result.stdout
    wrong = tmp_path / "wrong.env"
    wrong.write_text(
        "\n".join(
            "LAB_FLEET_PASSWORD=not-the-password" if line.startswith("LAB_FLEET_PASSWORD=") else line
            for line in lab.config.env_file.read_text().splitlines()
        )
        + "\n"
    )
    refused = check("--target", "lab", "--env-file", str(wrong))
    assert refused.returncode == 1
    assert f"check LAB_FLEET_USER and LAB_FLEET_PASSWORD in {wrong}" in refused.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--port", "0"], "--port"),
        (["--target", "coap"], "--target"),
        (["--scenario", "/nonexistent.yaml"], "--scenario"),
    ],
)
def test_hostile_flags_are_one_line(flags: list[str], named: str) -> None:
    result = check(*flags)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert named in result.stderr
