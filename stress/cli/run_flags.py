"""The flags of ``stress run`` and ``stress check``, in named groups: each command takes the
groups it reads (:data:`RUN_GROUPS`, :data:`CHECK_GROUPS`), and every flag is declared once.
Each can also be set with an environment variable named after it (``--connect-rate`` is
``STRESS_CONNECT_RATE``), and is a key of a scenario file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stress.behaviours import BUILTIN
from stress.cli.flags import (
    add_debug,
    any_share,
    behaviour,
    cluster,
    count,
    cpus,
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
from stress.cli.provision import add_tb_flags
from stress.scenarios import examples as scenario_examples
from stress.shapes import MAX_AMPLITUDE, SHAPES

#: Adds one group of flags to a command's parser.
FlagGroup = Callable[[argparse.ArgumentParser], None]


def _scenario(parser: argparse.ArgumentParser) -> None:
    """``--scenario``: a file, or a shipped example by name."""
    parser.add_argument(
        "--scenario",
        default=None,
        metavar="FILE",
        help="a scenario file (YAML, or TOML by its .toml extension) with any flag of stress run and "
        "a timeline of stages, or the name of an example shipped with stress: "
        f"{', '.join(scenario_examples())}; flags given here win over it",
    )


def _target(parser: argparse.ArgumentParser) -> None:
    """What the fleet talks to, and how it connects."""
    where = parser.add_argument_group("target")
    where.add_argument(
        "--target", choices=("lab", "mqtt", "thingsboard"), default="lab", help="what the fleet talks to"
    )
    where.add_argument(
        "--host", default=None, help="broker host (default: 127.0.0.1; thingsboard: TB_MQTT_HOST)"
    )
    where.add_argument(
        "--port",
        type=port,
        default=None,
        help="broker port (default: lab: MQTT_PORT of --env-file, MQTT_TLS_PORT with --tls, "
        "MQTT_WS_PORT with --transport websocket; thingsboard: TB_MQTT_PORT; else 1883)",
    )
    where.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1", help="MQTT version")
    where.add_argument("--tls", action="store_true", help="connect with TLS")
    where.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        help="PEM file of the authority to trust (TLS; default: the system's authorities)",
    )
    where.add_argument(
        "--insecure", action="store_true", help="TLS without certificate checks (self-signed labs)"
    )
    where.add_argument(
        "--cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="TLS client certificate (PEM, intermediates after it) for brokers that require one; "
        "with --key and --tls",
    )
    where.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the private key of --cert (PEM, not encrypted)",
    )
    where.add_argument(
        "--transport",
        choices=("mqtt", "websocket", "gateway", "http"),
        default="mqtt",
        help="mqtt: MQTT over TCP; websocket: MQTT over WebSocket (lab, mqtt; wss with --tls; see "
        "--ws-path); thingsboard also: gateway (devices share --gateways connections), http "
        "(POST /api/v1/<token>/telemetry, with --qos 1)",
    )
    where.add_argument(
        "--ws-path",
        default="/mqtt",
        metavar="PATH",
        help="--transport websocket: the HTTP path of the broker's WebSocket endpoint",
    )
    where.add_argument("--keepalive", type=count, default=60, help="MQTT keep-alive, seconds (0: none)")
    where.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds a handshake may take. A run in which no device has connected this long plus "
        "three reconnect backoffs (--reconnect-min doubling: 13.5 s by default) after the first "
        "failure ends early, saying why as stress check does (exit status 1)",
    )
    where.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="lab: the lab's .env (fleet account, port, topic root); thingsboard: TB_* settings",
    )


def _credentials(parser: argparse.ArgumentParser) -> None:
    """Who the devices log in as (lab and mqtt; ThingsBoard's devices use tokens)."""
    who = parser.add_argument_group("credentials")
    who.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="lab: per-device accounts (device,password CSV from stress provision; default: every "
        "device logs in with the fleet account of --env-file)",
    )
    who.add_argument(
        "--username", default="", help="mqtt: user name for every device (default: none, anonymous)"
    )
    who.add_argument("--password", default="", help="mqtt: password for every device (default: none)")


def _thingsboard(parser: argparse.ArgumentParser) -> None:
    """The flags of ``--target thingsboard``."""
    tb = parser.add_argument_group("thingsboard")
    tb.add_argument("--gateways", type=count, default=0, help="gateway connections (--transport gateway)")
    tb.add_argument(
        "--tokens",
        type=Path,
        default=Path("data/provisioning/tokens.json"),
        help="access tokens from stress provision --target thingsboard",
    )
    add_tb_flags(tb)


