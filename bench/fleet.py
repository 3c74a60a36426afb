"""Fleet benchmark: the stress engine against three baseline simulators, counted by the broker.

Every contender is one process publishing to the same private Mosquitto (``plain_broker.py``),
one after the other, in one run:

* **engine**: ``python -m stress run --target mqtt ... --interval 0`` (capacity mode), its
  messages shaped like the baselines' (``--topic bench/{device}/{attr} --payload {value}``; its
  thermostat publishes three attributes at each instant, a message each);
* **gmqtt**, **aiomqtt**, **paho**: the simulators of ``bench/baselines/``, each written the way
  its library is meant to be used (a task, or a thread, per device). A simulator that cannot hold
  the fleet asked for runs fewer devices and says why (``cap:``): paho's threaded client, for
  one, stops working past about 330 clients per process.

Scenarios (``--scenario``, default all):

* ``qos0``: 10,000 devices publishing flat out at QoS 0, msg/s counted by the broker;
* ``qos1``: 1,000 devices at QoS 1 (the broker acknowledges each message it counts), and the
  engine's own ``acked``;
* ``qos2``: 1,000 devices at QoS 2 (each message in flight until its PUBCOMP, two round trips),
  the engine against gmqtt only: the fastest baseline at QoS 1 that also does QoS 2 (aiomqtt and
  paho do it too, an order of magnitude slower at QoS 1);
* ``connect``: 15,000 idle devices (one message per device per hour) held by one process for
  15 s: connect rate, and resident memory per connected device;
* ``lateness``: the engine at half its ``qos0`` rate (1,000 devices, steady; or ``--rate``), and
  how late its messages left (``latency_ms.lateness`` of its summary.json); twice: with the
  engine and the broker wherever the system's scheduler puts them (*shared*), then with the
  broker pinned to the other CPUs and the engine to the last one (``--cpus``, *apart*).

**How the broker counts.** A paho subscriber in this process records, with the time it arrives,
each ``$SYS/broker/publish/messages/received``, ``$SYS/broker/clients/connected`` and
``$SYS/broker/uptime`` the broker publishes. Mosquitto 2.0 publishes $SYS when *more* than
``sys_interval`` (1 s) has passed, so every 2 s (a *tick*): the uptime at every tick, a counter
only when it changed (at a tick without it, it is unchanged). A contender connects its whole
fleet, then publishes for ``--duration`` seconds. Its fleet is *up* at the first tick where the
connected count (less this benchmark's own subscriber) reaches its peak; publishing began within
the 2 s before that tick or just after it. Its rate is the mean over the steady window, the
ticks from the one after *up* to the last one 2 s before *up* + duration (so never past the end
of its publishing): (messages received at the window's last tick - at its first) / (time between those
ticks). Mosquitto 2.0 leaves QoS 2 messages out of ``publish/messages/received``; at QoS 2 the count
is ``$SYS/broker/messages/received`` (every packet the broker read) halved: a PUBLISH and a PUBREL
per message, and nothing else from a fleet publishing flat out. The connect ramp, the first
seconds of publishing and the tail are left out; the rate between consecutive ticks inside the
window is printed beside it (min, median, max), so an unsteady rate shows. ``--duration`` is at
least 8 s, so that a window holds two ticks.

**Connect rate** (``connect``): devices over the time from the broker's first accepted
connection of the contender (its open files, /proc/<pid>/fd, polled every 0.2 s) to the fleet
*up*; with 2 s between ticks that is a range, printed as such, beside the contender's own count
(its devices connected over its connect phase, from its own start).

**CPU.** The broker's and the contender's (its whole process tree) CPU seconds, from
``/proc/<pid>/stat``, over the contender's run and as a share of one core over the steady
window: a contender near 100 % of a core (more, for threads outside the GIL) is a saturated
generator, not a slow broker.

**Memory per device** (``connect``): each contender first holds one device for 6 s; the memory
per device is (its VmRSS halfway through the idle phase of the full fleet - its VmRSS holding one
device) / (devices up - 1). VmRSS is summed over the contender's process tree.

Usage::

    .venv/bin/python bench/fleet.py                          # all scenarios, all contenders
    .venv/bin/python bench/fleet.py --scenario qos0 --only paho,aiomqtt,gmqtt --duration 10
    .venv/bin/python bench/fleet.py --scenario connect --devices 5000

Each contender is stopped if it overruns its connect allowance + duration + a margin. Figures
are noisy on a shared machine: run it more than once. It prints figures; it passes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plain_broker import PlainBroker  # noqa: E402 - bench/ is on sys.path when this runs as a script

BASELINES = Path(__file__).resolve().parent / "baselines"
CONTENDERS = ("engine", "gmqtt", "aiomqtt", "paho")
SCENARIOS = ("qos0", "qos1", "qos2", "connect", "lateness")
DEVICES = {"qos0": 10_000, "qos1": 1_000, "qos2": 1_000, "connect": 15_000, "lateness": 1_000}
#: The throughput scenarios and their QoS.
THROUGHPUT_QOS = {"qos0": 0, "qos1": 1, "qos2": 2}
#: Who runs ``qos2``: the engine, and the fastest baseline that does QoS 2.
QOS2_CONTENDERS = ("engine", "gmqtt")
#: The steady window starts this long after the fleet is up, and ends this long before it stops.
SKIP_HEAD_S = 2.0
SKIP_TAIL_S = 2.0
#: Seconds a contender is given, beyond its connect allowance and duration, before it is stopped.
MARGIN_S = 30.0
#: Seconds to wait for the broker to see the previous contender's devices gone.
QUIET_TIMEOUT_S = 30.0
POLL_S = 0.2
#: Seconds the ``connect`` scenario holds the fleet idle once it is up, and the one-device reference.
CONNECT_IDLE_S = 15.0
REFERENCE_S = 6.0
#: Mosquitto 2.0 publishes $SYS when more than sys_interval (1 s) has passed: every 2 s.
SYS_PERIOD_S = 2.0
#: Clients of this benchmark itself connected to the broker (the $SYS subscriber).
OWN_CLIENTS = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The engine's messages shaped like the baselines': ``bench/<device>/<attribute>``, a bare value.
#: Its thermostat publishes three attributes, each its own message, at every instant.
ENGINE_BEHAVIOUR = "thermostat"
ENGINE_MESSAGES = (
    *("--behaviour", ENGINE_BEHAVIOUR, "--topic", "bench/{device}/{attr}", "--payload", "{value}"),
)

RECEIVED = "$SYS/broker/publish/messages/received"
#: Every packet the broker received (QoS 2: a PUBLISH and a PUBREL per message).
PACKETS = "$SYS/broker/messages/received"
CONNECTED = "$SYS/broker/clients/connected"
#: Published at every $SYS tick (it always changes): the ticks' times.
UPTIME = "$SYS/broker/uptime"
#: The messages of one tick arrive together; a counter's message is this close after its tick's.
TICK_SLACK_S = 0.5

Series = list[tuple[float, float]]


# -- what the broker says ------------------------------------------------------------------


class BrokerCounters:
    """Records the broker's ``$SYS`` counters of received PUBLISH packets and connected clients."""

    def __init__(self, port: int) -> None:
        self.received: Series = []
        self.packets: Series = []
        self.connected: Series = []
        self.ticks: list[float] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-fleet-sys-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(RECEIVED, 0), (PACKETS, 0), (CONNECTED, 0), (UPTIME, 0)])
        if not self._subscribed.wait(10):
            raise RuntimeError("the broker did not answer the $SYS subscription")
        deadline = time.monotonic() + 3 * SYS_PERIOD_S
        while self.connected_now() < OWN_CLIENTS and time.monotonic() < deadline:
            time.sleep(POLL_S)  # the retained count may predate this subscriber

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if message.topic == UPTIME:
            self.ticks.append(now)
        else:
            series = {RECEIVED: self.received, PACKETS: self.packets}.get(message.topic, self.connected)
            series.append((now, float(message.payload)))

    def at_ticks(self, series: Series, start: float, end: float) -> Series:
        """A counter's value at each tick between two moments.

        Mosquitto publishes a counter only when it changed: at a tick without its message, the
        value is the one before.
        """
        values, value, index = [], 0.0, 0
        for tick in self.ticks:
            while index < len(series) and series[index][0] <= tick + TICK_SLACK_S:
                value = series[index][1]
                index += 1
            if start <= tick <= end:
                values.append((tick, value))
        return values

    def connected_now(self) -> float:
        """The last connected-clients count the broker published."""
        return self.connected[-1][1] if self.connected else 0.0

    def wait_quiet(self, level: float) -> bool:
        """Wait until the broker counts at most ``level`` clients connected; False on timeout."""
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while self.connected_now() > level:
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


