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
from typing import TYPE_CHECKING

from stress.cli.control import COMMANDS as CONTROL_COMMANDS
from stress.cli.control import add_parsers as add_control_parsers
from stress.cli.control import command_control
from stress.cli.dashboard import add_parser as add_dashboard_parser
from stress.cli.dashboard import beside_run, close_beside, command_dashboard
from stress.cli.flags import env_defaults
from stress.cli.parser import Parser
from stress.cli.provision import add_parsers as add_provision_parsers
from stress.cli.provision import command_deprovision, command_provision
from stress.cli.run_flags import add_run_parsers
from stress.cli.viewers import add_parser as add_viewers_parser
from stress.cli.viewers import command_viewers
from stress.errors import ScenarioError, StressError
from stress.results.runfolder import DEFAULT_ROOT
from stress.scenario import Broker, Scenario
from stress.scenarios import find as find_scenario
from stress.shapes import Stage, scaled, timeline

if TYPE_CHECKING:
    from stress.results.summary import Summary


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
    add_run_parsers(commands)
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
    if command == "check":
        # its --scenario file is read against the run's flags: those check shares take their
        # variables there too (a stage without devices falls back to STRESS_DEVICES, as in the run)
        shared = {action.dest for action in commands.choices["check"]._actions}
        env_defaults(commands.choices["run"], shared)
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
    return lab_port(env, args.port, transport=args.transport, tls=args.tls)


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
    if args.target != "thingsboard" and args.transport in ("gateway", "http"):
        raise ScenarioError(f"--transport {args.transport} is for --target thingsboard")
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
        for flag in ("gateways", "tb_url", "tb_username", "tb_password"):
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
            transport="mqtt" if args.target == "thingsboard" else args.transport,
            ws_path=args.ws_path,
            cert=args.cert,
            key=args.key,
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


def scenario_of(args: argparse.Namespace) -> Scenario:
    """The scenario of ``stress run`` or ``check``: flags, and the ``--scenario`` file's.

    ``check`` takes only the flags that decide how a device connects; the run's others keep
    their defaults (or the scenario file's values), so check builds the very scenario the run
    would.
    """
    stages = apply_scenario_file(args, args.given) if args.scenario is not None else None
    for action in args.run_parser._actions:
        if action.dest != "help" and not hasattr(args, action.dest):
            setattr(args, action.dest, action.default)
    return scenario_from(args, stages)


def command_check(args: argparse.Namespace) -> int:
    """``stress check``."""
    from stress.check import check  # noqa: PLC0415

    print(check(scenario_of(args)))
    return 0


def command_run(args: argparse.Namespace) -> int:
    """``stress run``."""
    from stress.results.report import report  # noqa: PLC0415 - keeps `stress --help` fast
    from stress.results.report.model import ReportError  # noqa: PLC0415
    from stress.runner import run  # noqa: PLC0415
    from stress.targets.registry import build  # noqa: PLC0415

    scenario = scenario_of(args)
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
