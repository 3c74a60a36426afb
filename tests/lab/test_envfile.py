"""`.env` handling: parsing, secret generation, and never overwriting a user's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl import envfile
from labctl.config import ROOT


def test_parse_reads_values_comments_and_quotes() -> None:
    text = "# comment\n\nA=1\n B = two words \nC='quoted'\nD=\"x=y\"\nE=\n"
    assert envfile.parse(text) == {"A": "1", "B": "two words", "C": "quoted", "D": "x=y", "E": ""}


@pytest.mark.parametrize("line", ["no equals sign", "1ABC=x", "A-B=x", "=value"])
def test_parse_rejects_malformed_lines_naming_the_line(line: str) -> None:
    with pytest.raises(envfile.EnvFileError, match=r"\.env:2: expected KEY=VALUE"):
        envfile.parse(f"OK=1\n{line}\n")


def test_every_empty_secret_of_the_example_is_filled_with_a_distinct_value(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    assert envfile.ensure(target, ROOT / ".env.example")
    example = envfile.read(ROOT / ".env.example")
    values = envfile.read(target)
    secrets = [name for name in example if envfile.is_secret(name)]
    assert "POSTGRES_PASSWORD" in secrets
    assert "MQTT_ADMIN_PASSWORD" in secrets
    assert all(len(values[name]) >= 32 and values[name].isalnum() for name in secrets)
    assert len({values[name] for name in secrets}) == len(secrets)
    # Non-secrets keep their documented defaults.
    assert values["MQTT_PORT"] == "1883"
    assert values["TOPIC_ROOT"] == "office"
    assert values["LAB_DEVICE_ID"] == "sensor1"
    assert target.stat().st_mode & 0o077 == 0, ".env holds secrets: owner only"


def test_existing_env_is_never_rewritten(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    target.write_text("MQTT_PORT=2883\n")
    assert not envfile.ensure(target, ROOT / ".env.example")
    assert target.read_text() == "MQTT_PORT=2883\n"


def test_two_generated_files_share_no_secret(tmp_path: Path) -> None:
    envfile.ensure(tmp_path / "a", ROOT / ".env.example")
    envfile.ensure(tmp_path / "b", ROOT / ".env.example")
    a, b = envfile.read(tmp_path / "a"), envfile.read(tmp_path / "b")
    assert all(a[name] != b[name] for name in a if envfile.is_secret(name))


def test_overrides_replace_example_values(tmp_path: Path) -> None:
    envfile.ensure(tmp_path / ".env", ROOT / ".env.example", {"MQTT_PORT": "4000", "EXTRA": "1"})
    values = envfile.read(tmp_path / ".env")
    assert values["MQTT_PORT"] == "4000"
    assert values["EXTRA"] == "1"


def test_a_secret_new_to_the_example_is_added_and_nothing_else_changes(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    envfile.ensure(target, ROOT / ".env.example")
    before = target.read_text()
    lines = [line for line in before.splitlines() if not line.startswith("LAB_FLEET_PASSWORD=")]
    lines = [line.replace("MQTT_PORT=1883", "MQTT_PORT=2883") for line in lines]  # the user's own edit
    target.write_text("\n".join(lines))  # and no newline at the end
    assert envfile.add_new_secrets(target, ROOT / ".env.example") == ["LAB_FLEET_PASSWORD"]
    after = target.read_text()
    assert after.startswith("\n".join(lines) + "\n")
    values = envfile.read(target)
    assert len(values["LAB_FLEET_PASSWORD"]) == 32
    assert values["MQTT_PORT"] == "2883"
    assert envfile.add_new_secrets(target, ROOT / ".env.example") == []  # once only
    assert target.read_text() == after


def test_a_secret_the_user_emptied_is_not_refilled(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    envfile.ensure(target, ROOT / ".env.example", {"LAB_FLEET_PASSWORD": ""})
    assert envfile.add_new_secrets(target, ROOT / ".env.example") == []  # the lab names it instead