# -- what a process uses -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            with contextlib.suppress(OSError):
                tree.extend(int(child) for child in (task / "children").read_text().split())
        index += 1
    return tree


def rss_kib(pid: int) -> int | None:
    """VmRSS of one process in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Usage:
    """Samples, every :data:`POLL_S`, of the CPU seconds and memory of a contender and the broker."""

    times: list[float] = field(default_factory=list)
    contender_cpu: list[float] = field(default_factory=list)
    contender_rss: list[int] = field(default_factory=list)
    broker_cpu: list[float] = field(default_factory=list)
    broker_files: list[int] = field(default_factory=list)

    def sample(self, pid: int, broker_pid: int) -> None:
        """Take one sample."""
        rss = rss_kib(pid)  # None once it exited (a zombie has no VmRSS)
        cpu = None
        if rss is not None:
            tree = process_tree(pid)
            cpu = sum(cpu_seconds(member) for member in tree)
            rss += sum(rss_kib(member) or 0 for member in tree[1:])
        self.times.append(time.monotonic())
        self.contender_cpu.append(cpu if cpu is not None else self.last(self.contender_cpu))
        self.contender_rss.append(rss if rss is not None else int(self.last(self.contender_rss)))
        self.broker_cpu.append(cpu_seconds(broker_pid))
        self.broker_files.append(sum(1 for _ in Path(f"/proc/{broker_pid}/fd").iterdir()))

    @staticmethod
    def last(values: list[Any]) -> float:
        return float(values[-1]) if values else 0.0

    def at(self, values: list[Any], moment: float) -> float:
        """The last sample of ``values`` taken at or before ``moment``."""
        value = float(values[0]) if values else 0.0
        for t, sample in zip(self.times, values, strict=True):
            if t > moment:
                break
            value = float(sample)
        return value

    def share(self, values: list[float], start: float, end: float) -> float:
        """CPU used between two moments, as a percentage of one core."""
        if end <= start:
            return 0.0
        return 100.0 * (self.at(values, end) - self.at(values, start)) / (end - start)


# -- one contender -------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What a contender is asked to do."""

    devices: int
    duration: float
    qos: int
    interval: float
    connect_timeout: float
    #: The engine's ``--cpus`` (empty: anywhere).
    cpus: tuple[int, ...] = ()
    #: More flags for the engine, such as ``--processes 2`` (``cluster.py`` compares its modes).
    engine_flags: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What happened when one contender ran."""

    name: str
    load: Load
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    #: Peak of the broker's connected-clients count ($SYS) less what was there before, and the
    #: times of the $SYS ticks just before and at that peak: the fleet was up in between.
    devices_up: int = 0
    up_after: float | None = None
    up_at: float | None = None
    #: When the broker accepted the contender's first connection (its open files, every 0.2 s).
    first_socket: float | None = None
    rate: float | None = None
    window_s: float = 0.0
    per_tick: list[float] = field(default_factory=list)
    cpu_run_s: float = 0.0
    broker_run_s: float = 0.0
    cpu_window: float = 0.0
    broker_window: float = 0.0
    #: VmRSS of the contender halfway through its run once its fleet is up, and the same for the
    #: contender holding one device (``connect`` runs that first, as the reference).
    rss_up_kib: float = 0.0
    rss_one_kib: float | None = None

    def connect_s(self) -> tuple[float, float] | None:
        """Seconds from the first connection to the whole fleet up: at least, at most.

        The broker's $SYS count comes every 2 s, so the fleet was up between two ticks.
        """
        if self.first_socket is None or self.up_at is None or self.up_after is None:
            return None
        most = max(self.up_at - self.first_socket, POLL_S)
        return max(self.up_after - self.first_socket, POLL_S), most

    def connect_rates(self) -> str:
        """Devices per second while connecting, as a range (from :meth:`connect_s`)."""
        seconds = self.connect_s()
        if seconds is None:
            return "-"
        least, most = self.devices_up / seconds[1], self.devices_up / seconds[0]
        return f"{least:,.0f}-{most:,.0f}" if seconds[0] > POLL_S else f">={least:,.0f}"

    def kib_per_device(self) -> float | None:
        """Resident memory each device beyond the first costs the contender."""
        if self.devices_up < 2 or not self.rss_up_kib or self.rss_one_kib is None:
            return None
        return (self.rss_up_kib - self.rss_one_kib) / (self.devices_up - 1)

    def own_connect_rate(self) -> str:
        """The contender's own account: devices connected per second of its connect phase
        (the engine's from its first attempt to its last CONNACK)."""
        if self.name == "engine":
            connects = engine_connects(self)
            return f"{connects[0] / connects[1]:,.0f}" if connects and connects[1] else "-"
        seconds = self.report.get("connect_s") or 0
        return f"{self.report.get('connected', 0) / seconds:,.0f}" if seconds else "-"


def contender_argv(name: str, port: int, load: Load, out_dir: Path) -> list[str]:
    """The command line of a contender."""
    common = [
        *("--host", "127.0.0.1", "--port", str(port), "--devices", str(load.devices)),
        *("--interval", f"{load.interval:g}", "--duration", f"{load.duration:g}", "--qos", str(load.qos)),
    ]
    if name == "engine":
        return [
            sys.executable,
            *("-m", "stress", "run", "--target", "mqtt", *common, *ENGINE_MESSAGES),
            *("--e2e-devices", "0", "--out", str(out_dir), "--quiet"),
            *(("--cpus", ",".join(map(str, load.cpus))) if load.cpus else ()),
            *load.engine_flags,
        ]
    script = {"gmqtt": "gmqtt_tasks.py", "aiomqtt": "aiomqtt_tasks.py", "paho": "paho_threads.py"}[name]
    return [
        sys.executable,
        str(BASELINES / script),
        *common,
        "--connect-timeout",
        f"{load.connect_timeout:g}",
    ]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the engine then writes its summary), then SIGKILL after 10 s.

    Not SIGINT: a program started in the background by a shell inherits SIGINT ignored.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a file, indented."""
    text = path.read_text(errors="replace").strip().splitlines()[-lines:] if path.exists() else []
    return "\n".join(f"    | {line}" for line in text) or "    | (nothing)"


class Bench:
    """The broker, its counters, and the contenders run one after the other against it."""

    def __init__(self, broker: PlainBroker, counters: BrokerCounters, workdir: Path) -> None:
        self.broker = broker
        self.counters = counters
        self.workdir = workdir
        self.current: subprocess.Popen[bytes] | None = None
        self.idle_level = OWN_CLIENTS

    def run(self, name: str, load: Load) -> Outcome:
        """Run one contender to its end (or stop it when it overruns), then measure it."""
        outcome = Outcome(name, load)
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        outcome.out_dir = folder / "run"
        if not self.counters.wait_quiet(self.idle_level):
            outcome.notes.append("the broker still counted earlier clients when this one started")
        time.sleep(1.0)
        argv = contender_argv(name, self.broker.port, load, outcome.out_dir)
        usage = Usage()
        broker_before = cpu_seconds(self.broker.pid)
        allowance = load.connect_timeout + load.duration + MARGIN_S
        cpu_run: float | None = None
        with (folder / "stdout").open("wb") as stdout, (folder / "stderr").open("wb") as stderr:
            spawned = time.monotonic()
            process = subprocess.Popen(argv, cwd=ROOT, stdout=stdout, stderr=stderr, start_new_session=True)
            self.current = process
            while True:
                # wait4, not Popen.wait: its resource usage is the contender's exact CPU time.
                pid, status, used = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)
                    cpu_run = used.ru_utime + used.ru_stime
                    break
                usage.sample(process.pid, self.broker.pid)
                if time.monotonic() - spawned > allowance:
                    outcome.notes.append(f"stopped: still running {allowance:.0f}s after it started")
                    usage.sample(process.pid, self.broker.pid)
                    stop(process)
                    break
                time.sleep(POLL_S)
            ended = time.monotonic()
            self.current = None
        time.sleep(SYS_PERIOD_S + 0.5)  # the broker's last $SYS ticks of this run
        outcome.broker_run_s = cpu_seconds(self.broker.pid) - broker_before
        outcome.cpu_run_s = cpu_run if cpu_run is not None else usage.last(usage.contender_cpu)
        problem = self._read_output(outcome, folder, process.returncode)
        self._measure(outcome, usage, spawned, ended)
        if problem is not None and outcome.devices_up <= 0:
            outcome.skipped = problem
        elif problem is not None:  # it ran: the broker's figures stand without its report
            outcome.notes.append(problem)
        elif outcome.devices_up <= 0:
            outcome.notes.append("the broker never counted any of its devices connected")
        return outcome

    def _read_output(self, outcome: Outcome, folder: Path, returncode: int | None) -> str | None:
        """Read the contender's report (summary.json, or its last line); say what is wrong if none."""
        stdout = (folder / "stdout").read_text(errors="replace").splitlines()
        outcome.notes.extend(line for line in stdout if line.startswith("cap:"))
        if outcome.name == "engine":
            summary = (outcome.out_dir or folder) / "summary.json"
            if summary.exists():
                outcome.report = json.loads(summary.read_text())
                return None
            return (
                f"`python -m stress run` exited with {returncode} without a summary.json;"
                f" its stderr ends with:\n{tail(folder / 'stderr')}"
            )
        try:
            outcome.report = json.loads(stdout[-1])
        except (IndexError, json.JSONDecodeError):
            return f"exited with {returncode} without a report; stderr ends with:\n{tail(folder / 'stderr')}"
        return None

    def _measure(self, outcome: Outcome, usage: Usage, spawned: float, ended: float) -> None:
        """Connections, memory and the steady rate, from the broker's counters and the samples."""
        connected = [
            (t, value - self.idle_level)
            for t, value in self.counters.at_ticks(
                self.counters.connected, spawned, ended + SYS_PERIOD_S + TICK_SLACK_S
            )
        ]
        outcome.devices_up = int(max((value for _t, value in connected), default=0))
        if outcome.devices_up <= 0:
            return
        index = next(i for i, (_t, value) in enumerate(connected) if value >= outcome.devices_up)
        outcome.up_at = up = connected[index][0]
        outcome.up_after = connected[index - 1][0] if index else spawned
        files = usage.broker_files or [0]
        outcome.first_socket = next(
            (t for t, n in zip(usage.times, files, strict=False) if n > files[0]), spawned
        )
        outcome.rss_up_kib = usage.at(usage.contender_rss, up + outcome.load.duration / 2)
        if outcome.load.interval >= outcome.load.duration:
            return  # an idle fleet: no rate to measure
        # The tick 2 s after up (ticks jitter by milliseconds), to the last one 2 s before the end.
        start = up + SKIP_HEAD_S - TICK_SLACK_S
        end = min(up + outcome.load.duration - SKIP_TAIL_S, ended)
        if outcome.load.qos == 2:  # PUBLISH and PUBREL packets, two a message
            window = [(t, v / 2) for t, v in self.counters.at_ticks(self.counters.packets, start, end)]
        else:
            window = self.counters.at_ticks(self.counters.received, start, end)
        if len(window) < 2:
            outcome.notes.append("steady window too short for a rate: give a longer --duration")
            return
        (t0, v0), (t1, v1) = window[0], window[-1]
        outcome.rate = (v1 - v0) / (t1 - t0)
        outcome.window_s = t1 - t0
        outcome.per_tick = [(b - a) / (tb - ta) for (ta, a), (tb, b) in itertools.pairwise(window)]
        outcome.cpu_window = usage.share(usage.contender_cpu, t0, t1)
        outcome.broker_window = usage.share(usage.broker_cpu, t0, t1)

    def stop_current(self) -> None:
        """Stop the contender running now, if any (on Ctrl-C)."""
        if self.current is not None:
            stop(self.current)


