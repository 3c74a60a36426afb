"""``stress viewers``: many browsers watching one lab (see :mod:`stress.viewers.audience`).

The portal's address, its admin account, the fleet account (for the reference subscriber) and
the flush interval come from the lab's ``.env``; flags override them. Bad input is one line on
stderr and exit status 2; a portal or broker that refuses or cannot be reached, exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stress.cli.flags import add_debug, positive_int, positive_seconds, seconds
from stress.errors import ScenarioError

if TYPE_CHECKING:
    from stress.viewers.audience import Plan, Result

#: Same limit as :data:`stress.viewers.audience.MAX_VIEWERS` (not imported: ``--help`` stays fast).
MAX_VIEWERS = 5000
#: Exit status after a signal ended the watch early, as ``stress run``.
SIGNAL_STATUS = {"signal SIGINT": 130, "signal SIGTERM": 143}


def viewer_count(text: str) -> int:
    """1..5000 viewers."""
    value = positive_int(text)
    if value > MAX_VIEWERS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_VIEWERS} viewers (one process)")
    return value


def portal_url(text: str) -> str:
    """An ``http(s)://host[:port]`` address, without a trailing slash."""
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has no valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// address such as http://127.0.0.1:5000"
        )
    if parts.query or parts.fragment or (port is not None and not 0 < port < 65_536):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain portal address such as http://127.0.0.1:5000"
        )
    return text.strip().rstrip("/")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """``stress viewers`` and its flags."""
    viewers: argparse.ArgumentParser = commands.add_parser(
        "viewers",
        help="many browsers watching the lab's portal: live latency and missed updates",
        description="Connect N Socket.IO viewers to the lab's portal, signed in and subscribed as its "
        "page does (the site, a room or a device each), watch for a while, and measure per viewer "
        'the delivery latency (arrival minus the ts of {"value", "ts"} payloads) and missed updates: '
        "final values, seen by a reference MQTT subscriber (the lab's fleet account), that never "
        "reached a viewer. The portal coalesces, so fewer updates than messages is normal. "
        "Publish while it watches (stress run --target lab, say). Exit status: 0 measured; 1 the "
        "portal or broker refused or could not be reached, or no viewer connected; 2 bad input.",
    )
    where = viewers.add_argument_group("portal")
    where.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        metavar="FILE",
        help="the lab's settings: portal port, admin account, fleet account, PORTAL_LIVE_FLUSH_MS",
    )
    where.add_argument(
        "--portal",
        type=portal_url,
        default=None,
        metavar="URL",
        help="the portal's address (default: http://127.0.0.1:PORTAL_PORT of --env-file)",
    )
    where.add_argument(
        "--username", default="", metavar="NAME", help="portal account (default: PORTAL_ADMIN_USER)"
    )
    where.add_argument(
        "--password", default="", metavar="SECRET", help="its password (default: PORTAL_ADMIN_PASSWORD)"
    )

    what = viewers.add_argument_group("viewers")
    what.add_argument(
        "--count", type=viewer_count, default=10, metavar="N", help=f"viewers, 1..{MAX_VIEWERS}"
    )
    what.add_argument(
        "--scope",
        choices=("site", "room", "device"),
        default="room",
        help="what each viewer watches: the whole site, one room or one device",
    )
    what.add_argument(
        "--room",
        default=None,
        metavar="NAME",
        help="room: every viewer watches this room; device: the devices of this room "
        "(default: viewers are dealt round-robin over the rooms or devices the portal has seen in "
        "the last minute, or over all it knows when none)",
    )
    what.add_argument(
        "--device", default=None, metavar="NAME", help="device scope: all watch this device of --room"
    )
    what.add_argument(
        "--duration",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds of watching",
    )
    what.add_argument(
        "--connect-rate",
        type=seconds,
        default=0.0,
        metavar="N",
        help="viewers connected per second (0: no limit, at most 100 handshakes at once)",
    )
    what.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds any network step may take: sign-in, handshake, subscription",
    )
    what.add_argument(
        "--settle",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="after watching, longest wait for the final values to reach every viewer; one "
        "still missing then is missed",
    )

    out = viewers.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write DIR/viewers.json with per-viewer figures"
    )
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_debug(out)
    return viewers


def plan_from(args: argparse.Namespace) -> Plan:
    """The watch the flags ask for, with the lab's ``.env`` filling what they leave out.

    Raises:
        ScenarioError: bad settings or flags (exit status 2).
    """
    from stress.targets.lab import lab_env  # noqa: PLC0415 - only needed when a lab's .env is read
    from stress.viewers.audience import Plan  # noqa: PLC0415 - keeps `stress --help` fast
    from stress.viewers.reference import BrokerAccount  # noqa: PLC0415

    if args.room is not None and args.scope == "site":
        raise ScenarioError("--room is for --scope room or device")
    if args.device is not None and (args.scope != "device" or args.room is None):
        raise ScenarioError("--device is for --scope device, with --room")
    env: dict[str, str] = {}
    if args.env_file.is_file() or not (args.portal and args.username and args.password):
        env = lab_env(args.env_file)
    portal = args.portal or portal_url(f"http://127.0.0.1:{_setting(env, 'PORTAL_PORT', 1, 65_535)}")
    reference = None
    if env.get("LAB_FLEET_USER") and env.get("LAB_FLEET_PASSWORD"):
        reference = BrokerAccount(
            host=urlsplit(portal).hostname or "127.0.0.1",
            port=_setting(env, "MQTT_PORT", 1, 65_535),
            username=env["LAB_FLEET_USER"],
            password=env["LAB_FLEET_PASSWORD"],
            root=env.get("TOPIC_ROOT") or "office",
        )
    return Plan(
        portal_url=portal,
        username=args.username or env.get("PORTAL_ADMIN_USER", ""),
        password=args.password or env.get("PORTAL_ADMIN_PASSWORD", ""),
        count=args.count,
        scope=args.scope,
        room=args.room,
        device=args.device,
        duration=args.duration,
        connect_rate=args.connect_rate,
        connect_timeout=args.connect_timeout,
        flush_s=_setting(env, "PORTAL_LIVE_FLUSH_MS", 10, 60_000, default=100) / 1000,
        settle_s=args.settle,
        reference=reference,
    )


