"""Render the broker's configuration and seed its accounts, for the native run and Compose.

Two files come out, both in the broker's state folder:

* `mosquitto.conf`, from `mosquitto/mosquitto.conf.template` with the profile's listeners
  and paths, plus a TLS listener when a certificate and key are present;
* `dynamic-security.json`, the dynamic security plugin's accounts: the admin, the portal,
  Node-RED, the demo device and the stress fleet's shared account from `.env`, with the
  roles of `mosquitto/roles.json`.
  Accounts added at run time (provisioned devices) are kept; accounts this module seeded
  earlier but no longer named in `.env` are removed.

Run in a container as `python -m labctl.broker --profile container --out DIR --certs DIR`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "mosquitto"
SEEDED_MARK = "seeded from .env"
PBKDF2_ITERATIONS = 101  # what the plugin itself uses for accounts created over MQTT
CONTAINER_UID = 1883  # the mosquitto user of the eclipse-mosquitto image

PORTAL_USER = "portal"
NODERED_USER = "nodered"

DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


@dataclass(frozen=True)
class Profile:
    """Where and how one way of running the broker listens and keeps its files."""

    name: str
    bind_address: str
    mqtt_port: int
    ws_port: int
    tls_port: int
    state_dir: Path
    tls_dir: Path
    plugin: str


def container_profile(state_dir: Path, tls_dir: Path) -> Profile:
    """The Compose profile: fixed ports on all interfaces, the image's plugin path."""
    return Profile(
        name="container",
        bind_address="0.0.0.0",  # noqa: S104 - inside a container; Compose decides what is published
        mqtt_port=1883,
        ws_port=9001,
        tls_port=8883,
        state_dir=state_dir,
        tls_dir=tls_dir,
        plugin="/usr/lib/mosquitto_dynamic_security.so",
    )


def find_plugin() -> str:
    """Path of the dynamic security plugin installed on this machine."""
    for candidate in DYNSEC_PLUGIN_PATHS:
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError(
        "Mosquitto's dynamic security plugin (mosquitto_dynamic_security.so) was not found; "
        "install Mosquitto 2.0 or newer (Debian: apt-get install mosquitto)"
    )


def tls_enabled(tls_dir: Path) -> bool:
    """A TLS listener is configured exactly when both the certificate and key exist."""
    return (tls_dir / "server.crt").is_file() and (tls_dir / "server.key").is_file()


def websocket_address(address: str) -> str:
    """The address to give Mosquitto's WebSocket listener so that it listens on `address` only.

    Mosquitto 2.0.11 (Debian 12) hands a WebSocket listener's address to libwebsockets, which
    listens on an IPv6 socket and, given an IPv4 address, binds every interface instead. Written
    as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) it binds that one address and still
    takes IPv4 clients. Machines without IPv6 keep the plain address.
    """
    try:
        mapped = ipaddress.IPv4Address(address)
    except ValueError:
        return address  # a host name, or already IPv6
    if mapped.is_unspecified or not _ipv6_available():
        return address
    return f"::ffff:{mapped}"


def _ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def render_config(profile: Profile, tls_copy: Path | None = None) -> str:
    """The broker configuration text for a profile.

    The TLS listener, when enabled, reads the certificate and key from `tls_copy` (the copies
    `write_state` makes for the broker), or from the profile's TLS folder if none is given.
    """
    values = {
        "BIND_ADDRESS": profile.bind_address,
        "WS_BIND_ADDRESS": websocket_address(profile.bind_address),
        "MQTT_PORT": str(profile.mqtt_port),
        "MQTT_WS_PORT": str(profile.ws_port),
        "MQTT_TLS_PORT": str(profile.tls_port),
        "STATE_DIR": str(profile.state_dir),
        "TLS_DIR": str(tls_copy or profile.tls_dir),
        "DYNSEC_PLUGIN": profile.plugin,
    }
    tls = ""
    if tls_enabled(profile.tls_dir):
        tls = Template((TEMPLATE_DIR / "tls-listener.conf.template").read_text()).substitute(values)
    values["TLS_LISTENER"] = tls
    return Template((TEMPLATE_DIR / "mosquitto.conf.template").read_text()).substitute(values)


# ---------------------------------------------------------------- accounts


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's password fields: PBKDF2-SHA512, base64 salt and hash."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def password_matches(client: Mapping[str, Any], password: str) -> bool:
    """True when the stored hash of `client` is that of `password`."""
    try:
        salt = base64.b64decode(client["salt"])
        iterations = int(client["iterations"])
        stored = base64.b64decode(client["password"])
    except (KeyError, ValueError, TypeError):
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(stored))
    return hmac.compare_digest(digest, stored)


def load_roles(topic_root: str) -> dict[str, list[tuple[str, str]]]:
    """Role templates from `mosquitto/roles.json`, with the topic root filled in."""
    data = json.loads((TEMPLATE_DIR / "roles.json").read_text())
    return {
        name: [(acltype, topic.replace("{root}", topic_root)) for acltype, topic in acls]
        for name, acls in data["roles"].items()
    }


def device_role(device_id: str, topic_root: str) -> dict[str, Any]:
    """The role of one device: publish under its own id, receive its own commands."""
    acls = load_roles(topic_root)["device"]
    return _role(
        f"device:{device_id}", [(kind, topic.replace("{device}", device_id)) for kind, topic in acls]
    )