# -- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The command line, parsed."""

    scenarios: tuple[str, ...]
    only: tuple[str, ...]
    duration: float
    devices: int | None
    connect_timeout: float
    rate: float | None
    keep: bool


def count(value: float | None) -> str:
    """A count or rate with thousands separators, or a dash."""
    return "-" if value is None else f"{value:,.0f}"


def describe(outcome: Outcome) -> list[str]:
    """What one contender did, in a few lines."""
    if outcome.skipped is not None:
        return [f"{outcome.name}: skipped, {outcome.skipped}", *(f"  {note}" for note in outcome.notes)]
    lines = [f"{outcome.name}: {outcome.load.devices:,} devices asked"]
    lines.extend(f"  {note}" for note in outcome.notes)
    seconds = outcome.connect_s()
    if seconds is not None:
        lines.append(
            f"  broker: {outcome.devices_up:,} clients connected, all within"
            f" {seconds[0]:.1f}-{seconds[1]:.1f}s of the first ({outcome.connect_rates()} devices/s)"
        )
    if outcome.rate is not None:
        spread = outcome.per_tick or [0.0]
        lines.append(
            f"  broker counted {count(outcome.rate)} msg/s over {outcome.window_s:.1f}s (between its $SYS"
            f" ticks: min {count(min(spread))}, median {count(statistics.median(spread))},"
            f" max {count(max(spread))})"
        )
    report = outcome.report
    if report and outcome.name == "engine":
        lines.append(
            f"  it reports: sent {count(report.get('sent'))}, acked {count(report.get('acked'))},"
            f" failed {count(report.get('failed'))}, {count(report.get('msgs_per_s'))} msg/s,"
            f" stopped: {report.get('stopped')}, errors {json.dumps(report.get('errors_by_reason'))},"
            f" generator {json.dumps(report.get('generator'))}"
        )
        connect_ms = (report.get("latency_ms") or {}).get("connect") or {}
        if connect_ms.get("count"):
            lines.append(
                f"  its connects: {connect_ms['count']:,}, p50 {connect_ms.get('p50')} ms,"
                f" p99 {connect_ms.get('p99')} ms, max {connect_ms.get('max')} ms"
            )
    elif report:
        lines.append(
            f"  it reports ({report.get('library')}): sent {count(report.get('sent'))}"
            f" ({count(report.get('sent_per_s'))}/s), acked {count(report.get('acked'))},"
            f" connected {count(report.get('connected'))} in {report.get('connect_s')}s,"
            f" connect failures {report.get('connect_failures')}, errors {json.dumps(report.get('errors'))}"
        )
    window = f"{outcome.cpu_window:.0f}% and {outcome.broker_window:.0f}% of a core over the window; "
    lines.append(
        f"  CPU, contender and broker: {window if outcome.rate is not None else ''}"
        f"{outcome.cpu_run_s:.1f}s and {outcome.broker_run_s:.1f}s over the whole run"
    )
    return lines