def _setting(env: dict[str, str], name: str, low: int, high: int, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None and default is not None:
        return default
    if raw is None or not raw.isdigit() or not low <= int(raw) <= high:
        raise ScenarioError(f"{name}={raw!r} in the lab's settings is not {low}..{high}: fix it")
    return int(raw)


async def _watch(plan: Plan, quiet: bool) -> Result:
    """Connect, watch and compare, with progress on stderr; SIGINT or SIGTERM ends watching early."""
    from stress.cli.progress import Progress  # noqa: PLC0415
    from stress.viewers.audience import Audience  # noqa: PLC0415

    stop = asyncio.Event()
    why: list[str] = []
    loop = asyncio.get_running_loop()

    def stopping(signum: signal.Signals) -> None:
        why.append(f"signal {signum.name}")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping, signum)
    async with Audience(plan) as audience:
        with Progress(plan.count, f"connecting viewers to {plan.portal_url}") as bar:
            await audience.connect(None if quiet else bar.advance, stop)
        if not stop.is_set():
            with Progress(math.ceil(plan.duration), "watching, seconds") as bar:
                await audience.watch(None if quiet else bar.advance, stop)
        if why:
            audience.stop_reason(why[0])
        return await audience.result()


def table(figures: dict[str, Any]) -> str:
    """The console summary of a result (``Result.as_dict()``)."""
    latency, updates = figures["latency_ms"], figures["updates_per_viewer"]
    where = figures["scope"] + (f" {figures['room']}" if figures["room"] else "")
    where += f"/{figures['device']}" if figures["device"] else ""
    lines = [
        f"viewers      {figures['viewers']:,} asked: {figures['connected']:,} connected, "
        f"{figures['refused']:,} refused, {figures['dropped']:,} dropped   "
        f"({where}, {figures['watched_s']:.1f} s watched, flush {figures['flush_ms']} ms)",
    ]
    if latency["count"]:
        lines.append(
            f"latency ms   p50 {latency['p50']:.1f}  p95 {latency['p95']:.1f}  p99 {latency['p99']:.1f}  "
            f"max {latency['max']:.1f}   over {latency['count']:,} updates; "
            f"worst viewer p99 {figures['worst_viewer_p99_ms']:.1f}"
        )
    else:
        lines.append("latency ms   no timed updates (was anything published in scope while watching?)")
    if updates["max"] is not None:
        lines.append(
            f"updates      per viewer: min {updates['min']:,}  median {updates['median']:,.0f}  "
            f"max {updates['max']:,}"
        )
    reference = figures["reference"]
    if figures["missed"] is None:
        lines.append("missed       not measured (the reference needs the fleet account of the lab's .env)")
    else:
        lines.append(
            f"missed       {figures['missed']:,} final values; {figures['viewers_with_missed']:,} viewers "
            f"with any   (reference: {reference['attributes']:,} attributes, "
            f"{reference['messages']:,} messages)"
        )
        if reference["error"]:
            lines.append(f"             the reference lost its connection ({reference['error']}): incomplete")
    generator = figures["generator"]
    lag = generator["loop_lag_ms"]["p99"]
    lines.append(
        f"generator    event-loop lag p99 {lag or 0.0:.1f} ms, CPU {generator['cpu_ratio']:.0%} of a core"
        + ("   SATURATED: the latency includes this process's own delay" if generator["saturated"] else "")
    )
    for state in ("refused", "dropped"):
        reasons = figures[f"{state}_by_reason"]
        if reasons:
            text = ", ".join(f"{reason} x{count}" for reason, count in list(reasons.items())[:3])
            lines.append(f"{state:<12} {text}")
    return "\n".join(lines)


def command_viewers(args: argparse.Namespace) -> int:
    """``stress viewers``."""
    from stress.engine import new_loop  # noqa: PLC0415

    plan = plan_from(args)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(_watch(plan, args.quiet))
    figures = result.as_dict()
    print(table(figures))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "viewers.json"
        path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"result file  {path}")
    if not figures["connected"]:
        reasons = ", ".join(f"{r} x{n}" for r, n in figures["refused_by_reason"].items()) or "no answer"
        print(f"stress viewers: error: no viewer could connect ({reasons})", file=sys.stderr)
        return 1
    return SIGNAL_STATUS.get(figures["stopped"], 0)
