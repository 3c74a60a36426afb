"""The ``stress`` command line: parses flags (and ``STRESS_*`` variables), then calls the library.

Every flag of ``stress run`` can also be set with an environment variable named after it:
``--connect-rate`` is ``STRESS_CONNECT_RATE``. A flag on the command line wins over the
variable. A bad value, from either, is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stress.behaviours import BUILTIN
from stress.cli.control import COMMANDS as CONTROL_COMMANDS
from stress.cli.control import add_parsers as add_control_parsers
from stress.cli.control import command_control
from stress.cli.dashboard import add_parser as add_dashboard_parser
from stress.cli.dashboard import beside_run, close_beside, command_dashboard
from stress.cli.flags import (
    Parser,
    any_share,
    behaviour,
    cluster,
    count,
    cpus,
    env_defaults,
    factor,
    moments,
    port,
    positive_int,
    positive_seconds,
    processes,
    qos,
    seconds,
    share,
)
from stress.cli.provision import add_parsers as add_provision_parsers
from stress.cli.provision import add_tb_flags, command_deprovision, command_provision
from stress.cli.viewers import add_parser as add_viewers_parser
from stress.cli.viewers import command_viewers
from stress.errors import ScenarioError, StressError
from stress.results.runfolder import DEFAULT_ROOT
from stress.scenario import Broker, Scenario
from stress.scenarios import examples as scenario_examples
from stress.scenarios import find as find_scenario
from stress.shapes import MAX_AMPLITUDE, SHAPES, Stage, scaled, timeline

if TYPE_CHECKING:
    from stress.results.summary import Summary


def _add_fault_flags(run: argparse.ArgumentParser) -> None:
    """``stress run``'s faults: churn, reconnect storms, slow devices."""
    faults = run.add_argument_group("faults")
    faults.add_argument(
        "--churn",
        type=seconds,
        default=0.0,
        metavar="SHARE",
        help="connection churn: this share of the fleet disconnects and reconnects per minute "
        "(0.5: half of it; 0: none)",
    )
    faults.add_argument(
        "--storm-at",
        type=moments,
        default=(),
        metavar="SECONDS",
        help="reconnect storms: at these seconds into publishing (30 or 30,90) every device drops "
        "its connection, as in a network outage, and all reconnect at once",
    )
    faults.add_argument(
        "--slow-devices",
        type=any_share,
        default=0.0,
        metavar="SHARE",
        help="this share of the devices acknowledges the QoS 1 commands it receives late",
    )
    faults.add_argument(
        "--slow-ack-delay",
        type=seconds,
        default=2.0,
        help="seconds a slow device waits before acknowledging a command",
    )


def _add_timing_flags(run: argparse.ArgumentParser) -> None:
    """``stress run``'s connections and timing."""
    timing = run.add_argument_group("connections and timing")
    timing.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds a handshake may take. A run in which no device has connected this long plus "
        "three reconnect backoffs (--reconnect-min doubling: 13.5 s by default) after the first "
        "failure ends early, saying why as stress check would (exit status 1)",
    )
    timing.add_argument(
        "--connect-rate", type=seconds, default=0.0, help="new connections per second (0: no limit)"
    )
    timing.add_argument(
        "--connect-concurrency", type=positive_int, default=500, help="handshakes in progress at once"
    )
    timing.add_argument(
        "--reconnect-min", type=positive_seconds, default=0.5, help="first reconnect backoff cap, seconds"
    )
    timing.add_argument(
        "--reconnect-max", type=positive_seconds, default=30.0, help="largest reconnect backoff, seconds"
    )
    timing.add_argument(
        "--ack-timeout",
        type=positive_seconds,
        default=30.0,
        help="seconds without PUBACK before a message counts as failed",
    )
    timing.add_argument(
        "--drain", type=seconds, default=5.0, help="seconds to wait at the end for acks and deliveries"
    )


