"""The run's timeline: every change of what is in force (fleet size, interval, pauses), and when.

The timeline follows the run's one event path, like every other subscriber:

* ``control`` events, which :class:`stress.control.RunControl` records for each ``scale``,
  ``rate``, ``pause``, ``resume`` and ``stop`` it carries out, whether asked from another shell
  or from the dashboard;
* ``storm`` events from the engine (one per process: those of one instant are one change);
* ``phase`` events: the stages follow each other on the clock from the start of the ``run``
  phase, so the timeline knows when each one begins. It records that as a ``stage`` event of
  its own, in the same path (``events.jsonl``, the watchers), until the run stops publishing.

It stamps each second the run closes with the fleet size and interval in force at its end
(``devices`` and ``interval_s`` in ``timeseries.csv``), and hands the changes to the summary
(``timeline``) and to whoever watches (:attr:`Timeline.on_change`). A new stage forgets what
``scale`` and ``rate`` asked, as the engine does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from stress.measure.meter import Event, EventSink, Second
from stress.results.model import Change
from stress.results.typed import to_json
from stress.scenario import Scenario

#: Changes a summary keeps (a script pausing devices one by one could make millions).
MAX_CHANGES: Final = 1000
#: Storms of several processes less than this apart are one storm.
STORM_MERGE_S: Final = 1.0


class Timeline:
    """What is in force through the run, fed by its events and seconds."""

    def __init__(self, scenario: Scenario, emit: EventSink) -> None:
        self.stages = scenario.stages
        #: Where the timeline's own ``stage`` events go (the run's event path).
        self.emit = emit
        first = scenario.stages[0]
        self.devices = first.devices
        self.interval = first.interval
        self.paused = 0
        self.stage = 1
        self.changes: list[Change] = []
        #: Changes beyond :data:`MAX_CHANGES`, not kept.
        self.dropped = 0
        #: Called with each change kept (the watchers pass it on to live views); a storm told
        #: again with another process's share has the same ``t`` and replaces the first.
        self.on_change: Callable[[Change], None] | None = None
        #: When the stages still to come begin, and their numbers (from 1), soonest first.
        self._boundaries: list[tuple[float, int]] = []
        self._record(Change(0.0, "start", first.devices, first.interval))

    # ------------------------------------------------------------------ the run's path

    def event(self, event: Event) -> None:
        """An event of the run: kept when it changes what is in force."""
        kind = event.get("event")
        t = event.get("t")
        if kind not in ("phase", "control", "storm") or not isinstance(t, int | float):
            return
        self._due(t)  # a stage that began before this event, first
        if kind == "phase":
            self._phase(str(event.get("phase")), t)
        elif kind == "control":
            self._control(event, t)
        else:
            self._storm(_count(event.get("devices")), t)

    def second(self, second: Second) -> None:
        """A second closed: the stages begun by its end are recorded, and it is stamped with
        what was in force at its end."""
        self._due(second.t + 1)
        second.devices = self.devices
        second.interval = self.interval

    @property
    def in_force(self) -> tuple[int, float]:
        """The fleet size asked and the interval in force now."""
        return self.devices, self.interval

    def notes(self) -> list[str]:
        """What the summary should say about the timeline itself."""
        if not self.dropped:
            return []
        return [f"timeline: {self.dropped:,} more changes happened after the first {MAX_CHANGES:,} kept"]

    # ------------------------------------------------------------------ changes

    def _phase(self, phase: str, t: float) -> None:
        if phase == "run":
            begin = t
            self._boundaries = []
            for number, stage in enumerate(self.stages[:-1], start=2):
                begin += stage.duration
                self._boundaries.append((begin, number))
        elif phase in ("drain", "done"):
            self._boundaries = []  # publishing is over: no stage begins any more

    def _due(self, until: float) -> None:
        while self._boundaries and self._boundaries[0][0] <= until:
            t, number = self._boundaries.pop(0)
            stage = self.stages[number - 1]
            self.devices, self.interval, self.stage = stage.devices, stage.interval, number
            self._record(Change(round(t, 4), "stage", stage.devices, stage.interval, self.paused, number))
            self.emit(
                {
                    "event": "stage",
                    "stage": number,
                    "devices": stage.devices,
                    "interval_s": stage.interval,
                    "t": t,
                }
            )

    def _control(self, event: Event, t: float) -> None:
        op = event.get("op")
        count = None
        if op == "scale":
            self.devices = _count(event.get("devices"))
        elif op == "rate":
            interval = event.get("interval_s")
            self.interval = float(interval) if isinstance(interval, int | float) else self.interval
        elif op in ("pause", "resume"):
            count = _count(event.get("count"))
            self.paused = _count(event.get("paused"))
        elif op == "stop":
            self._boundaries = []  # the engine follows its timeline no further
        else:
            return
        self._record(self._now(t, str(op), count))

    def _storm(self, dropped: int, t: float) -> None:
        last = self.changes[-1] if self.changes else None
        if last is not None and last.what == "storm" and t - last.t < STORM_MERGE_S and not self.dropped:
            # Another process's share of the same storm: the change is told again, whole
            self.changes[-1] = merged = self._now(last.t, "storm", (last.count or 0) + dropped)
            if self.on_change is not None:
                self.on_change(merged)
            return
        self._record(self._now(t, "storm", dropped))

    def _now(self, t: float, what: str, count: int | None) -> Change:
        return Change(round(t, 4), what, self.devices, self.interval, self.paused, self.stage, count)

    def _record(self, change: Change) -> None:
        if len(self.changes) >= MAX_CHANGES:
            self.dropped += 1
            return
        self.changes.append(change)
        if self.on_change is not None:
            self.on_change(change)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def change_text(change: Change) -> str:
    """A change in a few words, as the console, the report and the dashboard say it."""
    what = change.what
    if what in ("start", "stage"):
        head = "start" if what == "start" else f"stage {change.stage}"
        return f"{head}: {_devices(change.devices)} {_every(change.interval_s)}"
    if what == "scale":
        return f"scale to {_devices(change.devices)}"
    if what == "rate":
        return f"rate: {_every(change.interval_s)}"
    if what in ("pause", "resume"):
        return f"{what} {_devices(change.count)} ({change.paused:,} paused)"
    if what == "storm":
        return f"storm: {_devices(change.count)} dropped at once"
    return what


def _devices(count: int | None) -> str:
    if count is None:
        return "- devices"
    return f"{count:,} device{'' if count == 1 else 's'}"


def _every(interval: float | None) -> str:
    if interval is None:
        return "every - s"
    return "as fast as the target takes" if interval == 0 else f"every {interval:g} s"


def change_json(change: Change) -> dict[str, Any]:
    """A change as a live view gets it: its fields, and its :func:`change_text`."""
    return {**to_json(change), "text": change_text(change)}