def print_rate_table(outcomes: list[Outcome]) -> None:
    """contender, devices, msg/s, ratio engine/contender, CPU."""
    engine = next((o.rate for o in outcomes if o.name == "engine" and o.rate), None)
    print(
        f"  {'contender':<10} {'devices':>8} {'msg/s':>10} {'engine/this':>11}"
        f" {'its CPU (window, run)':>22} {'broker CPU (window, run)':>25}"
    )
    for outcome in outcomes:
        if outcome.skipped is not None:
            print(f"  {outcome.name:<10} {'skipped':>8}")
            continue
        ratio = f"{engine / outcome.rate:.2f}x" if engine and outcome.rate else "-"
        print(
            f"  {outcome.name:<10} {outcome.devices_up:>8,} {count(outcome.rate):>10} {ratio:>11}"
            f" {f'{outcome.cpu_window:.0f}%, {outcome.cpu_run_s:.1f}s':>22}"
            f" {f'{outcome.broker_window:.0f}%, {outcome.broker_run_s:.1f}s':>25}"
        )
    if engine is None:
        print("  (no engine figure in this run: no ratios)")


def run_all(bench: Bench, names: list[str], load: Load) -> list[Outcome]:
    """Run each contender in turn, printing what it did as it ends."""
    outcomes = []
    for name in names:
        print(f"- {name} ...", flush=True)
        outcome = bench.run(name, load)
        print("\n".join(describe(outcome)), flush=True)
        outcomes.append(outcome)
    return outcomes