def _add_tb_run_flags(run: argparse.ArgumentParser) -> None:
    """The flags of ``stress run --target thingsboard``."""
    tb = run.add_argument_group("thingsboard")
    tb.add_argument(
        "--transport",
        choices=("mqtt", "gateway", "http"),
        default="mqtt",
        help="mqtt: a connection per device; gateway: devices share --gateways connections; "
        "http: POST /api/v1/<token>/telemetry (with --qos 1)",
    )
    tb.add_argument("--gateways", type=count, default=0, help="gateway connections (--transport gateway)")
    tb.add_argument(
        "--tokens",
        type=Path,
        default=Path("data/provisioning/tokens.json"),
        help="access tokens from stress provision --target thingsboard",
    )
    add_tb_flags(tb)
    run.add_argument_group("device lifecycle").add_argument(
        "--active",
        type=Path,
        default=None,
        metavar="FILE",
        help="a list of the devices that take part (one name or shell pattern per line, # comments), "
        "read again whenever it changes: a device leaving the list disconnects, one coming back "
        "reconnects; no file: every device takes part",
    )


def add_run_parser(commands: Any) -> argparse.ArgumentParser:
    """``stress run`` and ``stress check`` (which takes the same flags, to check what the run would meet)."""
    commands.add_parser(
        "check",
        help="say in one line whether the target is reachable and takes the credentials",
        description="Connect to the target as the run with the same flags (or --scenario) would, "
        "as its first device, and say in one line whether the broker is reachable and accepts "
        "the credentials. Exit status 0 when it does, 1 when it does not.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="run a simulated fleet and write a run folder",
        description="Run a simulated device fleet against a target and measure it. Writes "
        "data/runs/<run-id>/ (summary.json, timeseries.csv, events.jsonl, report.html). "
        "Ctrl-C or SIGTERM ends the run cleanly, with the summary written. Exit status: 0 done; "
        "1 when no device could connect (the run ends early, see --connect-timeout), when the "
        "broker refused the end-to-end observer (see --e2e-devices), or when the run failed; "
        "2 for a bad setting; 130 or 143 after Ctrl-C or SIGTERM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for parser in (run, commands.choices["check"]):
        _add_run_flags(parser)
        _add_tb_run_flags(parser)
    return run


def _add_scenario_flags(run: argparse.ArgumentParser) -> None:
    """``--scenario`` (a file, or a shipped example by name) and how to shorten its timeline."""
    run.add_argument(
        "--scenario",
        default=None,
        metavar="FILE",
        help="a scenario file (YAML, or TOML by its .toml extension) with any of these flags and a "
        "timeline of stages, or the name of an example shipped with stress: "
        f"{', '.join(scenario_examples())}; flags given here win over it",
    )
    run.add_argument(
        "--duration-scale",
        type=factor,
        default=1.0,
        metavar="FACTOR",
        help="multiply the duration of every stage by this (0.05: a timeline of 200 s in 10 s), to try "
        "a long scenario quickly; the devices and intervals of its stages stay",
    )


def _add_split_flags(fleet: argparse._ArgumentGroup) -> None:
    """How the fleet is split: local processes, CPUs, or a Dask cluster."""
    fleet.add_argument(
        "--processes",
        type=processes,
        default=1,
        help="worker processes the fleet is split over (auto: one per core); results are merged exactly",
    )
    fleet.add_argument(
        "--cluster",
        type=cluster,
        default=None,
        metavar="ADDRESS",
        help="split the fleet over the workers of a Dask cluster instead: tcp://HOST:PORT (a running "
        "`dask scheduler` and its `dask worker`s, one engine per worker) or local:N (N worker "
        "processes started for this run); seconds are merged exactly and each worker's clock offset "
        "is measured before the common start",
    )
    fleet.add_argument(
        "--on-worker-lost",
        choices=("continue", "stop"),
        default="continue",
        help="when a cluster worker is lost mid-run: go on with the others (its devices count as "
        "failed) or stop the run (default: continue)",
    )
    fleet.add_argument(
        "--cpus",
        type=cpus,
        default=(),
        metavar="LIST",
        help="CPUs the generator runs on, such as 1 or 2-3 (default: any); with --processes, each "
        "worker takes one in turn. Keep the generator off the broker's CPUs when both share a machine",
    )


def _add_run_flags(run: argparse.ArgumentParser) -> None:
    """The flags of ``stress run`` (also ``stress check``'s)."""
    _add_scenario_flags(run)
    run.set_defaults(run_parser=run)
    where = run.add_argument_group("target")
    where.add_argument(
        "--target", choices=("lab", "mqtt", "thingsboard"), default="lab", help="what the fleet talks to"
    )
    where.add_argument(
        "--host", default=None, help="broker host (default 127.0.0.1; thingsboard: TB_MQTT_HOST)"
    )
    where.add_argument(
        "--port",
        type=port,
        default=None,
        help="broker port (lab: MQTT_PORT of --env-file; thingsboard: TB_MQTT_PORT; else 1883)",
    )
    where.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1", help="MQTT version")
    where.add_argument("--tls", action="store_true", help="connect with TLS")
    where.add_argument("--ca-file", type=Path, default=None, help="PEM file of the authority to trust (TLS)")
    where.add_argument(
        "--insecure", action="store_true", help="TLS without certificate checks (self-signed labs)"
    )
    where.add_argument("--keepalive", type=count, default=60, help="MQTT keep-alive, seconds (0: none)")
    where.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="lab: the lab's .env (fleet account, port, topic root); thingsboard: TB_* settings",
    )
    where.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="lab: per-device accounts (device,password CSV from stress provision)",
    )
    where.add_argument("--username", default="", help="mqtt: user name for every device")
    where.add_argument("--password", default="", help="mqtt: password for every device")
    where.add_argument("--root", default="", help="topic root (lab: TOPIC_ROOT of --env-file; mqtt: stress)")
    where.add_argument(
        "--topic",
        default="",
        help="mqtt: topic template ({root} {room} {device} {attr}); default {root}/{room}/{device}/{attr}",
    )
    where.add_argument(
        "--payload",
        default="",
        help='mqtt: payload template ({value} or {values}, {seq}, {ts}); default {"value":{value},"ts":{ts}}',
    )
    where.add_argument(
        "--command-topic",
        default="",
        help="mqtt: where devices receive commands, with {attr} (default: none)",
    )

    fleet = run.add_argument_group("fleet and load")
    fleet.add_argument(
        "--devices", type=positive_int, default=10, help="devices in the fleet (the largest stage for ramp)"
    )
    fleet.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        help="seconds between a device's messages; 0 = capacity mode, as fast as the target takes them",
    )
    fleet.add_argument(
        "--duration",
        type=positive_seconds,
        default=60.0,
        help="seconds of publishing (after the devices connect)",
    )
    fleet.add_argument("--qos", type=qos, default=0, choices=(0, 1), help="MQTT QoS of the messages")
    fleet.add_argument(
        "--shape",
        choices=SHAPES,
        default="steady",
        help="steady: spread over the interval; ramp: the fleet grows in --stages steps; "
        "burst: every device at the same instant; wave: the rate swings like a sine around its "
        "mean (--wave-period, --wave-amplitude); random-burst: bursts at random instants, "
        "--interval apart on average",
    )
    fleet.add_argument("--stages", type=positive_int, default=4, help="ramp: number of equal steps")
    fleet.add_argument(
        "--wave-period", type=positive_seconds, default=60.0, help="wave: seconds of one swing of the rate"
    )
    fleet.add_argument(
        "--wave-amplitude",
        type=any_share,
        default=0.5,
        help=f"wave: how far the rate swings, as a share of its mean (0..{MAX_AMPLITUDE})",
    )
    fleet.add_argument(
        "--behaviour",
        type=behaviour,
        default="thermostat",
        help=f"device behaviour: {', '.join(BUILTIN)}, or module:Class",
    )
    fleet.add_argument("--prefix", default="dev", help="device ids are <prefix>00001, ...")
    fleet.add_argument("--rooms", type=positive_int, default=10, help="rooms the devices are spread over")
    fleet.add_argument(
        "--inflight", type=positive_int, default=20, help="QoS 1 messages in flight per device at most"
    )
    fleet.add_argument("--seed", type=count, default=1, help="random seed of the behaviours and backoff")
    _add_split_flags(fleet)

    _add_fault_flags(run)

    _add_timing_flags(run)

    measure = run.add_argument_group("measurement and output")
    measure.add_argument(
        "--e2e-devices",
        type=count,
        default=50,
        help="devices timed end to end by a subscriber on the broker, logged in with the fleet's "
        "account (0: none). A subscriber the broker refuses is an error: the run goes on without "
        "end-to-end figures and exits with status 1",
    )
    measure.add_argument(
        "--collapse-share",
        type=share,
        default=0.9,
        help="collapse: delivered below this share of offered, or connected below it of the fleet",
    )
    measure.add_argument(
        "--sample-every",
        type=positive_int,
        default=10_000,
        help="write one published message in this many to events.jsonl",
    )
    measure.add_argument(
        "--metrics-port",
        type=count,
        default=0,
        metavar="PORT",
        help="serve the run's figures to Prometheus at http://HOST:PORT/metrics while it runs (0: no)",
    )
    measure.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help="address of /metrics")
    measure.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve the live dashboard of this run (see stress dashboard) on --dashboard-port",
    )
    measure.add_argument(
        "--dashboard-port", type=port, default=8089, metavar="PORT", help="the dashboard's port"
    )
    measure.add_argument(
        "--dashboard-host", default="127.0.0.1", metavar="HOST", help="the dashboard's address"
    )
    measure.add_argument("--out", type=Path, default=None, help="run folder (default data/runs/<run-id>)")
    measure.add_argument("--quiet", action="store_true", help="no live progress line")
    measure.add_argument("--debug", action="store_true", help="tracebacks and debug logging")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``stress`` and its subcommands.

    ``command``'s flags take their defaults from ``STRESS_*`` variables (only that command's:
    a variable meant for ``run`` cannot break ``provision``).
    """
    parser = Parser(
        prog="stress",
        description="Simulated device fleets against this lab, any MQTT broker, or ThingsBoard: "
        "load shapes, measurements, run folders and reports.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_run_parser(commands)
    add_provision_parsers(commands)
    add_control_parsers(commands)
    add_dashboard_parser(commands)
    add_viewers_parser(commands)
    report = commands.add_parser(
        "report",
        help="print a run's summary and write its report.html",
        description="Print the summary of a run folder as a table and write report.html into it.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (data/runs/<run-id>)")
    report.add_argument("--no-html", action="store_true", help="only print the table")
    if command in ("run", "check", "provision", "deprovision", "viewers"):
        env_defaults(commands.choices[command])
    return parser


# ---------------------------------------------------------------------------- commands


def _lab_settings(args: argparse.Namespace, options: dict[str, str]) -> int:
    """The lab's port, topic root and fleet account from its .env; returns the port."""
    from stress.targets.lab import lab_env, lab_port  # noqa: PLC0415 - only the lab target needs it

    if not args.env_file.is_file() and args.port is not None and args.credentials:
        return int(args.port)  # per-device accounts on a lab whose settings are elsewhere
    env = lab_env(args.env_file)
    options["env_file"] = str(args.env_file)  # named when the broker refuses the fleet account
    options["root"] = options.get("root") or env.get("TOPIC_ROOT") or "office"
    options["username"] = env.get("LAB_FLEET_USER", "")
    options["password"] = env.get("LAB_FLEET_PASSWORD", "")
    return lab_port(env, args.port)


