"""The stress harness: simulated device fleets, measured, with run folders and reports.

Use it from Python as well as from the ``stress`` command::

    from stress import Broker, Scenario, run, timeline

    summary = run(Scenario(target="mqtt", broker=Broker(port=1883),
                           stages=timeline("steady", devices=100, interval=1.0, duration=30)))
    print(summary["msgs_per_s"], summary["latency_ms"]["e2e"]["p99"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stress.errors import ScenarioError
from stress.scenario import Broker, Scenario
from stress.shapes import Stage, timeline

if TYPE_CHECKING:
    from stress.results.summary import Summary


def run(scenario: Scenario, **kwargs: Any) -> Summary:
    """Run ``scenario`` (see :func:`stress.runner.run`)."""
    from stress.runner import run as run_scenario  # noqa: PLC0415 - importing stress stays cheap

    return run_scenario(scenario, **kwargs)


__all__ = ["Broker", "Scenario", "ScenarioError", "Stage", "run", "timeline"]
