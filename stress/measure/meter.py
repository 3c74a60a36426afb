"""The one path every measurement takes: counters and histograms per second, and events.

The engine reports into a :class:`Meter`; nothing else counts. Per-message facts (a publish,
an ack, a delivery) land in the current :class:`Second` as counters and histogram samples;
rarer facts (a connection, an error with its device) are also events, passed to every
subscriber (the run folder, the console, the dashboard). Once a second the meter closes the
current :class:`Second` and hands it on; seconds merge exactly, across processes too.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from stress.measure.histogram import Histogram

Event = dict[str, Any]
EventSink = Callable[[Event], None]

HISTOGRAMS = ("lateness", "ack", "e2e", "connect", "lag")
#: The slowest devices a merged second keeps.
SLOWEST_KEPT = 10
COUNTERS = (
    "offered",
    "sent",
    "acked",
    "failed",
    "delivered",
    "e2e_expected",
    "connects",
    "disconnects",
    "overruns",
)


@dataclass
class Second:
    """What happened in one second of a run (in one process, or merged over several)."""

    t: int
    phase: str = "run"
    offered: int = 0
    #: Written to the socket, and acknowledged by the broker.
    sent: int = 0
    acked: int = 0
    failed: int = 0
    #: Messages of the sampled devices seen by the end-to-end observer, of those they wrote
    #: (``observed`` and ``sampled`` in the run's files).
    delivered: int = 0
    e2e_expected: int = 0
    connects: int = 0
    disconnects: int = 0
    overruns: int = 0
    #: Devices connected at the end of the second, and the most at once within it (over
    #: several processes: the sum of each one's most, which they reach together when connecting).
    connected: int = 0
    connected_peak: int = 0
    #: Devices of the fleet that have had their first chance to connect, at the end of the second.
    fleet: int = 0
    #: The fleet size asked and the interval in force at the end of the second: the run's
    #: timeline (:mod:`stress.results.timeline`) sets them on the seconds it hands on.
    devices: int = 0
    interval: float | None = None
    #: CPU time of the run's processes in this second (summed), and of the busiest one.
    cpu_s: float = 0.0
    cpu_busiest_s: float = 0.0
    wall_s: float = 0.0
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    lateness: Histogram = field(default_factory=Histogram)
    ack: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)
    #: The slowest devices of the second, slowest first: (ms, device); ack time at QoS 1,
    #: lateness at QoS 0. Merged, the slowest of all processes.
    slowest: list[tuple[float, str]] = field(default_factory=list)

    def merge(self, other: Second) -> None:
        """Add another process's same second (or another second, for totals)."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.connected += other.connected
        self.connected_peak += other.connected_peak
        self.fleet += other.fleet
        self.cpu_s += other.cpu_s
        self.cpu_busiest_s = max(self.cpu_busiest_s, other.cpu_busiest_s)
        self.wall_s = max(self.wall_s, other.wall_s)
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
        for name in HISTOGRAMS:
            getattr(self, name).merge(getattr(other, name))
        if other.slowest:
            self.slowest = heapq.nlargest(SLOWEST_KEPT, [*self.slowest, *other.slowest])

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able form, for sending between processes."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in HISTOGRAMS:
                out[item.name] = value.to_sparse()
            elif item.name == "errors":
                out[item.name] = [[stage, reason, count] for (stage, reason), count in value.items()]
            else:
                out[item.name] = value
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Second:
        """The inverse of :meth:`to_wire`."""
        values = dict(data)
        for name in HISTOGRAMS:
            values[name] = Histogram.from_sparse(values[name])
        values["errors"] = {(stage, reason): count for stage, reason, count in values["errors"]}
        values["slowest"] = [(ms, name) for ms, name in values.get("slowest", [])]
        return cls(**values)

    def confirmed(self, qos: int) -> int:
        """Messages known to have reached the broker: acked at QoS 1, written to the socket at QoS 0."""
        return self.acked if qos else self.sent


class Meter:
    """Receives every measurement of one process; ``roll`` closes a second."""

    def __init__(self, start: float, *, wall_start: float | None = None) -> None:
        #: Monotonic time of the run's start; ``t`` of seconds and events count from here.
        self.start = start
        self.wall_start = time.time() if wall_start is None else wall_start
        self.current = Second(0, phase="connect")
        self.sinks: list[EventSink] = []
        self.connected = 0
        self.phase = "connect"
        self.fleet = 0
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    # ---------------------------------------------------------------- facts

    def emit(self, event: Event, now: float) -> None:
        """Pass an event to every subscriber, stamped with the run time."""
        event["t"] = round(now - self.start, 4)
        for sink in self.sinks:
            sink(event)

    def connected_device(self, device: str, seconds: float, now: float) -> None:
        """A device's CONNACK arrived ``seconds`` after it started connecting."""
        current = self.current
        current.connects += 1
        current.connect.record(seconds)
        self.connected += 1
        current.connected_peak = max(current.connected_peak, self.connected)
        self.emit({"event": "connected", "device": device, "ms": round(seconds * 1000, 3)}, now)

    def disconnected_device(self, device: str, reason: str, now: float) -> None:
        """A connected device lost its connection (or was stopped: ``reason`` says)."""
        self.current.disconnects += 1
        self.connected -= 1
        self.emit({"event": "disconnected", "device": device, "reason": reason}, now)

    def error(
        self,
        stage: str,
        reason: str,
        now: float,
        *,
        count: int = 1,
        device: str | None = None,
        detail: str = "",
    ) -> None:
        """Something failed. With a ``device`` it is also an event; message counts add to ``failed``."""
        errors = self.current.errors
        key = (stage, reason)
        errors[key] = errors.get(key, 0) + count
        if stage in ("publish", "ack"):
            self.current.failed += count
        if device is not None:
            self.emit(
                {
                    "event": "error",
                    "device": device,
                    "stage": stage,
                    "reason": reason,
                    "detail": detail[:300],
                },
                now,
            )

    def set_phase(self, phase: str, now: float) -> None:
        """The run moved to ``connect``, ``run``, ``drain`` or ``done``."""
        self.phase = phase
        self.emit({"event": "phase", "phase": phase}, now)

    # ---------------------------------------------------------------- seconds

    def roll(self, t: int) -> Second:
        """Close the current second (numbered ``t - 1``) and start second ``t``."""
        done = self.current
        cpu, wall = time.process_time(), time.monotonic()
        done.cpu_s, done.wall_s = cpu - self._cpu, wall - self._wall
        done.cpu_busiest_s = done.cpu_s
        self._cpu, self._wall = cpu, wall
        done.connected = self.connected
        done.fleet = self.fleet
        # A second is known by the phase it ended in (the last one of a run is "drain")
        done.phase = "drain" if self.phase == "done" else self.phase
        self.current = Second(t, phase=self.phase, connected_peak=self.connected)
        return done