def throughput(bench: Bench, settings: Settings, scenario: str) -> list[Outcome]:
    """``qos0`` / ``qos1`` / ``qos2``: every contender (at QoS 2, those of ``QOS2_CONTENDERS``)
    flat out; msg/s counted by the broker."""
    qos = THROUGHPUT_QOS[scenario]
    devices = settings.devices or DEVICES[scenario]
    names = [name for name in settings.only if qos < 2 or name in QOS2_CONTENDERS]
    print(f"\n== {scenario}: {devices:,} devices, QoS {qos}, flat out, {settings.duration:g}s each ==")
    load = Load(devices, settings.duration, qos, 0.0, settings.connect_timeout)
    outcomes = run_all(bench, names, load)
    print(f"\n{scenario} summary (msg/s counted by the broker over each steady window):")
    print_rate_table(outcomes)
    engine = next((o for o in outcomes if o.name == "engine" and o.skipped is None), None)
    if qos and engine is not None:
        print(
            f"  engine's own acked: {count(engine.report.get('acked'))}"
            f" of {count(engine.report.get('sent'))} sent"
        )
    return outcomes


def connect(bench: Bench, settings: Settings) -> list[Outcome]:
    """``connect``: an idle fleet held by one process: connect rate and memory per device.

    Each contender first holds one device for a few seconds: its VmRSS then is the reference
    the memory per device is counted from.
    """
    devices = settings.devices or DEVICES["connect"]
    print(f"\n== connect: {devices:,} idle devices (one message an hour each), {CONNECT_IDLE_S:g}s idle ==")
    outcomes = []
    for name in settings.only:
        print(f"- {name}, holding one device (the memory reference) ...", flush=True)
        reference = bench.run(name, Load(1, REFERENCE_S, 0, 3600.0, settings.connect_timeout))
        if reference.skipped is not None:
            print("\n".join(describe(reference)), flush=True)
            outcomes.append(reference)
            continue
        print(f"  VmRSS {reference.rss_up_kib / 1024:.1f} MiB", flush=True)
        print(f"- {name} ...", flush=True)
        outcome = bench.run(name, Load(devices, CONNECT_IDLE_S, 0, 3600.0, settings.connect_timeout))
        outcome.rss_one_kib = reference.rss_up_kib
        print("\n".join(describe(outcome)), flush=True)
        outcomes.append(outcome)
    print("\nconnect summary (devices/s: as the broker saw them, to its 2 s ticks; and as counted")
    print("by the contender itself, from its start; memory: VmRSS beyond that with one device):")
    print(
        f"  {'contender':<10} {'devices up':>10} {'devices/s':>14} {'its own':>8} {'KiB/device':>11}"
        f" {'VmRSS 1 -> all':>18}"
    )
    for outcome in outcomes:
        if outcome.skipped is not None:
            print(f"  {outcome.name:<10} {'skipped':>10}")
            continue
        per_device = outcome.kib_per_device()
        memory = f"{(outcome.rss_one_kib or 0) / 1024:.0f} -> {outcome.rss_up_kib / 1024:.0f} MiB"
        print(
            f"  {outcome.name:<10} {outcome.devices_up:>10,} {outcome.connect_rates():>14}"
            f" {outcome.own_connect_rate():>8} {'-' if per_device is None else f'{per_device:.1f}':>11}"
            f" {memory:>18}"
        )
    return outcomes


