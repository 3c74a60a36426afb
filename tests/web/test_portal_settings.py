"""Settings: environment variable names, defaults, and refusal of empty secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from web.settings import DatabaseSettings, Settings, SettingsError

SECRETS = {
    "MQTT_PORTAL_PASSWORD": "m",
    "POSTGRES_PASSWORD": "p",
    "PORTAL_ADMIN_PASSWORD": "a",
    "PORTAL_SECRET_KEY": "k",
}
ALL_VARIABLES = [
    "MQTT_HOST",
    "MQTT_PORT",
    "TOPIC_ROOT",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "PORTAL_PORT",
    "PORTAL_ADMIN_USER",
    "REDIS_URL",
    "PORTAL_REPLICA",
    *SECRETS,
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def set_secrets(monkeypatch: pytest.MonkeyPatch, **changes: str) -> None:
    for name, value in {**SECRETS, **changes}.items():
        monkeypatch.setenv(name, value)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(monkeypatch)
    settings = Settings.from_env(_env_file=None)
    assert (settings.mqtt_host, settings.mqtt_port, settings.mqtt_username) == ("127.0.0.1", 1883, "portal")
    assert settings.topic_root == "office"
    assert (settings.postgres_host, settings.postgres_port) == ("127.0.0.1", 5432)
    assert (settings.portal_port, settings.portal_admin_user) == (5000, "admin")
    assert settings.database_url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://lab:p@127.0.0.1:5432/lab"
    )


def test_every_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(monkeypatch)
    for name, value in {
        "MQTT_HOST": "broker",
        "MQTT_PORT": "51883",
        "TOPIC_ROOT": "factory",
        "POSTGRES_HOST": "db",
        "POSTGRES_PORT": "55432",
        "PORTAL_PORT": "55000",
        "PORTAL_ADMIN_USER": "root",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(_env_file=None)
    assert settings.mqtt_host == "broker"
    assert settings.mqtt_port == 51883
    assert settings.topic_root == "factory"
    assert settings.postgres_host == "db"
    assert settings.postgres_port == 55432
    assert settings.portal_port == 55000
    assert settings.portal_admin_user == "root"
    assert settings.mqtt_portal_password.get_secret_value() == "m"
    assert settings.portal_secret_key.get_secret_value() == "k"


def test_settings_are_frozen_and_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(monkeypatch, PORTAL_ADMIN_PASSWORD="hunter2")
    settings = Settings.from_env(_env_file=None)
    with pytest.raises(ValueError, match="frozen"):
        settings.mqtt_port = 1
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("name", list(SECRETS))
def test_missing_secret_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    set_secrets(monkeypatch)
    monkeypatch.delenv(name)
    with pytest.raises(SettingsError) as error:
        Settings.from_env(_env_file=None)
    message = str(error.value)
    assert "\n" not in message
    assert f"{name} is not set" in message


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_secret_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, PORTAL_SECRET_KEY=value)
    with pytest.raises(SettingsError, match="PORTAL_SECRET_KEY is empty"):
        Settings.from_env(_env_file=None)


@pytest.mark.parametrize("value", ["office/x", "+", "#", ""])
def test_topic_root_must_be_one_level(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, TOPIC_ROOT=value)
    with pytest.raises(SettingsError, match="TOPIC_ROOT"):
        Settings.from_env(_env_file=None)


def test_bad_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(monkeypatch, MQTT_PORT="not-a-port")
    with pytest.raises(SettingsError, match="MQTT_PORT is invalid"):
        Settings.from_env(_env_file=None)


def test_migrations_need_only_the_database_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "p")
    monkeypatch.setenv("POSTGRES_PORT", "55432")
    url = DatabaseSettings.from_env(_env_file=None).database_url
    assert (url.port, url.database, url.username) == (55432, "lab", "lab")


def test_dotenv_is_read_but_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_PASSWORD=from-file\nPOSTGRES_PORT=1111\nNODERED_PORT=1880\n")
    monkeypatch.setenv("POSTGRES_PORT", "2222")
    settings = DatabaseSettings.from_env(_env_file=env_file)
    assert settings.postgres_password.get_secret_value() == "from-file"
    assert settings.postgres_port == 2222


@pytest.mark.parametrize("variable", ["PORTAL_MAX_DEVICES_PER_ROOM", "PORTAL_MAX_DEVICES"])
@pytest.mark.parametrize("value", ["0", "-5", "many", "1e3", "10000001"])
def test_device_caps_are_whole_numbers_of_at_least_one(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    set_secrets(monkeypatch, **{variable: value})
    with pytest.raises(SettingsError, match=f"{variable} is invalid"):
        Settings.from_env(_env_file=None)


def test_device_caps_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(monkeypatch, PORTAL_MAX_DEVICES_PER_ROOM="50", PORTAL_MAX_DEVICES="500")
    settings = Settings.from_env(_env_file=None)
    assert (settings.portal_max_devices_per_room, settings.portal_max_devices) == (50, 500)


@pytest.mark.parametrize("value", ["-1", "thirty", "1.5", "30d", "", "36501"])
def test_retention_days_is_a_whole_number_of_days(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, RETENTION_DAYS=value)
    with pytest.raises(SettingsError, match="RETENTION_DAYS is invalid") as refused:
        Settings.from_env(_env_file=None)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("value", "days"), [(None, 30), ("0", 0), ("1", 1), ("365", 365)])
def test_retention_days_is_read(monkeypatch: pytest.MonkeyPatch, value: str | None, days: int) -> None:
    set_secrets(monkeypatch)
    if value is None:
        monkeypatch.delenv("RETENTION_DAYS", raising=False)
    else:
        monkeypatch.setenv("RETENTION_DAYS", value)
    assert Settings.from_env(_env_file=None).retention_days == days


@pytest.mark.parametrize("value", ["a/b", "+", "#", "", "two words", "x" * 65])
def test_a_share_group_is_one_plain_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, MQTT_SHARE_GROUP=value)
    with pytest.raises(SettingsError, match="MQTT_SHARE_GROUP"):
        Settings.from_env(_env_file=None)


@pytest.mark.parametrize(("value", "group"), [(None, None), ("portals", "portals")])
def test_a_share_group_is_read(monkeypatch: pytest.MonkeyPatch, value: str | None, group: str | None) -> None:
    monkeypatch.delenv("MQTT_SHARE_GROUP", raising=False)
    set_secrets(monkeypatch, **({} if value is None else {"MQTT_SHARE_GROUP": value}))
    assert Settings.from_env(_env_file=None).mqtt_share_group == group


def test_the_share_peers_are_the_other_members(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(
        monkeypatch,
        MQTT_CLIENT_ID="p-2",
        MQTT_SHARE_GROUP="portals",
        MQTT_SHARE_PEERS="p-1,p-2,,p-3,p-1",
    )
    assert Settings.from_env(_env_file=None).share_peers == ("p-1", "p-3")
    monkeypatch.delenv("MQTT_SHARE_GROUP")
    assert Settings.from_env(_env_file=None).share_peers == ()  # no group, no peers to watch


@pytest.mark.parametrize("value", ["p-1, p-2", "p-1\tp-2", "é"])
def test_share_peers_are_client_ids_separated_by_commas(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, MQTT_SHARE_GROUP="portals", MQTT_SHARE_PEERS=value)
    with pytest.raises(SettingsError, match="MQTT_SHARE_PEERS"):
        Settings.from_env(_env_file=None)


@pytest.mark.parametrize(
    "value",
    ["", "localhost:6379", "http://127.0.0.1:6379", "redis://", "redis://:pw@127.0.0.1:99999/0", "redis:/x"],
)
def test_a_redis_url_must_be_one(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, REDIS_URL=value)
    with pytest.raises(SettingsError, match="REDIS_URL") as caught:
        Settings.from_env(_env_file=None)
    assert "\n" not in str(caught.value)
    if value.startswith("redis://:pw"):
        assert "pw" not in str(caught.value)  # the password is never repeated back


def test_a_redis_url_is_read_and_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    set_secrets(monkeypatch, REDIS_URL="redis://:s3cret@127.0.0.1:6400/0", PORTAL_REPLICA="web-2")
    settings = Settings.from_env(_env_file=None)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:s3cret@127.0.0.1:6400/0"
    assert "s3cret" not in repr(settings)
    assert settings.portal_replica == "web-2"
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("PORTAL_REPLICA")
    assert Settings.from_env(_env_file=None).redis_url is None  # one portal: no Redis


@pytest.mark.parametrize("value", ["", "web 2", "x" * 65, "wé"])
def test_a_replica_name_is_plain(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_secrets(monkeypatch, PORTAL_REPLICA=value)
    with pytest.raises(SettingsError, match="PORTAL_REPLICA"):
        Settings.from_env(_env_file=None)
