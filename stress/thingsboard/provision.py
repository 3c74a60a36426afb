"""Device fleets on ThingsBoard: ``stress provision --target thingsboard`` and ``deprovision``.

Provisioning is concurrent, idempotent and resumable. For each device it looks the name up;
a device that exists is reused (its access token read from its credentials), one that does
not is created with an access token chosen here (so no second request is needed to learn
it), with the default device profile or the one asked for, and given its server attributes
(``stressBatch``, ``stressGroup``, ``stressIndex``). A creation whose answer was lost (the
server made the device, then the connection dropped) meets "already exists" on its retry and
reuses the device: nothing is ever duplicated.

What is done is written as it is done: the tokens file (``{"name": "token"}``) and the
device table (CSV) are rewritten atomically every second and at the end, also when the
work is interrupted, so running the same command again finishes the job.

Deprovisioning lists the tenant's devices by text search, page by page, and deletes those
whose name is the prefix followed by digits (or ``<prefix>-gateway-<digits>``), nothing else.
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import io
import json
import os
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stress.provision import ProvisionError
from stress.thingsboard import TbError
from stress.thingsboard.rest import BAD_REQUEST, TbClient
from stress.thingsboard.target import read_tokens as load_tokens

T = TypeVar("T")
TOKEN_ALPHABET = string.ascii_letters + string.digits
TABLE_COLUMNS = ("name", "id", "token", "profile", "gateway")
#: Seconds between rewrites of the tokens file and the device table.
SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class Wanted:
    """One device to provision."""

    name: str
    index: int
    gateway: bool = False


@dataclass(frozen=True)
class Provisioned:
    """A device as it is on the server."""

    name: str
    id: str
    token: str
    profile: str
    gateway: bool
    created: bool


@dataclass
class Outcome:
    """What a provisioning did."""

    created: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def made_here(prefix: str) -> re.Pattern[str]:
    """The names ``stress provision --prefix prefix`` gives: devices and gateways."""
    return re.compile(re.escape(prefix) + r"(?:\d+|-gateway-\d+)")


def new_token() -> str:
    """A random access token of 20 letters and digits (as ThingsBoard makes them)."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(20))


# ---------------------------------------------------------------------------- the files