def engine_connects(outcome: Outcome) -> tuple[int, float] | None:
    """The engine's own count of its connect phase: devices connected, and the run time of the
    last one's CONNACK (``events.jsonl`` holds every connection, stamped from the run's start)."""
    events = (outcome.out_dir or Path()) / "events.jsonl"
    if not events.exists():
        return None
    connects, last = 0, 0.0
    with events.open() as lines:
        for line in lines:
            if '"event":"connected"' in line:
                connects += 1
                last = max(last, json.loads(line)["t"])
    return connects, last


def engine_messages_per_instant() -> int:
    """Messages each engine device publishes at once: one per attribute of its behaviour."""
    try:
        from stress.behaviours import load  # noqa: PLC0415 - only this scenario needs the engine

        return len(load(ENGINE_BEHAVIOUR).attributes)
    except Exception:  # an engine that does not import is reported when it runs
        return 1


def lateness(bench: Bench, settings: Settings, engine_rate: float | None) -> None:
    """``lateness``: the engine, steady, at half its ``qos0`` rate: how late its messages left."""
    rate = settings.rate or (engine_rate / 2 if engine_rate else None)
    if rate is None:
        print("\n== lateness: skipped, it needs the engine's qos0 rate (run qos0 with it, or give --rate) ==")
        return
    devices = settings.devices or DEVICES["lateness"]
    interval = devices * engine_messages_per_instant() / rate
    print(
        f"\n== lateness: the engine at {rate:,.0f} msg/s ({devices:,} devices every {interval:.4g}s,"
        f" {engine_messages_per_instant()} messages each), QoS 0, steady =="
    )
    cpus = sorted(os.sched_getaffinity(0))
    placements: list[tuple[str, tuple[int, ...]]] = [("shared", ())]
    if len(cpus) >= 2:
        placements.append(("apart", (cpus[-1],)))
    for placement, engine_cpus in placements:
        load = Load(devices, settings.duration, 0, interval, settings.connect_timeout, engine_cpus)
        print(
            f"- {placement}: "
            + (
                f"the broker on CPU {','.join(map(str, cpus[:-1]))}, the engine on CPU {engine_cpus[0]}"
                if engine_cpus
                else "the broker and the engine wherever the scheduler puts them"
            )
        )
        with pinned(bench.broker.pid, cpus[:-1] if engine_cpus else cpus):
            outcome = run_all(bench, ["engine"], load)[0]
        if outcome.skipped is not None:
            continue
        late = (outcome.report.get("latency_ms") or {}).get("lateness") or {}
        print(
            f"  lateness ({placement}, ms): p50 {late.get('p50')}, p99 {late.get('p99')},"
            f" max {late.get('max')} over {count(late.get('count'))} messages;"
            f" offered {count(outcome.report.get('offered_per_s'))}/s, broker counted {count(outcome.rate)}/s"
        )