def _tb_settings(args: argparse.Namespace, options: dict[str, str]) -> tuple[str, int]:
    """ThingsBoard's MQTT host and port, and the target's options, from flags and TB_* settings."""
    from stress.thingsboard.settings import tb_settings  # noqa: PLC0415

    settings = tb_settings(
        args.env_file,
        url=args.tb_url,
        username=args.tb_username,
        password=args.tb_password,
        mqtt_host=args.host or "",
        mqtt_port=args.port,
    )
    options.update(
        transport=args.transport,
        gateways=str(args.gateways),
        tokens=str(args.tokens),
        url=settings.url,
        tb_username=settings.username,
        tb_password=settings.password,
    )
    return settings.mqtt_host, settings.mqtt_port


#: Flags that a timeline of stages in a scenario file replaces.
TIMELINE_FLAGS = ("devices", "interval", "duration", "shape", "stages")


def given_flags(command: str, words: Sequence[str]) -> set[str]:
    """The ``dest`` of every flag of ``command`` (run, check) given on the command line ``words``."""
    parser = build_parser(command)
    chosen = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr,index]
    for action in chosen._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(words))) - {"command", "run_parser"}


def apply_scenario_file(args: argparse.Namespace, given: set[str]) -> tuple[Stage, ...] | None:
    """Fill ``args`` from ``--scenario FILE`` where the command line gave nothing; its timeline."""
    from stress.scenario_file import load  # noqa: PLC0415 - only scenario files need YAML

    loaded = load(find_scenario(args.scenario), args.run_parser)
    for dest, value in loaded.values.items():
        if dest not in given:
            setattr(args, dest, value)
    if loaded.stages is not None:
        clashing = [f"--{dest}" for dest in TIMELINE_FLAGS if dest in given]
        if clashing:
            raise ScenarioError(
                f"{', '.join(clashing)} cannot change the timeline of stages in {args.scenario}"
            )
    return loaded.stages


