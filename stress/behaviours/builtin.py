"""The built-in devices: believable, stateful series with several attributes each.

Each keeps state between calls, so consecutive values look like a real sensor's (a room
warms slowly toward its setpoint; an energy counter only goes up), and each obeys the
commands that make sense for it.
"""

from __future__ import annotations

import math

from stress.behaviours.base import Behaviour, Value, number

_TWO_PI = 2.0 * math.pi
#: ``x + _ROUNDER - _ROUNDER`` is ``x`` rounded to a whole number, half to even as ``round``
#: does (for ``|x| < 2**51``), without the call: ``(x * 100 + _ROUNDER - _ROUNDER) / 100`` is
#: ``round(x, 2)`` save for values exactly halfway, at a quarter of the cost.
_ROUNDER = 1.5 * 2.0**52


class Thermostat(Behaviour):
    """Temperature drifting toward a setpoint (commands: ``setpoint``), and humidity."""

    attributes = ("temperature", "humidity", "setpoint")

    def start(self, now: float) -> None:
        self.setpoint = round(self.rng.uniform(19.0, 23.0), 1)
        self.temperature = self.setpoint + self.rng.uniform(-3.0, 3.0)
        self.humidity = self.rng.uniform(35.0, 55.0)
        self.last = now

    def next_values(self, now: float) -> tuple[float, float, float]:
        # Conditionals, not min() and max() (slow calls): this runs at every instant of every thermostat
        elapsed = now - self.last
        if elapsed > 600.0:  # noqa: PLR1730
            elapsed = 600.0
        self.last = now
        pull = 1.0 - math.exp(-elapsed / 300.0)  # a room closes most of the gap in ~15 minutes
        # Two independent normal deviates from one Box-Muller pair: the very numbers two calls
        # of ``rng.gauss`` would give (it computes the pair and keeps the second), at half the cost
        random = self.rng.random
        angle = random() * _TWO_PI
        radius = math.sqrt(-2.0 * math.log(1.0 - random()))
        self.temperature += (self.setpoint - self.temperature) * pull + math.cos(angle) * radius * 0.05
        humidity = self.humidity + math.sin(angle) * radius * 0.2
        self.humidity = 10.0 if humidity < 10.0 else 95.0 if humidity > 95.0 else humidity
        return (
            (self.temperature * 100.0 + _ROUNDER - _ROUNDER) / 100.0,
            (self.humidity * 10.0 + _ROUNDER - _ROUNDER) / 10.0,
            self.setpoint,
        )

    def command(self, attr: str, value: str) -> bool:
        target = number(value)
        if attr != "setpoint" or target is None or not 5.0 <= target <= 35.0:
            return False
        self.setpoint = target
        return True


class Light(Behaviour):
    """A dimmable light: ``on`` and ``brightness`` (commands: both)."""

    attributes = ("on", "brightness")

    def start(self, now: float) -> None:
        self.on = self.rng.random() < 0.6
        self.brightness = self.rng.choice((30, 50, 70, 100))

    def next_values(self, now: float) -> tuple[bool, int]:
        if self.rng.random() < 0.01:  # somebody flips the switch now and then
            self.on = not self.on
        return self.on, self.brightness if self.on else 0

    def command(self, attr: str, value: str) -> bool:
        if attr == "on":
            text = value.strip().strip('"').lower()
            if text in ("true", "1", "on"):
                self.on = True
            elif text in ("false", "0", "off"):
                self.on = False
            else:
                return False
            return True
        level = number(value)
        if attr == "brightness" and level is not None and 0 <= level <= 100:
            self.brightness = int(level)
            self.on = level > 0
            return True
        return False


class Fan(Behaviour):
    """A fan with speed levels 0-3 (command: ``speed``) and the rpm it turns at."""

    attributes = ("speed", "rpm")
    RPM = (0.0, 600.0, 1100.0, 1600.0)

    def start(self, now: float) -> None:
        self.speed = self.rng.randint(0, 3)
        self.rpm = self.RPM[self.speed]

    def next_values(self, now: float) -> tuple[int, float]:
        target = self.RPM[self.speed]
        self.rpm += (target - self.rpm) * 0.5  # spins up and down over a few readings
        noise = self.rng.gauss(0.0, 8.0) if target else 0.0
        return self.speed, round(max(0.0, self.rpm + noise), 0)

    def command(self, attr: str, value: str) -> bool:
        level = number(value)
        if attr != "speed" or level is None or level not in (0, 1, 2, 3):
            return False
        self.speed = int(level)
        return True


class PowerMeter(Behaviour):
    """Power (W) around a daily pattern, and an energy counter (kWh) that only goes up."""

    attributes = ("power", "energy")

    def start(self, now: float) -> None:
        self.base = self.rng.uniform(200.0, 2000.0)
        self.energy = self.rng.uniform(0.0, 5000.0)
        self.phase = self.rng.uniform(0.0, 2 * math.pi)
        self.last = now

    def next_values(self, now: float) -> tuple[float, float]:
        day = 1.0 + 0.4 * math.sin(2 * math.pi * now / 86_400 + self.phase)
        power = max(0.0, self.base * day + self.rng.gauss(0.0, self.base * 0.03))
        self.energy += power * max(0.0, now - self.last) / 3_600_000  # W x s -> kWh
        self.last = now
        return round(power, 1), round(self.energy, 4)


class GpsTracker(Behaviour):
    """A vehicle moving about a city: ``lat``, ``lon`` (degrees) and ``speed`` (km/h)."""

    attributes = ("lat", "lon", "speed")

    def start(self, now: float) -> None:
        self.lat = 40.4168 + self.rng.uniform(-0.05, 0.05)
        self.lon = -3.7038 + self.rng.uniform(-0.05, 0.05)
        self.heading = self.rng.uniform(0.0, 2 * math.pi)
        self.speed = self.rng.uniform(0.0, 50.0)
        self.last = now

    def next_values(self, now: float) -> tuple[float, float, float]:
        elapsed = min(max(0.0, now - self.last), 60.0)
        self.last = now
        self.heading += self.rng.gauss(0.0, 0.2)
        self.speed = min(90.0, max(0.0, self.speed + self.rng.gauss(0.0, 3.0)))
        metres = self.speed / 3.6 * elapsed
        self.lat += metres * math.cos(self.heading) / 111_320
        self.lon += metres * math.sin(self.heading) / (111_320 * math.cos(math.radians(self.lat)))
        return round(self.lat, 6), round(self.lon, 6), round(self.speed, 1)


BUILTIN: dict[str, type[Behaviour]] = {
    "thermostat": Thermostat,
    "light": Light,
    "fan": Fan,
    "power-meter": PowerMeter,
    "gps": GpsTracker,
}

__all__ = ["BUILTIN", "Fan", "GpsTracker", "Light", "PowerMeter", "Thermostat", "Value"]
