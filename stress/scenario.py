"""What a run does, validated once: the fleet, its schedule, the target and how to measure.

A :class:`Scenario` is built by the CLI from flags (or by a program directly) and trusted by
everything inside the engine. Its timeline is a list of :class:`Stage`: a steady or burst
run is one stage, a ramp is several.
"""

from __future__ import annotations

import functools
import math
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stress.errors import ScenarioError
from stress.mqtt.tls import load_certificate
from stress.shapes import Stage
from wire.names import name_problem

#: The largest fleet of a run (device ids have at most 7 digits).
MAX_DEVICES = 9_999_999


@dataclass(frozen=True)
class Broker:
    """Where the fleet connects and how."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    tls: bool = False
    #: PEM file of the authority to trust for TLS (default: the system's).
    ca_file: Path | None = None
    #: Skip certificate checks (self-signed labs); the run records that it did.
    insecure: bool = False
    keepalive: int = 60
    #: How MQTT travels: ``mqtt`` (over TCP), or ``websocket`` (MQTT over WebSocket; ``wss``
    #: with ``tls``).
    transport: Literal["mqtt", "websocket"] = "mqtt"
    #: The HTTP path of the WebSocket endpoint (``transport`` ``websocket``).
    ws_path: str = "/mqtt"
    #: The client's certificate (PEM, intermediates after it) and its private key, presented in
    #: the TLS handshake to a broker that asks for one: both or neither, with ``tls``.
    cert: Path | None = None
    key: Path | None = None

    def problem(self) -> str | None:
        """What makes these settings unusable, in one line, or None (client certificate files
        are read: a problem names the file)."""
        checks = [
            (0 < self.port < 65_536, f"--port must be 1..65535, not {self.port}"),
            (0 <= self.keepalive <= 65_535, "--keepalive must be 0..65535 seconds"),
            (
                self.transport in ("mqtt", "websocket"),
                f"--transport {str(self.transport)[:40]!r}: a broker's transport is mqtt or websocket",
            ),
            (
                self.ws_path.startswith("/") and all(33 <= ord(char) < 127 for char in self.ws_path),
                f"--ws-path {self.ws_path[:60]!r} must be a URL path: starting with /, no spaces",
            ),
            (
                (self.cert is None) == (self.key is None),
                "--cert and --key go together: the client certificate and its private key",
            ),
            (self.cert is None or self.tls, "--cert and --key need --tls (its handshake presents them)"),
        ]
        for ok, message in checks:
            if not ok:
                return message
        if self.cert is not None and self.key is not None:
            try:
                load_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self.cert, self.key)
            except ScenarioError as exc:
                return str(exc)
        return None

    @property
    def url(self) -> str:
        """Where connections go, as a URL: ``mqtt://``, ``mqtts://``, ``ws://`` or ``wss://``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.transport == "websocket":
            return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{self.ws_path}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True)