def scenario_from(args: argparse.Namespace, stages: tuple[Stage, ...] | None = None) -> Scenario:
    """A scenario from parsed ``stress run`` flags (and a scenario file's timeline)."""
    options = {
        key: value
        for key, value in {
            "root": args.root,
            "topic": args.topic,
            "payload": args.payload,
            "command_topic": args.command_topic,
            "username": args.username,
            "password": args.password,
            "credentials": str(args.credentials) if args.credentials else "",
        }.items()
        if value
    }
    host = args.host or "127.0.0.1"
    if args.target == "lab":
        for flag in ("username", "password"):
            if flag in options:
                raise ScenarioError(
                    f"--{flag} is for --target mqtt; the lab's fleet account comes from --env-file"
                )
        chosen_port = _lab_settings(args, options)
    elif args.target == "thingsboard":
        host, chosen_port = _tb_settings(args, options)
    else:
        for flag in ("transport", "gateways", "tb_url", "tb_username", "tb_password"):
            if flag in getattr(args, "given", ()):
                raise ScenarioError(f"--{flag.replace('_', '-')} is for --target thingsboard")
        chosen_port = args.port or 1883
    return Scenario(
        target=args.target,
        broker=Broker(
            host=host,
            port=chosen_port,
            protocol=args.protocol,
            tls=args.tls,
            ca_file=args.ca_file,
            insecure=args.insecure,
            keepalive=args.keepalive,
        ),
        stages=scaled(
            stages
            or timeline(
                args.shape,
                args.devices,
                args.interval,
                args.duration,
                args.stages,
                wave=(args.wave_period, args.wave_amplitude),
            ),
            args.duration_scale,
        ),
        shape="timeline" if stages else args.shape,
        qos=args.qos,
        behaviour=args.behaviour,
        prefix=args.prefix,
        rooms=args.rooms,
        inflight=args.inflight,
        connect_timeout=args.connect_timeout,
        connect_rate=args.connect_rate,
        connect_concurrency=args.connect_concurrency,
        reconnect_min=args.reconnect_min,
        reconnect_max=args.reconnect_max,
        ack_timeout=args.ack_timeout,
        drain=args.drain,
        e2e_devices=args.e2e_devices,
        collapse_share=args.collapse_share,
        sample_every=args.sample_every,
        seed=args.seed,
        churn=args.churn,
        storms=args.storm_at,
        slow_devices=args.slow_devices,
        slow_ack_delay=args.slow_ack_delay,
        processes=args.processes,
        cluster=args.cluster,
        on_worker_lost=args.on_worker_lost,
        cpus=args.cpus,
        out=args.out,
        active=args.active,
        options=options,
    )


