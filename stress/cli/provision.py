"""``stress provision`` and ``stress deprovision``: device accounts on the target."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from stress.cli.confirm import confirmed
from stress.cli.flags import count, port, positive_int, positive_seconds
from stress.errors import ScenarioError
from stress.scenario import device_name, prefix_problem


def add_parsers(commands: Any) -> None:
    """Add ``provision`` and ``deprovision`` to the ``stress`` parser."""
    provision = commands.add_parser(
        "provision",
        help="create an account per device on the target",
        description="Create one account per device on the target. lab: a broker account through the "
        "broker's dynamic security plugin, as the lab's admin from .env; existing accounts get the "
        "password of the credentials file, which is rewritten after every batch. thingsboard: a "
        "device (and --gateways gateway devices) through the REST API as the tenant administrator "
        "(TB_URL, TB_USERNAME, TB_PASSWORD), existing devices reused, access tokens and the device "
        "table written as they come. Both are idempotent and resumable: run the same command again "
        "after an interruption. Then: stress run --target lab --credentials FILE, or "
        "stress run --target thingsboard --tokens FILE.",
    )
    _common(provision)
    provision.add_argument("--devices", type=positive_int, required=True, help="devices to provision")
    provision.add_argument("--prefix", default="dev", help="device ids are <prefix>00001, ...")
    tb = provision.add_argument_group("thingsboard devices")
    tb.add_argument(
        "--profile",
        default=None,
        help="device profile of new devices (default: the tenant's default profile)",
    )
    tb.add_argument(
        "--gateways",
        type=count,
        default=0,
        help="also make this many gateway devices, <prefix>-gateway-01, ... (for --transport gateway)",
    )
    tb.add_argument(
        "--batch-label",
        default="",
        help="the server attribute stressBatch of every device (default: the prefix)",
    )
    tb.add_argument(
        "--groups",
        type=positive_int,
        default=1,
        help="devices are dealt into this many groups: server attribute stressGroup 1..N "
        "(stressIndex is the device's number)",
    )

    deprovision = commands.add_parser(
        "deprovision",
        help="delete the accounts made by stress provision",
        description="Delete what stress provision made: lab: the accounts whose id is the prefix "
        "followed by digits, with their roles; thingsboard: the tenant's devices named so (and "
        "<prefix>-gateway-<digits>), found by a paged text search. They leave the credentials or "
        "tokens file too. Asks first unless --yes.",
    )
    _common(deprovision)
    deprovision.add_argument("--prefix", required=True, help="delete <prefix>00001, <prefix>00002, ...")
    deprovision.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted; delete nothing"
    )
    deprovision.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", choices=("lab", "thingsboard"), default="lab", help="where the accounts live"
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="settings: the lab's (admin account), or TB_URL, TB_USERNAME, TB_PASSWORD for thingsboard",
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
    parser.add_argument(
        "--batch", type=positive_int, default=100, help="lab: accounts per request to the broker"
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds to wait for each answer"
    )
    tb = parser.add_argument_group("thingsboard")
    add_tb_flags(tb)
    tb.add_argument(
        "--tokens",
        type=Path,
        default=Path("data/provisioning/tokens.json"),
        help="the access tokens, JSON {name: token} (written by provision, pruned by deprovision)",
    )
    tb.add_argument(
        "--table",
        type=Path,
        default=Path("data/provisioning/devices.csv"),
        help="the device table: name,id,token,profile,gateway",
    )
    tb.add_argument("--workers", type=positive_int, default=8, help="requests to ThingsBoard at a time")
    tb.add_argument(
        "--retries",
        type=count,
        default=5,
        help="tries again after a connection error, a timeout, a 5xx or a 429, backing off",
    )


def add_tb_flags(group: Any) -> None:
    """Where ThingsBoard is and who signs in (flags over TB_* variables over --env-file)."""
    group.add_argument(
        "--tb-url", default="", help="REST API base URL (default: TB_URL, else http://localhost:8080)"
    )
    group.add_argument("--tb-username", default="", help="tenant administrator (default: TB_USERNAME)")
    group.add_argument("--tb-password", default="", help="their password (default: TB_PASSWORD)")


def command_provision(args: argparse.Namespace) -> int:
    """``stress provision``."""
    from stress.cli.progress import Progress  # noqa: PLC0415 - keeps `stress --help` fast
    from stress.provision import lab  # noqa: PLC0415

    problem = prefix_problem(args.prefix, args.devices)
    if problem is not None:
        raise ScenarioError(problem)
    if args.target == "thingsboard":
        from stress.cli import provision_tb as tb_cli  # noqa: PLC0415

        return tb_cli.command_provision(args)
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
    from stress.cli.progress import Progress  # noqa: PLC0415
    from stress.provision import lab  # noqa: PLC0415

    if args.target == "thingsboard":
        from stress.cli import provision_tb as tb_cli  # noqa: PLC0415

        return tb_cli.command_deprovision(args)
    admin = lab.LabAdmin.from_env(args.env_file, args.host, args.port)
    devices = asyncio.run(lab.provisioned(admin, args.prefix, timeout=args.timeout))
    shown = ", ".join(devices[:3]) + (f" ... {devices[-1]}" if len(devices) > 3 else "")
    if not devices:
        print(
            f"no accounts made by stress provision match {args.prefix}<digits> on {admin.host}:{admin.port}"
        )
        return 0
    print(f"{len(devices):,} accounts match {args.prefix}<digits>: {shown}")
    if not confirmed(args, f"{len(devices):,} accounts"):
        return 0 if args.dry_run else 1
    with Progress(len(devices), "deleting") as bar:
        outcome = asyncio.run(
            lab.deprovision(
                admin, devices, args.credentials, batch=args.batch, timeout=args.timeout, advance=bar.advance
            )
        )
    print(f"{len(outcome.deleted):,} accounts deleted")
    return 0