class Scenario:
    """A whole run. ``devices`` is the largest fleet of the timeline."""

    target: str
    broker: Broker
    stages: tuple[Stage, ...]
    #: How the timeline was made: a shape of ``SHAPES``, or ``timeline`` (a scenario file's stages).
    shape: str = "steady"
    #: 0, 1 or 2 (ThingsBoard takes 0 and 1 only).
    qos: int = 0
    behaviour: str = "thermostat"
    #: Device ids are ``prefix`` + a zero-padded number; rooms ``room-01``...
    prefix: str = "dev"
    rooms: int = 10
    #: Most QoS 1 or 2 messages in flight per device (MQTT 5: also at most the broker's Receive
    #: Maximum). A QoS 2 message is in flight until its PUBCOMP.
    inflight: int = 20
    connect_timeout: float = 10.0
    #: New connections started per second (0: as fast as ``connect_concurrency`` allows).
    connect_rate: float = 0.0
    connect_concurrency: int = 500
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: Seconds without a PUBACK (QoS 1) or PUBCOMP (QoS 2) before a message counts as failed.
    ack_timeout: float = 30.0
    #: Seconds after the end to wait for acknowledgements and end-to-end deliveries.
    drain: float = 5.0
    #: Devices whose messages a subscriber on the same broker times end to end (0: none).
    e2e_devices: int = 50
    #: A second is a collapse when acknowledged (QoS 0: written) < share x offered, or connected <
    #: share x devices started.
    collapse_share: float = 0.9
    #: One published message in this many is written to events.jsonl.
    sample_every: int = 10_000
    seed: int = 1
    #: Faults. Churn: this share of the fleet disconnects (cleanly) and reconnects per minute.
    churn: float = 0.0
    #: Reconnect storms: seconds into publishing at which every device drops (no DISCONNECT,
    #: as in a network outage) and all come back at once.
    storms: tuple[float, ...] = ()
    #: Slow devices: this share of the fleet acknowledges the QoS 1 commands it receives only
    #: after ``slow_ack_delay`` seconds.
    slow_devices: float = 0.0
    slow_ack_delay: float = 2.0
    #: Worker processes the fleet is split over (1: this process runs it).
    processes: int = 1
    #: A Dask cluster the fleet is split over instead (``local:N`` or a scheduler's address).
    cluster: str | None = None
    #: What a lost cluster worker does to the run: ``continue`` with the others, or ``stop`` it.
    on_worker_lost: Literal["continue", "stop"] = "continue"
    #: CPUs the generator's processes run on (empty: wherever the system puts them); with
    #: several processes, worker ``n`` runs on ``cpus[n % len(cpus)]`` alone.
    cpus: tuple[int, ...] = ()
    out: Path | None = None
    #: The list of devices that take part (``--active``), read again whenever it changes.
    active: Path | None = None
    #: Target-specific settings (templates, credentials), already validated by the target.
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        prefix = prefix_problem(self.prefix, self.devices if self.stages else 1)
        checks = [
            (bool(self.stages), "the timeline has no stage"),
            (self.qos in (0, 1, 2), f"--qos must be 0, 1 or 2, not {self.qos}"),
            (self.rooms >= 1, f"--rooms must be 1 or more, not {self.rooms}"),
            (1 <= self.inflight <= 65_535, f"--inflight must be 1..65535, not {self.inflight}"),
            (_finite(self.connect_timeout) > 0, "--connect-timeout must be more than 0 seconds (and finite)"),
            (self.connect_rate >= 0, "--connect-rate must be 0 (no limit) or more per second"),
            (self.connect_concurrency >= 1, "--connect-concurrency must be 1 or more"),
            (
                0 < _finite(self.reconnect_min) <= _finite(self.reconnect_max),
                "--reconnect-min must be more than 0 and at most --reconnect-max (both finite)",
            ),
            (_finite(self.ack_timeout) > 0, "--ack-timeout must be more than 0 seconds (and finite)"),
            (_finite(self.drain) >= 0, "--drain must be 0 or more seconds (and finite)"),
            (self.e2e_devices >= 0, "--e2e-devices must be 0 or more"),
            (0 < self.collapse_share <= 1, "--collapse-share must be more than 0 and at most 1"),
            (self.sample_every >= 1, "--sample-every must be 1 or more"),
            (1 <= self.processes <= 1024, f"--processes must be 1..1024, not {self.processes}"),
            (
                self.cluster is None or self.processes == 1,
                "--processes and --cluster do not go together: a cluster runs one engine per Dask "
                "worker (more workers: dask worker --nworkers N, or local:N)",
            ),
            (0 <= _finite(self.churn) <= 60, "--churn must be 0..60 (a share of the fleet per minute)"),
            (all(_finite(at) >= 0 for at in self.storms), "--storm-at needs seconds of 0 or more"),
            (0 <= self.slow_devices <= 1, "--slow-devices must be a share of 0..1 of the fleet"),
            (0 <= _finite(self.slow_ack_delay) <= 3600, "--slow-ack-delay must be 0..3600 seconds"),
            (prefix is None, str(prefix)),
        ]
        for ok, message in checks:
            if not ok:
                raise ScenarioError(message)
        broker = self.broker.problem()
        if broker is not None:
            raise ScenarioError(broker)
        allowed = os.sched_getaffinity(0)
        refused = [cpu for cpu in self.cpus if cpu not in allowed]
        if refused:
            raise ScenarioError(
                f"--cpus: CPU {refused[0]} is not one this process may use ({cpu_list(allowed)})"
            )
        if self.devices > MAX_DEVICES:
            raise ScenarioError(f"at most {MAX_DEVICES:,} devices")

    @functools.cached_property
    def devices(self) -> int:
        """The largest fleet of the timeline."""
        return max(stage.devices for stage in self.stages)

    @property
    def duration(self) -> float:
        """The publishing phase: all stages, back to back."""
        return sum(stage.duration for stage in self.stages)

    @property
    def interval(self) -> float:
        """The interval of the first stage (what a one-stage run is known by)."""
        return self.stages[0].interval


def _finite(value: float) -> float:
    """``value``, or NaN (which fails every comparison) when it is infinite."""
    return value if math.isfinite(value) else math.nan


def device_name(prefix: str, index: int, fleet: int) -> str:
    """The id of device ``index`` (from 0) of a fleet: ``<prefix>00001``, wider past 99,999."""
    return f"{prefix}{index + 1:0{max(5, len(str(fleet)))}d}"


def valid_level(text: str) -> bool:
    """Whether ``text`` is a name by the lab's one rule (:mod:`wire.names`), so one topic level."""
    return name_problem(text) is None


def prefix_problem(prefix: str, fleet: int) -> str | None:
    """What makes ``prefix`` unusable for the device names of a fleet of ``fleet``, or ``None``: the
    names it makes are what must be valid (``"dev "`` makes ``"dev 00001"``, a valid name); an empty
    one is refused too, as it would name every device of a lab to ``stress deprovision``."""
    fleet = max(fleet, 1)
    problem = (
        name_problem(prefix)
        if not prefix
        else name_problem(device_name(prefix, 0, fleet))
        or name_problem(device_name(prefix, fleet - 1, fleet))
    )
    if problem is None:
        return None
    return f"--prefix {prefix[:40]!r} does not make valid device names ({problem})"


def cpu_list(cpus: Iterable[int]) -> str:
    """CPUs written as a list with ranges: ``0-3,6``."""
    ordered = sorted(cpus)
    runs: list[list[int]] = []
    for cpu in ordered:
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)