def _fleet(parser: argparse.ArgumentParser) -> None:
    """The fleet: how many devices, their names, and their messages' QoS."""
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument(
        "--devices", type=positive_int, default=10, help="devices in the fleet (the largest stage for ramp)"
    )
    fleet.add_argument("--prefix", default="dev", help="device ids are <prefix>00001, ...")
    fleet.add_argument(
        "--qos",
        type=qos,
        default=0,
        choices=(0, 1, 2),
        help="MQTT QoS of the messages (2: exactly once, each in flight until its PUBCOMP; "
        "thingsboard: 0 or 1)",
    )
    fleet.add_argument(
        "--inflight",
        type=positive_int,
        default=20,
        help="QoS 1 and 2 messages in flight per device at most (QoS 2: until its PUBCOMP)",
    )


def _load(parser: argparse.ArgumentParser) -> None:
    """The timeline: how often, how long, and the shape of the load."""
    load = parser.add_argument_group("timeline and load shape")
    load.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        help="seconds between a device's messages; 0 = capacity mode, as fast as the target takes them",
    )
    load.add_argument(
        "--duration",
        type=positive_seconds,
        default=60.0,
        help="seconds of publishing (after the devices connect)",
    )
    load.add_argument(
        "--shape",
        choices=SHAPES,
        default="steady",
        help="steady: spread over the interval; ramp: the fleet grows in --stages steps; "
        "burst: every device at the same instant; wave: the rate swings like a sine around its "
        "mean (--wave-period, --wave-amplitude); random-burst: bursts at random instants, "
        "--interval apart on average",
    )
    load.add_argument("--stages", type=positive_int, default=4, help="ramp: number of equal steps")
    load.add_argument(
        "--wave-period", type=positive_seconds, default=60.0, help="wave: seconds of one swing of the rate"
    )
    load.add_argument(
        "--wave-amplitude",
        type=any_share,
        default=0.5,
        help=f"wave: how far the rate swings, as a share of its mean (0..{MAX_AMPLITUDE})",
    )
    load.add_argument(
        "--duration-scale",
        type=factor,
        default=1.0,
        metavar="FACTOR",
        help="multiply the duration of every stage by this (0.05: a timeline of 200 s in 10 s), to try "
        "a long scenario quickly; the devices and intervals of its stages stay",
    )


def _devices(parser: argparse.ArgumentParser) -> None:
    """What the devices do, where they are, and which take part."""
    devices = parser.add_argument_group("devices")
    devices.add_argument(
        "--behaviour",
        type=behaviour,
        default="thermostat",
        help=f"device behaviour: {', '.join(BUILTIN)}, or module:Class",
    )
    devices.add_argument("--rooms", type=positive_int, default=10, help="rooms the devices are spread over")
    devices.add_argument("--seed", type=count, default=1, help="random seed of the behaviours and backoff")
    devices.add_argument(
        "--active",
        type=Path,
        default=None,
        metavar="FILE",
        help="a list of the devices that take part (one name or shell pattern per line, # comments), "
        "read again whenever it changes: a device leaving the list disconnects, one coming back "
        "reconnects (default: every device takes part)",
    )


def _topics(parser: argparse.ArgumentParser) -> None:
    """Where the devices publish and receive commands."""
    topics = parser.add_argument_group("topics and payloads")
    topics.add_argument(
        "--root", default="", help="topic root (default: lab: TOPIC_ROOT of --env-file; mqtt: stress)"
    )
    topics.add_argument(
        "--topic",
        default="",
        help="mqtt: topic template ({root} {room} {device} {attr}; default: {root}/{room}/{device}/{attr})",
    )
    topics.add_argument(
        "--payload",
        default="",
        help="mqtt: payload template ({value} or {values}, {seq}, {ts}; "
        'default: {"value":{value},"ts":{ts}})',
    )
    topics.add_argument(
        "--command-topic",
        default="",
        help="mqtt: where devices receive commands, with {attr} (default: none, they take no commands)",
    )


def _split(parser: argparse.ArgumentParser) -> None:
    """How the fleet is split: local processes, CPUs, or a Dask cluster."""
    split = parser.add_argument_group("processes and machines")
    split.add_argument(
        "--processes",
        type=processes,
        default=1,
        help="worker processes the fleet is split over (auto: one per core); results are merged exactly",
    )
    split.add_argument(
        "--cluster",
        type=cluster,
        default=None,
        metavar="ADDRESS",
        help="split the fleet over the workers of a Dask cluster instead: tcp://HOST:PORT (a running "
        "`dask scheduler` and its `dask worker`s, one engine per worker) or local:N (N worker "
        "processes started for this run); seconds are merged exactly and each worker's clock offset "
        "is measured before the common start",
    )
    split.add_argument(
        "--on-worker-lost",
        choices=("continue", "stop"),
        default="continue",
        help="when a cluster worker is lost mid-run: go on with the others (its devices count as "
        "failed) or stop the run",
    )
    split.add_argument(
        "--cpus",
        type=cpus,
        default=(),
        metavar="LIST",
        help="CPUs the generator runs on, such as 1 or 2-3 (default: any); with --processes, each "
        "worker takes one in turn. Keep the generator off the broker's CPUs when both share a machine",
    )


