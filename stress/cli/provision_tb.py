"""``stress provision --target thingsboard`` and ``stress deprovision --target thingsboard``."""

from __future__ import annotations

import argparse

from stress.cli.confirm import confirmed
from stress.cli.progress import Progress
from stress.scenario import device_name
from stress.thingsboard import gateway_name
from stress.thingsboard import provision as tb
from stress.thingsboard.rest import TbClient
from stress.thingsboard.settings import tb_settings


def client_from(args: argparse.Namespace) -> TbClient:
    """A REST client from ``--tb-*`` flags, ``TB_*`` variables and ``--env-file``."""
    settings = tb_settings(
        args.env_file, url=args.tb_url, username=args.tb_username, password=args.tb_password
    )
    return TbClient(
        settings.url, settings.username, settings.password, timeout=args.timeout, retries=args.retries
    )


def command_provision(args: argparse.Namespace) -> int:
    """Create (or reuse) the fleet's devices and gateways; write their tokens as they come."""
    client = client_from(args)
    client.login()
    wanted = [
        tb.Wanted(device_name(args.prefix, index, args.devices), index) for index in range(args.devices)
    ]
    wanted += [
        tb.Wanted(gateway_name(args.prefix, number), number - 1, gateway=True)
        for number in range(1, args.gateways + 1)
    ]
    ledger = tb.Ledger(args.tokens, args.table)
    with Progress(len(wanted), "provisioning") as bar:
        outcome = tb.provision(
            client,
            wanted,
            ledger,
            profile=args.profile,
            batch=args.batch_label or args.prefix,
            groups=args.groups,
            workers=args.workers,
            advance=bar.advance,
        )
    gateways = f" and {args.gateways} gateways" if args.gateways else ""
    print(
        f"{args.devices:,} devices{gateways} on {client.url} ({len(outcome.created):,} created, "
        f"{len(outcome.reused):,} already there); tokens: {args.tokens}, table: {args.table}"
    )
    transport = f" --transport gateway --gateways {args.gateways}" if args.gateways else ""
    print(
        f"run them with: stress run --target thingsboard --devices {args.devices} --prefix {args.prefix} "
        f"--tokens {args.tokens}{transport}"
    )
    return 0


def command_deprovision(args: argparse.Namespace) -> int:
    """Delete the tenant's devices that ``stress provision --prefix`` made."""
    client = client_from(args)
    client.login()
    devices = tb.provisioned(client, args.prefix)
    if not devices:
        print(f"no devices named {args.prefix}<digits> or {args.prefix}-gateway-<digits> on {client.url}")
        return 0
    names = [name for name, _id in devices]
    shown = ", ".join(names[:3]) + (f" ... {names[-1]}" if len(names) > 3 else "")
    print(f"{len(devices):,} devices on {client.url} match {args.prefix}<digits>: {shown}")
    if not confirmed(args, f"{len(devices):,} devices"):
        return 0 if args.dry_run else 1
    ledger = tb.Ledger(args.tokens, args.table)
    with Progress(len(devices), "deleting") as bar:
        deleted = tb.deprovision(client, devices, ledger, workers=args.workers, advance=bar.advance)
    print(f"{len(deleted):,} devices deleted")
    return 0
