"""Rendering the broker's configuration and accounts (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl import broker

ENV = {
    "TOPIC_ROOT": "office",
    "MQTT_ADMIN_USER": "admin",
    "MQTT_ADMIN_PASSWORD": "admin-pw",
    "MQTT_PORTAL_PASSWORD": "portal-pw",
    "MQTT_NODERED_PASSWORD": "nodered-pw",
    "LAB_DEVICE_ID": "sensor1",
    "LAB_DEVICE_PASSWORD": "device-pw",
    "LAB_FLEET_USER": "fleet",
    "LAB_FLEET_PASSWORD": "fleet-pw",
}


def native(tmp_path: Path, tls_dir: Path | None = None) -> broker.Profile:
    return broker.Profile(
        "native",
        "127.0.0.1",
        2883,
        2901,
        2884,
        tmp_path / "state",
        tls_dir or tmp_path / "no-certs",
        "/usr/lib/plugin.so",
    )


def test_native_config_listens_on_loopback_with_env_ports(tmp_path: Path) -> None:
    text = broker.render_config(native(tmp_path))
    assert "listener 2883 127.0.0.1\nprotocol mqtt" in text
    assert "listener 2901 ::ffff:127.0.0.1\nprotocol websockets" in text, "IPv4-mapped: loopback alone"
    assert "allow_anonymous false" in text
    assert f"plugin_opt_config_file {tmp_path / 'state'}/dynamic-security.json" in text
    assert "certfile" not in text, "no TLS listener without a certificate"
    assert "$" not in text.replace("$-placeholders", ""), "every placeholder is filled"


@pytest.mark.parametrize(
    ("address", "written"),
    [
        ("127.0.0.1", "::ffff:127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),  # noqa: S104 - the container profile's address, kept as it is
        ("::1", "::1"),
        ("localhost", "localhost"),
    ],
)
def test_websocket_listener_address(address: str, written: str) -> None:
    assert broker.websocket_address(address) == written


def test_without_ipv6_the_websocket_address_stays_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "_ipv6_available", lambda: False)
    assert broker.websocket_address("127.0.0.1") == "127.0.0.1"


def test_container_config_uses_fixed_ports_on_all_interfaces(tmp_path: Path) -> None:
    text = broker.render_config(broker.container_profile(Path("/mosquitto/data"), tmp_path))
    assert "listener 1883 0.0.0.0\nprotocol mqtt" in text
    assert "listener 9001 0.0.0.0\nprotocol websockets" in text
    assert "plugin /usr/lib/mosquitto_dynamic_security.so" in text


def test_tls_listener_appears_only_with_certificate_and_key(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "server.crt").write_text("cert")
    assert "certfile" not in broker.render_config(native(tmp_path, certs)), "key missing: no listener"
    (certs / "server.key").write_text("key")
    text = broker.render_config(native(tmp_path, certs))
    assert (
        f"listener 2884 127.0.0.1\nprotocol mqtt\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key"
        in text
    )


def test_seeded_accounts_have_the_roles_of_the_contract() -> None:
    config = broker.render_dynsec(None, ENV)
    clients = {c["username"]: c for c in config["clients"]}
    assert set(clients) == {"admin", "portal", "nodered", "sensor1", "fleet"}
    assert all(
        broker.password_matches(clients[u], ENV[v])
        for u, v in [
            ("admin", "MQTT_ADMIN_PASSWORD"),
            ("portal", "MQTT_PORTAL_PASSWORD"),
            ("nodered", "MQTT_NODERED_PASSWORD"),
            ("sensor1", "LAB_DEVICE_PASSWORD"),
            ("fleet", "LAB_FLEET_PASSWORD"),
        ]
    )
    roles = {r["rolename"]: {(a["acltype"], a["topic"]) for a in r["acls"]} for r in config["roles"]}
    assert ("publishClientSend", "office/+/sensor1/#") in roles["device:sensor1"]
    assert roles["lab-fleet"] == {
        ("publishClientSend", "office/#"),
        ("subscribePattern", "office/#"),
        ("publishClientReceive", "office/#"),
    }
    assert clients["fleet"]["roles"] == [{"rolename": "lab-fleet"}]
    assert ("subscribePattern", "office/+/sensor1/set/#") in roles["device:sensor1"]
    assert ("subscribePattern", "office/#") in roles["lab-portal"]
    assert ("subscribePattern", "alarms/#") in roles["lab-portal"]
    assert ("publishClientSend", "alarms/#") in roles["lab-nodered"]
    assert not any(
        kind == "publishClientSend" and topic.startswith("office") for kind, topic in roles["lab-nodered"]
    )
    assert config["defaultACLAccess"]["publishClientSend"] is False


def test_accounts_added_at_run_time_survive_and_stale_seeds_go() -> None:
    first = broker.render_dynsec(None, ENV)
    provisioned = {
        "username": "dev-42",
        "roles": [{"rolename": "device:dev-42"}],
        **broker.hash_password("x"),
    }
    first["clients"].append(provisioned)
    first["roles"].append({"rolename": "device:dev-42", "acls": []})
    renamed = dict(ENV, LAB_DEVICE_ID="sensor9", MQTT_ADMIN_PASSWORD="new-admin-pw")
    second = broker.render_dynsec(json.loads(json.dumps(first)), renamed)
    usernames = {c["username"] for c in second["clients"]}
    assert usernames == {"admin", "portal", "nodered", "sensor9", "fleet", "dev-42"}
    assert {r["rolename"] for r in second["roles"]} >= {"device:dev-42", "device:sensor9"}
    assert "device:sensor1" not in {r["rolename"] for r in second["roles"]}
    admin = next(c for c in second["clients"] if c["username"] == "admin")
    assert broker.password_matches(admin, "new-admin-pw")


def test_unchanged_password_keeps_its_hash() -> None:
    first = broker.render_dynsec(None, ENV)
    second = broker.render_dynsec(first, ENV)
    assert [c["password"] for c in first["clients"]] == [c["password"] for c in second["clients"]]


@pytest.mark.parametrize(
    "stored",
    [
        {},
        {"salt": "!!", "iterations": 1, "password": "x"},
        {"salt": "AA==", "iterations": "many", "password": "AA=="},
    ],
)
def test_damaged_password_entries_never_match(stored: dict[str, object]) -> None:
    assert not broker.password_matches(stored, "anything")


def test_write_state_keeps_a_corrupt_accounts_file_aside(tmp_path: Path) -> None:
    profile = native(tmp_path)
    profile.state_dir.mkdir()
    (profile.state_dir / "dynamic-security.json").write_text("{not json")
    broker.write_state(profile, ENV)
    assert (profile.state_dir / "dynamic-security.json.corrupt").read_text() == "{not json"
    written = json.loads((profile.state_dir / "dynamic-security.json").read_text())
    assert {c["username"] for c in written["clients"]} == {"admin", "portal", "nodered", "sensor1", "fleet"}
    assert (profile.state_dir / "dynamic-security.json").stat().st_mode & 0o077 == 0


def test_container_entry_point_refuses_missing_variables(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert broker.main(["--out", str(tmp_path), "--certs", str(tmp_path)]) == 2
    assert "set TOPIC_ROOT, MQTT_ADMIN_USER" in capsys.readouterr().err


def test_broker_gets_its_own_copy_of_the_certificate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "server.crt").write_text("CERT")
    (certs / "server.key").write_text("KEY")
    profile = native(tmp_path, certs)
    broker.write_state(profile, ENV)
    copy = profile.state_dir / "tls"
    assert (copy / "server.key").read_text() == "KEY"
    assert (copy / "server.key").stat().st_mode & 0o077 == 0
    assert f"certfile {copy}/server.crt" in (profile.state_dir / "mosquitto.conf").read_text()
    # Certificates removed: the copies and the listener go at the next start.
    (certs / "server.key").unlink()
    broker.write_state(profile, ENV)
    assert not copy.exists()
    assert "certfile" not in (profile.state_dir / "mosquitto.conf").read_text()