def _faults(parser: argparse.ArgumentParser) -> None:
    """Faults: churn, reconnect storms, slow devices."""
    faults = parser.add_argument_group("faults")
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
        "its connection, as in a network outage, and all reconnect at once (default: none)",
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


def _timing(parser: argparse.ArgumentParser) -> None:
    """How fast devices connect and reconnect, and how long acknowledgements may take."""
    timing = parser.add_argument_group("connections and timing")
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
        help="seconds without PUBACK (QoS 1) or PUBCOMP (QoS 2) before a message counts as failed",
    )
    timing.add_argument(
        "--drain", type=seconds, default=5.0, help="seconds to wait at the end for acks and deliveries"
    )


def _measurement(parser: argparse.ArgumentParser) -> None:
    """What is measured beyond the fleet's own counts."""
    measure = parser.add_argument_group("measurement")
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
        help="collapse: acknowledged (QoS 0: written) below this share of offered, or connected "
        "below it of the devices started",
    )
    measure.add_argument(
        "--sample-every",
        type=positive_int,
        default=10_000,
        help="write one published message in this many to events.jsonl",
    )


def _live(parser: argparse.ArgumentParser) -> None:
    """The run's figures while it runs: Prometheus, and the dashboard beside it."""
    live = parser.add_argument_group("live views")
    live.add_argument(
        "--metrics-port",
        type=count,
        default=0,
        metavar="PORT",
        help="serve the run's figures to Prometheus at http://HOST:PORT/metrics while it runs (0: no)",
    )
    live.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help="address of /metrics")
    live.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve the live dashboard of this run (see stress dashboard) on --dashboard-port",
    )
    live.add_argument(
        "--dashboard-port", type=port, default=8089, metavar="PORT", help="the dashboard's port"
    )
    live.add_argument("--dashboard-host", default="127.0.0.1", metavar="HOST", help="the dashboard's address")


def _output(parser: argparse.ArgumentParser) -> None:
    """Where the run folder goes, and what the console shows."""
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, help="run folder (default: data/runs/<run-id>)")
    out.add_argument("--quiet", action="store_true", help="no live progress line")
    add_debug(out)


#: The flags of ``stress run``, in the order its help lists them.
RUN_GROUPS: tuple[FlagGroup, ...] = (
    _scenario,
    _target,
    _credentials,
    _thingsboard,
    _fleet,
    _load,
    _devices,
    _topics,
    _split,
    _faults,
    _timing,
    _measurement,
    _live,
    _output,
)
#: The flags of ``stress check``: those that decide how the run's first device connects.
CHECK_GROUPS: tuple[FlagGroup, ...] = (_scenario, add_debug, _target, _credentials, _thingsboard, _fleet)


def add_run_parsers(commands: Any) -> None:
    """``stress check`` and ``stress run``."""
    check = commands.add_parser(
        "check",
        help="say in one line whether the target is reachable and takes the credentials",
        description="Connect to the target as stress run would connect its first device, and say in "
        "one line whether the broker is reachable and accepts the credentials. It takes the run's "
        "flags that decide how that device connects (target, credentials, ThingsBoard, fleet); a "
        "--scenario file is read as the run reads it. It publishes nothing. Exit status 0 when the "
        "target takes the device, 1 when it does not, 2 for a bad setting.",
    )
    run = commands.add_parser(
        "run",
        help="run a simulated fleet and write a run folder",
        description="Run a simulated device fleet against a target and measure it. Writes "
        "data/runs/<run-id>/ (summary.json, timeseries.csv, events.jsonl, report.html). "
        "Ctrl-C or SIGTERM ends the run cleanly, with the summary written. Exit status: 0 done; "
        "1 when no device could connect (the run ends early, see --connect-timeout), when the "
        "broker refused the end-to-end observer (see --e2e-devices), or when the run failed; "
        "2 for a bad setting; 130 or 143 after Ctrl-C or SIGTERM.",
    )
    for parser, groups in ((check, CHECK_GROUPS), (run, RUN_GROUPS)):
        for add_group in groups:
            add_group(parser)
        # a scenario file is read against the run's flags, for check too (see main.apply_scenario_file)
        parser.set_defaults(run_parser=run)