def _role(name: str, acls: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "rolename": name,
        "textname": SEEDED_MARK,
        "acls": [{"acltype": kind, "topic": topic, "priority": 0, "allow": True} for kind, topic in acls],
    }


def seeded_accounts(env: Mapping[str, str]) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
    """The (username, password, role) triples and the roles that `.env` asks for."""
    root = env["TOPIC_ROOT"]
    templates = load_roles(root)
    device = env["LAB_DEVICE_ID"]
    roles = [_role(name, acls) for name, acls in templates.items() if name != "device"]
    roles.append(device_role(device, root))
    accounts = [
        (env["MQTT_ADMIN_USER"], env["MQTT_ADMIN_PASSWORD"], "lab-admin"),
        (PORTAL_USER, env["MQTT_PORTAL_PASSWORD"], "lab-portal"),
        (NODERED_USER, env["MQTT_NODERED_PASSWORD"], "lab-nodered"),
        (device, env["LAB_DEVICE_PASSWORD"], f"device:{device}"),
        (env["LAB_FLEET_USER"], env["LAB_FLEET_PASSWORD"], "lab-fleet"),
    ]
    return accounts, roles


def render_dynsec(existing: Mapping[str, Any] | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The plugin's configuration: `existing` with the accounts from `.env` brought up to date."""
    accounts, roles = seeded_accounts(env)
    wanted_users = {username for username, _, _ in accounts}
    wanted_roles = {role["rolename"] for role in roles}
    current = dict(existing or {})
    old_clients = {c["username"]: c for c in current.get("clients", []) if "username" in c}

    clients = [
        c for name, c in old_clients.items() if name not in wanted_users and c.get("textname") != SEEDED_MARK
    ]
    for username, password, rolename in accounts:
        old = old_clients.get(username)
        secret = (
            {k: old[k] for k in ("password", "salt", "iterations")}
            if old is not None and password_matches(old, password)
            else hash_password(password)
        )
        clients.append(
            {"username": username, "textname": SEEDED_MARK, "roles": [{"rolename": rolename}], **secret}
        )

    kept_roles = [
        r
        for r in current.get("roles", [])
        if r.get("rolename") not in wanted_roles and r.get("textname") != SEEDED_MARK
    ]
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": current.get("groups", []),
        "roles": kept_roles + roles,
    }


def write_state(profile: Profile, env: Mapping[str, str], owner: tuple[int, int] | None = None) -> None:
    """Write `mosquitto.conf` and `dynamic-security.json` into the profile's state folder.

    `owner` (uid, gid) is applied to the folder and both files when running as root, so the
    broker can keep writing them after it drops its privileges.
    """
    state = profile.state_dir
    state.mkdir(parents=True, exist_ok=True)
    dynsec_path = state / "dynamic-security.json"
    existing = None
    if dynsec_path.exists():
        try:
            existing = json.loads(dynsec_path.read_text())
        except json.JSONDecodeError as exc:
            backup = dynsec_path.with_suffix(".json.corrupt")
            shutil.copyfile(dynsec_path, backup)
            print(f"warning: {dynsec_path} was not valid JSON ({exc}); kept as {backup}", file=sys.stderr)
    write_private(dynsec_path, json.dumps(render_dynsec(existing, env), indent=2) + "\n")
    written = [state, dynsec_path, state / "mosquitto.conf"]
    # The broker reads its certificate after dropping privileges, so it gets its own copies,
    # readable by it alone, wherever (and however privately) the originals are kept.
    tls_copy = state / "tls"
    shutil.rmtree(tls_copy, ignore_errors=True)
    if tls_enabled(profile.tls_dir):
        tls_copy.mkdir(mode=0o700)
        for name in ("server.crt", "server.key"):
            write_private(tls_copy / name, (profile.tls_dir / name).read_text())
            written.append(tls_copy / name)
        written.append(tls_copy)
    write_private(state / "mosquitto.conf", render_config(profile, tls_copy))
    if owner is not None and os.geteuid() == 0:
        for path in written:
            os.chown(path, *owner)


def write_private(path: Path, text: str) -> None:
    """Replace a file atomically, readable by its owner only (for secrets and password hashes)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mosquitto-init` Compose service."""
    parser = argparse.ArgumentParser(
        prog="python -m labctl.broker",
        description="Render the broker's configuration and accounts from the environment.",
    )
    parser.add_argument("--profile", choices=["container"], default="container")
    parser.add_argument("--out", type=Path, required=True, help="the broker's state folder")
    parser.add_argument(
        "--certs", type=Path, required=True, help="folder that may hold server.crt/server.key"
    )
    args = parser.parse_args(argv)
    names = (
        "TOPIC_ROOT",
        "MQTT_ADMIN_USER",
        "MQTT_ADMIN_PASSWORD",
        "MQTT_PORTAL_PASSWORD",
        "MQTT_NODERED_PASSWORD",
        "LAB_DEVICE_ID",
        "LAB_DEVICE_PASSWORD",
        "LAB_FLEET_USER",
        "LAB_FLEET_PASSWORD",
    )
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        print(f"error: set {', '.join(missing)} (run ./lab env to generate .env)", file=sys.stderr)
        return 2
    env = {name: os.environ[name] for name in names}
    write_state(container_profile(args.out, args.certs), env, owner=(CONTAINER_UID, CONTAINER_UID))
    print(f"broker configuration written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
