"""Validation of a lab instance's configuration: bad values give one clear line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from labctl import envfile
from labctl.config import (
    PORT_VARIABLES,
    PRIVATE_STATE,
    ROOT,
    ConfigError,
    LabConfig,
    new_instance,
    remove_instance,
    remove_private_state,
)


def make_env(tmp_path: Path, **overrides: str) -> Path:
    path = tmp_path / ".env"
    envfile.ensure(path, ROOT / ".env.example", overrides)
    return path


def test_generated_env_is_valid(tmp_path: Path) -> None:
    config = LabConfig.load(make_env(tmp_path), tmp_path / "data")
    assert config.port("MQTT_PORT") == 1883
    assert config.data_dir == (tmp_path / "data").resolve()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"MQTT_PORT": "abc"}, r"MQTT_PORT='abc' .* is not a port number"),
        ({"PORTAL_PORT": "70000"}, r"PORTAL_PORT='70000' .* is not a port number"),
        ({"NODERED_PORT": "0"}, r"NODERED_PORT='0'"),
        ({"NODERED_PORT": "1883"}, r"NODERED_PORT and MQTT_PORT are both 1883"),
        ({"TOPIC_ROOT": "office/floor1"}, r"TOPIC_ROOT='office/floor1' must be a non-empty topic level"),
        ({"TOPIC_ROOT": "#"}, r"TOPIC_ROOT='#'"),
        ({"LAB_DEVICE_ID": "sensor+"}, r"LAB_DEVICE_ID='sensor\+'"),
        ({"POSTGRES_PASSWORD": ""}, r"empty secret\(s\) POSTGRES_PASSWORD"),
        ({"LAB_FLEET_PASSWORD": ""}, r"empty secret\(s\) LAB_FLEET_PASSWORD"),
        ({"LAB_FLEET_USER": "portal"}, r"the portal and LAB_FLEET_USER are both the broker account 'portal'"),
        ({"LAB_FLEET_USER": "sensor1"}, r"LAB_DEVICE_ID and LAB_FLEET_USER are both the broker account"),
        ({"MQTT_ADMIN_USER": "nodered"}, r"MQTT_ADMIN_USER and Node-RED are both"),
        ({"LAB_FLEET_USER": ""}, r"LAB_FLEET_USER is empty"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LabConfig.load(make_env(tmp_path, **overrides), tmp_path / "data")


@pytest.mark.parametrize("replicas", ["0", "-1", "two", "17", "", "2.5", "+2", "0x2"])
def test_a_replica_count_that_is_not_1_to_16_is_refused_in_one_line(tmp_path: Path, replicas: str) -> None:
    env = make_env(tmp_path, PORTAL_REPLICAS=replicas)
    with pytest.raises(ConfigError) as refused:
        LabConfig.load(env, tmp_path / "data")
    message = str(refused.value)
    assert message.startswith(f"PORTAL_REPLICAS={replicas!r} in {env}")
    assert "whole number from 1 to 16" in message and "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"PORTAL_REPLICAS": "3", "PORTAL_REPLICA_PORT": "5100", "PORTAL_PORT": "5102"},
            r"PORTAL_REPLICA_PORT\.\.\+2 \(5100-5102, for PORTAL_REPLICAS=3\) in .* includes PORTAL_PORT=",
        ),
        (
            {"PORTAL_REPLICAS": "2", "PORTAL_REPLICA_PORT": "1882"},
            r"\(1882-1883, for PORTAL_REPLICAS=2\) in .* includes MQTT_PORT=1883",
        ),
        (
            {"PORTAL_REPLICAS": "4", "PORTAL_REPLICA_PORT": "65534"},
            r"\(65534-65537, for PORTAL_REPLICAS=4\) in .* goes past port 65535",
        ),
        ({"PORTAL_REPLICAS": "2", "REDIS_PORT": "5432"}, r"REDIS_PORT and POSTGRES_PORT are both 5432"),
        ({"PORTAL_REPLICAS": "2", "PORTAL_REPLICA_PORT": "1883"}, r"PORTAL_REPLICA_PORT and MQTT_PORT"),
        ({"REDIS_PORT": "redis"}, r"REDIS_PORT='redis' .* is not a port number"),
        ({"PORTAL_REPLICAS": "2", "MQTT_CLIENT_ID": "lab/portal"}, r"MQTT_CLIENT_ID='lab/portal' in .*"),
    ],
)
def test_replica_settings_that_cannot_work_are_refused(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LabConfig.load(make_env(tmp_path, **overrides), tmp_path / "data")


def test_replica_ports_are_free_to_clash_while_one_portal_runs(tmp_path: Path) -> None:
    # an older .env may use these ports for something else: a single portal never opens them
    env = make_env(tmp_path, PORTAL_PORT="5100", REDIS_PORT="5432", PORTAL_REPLICAS="1")
    assert LabConfig.load(env, tmp_path / "data").replicas == 1


def test_a_new_instance_has_room_for_the_most_replicas(tmp_path: Path) -> None:
    config = new_instance(tmp_path / "lab", PORTAL_REPLICAS="16")
    first = config.port("PORTAL_REPLICA_PORT")
    others = {config.port(name) for name in PORT_VARIABLES if name != "PORTAL_REPLICA_PORT"}
    assert not others & set(range(first, first + 16))
    assert config.replica_port(16) == first + 15


def test_an_env_file_from_before_replicas_still_runs_and_gets_the_new_secret(tmp_path: Path) -> None:
    path = make_env(tmp_path)
    for name in ("PORTAL_REPLICAS", "PORTAL_REPLICA_PORT", "REDIS_PORT", "REDIS_PASSWORD"):
        without(path, name)
    with pytest.raises(ConfigError, match=r"missing or empty secret\(s\) REDIS_PASSWORD"):
        LabConfig.load(path, tmp_path / "data")  # the library names it; ./lab adds it
    result = subprocess.run(
        [str(ROOT / "lab"), "--env-file", str(path), "--data-dir", str(tmp_path / "data"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr  # runs: every service stopped
    assert f"Added new secret(s) REDIS_PASSWORD to {path}" in result.stdout
    config = LabConfig.load(path, tmp_path / "data")
    assert len(config.env["REDIS_PASSWORD"]) == 32
    assert config.replicas == 1
    assert (config.env["PORTAL_REPLICA_PORT"], config.env["REDIS_PORT"]) == ("5100", "6379")


def without(path: Path, name: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if not line.startswith(f"{name}=")))


def test_missing_setting_takes_its_documented_default(tmp_path: Path) -> None:
    path = make_env(tmp_path)
    without(path, "PORTAL_LIVE_FLUSH_MS")
    assert LabConfig.load(path, tmp_path / "data").env["PORTAL_LIVE_FLUSH_MS"] == "100"


def test_missing_secret_is_named(tmp_path: Path) -> None:
    path = make_env(tmp_path)
    without(path, "MQTT_PORTAL_PASSWORD")
    with pytest.raises(ConfigError, match=r"missing or empty secret\(s\) MQTT_PORTAL_PASSWORD"):
        LabConfig.load(path, tmp_path / "data")


def test_missing_env_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run ./lab up \(or ./lab env\)"):
        LabConfig.load(tmp_path / "nope.env", tmp_path / "data")


@pytest.mark.skipif(os.geteuid() != 0, reason="state moves under /var/lib/iot-lab/ only for root")
def test_removing_instances_takes_their_state_kept_elsewhere_and_nothing_more(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden"  # a folder the services' own users cannot reach
    hidden.mkdir(mode=0o700)
    instances = [new_instance(hidden / f"lab-{n}") for n in range(2)]
    states = [config.state_dir("db", run_user="postgres") for config in instances]
    for state in states:
        (state / "PG_VERSION").write_text("15")
        assert state.is_relative_to(PRIVATE_STATE)
    (instances[0].logs_dir).mkdir(parents=True)
    (instances[0].logs_dir / "db.log").write_text("kept")
    other = PRIVATE_STATE / "not-these-labs"
    other.mkdir(parents=True, exist_ok=True)
    try:
        remove_private_state(hidden)
        assert not any(state.parent.exists() for state in states)
        assert (instances[0].logs_dir / "db.log").read_text() == "kept"
        assert other.exists(), "state of other labs stays"

        states = [config.state_dir("db", run_user="postgres") for config in instances]
        remove_instance(hidden)
        assert not hidden.exists() and not any(state.parent.exists() for state in states)
    finally:
        other.rmdir()
