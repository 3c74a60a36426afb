"""A run's results from its seconds: totals, percentiles, errors, health and collapse.

Everything here is computed from merged :class:`~stress.measure.meter.Second` records, so one
process or many give the same figures for the same events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress.measure.meter import Second
from stress.measure.saturation import SATURATED_SHARE, saturated_by
from stress.scenario import Scenario

#: Collapse needs at least this many offered messages in the second (noise below).
COLLAPSE_MIN_OFFERED = 10


@dataclass(frozen=True)
class Summary:
    """The results of a run, as written to ``summary.json``."""

    data: dict[str, Any]
    folder: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def sent(self) -> int:
        """PUBLISH packets written to the socket."""
        return int(self.data["sent"])

    @property
    def acked(self) -> int | None:
        """PUBACKs received (None at QoS 0)."""
        acked = self.data["acked"]
        return None if acked is None else int(acked)

    @property
    def failed(self) -> int:
        """Messages that failed at any stage."""
        return int(self.data["failed"])


def merge_by_second(parts: Sequence[Sequence[Second]]) -> list[Second]:
    """Merge several processes' seconds, second by second (exact: counters and histograms add)."""
    merged: dict[int, Second] = {}
    for seconds in parts:
        for second in seconds:
            into = merged.get(second.t)
            if into is None:
                merged[second.t] = into = Second(second.t, phase=second.phase)
            elif second.phase != into.phase and into.phase == "connect":
                into.phase = second.phase
            into.merge(second)
    return [merged[t] for t in sorted(merged)]


def collapse(seconds: Sequence[Second], share: float, qos: int = 0) -> dict[str, Any] | None:
    """The first publishing second in which delivery or connections fell below ``share``.

    Delivered means acknowledged at QoS 1 and written to the socket at QoS 0. The first
    publishing second is skipped: it starts part-way and its acknowledgements trail.
    """
    running = [second for second in seconds if second.phase == "run"]
    for second in running[1:]:
        confirmed = second.confirmed(qos)
        if second.offered >= COLLAPSE_MIN_OFFERED and confirmed < share * second.offered:
            rate = confirmed / second.offered
            return {
                "t": second.t,
                "reason": f"delivered {rate:.0%} of offered ({confirmed} of {second.offered}; "
                f"below {share:.0%})",
            }
        if second.fleet and second.connected < share * second.fleet:
            return {
                "t": second.t,
                "reason": f"{second.connected} of {second.fleet} devices connected (below {share:.0%})",
            }
    return None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


@dataclass
class RunFacts:
    """What the seconds do not say: identity, timing and how the run ended."""

    run_id: str
    started_at: float
    ended_at: float
    run_seconds: float
    stopped: str = "completed"
    processes: int = 1
    notes: list[str] = field(default_factory=list)
    #: Why no device could connect (``stress.startup``), or None when one did.
    cannot_start: dict[str, Any] | None = None
    #: The end-to-end observer: ``state`` ``measured``, ``off`` (none asked, or the target has
    #: none), or ``refused`` (with ``reason``, ``detail``, ``account`` and the one-line ``message``).
    observer: dict[str, Any] = field(default_factory=lambda: {"state": "off"})
    #: ``--cluster``: the scheduler, each worker (address, host, devices, clock offset) and the
    #: workers lost during the run; None for a run on this machine.
    cluster: dict[str, Any] | None = None


def saturated(second: Second) -> bool:
    """Whether the generator was saturated in this second: its busiest process used most of a
    core, or its event loop lagged."""
    cpu_share = second.cpu_busiest_s / second.wall_s if second.wall_s else 0.0
    return saturated_by(cpu_share, second.lag.max_us / 1e6)


def build(scenario: Scenario, seconds: Sequence[Second], facts: RunFacts) -> dict[str, Any]:
    """The ``summary.json`` document."""
    total = Second(-1)
    for second in seconds:
        total.merge(second)
    running = [second for second in seconds if second.phase == "run"]
    run_time = max(facts.run_seconds, 1e-9)
    confirmed = total.acked if scenario.qos else total.sent
    errors_by_stage: dict[str, dict[str, int]] = {}
    errors_by_reason: dict[str, int] = {}
    for (stage, reason), count in sorted(total.errors.items(), key=lambda item: -item[1]):
        errors_by_stage.setdefault(stage, {})[reason] = count
        errors_by_reason[reason] = errors_by_reason.get(reason, 0) + count
    saturated_seconds = sum(1 for second in running if saturated(second))
    cpu_s = sum(second.cpu_s for second in running)
    busiest_s = sum(second.cpu_busiest_s for second in running)
    wall_s = sum(second.wall_s for second in running) or 1e-9
    lag = total.lag
    broker = scenario.broker
    return {
        "run_id": facts.run_id,
        "target": scenario.target,
        "host": broker.host,
        "port": broker.port,
        "protocol": broker.protocol,
        "tls": broker.tls,
        "qos": scenario.qos,
        "shape": scenario.shape,
        "interval_s": scenario.interval,
        "stages": [
            {"devices": s.devices, "interval_s": s.interval, "duration_s": s.duration, "burst": s.burst}
            for s in scenario.stages
        ],
        "devices": scenario.devices,
        "processes": facts.processes,
        "behaviour": scenario.behaviour,
        "started_at": _iso(facts.started_at),
        "ended_at": _iso(facts.ended_at),
        "duration_s": round(facts.run_seconds, 3),
        "stopped": facts.stopped,
        "cannot_start": facts.cannot_start,
        "offered": total.offered,
        "sent": total.sent,
        "acked": total.acked if scenario.qos else None,
        "failed": total.failed,
        # Not measured is not "none delivered"
        "delivered": None if facts.observer.get("state") == "refused" else total.delivered,
        "e2e_expected": total.e2e_expected,
        "msgs_per_s": round(confirmed / run_time, 1),
        "offered_per_s": round(total.offered / run_time, 1),
        "latency_ms": {
            "connect": total.connect.summary(),
            "ack": total.ack.summary(),
            "e2e": total.e2e.summary(),
            "lateness": total.lateness.summary(),
        },
        "connections_peak": max(
            (max(second.connected, second.connected_peak) for second in seconds), default=0
        ),
        "errors_by_reason": errors_by_reason,
        "errors_by_stage": errors_by_stage,
        "generator": {
            "loop_lag_p99_ms": lag.percentile(0.99),
            "loop_lag_max_ms": lag.max_us / 1000 if lag.count else None,
            "cpu_percent": round(100 * cpu_s / wall_s, 1),
            "busiest_process_cpu_percent": round(100 * busiest_s / wall_s, 1),
            "overruns": total.overruns,
            "cpus": list(scenario.cpus) or None,
            "saturated": bool(running) and saturated_seconds >= SATURATED_SHARE * len(running),
        },
        "collapse": collapse(seconds, scenario.collapse_share, scenario.qos),
        "observer": facts.observer,
        "cluster": facts.cluster,
        "notes": facts.notes,
    }
