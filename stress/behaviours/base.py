"""The interface of a simulated device: what it publishes, and what it does with commands.

A behaviour is a small class. The engine builds one per device, calls ``start`` once,
``next_values`` at every publishing instant, ``command`` when a command arrives for the
device, and ``stop`` at the end. Values are numbers, booleans or short strings, one per
name in ``attributes``, in that order.

Write your own and load it with ``--behaviour mypackage.module:MyDevice``::

    class Doorbell(Behaviour):
        attributes = ("pressed",)

        def next_values(self, now: float) -> tuple[bool]:
            return (self.rng.random() < 0.01,)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Who a simulated device is: its number in the fleet, its id and its room."""

    index: int
    device_id: str
    room: str


class Behaviour:
    """Base class of device behaviours; override ``attributes`` and ``next_values``."""

    #: The attribute names this device publishes, in the order ``next_values`` returns them.
    attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: DeviceInfo, rng: random.Random) -> None:
        self.device = device
        self.rng = rng

    def start(self, now: float) -> None:
        """Called once, before the first ``next_values`` (``now`` in seconds, monotonic)."""

    def next_values(self, now: float) -> Sequence[Value]:
        """The values to publish at ``now``, one per attribute."""
        raise NotImplementedError

    def command(self, attr: str, value: str) -> bool:
        """A command ``set/<attr>`` arrived with ``value`` (text); return whether it was obeyed."""
        return False

    def stop(self) -> None:
        """Called once when the device leaves the fleet."""


def number(value: str) -> float | None:
    """A command value as a finite number, or None."""
    try:
        parsed = float(value.strip().strip('"'))
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None
