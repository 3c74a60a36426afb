"""Validation of a lab instance's configuration: bad values give one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labctl import envfile
from labctl.config import (
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
