"""A run that cannot start: when no device connects, the run ends early and says why.

Failures never stop a fleet that runs: a device that cannot connect retries with backoff while
the others go on. But when not one device of the fleet has connected, a handshake and the first
few retries after the first failure, no later retry will do better: the broker is down, the
credentials are wrong, a firewall drops the handshakes. Retrying to the end of ``--duration``
would only hide that. So the run stops (its run folder and summary are written as for any stop),
and its summary holds one line saying what ``stress check`` would say (:mod:`stress.diagnosis`).

The rule reads the run's seconds as the run folder gets them (merged over the processes of a
split fleet), so one process or many decide alike, and it is tested on seconds alone.
"""

from __future__ import annotations

from collections.abc import Callable

from stress.diagnosis import cannot_connect
from stress.measure.meter import Event, Second
from stress.results.model import CannotStart
from stress.scenario import Scenario
from stress.targets.base import Target

#: How a run that no device could join is recorded as stopped (``summary.json``: ``stopped``).
STOPPED = "no device connected"
#: Reconnect backoffs the fleet waits out before it gives up.
RETRIES = 3


def patience(scenario: Scenario) -> float:
    """Seconds after the first failed connection attempt until a run no device has joined ends:
    one more handshake (``--connect-timeout``) and the first :data:`RETRIES` reconnect backoffs
    (``--reconnect-min``, doubling, at most ``--reconnect-max``); 13.5 s by default."""
    backoffs = sum(
        min(scenario.reconnect_max, scenario.reconnect_min * (1 << step)) for step in range(RETRIES)
    )
    return scenario.connect_timeout + backoffs


class StartWatch:
    """Watches a run's seconds until a device connects; calls ``stop`` if none does in time."""

    def __init__(self, scenario: Scenario, target: Target) -> None:
        self.scenario = scenario
        self.target = target
        self.patience = patience(scenario)
        #: Called once, with :data:`STOPPED`, when the run is to end.
        self.stop: Callable[[str], None] | None = None
        #: Whether any device has connected (then this watch has nothing more to say).
        self.joined = False
        self.gave_up = False
        self._first_failure: int | None = None
        self._last_t = 0
        self._failures: dict[str, int] = {}
        self._details: dict[str, str] = {}

    def event(self, event: Event) -> None:
        """Keep the first detail of each reason devices failed to connect for."""
        if event.get("event") == "error" and event.get("stage") == "connect":
            self._details.setdefault(str(event.get("reason")), str(event.get("detail", "")))

    def second(self, second: Second) -> None:
        """One closed second of the run."""
        self._last_t = second.t
        if second.connects or second.connected or second.connected_peak:
            self.joined = True
        for (stage, reason), count in second.errors.items():
            if stage == "connect":
                self._failures[reason] = self._failures.get(reason, 0) + count
                if self._first_failure is None:
                    self._first_failure = second.t
        if self.joined or self.gave_up or self._first_failure is None:
            return
        # The failure was within second ``t`` (which ends at ``t``): whole seconds since are a floor
        if second.t - self._first_failure >= self.patience:
            self.gave_up = True
            if self.stop is not None:
                self.stop(STOPPED)

    def verdict(self) -> CannotStart | None:
        """What ``summary.json`` says of a run that no device joined (``cannot_start``); None
        when a device did, or none has failed yet."""
        if self.joined or not self._failures:
            return None
        reason = max(self._failures, key=lambda name: self._failures[name])
        detail = self._details.get(reason, "")
        attempts = sum(self._failures.values())
        why = cannot_connect(self.scenario, reason, detail, self.target)
        return CannotStart(
            reason=reason,
            detail=detail,
            attempts=attempts,
            gave_up=self.gave_up,
            message=f"no device could connect ({attempts:,} attempts in {self._last_t} s): {why}",
        )