def read_tokens(path: Path) -> dict[str, str]:
    """``name -> access token`` from a tokens file; empty when there is none yet."""
    return load_tokens(path) if path.exists() else {}


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """The device table (CSV), by name; empty when there is none yet."""
    if not path.exists():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ProvisionError(f"cannot read {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ProvisionError(f"{path} is not a device table: {exc}; move it away") from None
    return {row["name"]: row for row in rows if row.get("name")}


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (readable by its owner only: it holds access tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    temporary.replace(path)


class Ledger:
    """The tokens file and the device table, kept in memory and saved as work is done."""

    def __init__(self, tokens_path: Path, table_path: Path) -> None:
        self.tokens_path = tokens_path
        self.table_path = table_path
        self.tokens = read_tokens(tokens_path)
        self.table = read_table(table_path)
        self._saved_at = time.monotonic()
        self._dirty = False

    def add(self, device: Provisioned) -> None:
        self.tokens[device.name] = device.token
        self.table[device.name] = {
            "name": device.name,
            "id": device.id,
            "token": device.token,
            "profile": device.profile,
            "gateway": "yes" if device.gateway else "no",
        }
        self._dirty = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            self.tokens.pop(name, None)
            self.table.pop(name, None)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        _write_atomically(self.tokens_path, json.dumps(self.tokens, indent=1, sort_keys=True) + "\n")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for name in sorted(self.table):
            writer.writerow(self.table[name])
        _write_atomically(self.table_path, out.getvalue())
        self._saved_at = time.monotonic()
        self._dirty = False


# ---------------------------------------------------------------------------- provisioning


def concurrently(
    calls: Iterable[Callable[[], T]], workers: int, done: Callable[[T], None], ledger: Ledger
) -> None:
    """Run ``calls`` ``workers`` at a time, handing each result to ``done`` as it comes; the
    first failure (or Ctrl-C) ends the work, and the ledger is saved with what was done."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thingsboard")
    try:
        for future in concurrent.futures.as_completed([pool.submit(call) for call in calls]):
            done(future.result())
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        ledger.save()


def server_attributes(wanted: Wanted, batch: str, groups: int) -> dict[str, Any]:
    """The server attributes a device gets: its batch, group (1..groups) and index (from 1)."""
    return {"stressBatch": batch, "stressGroup": wanted.index % groups + 1, "stressIndex": wanted.index + 1}


def provision_one(
    client: TbClient,
    wanted: Wanted,
    *,
    known_token: str | None,
    profile_id: str,
    profile_name: str,
    attributes: dict[str, Any] | None,
) -> Provisioned:
    """Make sure one device exists (reusing it if it does); its access token."""
    existing = client.device_by_name(wanted.name)
    created = False
    token = known_token or new_token()
    if existing is None:
        try:
            existing = client.create_device(
                wanted.name, token=token, profile_id=profile_id, gateway=wanted.gateway
            )
            created = True
        except TbError as exc:
            # A creation that went through while its answer was lost, or another provisioning
            # at the same time: the device is there now, so reuse it
            if exc.status != 400 or exc.code not in (BAD_REQUEST, None):
                raise
            existing = client.device_by_name(wanted.name)
            if existing is None:
                raise
    device_id = str(existing["id"]["id"])
    if not created:  # set at creation, else read: a device made elsewhere has its own
        token = client.access_token(device_id)
    if attributes:
        client.save_server_attributes(device_id, attributes)
    return Provisioned(wanted.name, device_id, token, profile_name, wanted.gateway, created)


def provision(
    client: TbClient,
    wanted: Sequence[Wanted],
    ledger: Ledger,
    *,
    profile: str | None,
    batch: str,
    groups: int,
    workers: int,
    advance: Callable[[int], None],
) -> Outcome:
    """Provision ``wanted`` with ``workers`` requests at a time; the ledger is saved as it goes."""
    profile_id = client.profile_id(profile)
    outcome = Outcome()

    def done(device: Provisioned) -> None:
        ledger.add(device)
        (outcome.created if device.created else outcome.reused).append(device.name)
        advance(1)

    calls = [
        functools.partial(
            provision_one,
            client,
            device,
            known_token=ledger.tokens.get(device.name),
            profile_id=profile_id,
            profile_name=profile or "default",
            attributes=server_attributes(device, batch, groups),
        )
        for device in wanted
    ]
    concurrently(calls, workers, done, ledger)
    return outcome


# ---------------------------------------------------------------------------- deprovisioning


def provisioned(client: TbClient, prefix: str) -> list[tuple[str, str]]:
    """``(name, id)`` of the tenant's devices made by ``stress provision --prefix prefix``."""
    pattern = made_here(prefix)
    return sorted(
        (str(device["name"]), str(device["id"]["id"]))
        for device in client.devices(prefix)
        if isinstance(device.get("name"), str) and pattern.fullmatch(device["name"])
    )


def deprovision(
    client: TbClient,
    devices: Sequence[tuple[str, str]],
    ledger: Ledger,
    *,
    workers: int,
    advance: Callable[[int], None],
) -> list[str]:
    """Delete ``devices`` (name, id); they leave the ledger as they go. The names deleted."""
    deleted: list[str] = []

    def done(name: str) -> None:
        deleted.append(name)
        ledger.remove([name])
        advance(1)

    def delete(name: str, device_id: str) -> str:
        client.delete_device(device_id)
        return name

    concurrently(
        [functools.partial(delete, name, device_id) for name, device_id in devices], workers, done, ledger
    )
    return sorted(deleted)
