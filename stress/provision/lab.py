"""Per-device broker accounts on this lab: ``stress provision --target lab`` and ``deprovision``.

Each device gets its own account and role in the broker's dynamic security plugin, created
at run time as the lab's administrator (``MQTT_ADMIN_USER`` of ``.env``): the role lets the
device publish under its own id and read its own commands, exactly like the demo device's
(``mosquitto/roles.json``). Accounts are marked as made here, so ``deprovision`` removes
those and nothing else, and the broker keeps them across restarts of the lab.

Provisioning is idempotent and resumable. The credentials file (``device,password``, readable
by its owner only) is rewritten after every batch the broker has confirmed, so an
interrupted run leaves it true; running again reuses its passwords, creates what is
missing and sets the password of any account that already exists.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import broker
from stress.provision import ProvisionError
from stress.provision.dynsec import Command, ControlError, DynamicSecurity, Response
from stress.targets.lab import lab_env, lab_port
from stress.targets.lab import read_credentials as read_device_passwords

#: The text name of every account made here (and the only ones ``deprovision`` removes).
MARK = "stress provision"
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class LabAdmin:
    """How to reach the lab's broker as its administrator."""

    host: str
    port: int
    username: str
    password: str
    root: str

    @classmethod
    def from_env(cls, env_file: Path, host: str, port: int | None) -> LabAdmin:
        """From the lab's ``.env`` (``--host`` and ``--port`` win over it)."""
        env = lab_env(env_file)
        username, password = env.get("MQTT_ADMIN_USER", ""), env.get("MQTT_ADMIN_PASSWORD", "")
        if not username or not password:
            raise ProvisionError(f"{env_file} has no MQTT_ADMIN_USER and MQTT_ADMIN_PASSWORD: run ./lab env")
        return cls(host, lab_port(env, port), username, password, env.get("TOPIC_ROOT") or "office")


@dataclass
class Outcome:
    """What one provisioning or deprovisioning did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def new_password() -> str:
    """A random password of 24 letters and digits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


# ---------------------------------------------------------------------------- credentials file


def read_credentials(path: Path) -> dict[str, str]:
    """``device -> password`` from a credentials file; empty when there is none yet."""
    return read_device_passwords(path) if path.exists() else {}


