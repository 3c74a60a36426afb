"""``run(scenario) -> Summary``: a whole run, from the first connection to the summary on disk.

This is the library entry point; the CLI only builds a :class:`~stress.scenario.Scenario`
and calls it. The run folder is written as the run goes, and the summary is written however
the run ends: at the end of its timeline, on Ctrl-C or SIGTERM (the fleet drains and
disconnects first; a second signal skips the drain), when no device could connect
(:mod:`stress.startup`), or on an unexpected error. An end-to-end observer the broker refused
is said on the console once a device has connected (before, a run that cannot start says it
all) and recorded in the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from stress.cluster import Cluster, ClusterFleet, measure_clocks, saturation_notes, ship_behaviour
from stress.cluster import connect as connected
from stress.control import Controls, ControlServer, RunControl, Watchers, control_dir
from stress.diagnosis import observer_refused
from stress.engine import Engine, new_loop
from stress.measure.meter import Event, EventSink, Meter, Second
from stress.measure.prometheus import RunMetrics, serving
from stress.processes import Fleet
from stress.processes import split as split_fleet
from stress.results import summary as summaries
from stress.results.console import Console
from stress.results.model import Observer
from stress.results.runfolder import RunFolder, new_run_id
from stress.results.summary import RunFacts, Summary
from stress.results.timeline import Timeline
from stress.scenario import Scenario
from stress.startup import StartWatch
from stress.targets.base import Target
from stress.targets.registry import build


def run(
    scenario: Scenario,
    *,
    console: TextIO | None = None,
    quiet: bool = False,
    on_second: Callable[[Second], None] | None = None,
    metrics_at: tuple[str, int] | None = None,
) -> Summary:
    """Run ``scenario``; returns the summary (also in the run folder).

    The fleet runs in this process, or split over ``scenario.processes`` worker processes
    whose seconds this one merges (see :mod:`stress.processes`).

    ``console`` (default stderr) shows live progress unless ``quiet``. With ``metrics_at``
    (host, port), ``/metrics`` there gives the run's figures to Prometheus while it runs.
    """
    target = build(scenario)  # its settings are checked before anything is created
    with contextlib.ExitStack() as stack:
        cluster = None
        if scenario.cluster is not None:
            cluster = stack.enter_context(connected(scenario.cluster))
            measure_clocks(cluster)
            ship_behaviour(cluster, scenario.behaviour)
        return _run(
            scenario,
            target,
            cluster,
            console=console,
            quiet=quiet,
            on_second=on_second,
            metrics_at=metrics_at,
        )


def _run(
    scenario: Scenario,
    target: Target,
    cluster: Cluster | None,
    *,
    console: TextIO | None,
    quiet: bool,
    on_second: Callable[[Second], None] | None,
    metrics_at: tuple[str, int] | None,
) -> Summary:
    run_id = new_run_id(scenario.target, scenario.devices)
    folder = RunFolder.create(scenario.out, run_id if scenario.out is None else scenario.out.name)
    view = (
        None if quiet else Console(scenario.duration, scenario.devices, scenario.qos, console or sys.stderr)
    )
    facts = RunFacts(run_id=folder.path.name, started_at=time.time(), ended_at=0.0, run_seconds=0.0)
    seconds: list[Second] = []
    metrics = RunMetrics(facts.run_id, scenario.target, scenario.devices)
    watchers = Watchers()
    start = StartWatch(scenario, target)
    refusals = Refusals(scenario)

    def on_event(event: Event) -> None:
        folder.event(event)
        watchers.event(event)
        start.event(event)
        refusals.event(event)
        timeline.event(event)

    timeline = facts.timeline = _followed(scenario, on_event, watchers)

    def closed(second: Second) -> None:
        timeline.second(second)  # first: every view of the second shows what was in force
        seconds.append(second)
        start.second(second)
        metrics.second(second)
        watchers.second(second)
        folder.second(second)
        if view is not None:
            view.second(second)
            if start.joined:  # (until then, a run that cannot start may have the one thing to say)
                refusals.tell(view)
        if on_second is not None:
            on_second(second)

    facts.processes = len(split_fleet(scenario.devices, scenario.processes))
    try:
        with contextlib.ExitStack() as stack, asyncio.Runner(loop_factory=new_loop) as runner:
            stack.enter_context(_pinned(scenario.cpus))
            whole = _whole(facts, cluster)
            served = (metrics, *metrics_at) if metrics_at is not None else None
            outputs = Outputs(closed, on_event, folder, watchers, served, start, view.say if view else None)
            runner.run(whole(scenario, target, facts, outputs))
    except BaseException as exc:
        facts.stopped = (
            facts.stopped if facts.stopped != "completed" else f"error: {type(exc).__name__}: {exc}"
        )
        raise
    finally:
        if view is not None:
            view.end()
        facts.ended_at = time.time()
        facts.run_seconds = sum(second.wall_s for second in seconds if second.phase == "run")
        facts.cannot_start = start.verdict()
        facts.observer = refusals.summary() or facts.observer
        summary = summaries.build(scenario, seconds, facts)
        folder.finish(summary.to_json())
    return Summary(summary, folder.path)


def _followed(scenario: Scenario, on_event: EventSink, watchers: Watchers) -> Timeline:
    """The run's timeline, its ``stage`` events in the run's event path and its changes passed
    on to the watchers."""
    timeline = Timeline(scenario, on_event)
    for change in timeline.changes:
        watchers.change(change)
    timeline.on_change = watchers.change
    return timeline


#: How a run's fleet runs: in this process, over local processes or over a cluster.
Whole = Callable[[Scenario, Target, RunFacts, "Outputs"], Coroutine[Any, Any, None]]


def _whole(facts: RunFacts, cluster: Cluster | None) -> Whole:
    if cluster is not None:
        facts.processes = len(cluster.members)
        return _clustered(cluster)
    return _here if facts.processes == 1 else _split


async def _here(scenario: Scenario, target: Target, facts: RunFacts, outputs: Outputs) -> None:
    """The whole fleet in this process."""
    loop = asyncio.get_running_loop()
    meter = Meter(loop.time(), wall_start=facts.started_at)
    meter.sinks.append(outputs.on_event)
    engine = Engine(scenario, target, on_second=outputs.closed, meter=meter)
    outputs.start.stop = engine.stop
    with _signals(loop, engine.stop):
        try:
            async with _controlled(scenario, facts, outputs, engine, meter.start):
                await engine.run()
        finally:
            facts.stopped = engine.stopped or facts.stopped
            observer = engine.observer
            _note_observer(
                facts, scenario, target, observer is not None, observer.unreadable if observer else 0
            )


async def _split(scenario: Scenario, target: Target, facts: RunFacts, outputs: Outputs) -> None:
    """The fleet over worker processes; this one merges their seconds."""
    loop = asyncio.get_running_loop()
    fleet = Fleet(
        scenario,
        start=loop.time(),
        wall_start=facts.started_at,
        on_second=outputs.closed,
        on_event=outputs.on_event,
    )
    await _merged(fleet, scenario, target, facts, outputs)


def _clustered(cluster: Cluster) -> Whole:
    """The fleet over the workers of a Dask cluster; this process merges their seconds."""

    async def whole(scenario: Scenario, target: Target, facts: RunFacts, outputs: Outputs) -> None:
        loop = asyncio.get_running_loop()
        fleet = ClusterFleet(
            cluster,
            facts.run_id,
            scenario=scenario,
            start=loop.time(),
            wall_start=facts.started_at,
            on_second=outputs.closed,
            on_event=outputs.on_event,
        )
        served = outputs.served

        def worker_second(worker: str, second: Second) -> None:
            outputs.folder.worker_second(worker, second)
            outputs.watchers.worker_second(worker, second)
            if served is not None:
                served[0].worker_second(worker, second)

        fleet.on_worker_second = worker_second
        fleet.say = outputs.say
        try:
            await _merged(fleet, scenario, target, facts, outputs)
        finally:
            facts.cluster = cluster.describe(fleet.lost_addresses, fleet.seconds)
            facts.notes.extend(saturation_notes(facts.cluster))

    return whole


async def _merged(
    fleet: Fleet, scenario: Scenario, target: Target, facts: RunFacts, outputs: Outputs
) -> None:
    """Run a split fleet (processes or cluster workers) to its end, with control and signals."""
    loop = asyncio.get_running_loop()
    fleet.launch()
    outputs.start.stop = fleet.stop
    with _signals(loop, fleet.stop):
        try:
            async with _controlled(scenario, facts, outputs, fleet, fleet.start):
                await fleet.run()
        finally:
            ending = fleet.ending()
            facts.stopped = ending.stopped or facts.stopped
            facts.notes.extend(fleet.failures)
            _note_observer(facts, scenario, target, ending.observed, ending.unreadable)


#: Figures served to Prometheus, and where.
Served = tuple[RunMetrics, str, int]


@dataclass
class Outputs:
    """Where a run's seconds and events go."""

    closed: Callable[[Second], None]
    on_event: EventSink
    folder: RunFolder
    watchers: Watchers
    served: Served | None
    #: Ends the run when no device could connect.
    start: StartWatch
    #: Says one line on the console at once (None when quiet).
    say: Callable[[str], None] | None = None