def _check_free(host: str, port: int) -> None:
    """One line now, rather than a run without the ``/metrics`` it was asked for."""
    if port > 65_535:
        raise ScenarioError(f"--metrics-port must be 1..65535, not {port}")
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ScenarioError(f"--metrics-port: cannot listen on {host}:{port}: {reason}") from None


def _scenario(args: argparse.Namespace) -> Scenario:
    """The scenario of ``stress run`` or ``check``: flags, and the ``--scenario`` file's."""
    stages = apply_scenario_file(args, args.given) if args.scenario is not None else None
    return scenario_from(args, stages)


def command_check(args: argparse.Namespace) -> int:
    """``stress check``."""
    from stress.check import check  # noqa: PLC0415

    print(check(_scenario(args)))
    return 0


def command_run(args: argparse.Namespace) -> int:
    """``stress run``."""
    from stress.results.report import ReportError, report  # noqa: PLC0415 - keeps `stress --help` fast
    from stress.runner import run  # noqa: PLC0415
    from stress.targets.registry import build  # noqa: PLC0415

    scenario = _scenario(args)
    target = build(scenario)
    metrics_at = None
    if args.metrics_port:
        metrics_at = (args.metrics_host, args.metrics_port)
        _check_free(*metrics_at)
    dashboard = None
    if args.dashboard:
        runs = scenario.out.resolve().parent if scenario.out is not None else DEFAULT_ROOT
        dashboard = beside_run(args.dashboard_host, args.dashboard_port, runs)
        print(f"stress: dashboard at http://{args.dashboard_host}:{args.dashboard_port}/", file=sys.stderr)
    if not args.quiet:
        print(f"stress: {scenario.devices:,} devices -> {target.describe()}", file=sys.stderr)
    try:
        summary = run(scenario, quiet=args.quiet, metrics_at=metrics_at)
    finally:
        if dashboard is not None:
            close_beside(dashboard, args.dashboard_host, args.dashboard_port)
    assert summary.folder is not None  # noqa: S101 - run always writes a folder
    try:
        text, html = report(summary.folder)
    except ReportError as exc:
        print(f"stress: the run finished but its report failed: {exc}", file=sys.stderr)
        text, html = "", None
    print(text)
    print(f"run folder: {summary.folder}" + (f"  (report: {html})" if html else ""))
    return _run_status(summary, quiet=args.quiet)


