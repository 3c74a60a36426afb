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

from stress.measure.histogram import Histogram
from stress.measure.meter import Second
from stress.measure.saturation import SATURATED_SHARE, saturated_by
from stress.results.model import (
    CannotStart,
    ClusterSummary,
    Collapse,
    Generator,
    Latencies,
    Latency,
    Observer,
    RunSummary,
    StageSummary,
)
from stress.results.timeline import Timeline
from stress.scenario import Scenario

#: Collapse needs at least this many offered messages in the second (noise below).
COLLAPSE_MIN_OFFERED = 10


@dataclass(frozen=True)
class Summary:
    """The results of a run (:class:`RunSummary`), and its ``summary.json`` document by key."""

    model: RunSummary
    folder: Path | None = None
    data: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", self.model.to_json())

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def sent(self) -> int:
        """PUBLISH packets written to the socket ("written" wherever the figures are shown)."""
        return self.model.sent or 0

    @property
    def acked(self) -> int | None:
        """PUBACKs received (None at QoS 0)."""
        return self.model.acked

    @property
    def failed(self) -> int:
        """Messages that failed at any stage."""
        return self.model.failed or 0


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


def collapse(seconds: Sequence[Second], share: float, qos: int = 0) -> Collapse | None:
    """The first publishing second in which what reached the broker, or the connections, fell
    below ``share``.

    What reached the broker is what it acknowledged at QoS 1, and what was written to the
    socket at QoS 0. The first publishing second is skipped: it starts part-way and its
    acknowledgements trail.
    """
    running = [second for second in seconds if second.phase == "run"]
    for second in running[1:]:
        confirmed = second.confirmed(qos)
        if second.offered >= COLLAPSE_MIN_OFFERED and confirmed < share * second.offered:
            rate = confirmed / second.offered
            verb = "acknowledged" if qos else "written"
            return Collapse(
                t=second.t,
                reason=f"{verb} {rate:.0%} of offered ({confirmed} of {second.offered}; below {share:.0%})",
            )
        if second.fleet and second.connected < share * second.fleet:
            return Collapse(
                t=second.t,
                reason=f"{second.connected} of {second.fleet} devices connected (below {share:.0%})",
            )
    return None


def _latency(histogram: Histogram) -> Latency:
    return Latency(
        p50=histogram.percentile(0.50),
        p95=histogram.percentile(0.95),
        p99=histogram.percentile(0.99),
        max=histogram.max_us / 1000 if histogram.count else None,
        count=histogram.count,
    )


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
    cannot_start: CannotStart | None = None
    observer: Observer = field(default_factory=Observer)
    #: ``--cluster``: the scheduler, each worker and those lost; None for a run on this machine.
    cluster: ClusterSummary | None = None
    #: Every change of what was in force, and what was in force at the end (None: nothing
    #: followed it, and the scenario's last stage is taken as what was in force).
    timeline: Timeline | None = None


def saturated(second: Second) -> bool:
    """Whether the generator was saturated in this second: its busiest process used most of a
    core, or its event loop lagged."""
    cpu_share = second.cpu_busiest_s / second.wall_s if second.wall_s else 0.0
    return saturated_by(cpu_share, second.lag.max_us / 1e6)


def build(scenario: Scenario, seconds: Sequence[Second], facts: RunFacts) -> RunSummary:
    """The run's summary, from its seconds and the facts they do not hold."""
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
    timeline = facts.timeline
    last = scenario.stages[-1]
    devices, interval = (last.devices, last.interval) if timeline is None else timeline.in_force
    return RunSummary(
        run_id=facts.run_id,
        target=scenario.target,
        host=broker.host,
        port=broker.port,
        protocol=broker.protocol,
        tls=broker.tls,
        qos=scenario.qos,
        shape=scenario.shape,
        interval_s=interval,
        stages=tuple(
            StageSummary(devices=s.devices, interval_s=s.interval, duration_s=s.duration, burst=s.burst)
            for s in scenario.stages
        ),
        devices=devices,
        processes=facts.processes,
        behaviour=scenario.behaviour,
        started_at=_iso(facts.started_at),
        ended_at=_iso(facts.ended_at),
        duration_s=round(facts.run_seconds, 3),
        stopped=facts.stopped,
        cannot_start=facts.cannot_start,
        offered=total.offered,
        sent=total.sent,
        acked=total.acked if scenario.qos else None,
        failed=total.failed,
        # Not measured is not "none observed"
        observed=None if facts.observer.state == "refused" else total.delivered,
        sampled=total.e2e_expected,
        msgs_per_s=round(confirmed / run_time, 1),
        offered_per_s=round(total.offered / run_time, 1),
        latency_ms=Latencies(
            connect=_latency(total.connect),
            ack=_latency(total.ack),
            e2e=_latency(total.e2e),
            lateness=_latency(total.lateness),
        ),
        connections_peak=max((max(second.connected, second.connected_peak) for second in seconds), default=0),
        errors_by_reason=errors_by_reason,
        errors_by_stage=errors_by_stage,
        generator=Generator(
            loop_lag_p99_ms=lag.percentile(0.99),
            loop_lag_max_ms=lag.max_us / 1000 if lag.count else None,
            cpu_percent=round(100 * cpu_s / wall_s, 1),
            busiest_process_cpu_percent=round(100 * busiest_s / wall_s, 1),
            overruns=total.overruns,
            cpus=tuple(scenario.cpus) or None,
            saturated=bool(running) and saturated_seconds >= SATURATED_SHARE * len(running),
        ),
        collapse=collapse(seconds, scenario.collapse_share, scenario.qos),
        observer=facts.observer,
        cluster=facts.cluster,
        timeline=() if timeline is None else tuple(timeline.changes),
        notes=(*facts.notes, *(() if timeline is None else timeline.notes())),
    )
