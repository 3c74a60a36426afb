"""Load shapes: how a fleet's messages are laid out in time, as pure functions of the clock.

A run's timeline is a tuple of :class:`Stage` (one for a steady, burst, wave or random-burst
run; equal steps up for a ramp). Within a stage, device ``i`` publishes on a grid of the stage's
interval, shifted by its :func:`offset` (spread evenly over the interval, or none for a burst);
a wave's interval changes with time (:func:`interval_at`); random bursts come at the instants of
a seeded :class:`Bursts`, the same in every process of a run. Nothing here reads a clock or
opens a connection: the engine asks, with its own clock's times.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Literal

from stress.errors import ScenarioError

Shape = Literal["steady", "ramp", "burst", "wave", "random-burst"]
SHAPES: tuple[Shape, ...] = ("steady", "ramp", "burst", "wave", "random-burst")
#: The largest wave amplitude, as a share of the mean rate (at 1 the rate would touch 0).
MAX_AMPLITUDE = 0.95
#: The golden ratio's fraction: device offsets ``i * GOLDEN mod 1`` fill an interval evenly,
#: whatever the fleet's size, and a device's offset stays put when the fleet grows.
GOLDEN = (math.sqrt(5) - 1) / 2
#: The shortest gap between random bursts (seconds): two of the engine's ticks.
MIN_BURST_GAP = 0.002


@dataclass(frozen=True)
class Stage:
    """One part of the timeline: this many devices, publishing at this interval, for this long.

    ``burst`` stages have every device publish at the same instant of each interval; steady
    ones spread the devices evenly over the interval. A ``wave`` (period, amplitude) makes the
    rate swing around its mean: ``1 + amplitude * sin(2 pi t / period)`` times it. Random
    bursts come at random instants instead, ``interval`` apart on average (the same instants
    in every process of a run).
    """

    devices: int
    interval: float
    duration: float
    burst: bool = False
    wave: tuple[float, float] | None = None
    random_bursts: bool = False

    def __post_init__(self) -> None:
        if self.wave is not None:
            period, amplitude = self.wave
            if not (math.isfinite(period) and period > 0 and 0 <= amplitude <= MAX_AMPLITUDE):
                raise ScenarioError(
                    f"a wave needs a period of more than 0 seconds and an amplitude of 0..{MAX_AMPLITUDE}"
                    f" (a share of the mean rate), not {period:g} s and {amplitude:g}"
                )
        if self.devices < 0:
            raise ScenarioError(f"a stage needs 0 or more devices, not {self.devices}")
        if not math.isfinite(self.interval) or self.interval < 0:
            raise ScenarioError(f"interval must be 0 (capacity mode) or more seconds, not {self.interval}")
        if not math.isfinite(self.duration) or self.duration <= 0:
            raise ScenarioError(f"a stage lasts more than 0 seconds, not {self.duration}")


def timeline(
    shape: Shape,
    devices: int,
    interval: float,
    duration: float,
    stages: int = 4,
    *,
    wave: tuple[float, float] = (60.0, 0.5),
) -> tuple[Stage, ...]:
    """The stages of a shape: one for steady, burst, wave (``wave``: period, amplitude) and
    random-burst; ``stages`` equal steps up for ramp."""
    if devices < 1:
        raise ScenarioError(f"--devices must be 1 or more, not {devices}")
    if shape == "ramp":
        if not 1 <= stages <= devices:
            raise ScenarioError(f"--stages must be 1..{devices} (one device at least per step), not {stages}")
        return tuple(
            Stage(math.ceil(devices * (k + 1) / stages), interval, duration / stages) for k in range(stages)
        )
    if shape not in SHAPES:
        raise ScenarioError(f"unknown shape {shape!r}: choose one of {', '.join(SHAPES)}")
    if shape == "wave":
        return (Stage(devices, interval, duration, wave=wave),)
    if shape == "random-burst":
        return (Stage(devices, interval, duration, burst=True, random_bursts=True),)
    return (Stage(devices, interval, duration, burst=shape == "burst"),)


def scaled(stages: tuple[Stage, ...], factor: float) -> tuple[Stage, ...]:
    """The same timeline with every stage lasting ``factor`` times as long (devices, intervals
    and shapes unchanged): ``--duration-scale``, to try a long scenario in seconds."""
    if not (math.isfinite(factor) and factor > 0):
        raise ScenarioError(f"--duration-scale must be more than 0, not {factor:g}")
    if factor == 1:
        return stages
    return tuple(dataclasses.replace(stage, duration=stage.duration * factor) for stage in stages)


def offset(index: int, interval: float, burst: bool) -> float:
    """Seconds after each grid instant that device ``index`` publishes: 0 for a burst (all at
    once), else spread over the interval by the golden ratio."""
    return 0.0 if burst else (index * GOLDEN % 1.0) * interval


def first_due(start: float, interval: float, now: float) -> float:
    """The first instant at or after ``now`` of the grid ``start + k * interval`` (k >= 0)."""
    return start + max(0, math.ceil((now - start) / interval)) * interval


def interval_at(stage: Stage, elapsed: float) -> float:
    """The stage's interval ``elapsed`` seconds after it began: a wave's rate is ``1 + amplitude
    * sin(2 pi t / period)`` times the mean, so its interval is the mean's divided by that."""
    if stage.wave is None:
        return stage.interval
    period, amplitude = stage.wave
    return stage.interval / (1 + amplitude * math.sin(math.tau * elapsed / period))


class Bursts:
    """The instants of a random-burst stage: exponential gaps, ``interval`` apart on average
    (:data:`MIN_BURST_GAP` at least), from a generator seeded by the run and the stage, so every
    process of a run bursts at the same instants."""

    def __init__(self, interval: float, start: float, seed: int, stage_number: int) -> None:
        self.interval = interval
        self._rng = random.Random(f"{seed}:{stage_number}")
        #: The instant of the next burst.
        self.next = start + self.gap()

    def gap(self) -> float:
        """Seconds from one burst to the next (drawn anew each call)."""
        return max(MIN_BURST_GAP, self._rng.expovariate(1.0 / self.interval))

    def advance(self, now: float) -> float | None:
        """Pass the bursts due by ``now``: the gap from the last one passed to the one after it
        (what a device firing at it adds to reach the next burst), or None if none was due."""
        gap = None
        while now >= self.next:
            gap = self.gap()
            self.next += gap
        return gap
