"""Faults the engine plays on its own fleet: reconnect storms, churn, and the ``--active`` list.

A storm drops every connected device at once, as a network outage does, and they all
reconnect at once. Churn drops ``--churn`` of the fleet a minute, at random, cleanly, and lets
them back after their backoff. The ``--active`` list (names and shell patterns, re-read when it
changes) says which devices take part: the others disconnect and stay away until listed again.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from stress.fleet.device import CONNECTED, Device
from stress.measure.meter import Meter
from stress.scenario import Scenario

#: Seconds between looks at the ``--active`` list.
ACTIVE_POLL_S = 0.5


def read_active(path: Path) -> list[str]:
    """The names and shell patterns of an ``--active`` list (blank lines and ``#`` comments skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def membership(patterns: list[str] | None) -> Callable[[str], bool]:
    """Whether a device name is on a list of names and patterns (everyone when there is no list)."""
    if patterns is None:
        return lambda _name: True
    return lambda name: any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class Run(Protocol):
    """What the faults need of the engine's run."""

    loop: asyncio.AbstractEventLoop
    meter: Meter
    scenario: Scenario
    devices: dict[int, Device]
    publishing: bool
    stopped: str | None
    rng: random.Random

    def request_connect(self, device: Device) -> None: ...

    def connect_failed(self, device: Device, now: float) -> None: ...

    def set_takes_part(self, takes_part: Callable[[str], bool]) -> None: ...


def start_faults(run: Run, begin: float) -> list[asyncio.Task[None]]:
    """Schedule the storms, and start the churn and the ``--active`` watch, of a run publishing
    from ``begin``; returns the tasks to cancel at its end."""
    scenario = run.scenario
    for at in scenario.storms:
        run.loop.call_at(begin + at, storm, run)
    tasks = [asyncio.create_task(churn(run, begin))] if scenario.churn else []
    if scenario.active is not None:  # devices leaving and coming back, by the list
        tasks.append(asyncio.create_task(watch_active(run, scenario.active)))
    return tasks


async def churn(run: Run, begin: float) -> None:
    """Each second of publishing, drop ``churn / 60`` of the fleet (at random) and let it back."""
    loop = run.loop
    owed = 0.0
    t = 1
    while True:
        await asyncio.sleep(max(0.0, begin + t - loop.time()))
        t += 1
        if not run.publishing:
            continue
        now = loop.time()
        connected = [d for d in run.devices.values() if d.state == CONNECTED and not d.held]
        owed += run.scenario.churn * len(run.devices) / 60
        count = min(int(owed), len(connected))
        owed -= count
        for device in run.rng.sample(connected, count):
            device.drop("churn", now, abrupt=False)
            run.connect_failed(device, now)  # back after a jittered backoff


def storm(run: Run) -> None:
    """Every connected device drops at once, as in a network outage; all reconnect at once."""
    if not run.publishing or run.stopped:
        return
    now = run.loop.time()
    dropped = [d for d in run.devices.values() if d.state == CONNECTED]
    for device in dropped:
        device.drop("storm", now, abrupt=True)
    run.meter.emit({"event": "storm", "devices": len(dropped)}, now)
    for device in dropped:
        run.request_connect(device)


async def watch_active(run: Run, path: Path) -> None:
    """Read the ``--active`` list now and whenever it changes (checked twice a second)."""
    seen: tuple[int, int] | None = None
    while True:
        try:
            stat = path.stat()
            version: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            version = None
        except OSError:
            version = seen  # unreadable for now: keep what was read
        if version != seen:
            seen = version
            try:
                patterns = read_active(path) if version is not None else None
            except (OSError, UnicodeDecodeError) as exc:
                run.meter.emit({"event": "active-list-unreadable", "detail": str(exc)}, run.loop.time())
            else:
                run.set_takes_part(membership(patterns))
        await asyncio.sleep(ACTIVE_POLL_S)
