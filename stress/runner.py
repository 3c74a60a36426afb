"""``run(scenario) -> Summary``: a whole run, from the first connection to the summary on disk.

This is the library entry point; the CLI only builds a :class:`~stress.scenario.Scenario`
and calls it. The run folder is written as the run goes, and the summary is written however
the run ends: at the end of its timeline, on Ctrl-C or SIGTERM (the fleet drains and
disconnects first; a second signal skips the drain), or on an unexpected error.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

from stress import summary as summaries
from stress.console import Console
from stress.engine import Engine
from stress.meter import Meter, Second
from stress.runfolder import RunFolder, new_run_id
from stress.scenario import Scenario
from stress.summary import RunFacts, Summary
from stress.targets import build


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (several times faster I/O), else asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - uvloop is in the stress extra; plain asyncio works too
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(
    scenario: Scenario,
    *,
    console: TextIO | None = None,
    quiet: bool = False,
    on_second: Callable[[Second], None] | None = None,
) -> Summary:
    """Run ``scenario`` in this process; returns the summary (also in the run folder).

    ``console`` (default stderr) shows live progress unless ``quiet``.
    """
    build(scenario)  # target settings are checked before anything is created
    run_id = new_run_id(scenario.target, scenario.devices)
    folder = RunFolder.create(scenario.out, run_id if scenario.out is None else scenario.out.name)
    view = (
        None if quiet else Console(scenario.duration, scenario.devices, scenario.qos, console or sys.stderr)
    )
    facts = RunFacts(run_id=folder.path.name, started_at=time.time(), ended_at=0.0, run_seconds=0.0)
    seconds: list[Second] = []

    def closed(second: Second) -> None:
        seconds.append(second)
        folder.second(second)
        if view is not None:
            view.second(second)
        if on_second is not None:
            on_second(second)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        meter = Meter(loop.time(), wall_start=facts.started_at)
        meter.sinks.append(folder.event)
        engine = Engine(scenario, on_second=closed, meter=meter)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, engine.stop, f"signal {signal.Signals(signum).name}")
        try:
            await engine.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if engine.stopped:
                facts.stopped = engine.stopped
            if engine.observer is not None and engine.observer.unreadable:
                facts.notes.append(
                    f"{engine.observer.unreadable} delivered messages had no readable send time"
                )
            if engine.observer is None and scenario.e2e_devices:
                facts.notes.append("end-to-end latency not measured: the payload has no {ts}")

    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(main())
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
        document = summaries.build(scenario, seconds, facts)
        folder.finish(document)
    return Summary(document, folder.path)
