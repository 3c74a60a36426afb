"""The targets by name, and the one a scenario names."""

from __future__ import annotations

from stress.errors import ScenarioError
from stress.scenario import Scenario
from stress.targets.base import Target
from stress.targets.lab import LabTarget
from stress.targets.mqtt import MqttTarget
from stress.thingsboard.target import ThingsBoardTarget

TARGETS: dict[str, type[Target]] = {"lab": LabTarget, "mqtt": MqttTarget, "thingsboard": ThingsBoardTarget}


def build(scenario: Scenario) -> Target:
    """The target a scenario names."""
    cls = TARGETS.get(scenario.target)
    if cls is None:
        raise ScenarioError(f"unknown target {scenario.target!r}: choose one of {', '.join(TARGETS)}")
    return cls(scenario)
