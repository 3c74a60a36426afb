"""``stress provision`` and ``stress deprovision``: device accounts on the target."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from stress.flags import port, positive_int, positive_seconds
from stress.scenario import ScenarioError, device_name, valid_level


def add_parsers(commands: Any) -> None:
    """Add ``provision`` and ``deprovision`` to the ``stress`` parser."""
    provision = commands.add_parser(
        "provision",
        help="create an account per device on the target",
        description="Create one broker account per device (lab: through the broker's dynamic security "
        "plugin, as the lab's admin from .env). Idempotent and resumable: existing accounts get the "
        "password of the credentials file, which is rewritten after every batch. "
        "Then: stress run --target lab --credentials FILE.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(provision)
    provision.add_argument("--devices", type=positive_int, required=True, help="devices to provision")
    provision.add_argument("--prefix", default="dev", help="device ids are <prefix>00001, ...")

    deprovision = commands.add_parser(
        "deprovision",
        help="delete the accounts made by stress provision",
        description="Delete the accounts made by stress provision whose id is the prefix followed by "
        "digits, with their roles, and remove them from the credentials file. Asks first unless --yes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(deprovision)
    deprovision.add_argument("--prefix", required=True, help="delete <prefix>00001, <prefix>00002, ...")
    deprovision.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted; delete nothing"
    )
    deprovision.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=("lab",), default="lab", help="where the accounts live")
    parser.add_argument(
        "--env-file", type=Path, default=Path(".env"), help="the lab's settings (admin account)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="broker host")
    parser.add_argument(
        "--port", type=port, default=None, help="broker port (default: MQTT_PORT of --env-file)"
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=Path("data/provisioning/lab-devices.csv"),
        help="the device,password file (written by provision, pruned by deprovision)",
    )
    parser.add_argument("--batch", type=positive_int, default=100, help="accounts per request to the broker")
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds to wait for the broker"
    )


def command_provision(args: argparse.Namespace) -> int:
    """``stress provision``."""
    from stress.progress import Progress  # noqa: PLC0415 - keeps `stress --help` fast
    from stress.provision import lab  # noqa: PLC0415

    if not valid_level(args.prefix):
        raise ScenarioError("--prefix must be a topic level: no '/', '+', '#', not empty")
    admin = lab.LabAdmin.from_env(args.env_file, args.host, args.port)
    devices = [device_name(args.prefix, index, args.devices) for index in range(args.devices)]
    with Progress(len(devices), "provisioning") as bar:
        outcome = asyncio.run(
            lab.provision(
                admin, devices, args.credentials, batch=args.batch, timeout=args.timeout, advance=bar.advance
            )
        )
    print(
        f"{len(devices):,} accounts on {admin.host}:{admin.port} ({len(outcome.created):,} created, "
        f"{len(outcome.updated):,} already there, password set); credentials: {args.credentials}"
    )
    print(
        f"run them with: stress run --target lab --devices {args.devices} --prefix {args.prefix} "
        f"--credentials {args.credentials}"
    )
    return 0


def command_deprovision(args: argparse.Namespace) -> int:
    """``stress deprovision``."""
    from stress.progress import Progress  # noqa: PLC0415
    from stress.provision import lab  # noqa: PLC0415

    admin = lab.LabAdmin.from_env(args.env_file, args.host, args.port)
    devices = asyncio.run(lab.provisioned(admin, args.prefix, timeout=args.timeout))
    shown = ", ".join(devices[:3]) + (f" ... {devices[-1]}" if len(devices) > 3 else "")
    if not devices:
        print(
            f"no accounts made by stress provision match {args.prefix}<digits> on {admin.host}:{admin.port}"
        )
        return 0
    print(f"{len(devices):,} accounts match {args.prefix}<digits>: {shown}")
    if args.dry_run:
        print("dry run: nothing deleted")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ScenarioError("not deleting without confirmation: pass --yes (or --dry-run to look first)")
        answer = input(f"delete these {len(devices):,} accounts? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    with Progress(len(devices), "deleting") as bar:
        outcome = asyncio.run(
            lab.deprovision(
                admin, devices, args.credentials, batch=args.batch, timeout=args.timeout, advance=bar.advance
            )
        )
    print(f"{len(outcome.deleted):,} accounts deleted")
    return 0