@contextlib.asynccontextmanager
async def _controlled(
    scenario: Scenario, facts: RunFacts, outputs: Outputs, controls: Controls, start: float
) -> AsyncIterator[None]:
    """The run's control socket (``stress stop``, ``pause``, a dashboard's ``watch`` ...) and its
    ``/metrics`` while inside. A run that cannot open them still runs, and its summary says why.

    Each request carried out goes into the run's events, stamped with the seconds since
    ``start`` (the run's start on this loop's clock)."""
    served = outputs.served
    loop = asyncio.get_running_loop()
    control = RunControl(
        scenario, facts.run_id, controls, record=outputs.on_event, clock=lambda: loop.time() - start
    )
    server = ControlServer(control, outputs.folder.path, outputs.watchers)
    try:
        await server.start()
    except OSError as exc:
        facts.notes.append(f"no control socket in {control_dir()}: {exc.strerror or exc}")
    async with contextlib.AsyncExitStack() as stack:
        if served is not None:
            metrics, host, port = served
            try:
                await stack.enter_async_context(serving(metrics, host, port))
            except OSError as exc:
                facts.notes.append(f"no /metrics on {host}:{port}: {exc.strerror or exc}")
        try:
            yield
        finally:
            await server.close()


@contextlib.contextmanager
def _pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """This process (and the workers it starts) on ``cpus`` while inside; none: unchanged."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, stop: Callable[[str], None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the run (a second one skips the drain) while inside."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, f"signal {signal.Signals(signum).name}")
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _note_observer(
    facts: RunFacts, scenario: Scenario, target: Target, observed: bool, unreadable: int
) -> None:
    facts.observer = Observer(state="measured" if observed else "off")
    if unreadable:
        facts.notes.append(f"{unreadable} messages the observer received had no readable send time")
    if not observed and scenario.e2e_devices:
        facts.notes.append(f"end-to-end latency not measured: {target.no_e2e_reason()}")


@dataclass
class Refusals:
    """The end-to-end observer's refusals (an ``observer-refused`` event from each process whose
    observer the broker refused), said once on the console and recorded in the summary."""

    scenario: Scenario
    events: list[Event] = field(default_factory=list)
    told: bool = False

    def event(self, event: Event) -> None:
        """An event of the run: kept if it is a refusal."""
        if event.get("event") == "observer-refused":
            self.events.append(event)

    def tell(self, view: Console) -> None:
        """Say the refusal on the console, once."""
        summary = None if self.told else self.summary()
        if summary is not None:
            self.told = True
            view.say(f"stress: error: {summary.message}")

    def summary(self) -> Observer | None:
        """The summary's ``observer`` when the broker refused it, else None. The first refusal
        speaks for all: every process's observer logs in with the same account."""
        if not self.events:
            return None
        first = self.events[0]
        reason, detail, username = str(first["reason"]), str(first["detail"]), str(first["account"])
        return Observer(
            state="refused",
            reason=reason,
            detail=detail,
            account=username,
            message=observer_refused(self.scenario, reason, detail, username or None),
        )
