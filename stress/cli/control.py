"""``stress stop``, ``pause``, ``resume``, ``scale``, ``rate`` and ``status``: the run in progress,
steered from another shell (see :mod:`stress.control`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stress.cli.flags import count, seconds
from stress.control import SteerError, control_dir, find_run, runs_in_progress, send

#: The commands of this module.
COMMANDS = ("stop", "pause", "resume", "scale", "rate", "status")


def add_parsers(commands: Any) -> None:
    """``stress stop``, ``pause``, ``resume``, ``scale``, ``rate`` and ``status``."""
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument(
        "--run",
        metavar="ID",
        default=None,
        help="the run to act on: its run id or PID (needed only when several are in progress)",
    )
    found = "The run is found through its control socket (STRESS_CONTROL_DIR, see stress status)."
    commands.add_parser(
        "stop",
        parents=[which],
        help="end the run in progress (it drains and writes its summary)",
        description="End the run in progress as Ctrl-C would: the fleet drains, disconnects and the "
        f"summary is written. A second stop skips the drain. {found}",
    )
    for verb, effect in (
        ("pause", "stop publishing (they stay connected; nothing is offered for them) until resumed"),
        ("resume", "publish again, on the run's schedule"),
    ):
        parser = commands.add_parser(
            verb,
            parents=[which],
            help=f"make devices of the run in progress {effect.split(' (')[0]}",
            description=f"Make the named devices {effect}; the others go on unchanged. {found}",
        )
        parser.add_argument("devices", nargs="+", metavar="DEVICE", help="device ids as in topics (dev00042)")
    scale = commands.add_parser(
        "scale",
        parents=[which],
        help="grow or shrink the fleet of the run in progress",
        description="Make the fleet N devices now: new devices connect and join the schedule, the "
        f"last ones disconnect. A timeline's next stage brings its own size. {found}",
    )
    scale.add_argument("size", type=count, metavar="N", help="devices in the fleet")
    rate = commands.add_parser(
        "rate",
        parents=[which],
        help="change how often each device of the run in progress publishes",
        description="Make every device publish every INTERVAL seconds (0: as fast as the target "
        f"takes), from now. A timeline's next stage brings its own interval. {found}",
    )
    rate.add_argument(
        "interval", type=seconds, metavar="INTERVAL", help="seconds between a device's messages"
    )
    commands.add_parser(
        "status",
        parents=[which],
        help="list the runs in progress, or show one",
        description="The runs in progress on this machine (for this user), and what was asked of "
        f"them. {found}",
    )


def command_control(args: argparse.Namespace) -> int:
    """Any of the commands of :func:`add_parsers`."""
    if args.command == "status" and args.run is None:
        runs = runs_in_progress()
        if not runs:
            print(f"no run in progress (control sockets: {control_dir()})")
        for run in runs:
            print(f"{run.run_id}  pid {run.pid}  {run.folder}")
        return 0
    entry = find_run(args.run)
    request: dict[str, Any] = {"op": args.command}
    if args.command in ("pause", "resume"):
        request["devices"] = args.devices
    elif args.command == "scale":
        request["devices"] = args.size
    elif args.command == "rate":
        request["interval"] = args.interval
    answer = send(entry, request)
    if not answer.get("ok"):
        raise SteerError(str(answer.get("error")))
    if args.command == "status":
        print(json.dumps(answer["status"], indent=2))
    else:
        print(answer.get("message", "done"))
    return 0
