"""`./lab` given bad input: one clear line on stderr and a non-zero status."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labctl import envfile
from labctl.config import ROOT


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "lab"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_help_lists_every_command_and_service() -> None:
    result = lab("--help")
    assert result.returncode == 0
    for word in (
        "up",
        "down",
        "status",
        "logs",
        "restart",
        "stop",
        "start",
        "test",
        "env",
        "--docker",
        "db, mosquitto, nodered, web",
    ):
        assert word in result.stdout or word in lab("up", "--help").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["restart", "nosuch"],
        ["logs", "apache"],
        ["start"],
        ["logs", "-n", "many"],
        ["logs", "-n", "0"],
        ["logs", "-n", "-5"],
    ],
)
def test_bad_arguments_fail_with_usage(args: list[str]) -> None:
    result = lab(*args)
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_env_file_is_one_line(tmp_path: Path) -> None:
    result = lab("--env-file", str(tmp_path / "none.env"), "--data-dir", str(tmp_path), "status")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "run ./lab up (or ./lab env)" in result.stderr


def test_malformed_env_file_names_the_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MQTT_PORT=1883\nthis is not a setting\n")
    result = lab("--env-file", str(env), "--data-dir", str(tmp_path), "status")
    assert result.returncode == 1
    assert f"{env}:2: expected KEY=VALUE" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_port_is_one_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    envfile.ensure(env, ROOT / ".env.example", {"PORTAL_PORT": "99999"})
    result = lab("--env-file", str(env), "--data-dir", str(tmp_path), "up", "--no-install")
    assert result.returncode == 1
    assert "PORTAL_PORT='99999'" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_env_command_creates_env_once(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    assert lab("--env-file", str(env), "env").returncode == 0
    first = env.read_text()
    assert lab("--env-file", str(env), "env").returncode == 0
    assert env.read_text() == first


def test_docker_option_explains_when_no_engine(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0:
        pytest.skip("a Docker engine runs here, so `up --docker` would really start the lab")
    env = tmp_path / ".env"
    result = lab("--env-file", str(env), "--data-dir", str(tmp_path), "up", "--docker")
    assert result.returncode == 1
    assert "lab: error:" in result.stderr
    assert "./lab up" in result.stderr