def write_credentials(path: Path, passwords: dict[str, str]) -> None:
    """Replace the credentials file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["device", "password"])
    writer.writerows(sorted(passwords.items()))
    broker.write_private(path, buffer.getvalue())


# ---------------------------------------------------------------------------- commands


#: The lab's ``device`` role (``mosquitto/roles.json``), for a ``stress`` installed without the
#: lab's checkout beside it; a test keeps the two equal.
DEVICE_ROLE = (
    ("publishClientSend", "{root}/+/{device}/#"),
    ("subscribePattern", "{root}/+/{device}/set/#"),
    ("publishClientReceive", "{root}/+/{device}/set/#"),
)


def device_acls(device: str, root: str) -> list[dict[str, Any]]:
    """The ACLs of one device's role: the lab's ``device`` role from ``mosquitto/roles.json``
    when the checkout is there (where an administrator may have changed it), else its default."""
    if (broker.TEMPLATE_DIR / "roles.json").is_file():
        acls: list[dict[str, Any]] = broker.device_role(device, root)["acls"]
        return acls
    return [
        {
            "acltype": kind,
            "topic": topic.replace("{root}", root).replace("{device}", device),
            "priority": 0,
            "allow": True,
        }
        for kind, topic in DEVICE_ROLE
    ]


def _role(device: str, root: str) -> Command:
    acls = device_acls(device, root)
    return {"command": "createRole", "rolename": f"device:{device}", "textname": MARK, "acls": acls}


def _failed(response: Response, accepted: str = "") -> str | None:
    """The error of a response, unless it is the ``accepted`` one (or there is none)."""
    error = response.get("error")
    return None if not error or error == accepted else str(error)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def provision(
    admin: LabAdmin,
    devices: Sequence[str],
    credentials: Path,
    *,
    batch: int = 100,
    timeout: float = 10.0,
    advance: Callable[[int], None] = lambda _n: None,
) -> Outcome:
    """Give every device of ``devices`` its account; the credentials file follows each batch."""
    passwords = read_credentials(credentials)
    outcome = Outcome()
    plugin = await _open(admin, timeout)
    try:
        for chunk in _chunks(devices, batch):
            wanted = {device: passwords.get(device) or new_password() for device in chunk}
            commands: list[Command] = []
            for device, password in wanted.items():
                commands.append(_role(device, admin.root))
                commands.append(
                    {
                        "command": "createClient",
                        "username": device,
                        "password": password,
                        "textname": MARK,
                        "roles": [{"rolename": f"device:{device}"}],
                    }
                )
            responses = await plugin.send(commands)
            existing: list[str] = []
            for index, device in enumerate(wanted):
                role, client = responses[2 * index], responses[2 * index + 1]
                problem = _failed(role, "Role already exists")
                if problem:
                    raise ProvisionError(f"the broker refused the role of {device}: {problem}")
                problem = _failed(client, "Client already exists")
                if problem:
                    raise ProvisionError(f"the broker refused the account {device}: {problem}")
                (existing if client.get("error") else outcome.created).append(device)
            if existing:
                await _update(plugin, existing, wanted)
                outcome.updated.extend(existing)
            passwords.update(wanted)
            write_credentials(credentials, passwords)
            advance(len(chunk))
    finally:
        plugin.close()
    return outcome


async def _update(plugin: DynamicSecurity, devices: list[str], passwords: dict[str, str]) -> None:
    """Accounts that already exist: only ours are touched; they get this password and their role."""
    answers = await plugin.send([{"command": "getClient", "username": device} for device in devices])
    commands: list[Command] = []
    for device, answer in zip(devices, answers, strict=True):
        client = (answer.get("data") or {}).get("client") or {}
        if client.get("textname") != MARK:
            raise ProvisionError(
                f"the broker account {device!r} exists and was not made by stress provision: "
                "choose another --prefix"
            )
        commands.append({"command": "setClientPassword", "username": device, "password": passwords[device]})
        role = f"device:{device}"
        if role not in {entry.get("rolename") for entry in client.get("roles") or []}:
            # (the plugin answers an error when asked to add a role the client already has)
            commands.append({"command": "addClientRole", "username": device, "rolename": role})
    for command, response in zip(commands, await plugin.send(commands), strict=True):
        problem = _failed(response)
        if problem:
            raise ProvisionError(f"the broker refused to update {command['username']}: {problem}")


async def provisioned(admin: LabAdmin, prefix: str, *, timeout: float = 10.0) -> list[str]:
    """Accounts made by ``stress provision`` whose name is ``prefix`` then digits, sorted."""
    plugin = await _open(admin, timeout)
    try:
        (answer,) = await plugin.send([{"command": "listClients", "verbose": True, "count": -1}])
    finally:
        plugin.close()
    problem = _failed(answer)
    if problem:
        raise ProvisionError(f"the broker would not list its accounts: {problem}")
    pattern = re.compile(re.escape(prefix) + r"[0-9]+")
    clients: list[dict[str, Any]] = (answer.get("data") or {}).get("clients") or []
    return sorted(
        str(client["username"])
        for client in clients
        if client.get("textname") == MARK and pattern.fullmatch(str(client.get("username", "")))
    )


async def deprovision(
    admin: LabAdmin,
    devices: Sequence[str],
    credentials: Path | None,
    *,
    batch: int = 100,
    timeout: float = 10.0,
    advance: Callable[[int], None] = lambda _n: None,
) -> Outcome:
    """Delete these accounts and their roles; their rows leave the credentials file too."""
    outcome = Outcome()
    passwords = read_credentials(credentials) if credentials is not None else {}
    plugin = await _open(admin, timeout)
    try:
        for chunk in _chunks(devices, batch):
            commands: list[Command] = []
            for device in chunk:
                commands.append({"command": "deleteClient", "username": device})
                commands.append({"command": "deleteRole", "rolename": f"device:{device}"})
            for command, response in zip(commands, await plugin.send(commands), strict=True):
                problem = _failed(response)
                if problem and "not found" not in problem.lower():
                    name = command.get("username") or command.get("rolename")
                    raise ProvisionError(f"the broker refused to delete {name}: {problem}")
            outcome.deleted.extend(chunk)
            if credentials is not None and passwords:
                for device in chunk:
                    passwords.pop(device, None)
                write_credentials(credentials, passwords)
            advance(len(chunk))
    finally:
        plugin.close()
    return outcome


async def _open(admin: LabAdmin, timeout: float) -> DynamicSecurity:
    try:
        return await DynamicSecurity.open(
            admin.host, admin.port, admin.username, admin.password, timeout=timeout
        )
    except ControlError as exc:
        raise ProvisionError(str(exc)) from None
