"""What every baseline simulator takes and prints, so ``bench/fleet.py`` can run any of them.

Each simulator is a script run in its own process::

    python bench/baselines/<name>.py --host 127.0.0.1 --port 1883 --devices 1000 --duration 20 --qos 1

It connects every device first (all at once, as the library allows), then publishes for
``--duration`` seconds: flat out with ``--interval 0`` (the default), or one message per device
every ``--interval`` seconds (``--interval 3600`` holds an idle fleet). Each device publishes
``21.37`` on ``bench/<device>/temperature``. Lines starting with ``cap:`` say the simulator ran
fewer devices than asked, and why; the last line is a JSON object (:class:`Report`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Messages a device may have written ahead of their confirmation (paho's default in-flight window).
WINDOW = 20
PAYLOAD = b"21.37"
#: Seconds given after the publishing phase to what is in flight, then devices disconnect.
DRAIN_S = 2.0


@dataclass(frozen=True)
class Options:
    """The command line of a baseline."""

    host: str
    port: int
    devices: int
    duration: float
    qos: int
    interval: float
    connect_timeout: float

    @staticmethod
    def parse(description: str, argv: list[str] | None = None) -> Options:
        """Parse the common flags."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=1883)
        parser.add_argument("--devices", type=int, default=1000)
        parser.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
        parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=0)
        parser.add_argument(
            "--interval", type=float, default=0.0, help="seconds between a device's messages (0: flat out)"
        )
        parser.add_argument(
            "--connect-timeout", type=float, default=60.0, help="seconds for the whole fleet to connect"
        )
        args = parser.parse_args(argv)
        if args.devices < 1 or args.duration <= 0 or args.interval < 0:
            parser.error("--devices and --duration must be positive, --interval not negative")
        return Options(
            args.host, args.port, args.devices, args.duration, args.qos, args.interval, args.connect_timeout
        )

    def device(self, index: int) -> str:
        """The name of device ``index``."""
        return f"d{index + 1:05d}"

    def topic(self, index: int) -> str:
        """The topic device ``index`` publishes on."""
        return f"bench/{self.device(index)}/temperature"

    def first_due(self) -> float:
        """Seconds from the start of publishing to a device's first message (spread over an interval)."""
        return random.uniform(0, self.interval) if self.interval else 0.0


def cap_devices(requested: int, files_per_device: int, reason: str, highest: int | None = None) -> int:
    """How many devices fit below ``highest`` file descriptors (default: the open-file limit).

    Prints a ``cap:`` line when that is fewer than ``requested``.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if highest is None else min(highest, soft)
    in_use = sum(1 for _ in Path("/proc/self/fd").iterdir()) + 16  # and a few for the libraries
    fit = max(0, (limit - in_use) // files_per_device)
    if requested <= fit:
        return requested
    print(f"cap: {fit} devices of {requested} ({reason})", flush=True)
    return fit


@dataclass
class Report:
    """What a baseline thinks it did; printed as the last line of its output."""

    library: str
    qos: int
    requested: int
    devices: int
    connected: int = 0
    connect_failures: int = 0
    connect_s: float = 0.0
    publish_s: float = 0.0
    #: Publishes the library accepted.
    sent: int = 0
    #: Of those, written to the socket (QoS 0) or acknowledged by the broker (QoS 1: PUBACK, QoS 2:
    #: PUBCOMP).
    confirmed: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def emit(self) -> None:
        """Print the report as one JSON line."""
        record = asdict(self)
        record["errors"] = dict(self.errors)  # asdict would turn the Counter into one of pairs
        record["acked"] = self.confirmed if self.qos else None
        record["sent_per_s"] = round(self.sent / self.publish_s, 1) if self.publish_s else 0.0
        print(json.dumps(record), flush=True)


def reason_of(exc: BaseException) -> str:
    """A short, stable name for an error, for counting."""
    return type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {str(exc)[:60]}"


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


class TaskFleet:
    """A fleet with a task per device: shared counts, and the run (connect all, go, publish, stop).

    A subclass writes ``device``: connect, ``settle``, wait for ``go``, publish until ``deadline``,
    and add to ``sent`` and ``confirmed``.
    """

    #: Seconds a device may still need after the deadline (a reply it waits for, its drain).
    grace = 10.0

    def __init__(self, options: Options, devices: int) -> None:
        self.options = options
        self.devices = devices
        self.connected = 0
        self.failed = 0
        self.all_settled = asyncio.Event()
        self.go = asyncio.Event()
        self.deadline = 0.0
        self.sent = 0
        self.confirmed = 0
        self.errors: Counter[str] = Counter()

    def settle(self, *, ok: bool) -> None:
        """One device is connected (``ok``) or gave up."""
        if ok:
            self.connected += 1
        else:
            self.failed += 1
        if self.connected + self.failed >= self.devices:
            self.all_settled.set()

    async def device(self, index: int) -> None:
        """One device's whole life."""
        raise NotImplementedError

    async def run(self, report: Report) -> Report:
        """Connect the fleet, publish for the duration, fill in ``report``."""
        options, devices = self.options, self.devices
        loop = asyncio.get_running_loop()
        began = loop.time()
        tasks = [asyncio.create_task(self.device(index)) for index in range(devices)]
        try:
            await asyncio.wait_for(self.all_settled.wait(), options.connect_timeout)
        except TimeoutError:
            log(f"connect timeout: {self.connected} connected, {self.failed} failed of {devices}")
        report.connect_s = round(loop.time() - began, 3)
        report.connected = self.connected
        report.connect_failures = devices - self.connected
        log(f"{self.connected} devices connected in {report.connect_s:.1f}s; publishing")
        self.deadline = loop.time() + options.duration
        self.go.set()
        _done, late = await asyncio.wait(tasks, timeout=options.duration + self.grace)
        for task in late:
            task.cancel()
        report.publish_s = options.duration
        report.sent, report.confirmed, report.errors = self.sent, self.confirmed, self.errors
        if late:
            report.errors["still busy at the end"] += len(late)
        return report


def run_loop(main: Coroutine[object, object, Report]) -> Report:
    """Run ``main`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