def _run_status(summary: Summary, *, quiet: bool) -> int:
    """The exit status of a finished run, with one line on stderr when it failed."""
    stopped = summary["stopped"]
    cannot_start = summary["cannot_start"]
    if cannot_start is not None:
        print(f"stress: error: {cannot_start['message']}", file=sys.stderr)
        return 1
    if summary["connections_peak"] == 0 and (summary["errors_by_reason"] or stopped == "completed"):
        reasons = (
            ", ".join(f"{reason} x{n}" for reason, n in summary["errors_by_reason"].items()) or "no answer"
        )
        print(f"stress: error: no device could connect ({reasons})", file=sys.stderr)
        return 1
    if stopped.startswith("error"):
        print(f"stress: {stopped} (the summary covers the run up to then)", file=sys.stderr)
        return 1
    interrupted = {"signal SIGINT": 130, "signal SIGTERM": 143}.get(stopped)
    if interrupted is not None:
        return interrupted
    observer = summary["observer"]
    if observer["state"] == "refused":
        if quiet:  # (else the console said it as it happened)
            print(f"stress: error: {observer['message']}", file=sys.stderr)
        return 1
    return 0


def command_report(args: argparse.Namespace) -> int:
    """``stress report RUN_DIR``."""
    from stress.results.report import report  # noqa: PLC0415

    text, html = report(args.run_dir, html=not args.no_html)
    print(text)
    if html is not None:
        print(f"report: {html}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stress`` command; returns the process exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((word for word in words if not word.startswith("-")), None))
    args = parser.parse_args(words)
    if args.command in ("run", "check"):
        args.given = given_flags(args.command, words)
    if args.command is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    handlers = {
        "run": command_run,
        "check": command_check,
        "dashboard": command_dashboard,
        "report": command_report,
        "provision": command_provision,
        "deprovision": command_deprovision,
        "viewers": command_viewers,
        **dict.fromkeys(CONTROL_COMMANDS, command_control),
    }
    try:
        return handlers[args.command](args)
    except (StressError, OSError) as exc:
        if debug:
            raise
        print(f"stress {args.command}: error: {exc}", file=sys.stderr)
        return exit_status(exc)


def exit_status(exc: StressError | OSError) -> int:
    """The exit status of a command that ended on ``exc``: 2 for input that cannot be used (a
    run folder that exists already is one), else 1."""
    if isinstance(exc, StressError):
        return exc.exit_status
    return 2 if isinstance(exc, FileExistsError) else 1


if __name__ == "__main__":
    sys.exit(main())