@contextlib.contextmanager
def pinned(pid: int, cpus: list[int]) -> Iterator[None]:
    """Process ``pid`` on ``cpus`` while inside (then back where it was)."""
    before = os.sched_getaffinity(pid)
    os.sched_setaffinity(pid, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(pid, before)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="all", help=f"all, or some of {','.join(SCENARIOS)}")
    parser.add_argument("--only", default=",".join(CONTENDERS), help=f"some of {','.join(CONTENDERS)}")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of publishing per contender (20)"
    )
    parser.add_argument("--devices", type=int, help="devices per contender instead of each scenario's own")
    parser.add_argument(
        "--connect-timeout", type=float, default=60.0, help="seconds a fleet is given to connect (60)"
    )
    parser.add_argument(
        "--rate", type=float, help="lateness: the engine's rate (default: half its qos0 rate)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the contenders' output and run folders")
    args = parser.parse_args(argv)
    scenarios = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    only = tuple(name for name in CONTENDERS if name in args.only.split(","))
    unknown = (set(scenarios) - set(SCENARIOS)) | (set(args.only.split(",")) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown scenario or contender: {', '.join(sorted(unknown))}")
    shortest = SKIP_HEAD_S + SKIP_TAIL_S + 2 * SYS_PERIOD_S  # a window holding two $SYS ticks
    if args.duration < shortest or (args.devices is not None and args.devices < 1):
        parser.error(f"--duration must be at least {shortest:g}s, --devices at least 1")
    return Settings(scenarios, only, args.duration, args.devices, args.connect_timeout, args.rate, args.keep)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_scenarios(bench: Bench, settings: Settings) -> None:
    """Each scenario asked for, in order; ``lateness`` uses the engine's ``qos0`` rate."""
    engine_rate = None
    for scenario in settings.scenarios:
        if scenario == "lateness":
            lateness(bench, settings, engine_rate)
        elif scenario == "connect":
            connect(bench, settings)
        else:
            outcomes = throughput(bench, settings, scenario)
            if scenario == "qos0":
                engine_rate = next((o.rate for o in outcomes if o.name == "engine"), None)


def main(argv: list[str] | None = None) -> int:
    """Start a broker, run the scenarios, print the figures."""
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with PlainBroker() as broker:
            counters = BrokerCounters(broker.port)
            bench = Bench(broker, counters, workdir)
            print(
                f"machine: {os.cpu_count()} cores, {soft:,} open files per process; {broker.version()}"
                f" on port {broker.port}; contenders: {', '.join(settings.only)}"
            )
            try:
                run_scenarios(bench, settings)
            finally:
                bench.stop_current()
                counters.close()
                problems = [line for line in broker.log_tail(5000).splitlines() if "rror" in line]
                if problems:
                    print("broker log, errors (last 10):\n" + "\n".join(problems[-10:]))
    except KeyboardInterrupt:
        print("interrupted: the contender running and the broker are stopped")
        return 130
    except RuntimeError as exc:  # the broker would not start
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    finally:
        if settings.keep:
            print(f"kept the contenders' output in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
