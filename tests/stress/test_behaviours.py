"""Device behaviours: believable series, commands (and hostile ones), determinism, and loading plug-ins."""

from __future__ import annotations

import itertools
import random
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stress.behaviours import BUILTIN, Behaviour, BehaviourError, DeviceInfo, Value, load
from stress.behaviours.base import number
from stress.behaviours.builtin import Fan, GpsTracker, Light, PowerMeter, Thermostat

DEVICE = DeviceInfo(0, "dev00001", "room-01")
STEPS = 1_000
START = 1_000.0

B = TypeVar("B", bound=Behaviour)


def started(cls: type[B], seed: int = 7, now: float = START) -> B:
    behaviour = cls(DEVICE, random.Random(seed))
    behaviour.start(now)
    return behaviour


def series(
    behaviour: Behaviour, steps: int, start: float = START, step: float = 1.0
) -> list[Sequence[Value]]:
    return [behaviour.next_values(start + (n + 1) * step) for n in range(steps)]


def state(behaviour: Behaviour) -> dict[str, Any]:
    """Everything a behaviour holds, its random generator included."""
    snapshot = {name: value for name, value in vars(behaviour).items() if name != "rng"}
    snapshot["rng"] = behaviour.rng.getstate()
    return snapshot


# ---------------------------------------------------------------------------- series


def check_thermostat(values: Sequence[Value]) -> None:
    temperature, humidity, setpoint = values
    assert type(temperature) is float and 5.0 <= temperature <= 40.0
    assert type(humidity) is float and 10.0 <= humidity <= 95.0
    assert type(setpoint) is float and 19.0 <= setpoint <= 23.0


def check_light(values: Sequence[Value]) -> None:
    on, brightness = values
    assert type(on) is bool
    assert type(brightness) is int
    assert brightness in ((30, 50, 70, 100) if on else (0,))


def check_fan(values: Sequence[Value]) -> None:
    speed, rpm = values
    assert type(speed) is int and 0 <= speed <= 3
    assert type(rpm) is float and 0.0 <= rpm <= 1_700.0
    assert rpm == round(rpm)


def check_power_meter(values: Sequence[Value]) -> None:
    power, energy = values
    assert type(power) is float and 0.0 <= power <= 4_000.0
    assert type(energy) is float and 0.0 <= energy <= 5_100.0


def check_gps(values: Sequence[Value]) -> None:
    lat, lon, speed = values
    assert all(type(value) is float for value in values)
    assert abs(float(lat) - 40.4168) < 0.5
    assert abs(float(lon) + 3.7038) < 0.5
    assert 0.0 <= float(speed) <= 90.0


CHECKS: dict[str, tuple[type[Behaviour], tuple[str, ...], Callable[[Sequence[Value]], None]]] = {
    "thermostat": (Thermostat, ("temperature", "humidity", "setpoint"), check_thermostat),
    "light": (Light, ("on", "brightness"), check_light),
    "fan": (Fan, ("speed", "rpm"), check_fan),
    "power-meter": (PowerMeter, ("power", "energy"), check_power_meter),
    "gps": (GpsTracker, ("lat", "lon", "speed"), check_gps),
}


def test_the_builtins_are_the_five_documented_ones() -> None:
    assert set(BUILTIN) == set(CHECKS)
    for name, (cls, attributes, _check) in CHECKS.items():
        assert BUILTIN[name] is cls
        assert cls.attributes == attributes


@pytest.mark.parametrize("name", sorted(CHECKS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_builtin_returns_one_sane_value_per_attribute(name: str, seed: int) -> None:
    cls, attributes, check = CHECKS[name]
    behaviour = started(cls, seed)
    for values in series(behaviour, STEPS):
        assert len(values) == len(attributes)
        check(values)
    behaviour.stop()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_builtin_repeats_itself_with_the_same_seed_only(name: str) -> None:
    cls = CHECKS[name][0]
    first = series(started(cls, seed=11), 200)
    again = series(started(cls, seed=11), 200)
    other = series(started(cls, seed=12), 200)
    assert first == again
    assert first != other


def test_a_light_flips_now_and_then_but_not_every_time() -> None:
    flips = 0
    previous = None
    for on, _brightness in series(started(Light, seed=5), STEPS):
        flips += previous is not None and on != previous
        previous = on
    assert 1 <= flips <= 50  # about 1 % of readings


# ---------------------------------------------------------------------------- thermostat


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("setpoint", [25.0, 5.0, 35.0])
def test_the_thermostat_converges_toward_a_commanded_setpoint(seed: int, setpoint: float) -> None:
    thermostat = started(Thermostat, seed)
    assert thermostat.command("setpoint", f"{setpoint:g}") is True
    readings = series(thermostat, 400, step=60.0)  # nearly seven hours, a reading a minute
    temperatures = [float(values[0]) for values in readings]
    assert all(values[2] == setpoint for values in readings)
    assert abs(temperatures[-1] - setpoint) < 0.5
    assert sum(abs(t - setpoint) for t in temperatures[-50:]) / 50 < 0.3
    if setpoint != 25.0:  # the room starts within 3 degrees of 19..23: far from 5 and 35
        assert abs(temperatures[0] - setpoint) > 5.0


def test_the_thermostat_does_not_move_when_no_time_passes() -> None:
    thermostat = started(Thermostat, 3)
    thermostat.command("setpoint", "35")
    first = float(thermostat.next_values(START)[0])
    held = [float(thermostat.next_values(START)[0]) for _ in range(100)]
    assert max(abs(t - first) for t in held) < 2.0  # noise only, no pull toward 35


@pytest.mark.parametrize("value", ["5", "35", "21.5", " 22 ", '"23"'])
def test_the_thermostat_accepts_a_setpoint_in_range(value: str) -> None:
    thermostat = started(Thermostat)
    assert thermostat.command("setpoint", value) is True
    assert thermostat.next_values(START + 1)[2] == float(value.strip().strip('"'))


# ---------------------------------------------------------------------------- light and fan


def test_light_on_and_off_commands() -> None:
    light = started(Light, seed=1)
    for text, on in [
        ("off", False),
        ("true", True),
        ("0", False),
        ("ON", True),
        ('"false"', False),
        ("1", True),
    ]:
        assert light.command("on", text) is True
        assert light.on is on
    assert light.command("brightness", "70") is True
    assert light.command("on", "false") is True
    assert light.brightness == 70
    assert light.next_values(START + 1) in ((False, 0), (True, 70))  # (True, 70): the 1 % flip


def test_light_brightness_command_sets_the_level_and_switches_it() -> None:
    light = started(Light, seed=1)
    light.command("on", "off")
    assert light.command("brightness", "40") is True
    assert (light.on, light.brightness) == (True, 40)
    readings = series(light, 20)
    assert readings[0] == (True, 40)  # seed 1: no flip on the first reading
    assert all(values in ((True, 40), (False, 0)) for values in readings)
    assert light.command("brightness", "0") is True
    assert (light.on, light.brightness) == (False, 0)
    assert light.command("brightness", "99.9") is True
    assert (light.on, light.brightness) == (True, 99)


def test_fan_speed_command_spins_the_fan_up_and_down() -> None:
    fan = started(Fan, seed=2)
    assert fan.command("speed", "3") is True
    readings = series(fan, 20)
    assert all(values[0] == 3 for values in readings)
    assert abs(float(readings[-1][1]) - 1_600.0) < 50
    assert fan.command("speed", "0") is True
    readings = series(fan, 20, start=START + 100)
    assert readings[-1] == (0, 0.0)
    assert fan.command("speed", "2.0") is True
    assert fan.next_values(START + 200)[0] == 2


# ---------------------------------------------------------------------------- power meter


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_energy_counter_never_decreases(seed: int) -> None:
    meter = started(PowerMeter, seed)
    now = START
    energies = []
    rng = random.Random(seed)
    for _ in range(STEPS):
        now += rng.choice((0.0, 0.5, 60.0, 3_600.0, -5.0))  # includes a clock that stands or steps back
        energies.append(float(meter.next_values(now)[1]))
    assert all(later >= earlier for earlier, later in itertools.pairwise(energies))
    assert energies[-1] > energies[0]


# ---------------------------------------------------------------------------- hostile commands

HOSTILE_VALUES = ["abc", "nan", "inf", "-inf", "", "1e400", "99", "NaN", '"', "\x00"]
OBEYING: list[tuple[str, str]] = [
    ("thermostat", "setpoint"),
    ("fan", "speed"),
    ("light", "on"),
    ("power-meter", "energy"),
    ("power-meter", "power"),
    ("gps", "speed"),
]


@pytest.mark.parametrize(("name", "attr"), OBEYING)
@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_hostile_command_is_refused_and_changes_nothing(name: str, attr: str, value: str) -> None:
    cls = CHECKS[name][0]
    commanded, untouched = started(cls, seed=9), started(cls, seed=9)
    before = state(commanded)
    assert commanded.command(attr, value) is False
    assert state(commanded) == before
    assert series(commanded, 20) == series(untouched, 20)


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "", "1e400", "101", "-1", "-0.5"])
def test_a_hostile_brightness_is_refused(value: str) -> None:
    light = started(Light, seed=9)
    before = state(light)
    assert light.command("brightness", value) is False
    assert state(light) == before


@pytest.mark.parametrize("value", ["4", "-1", "1.5", "3.0001"])
def test_a_fan_speed_out_of_its_levels_is_refused(value: str) -> None:
    fan = started(Fan, seed=9)
    before = state(fan)
    assert fan.command("speed", value) is False
    assert state(fan) == before


@pytest.mark.parametrize("value", ["4.99", "35.01", "-273"])
def test_a_setpoint_out_of_range_is_refused(value: str) -> None:
    thermostat = started(Thermostat, seed=9)
    before = state(thermostat)
    assert thermostat.command("setpoint", value) is False
    assert state(thermostat) == before


@pytest.mark.parametrize("name", sorted(CHECKS))
@pytest.mark.parametrize("attr", ["unknown", "", "setpoint/x", "SETPOINT", "temperature"])
def test_a_command_for_an_unknown_attribute_is_refused(name: str, attr: str) -> None:
    behaviour = started(CHECKS[name][0], seed=9)
    before = state(behaviour)
    assert behaviour.command(attr, "1") is False
    assert state(behaviour) == before


# ---------------------------------------------------------------------------- load()


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_load_finds_a_builtin_by_name(name: str) -> None:
    assert load(name) is CHECKS[name][0]


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Factory: write a module of the given source on sys.path; returns its (unique) name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"stress_plugin_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


DOORBELL = """
from stress.behaviours import Behaviour


class Doorbell(Behaviour):
    attributes = ("pressed", "battery")

    def start(self, now):
        self.battery = 100.0

    def next_values(self, now):
        self.battery = max(0.0, self.battery - 0.01)
        return (self.rng.random() < 0.5, round(self.battery, 2))


class Nameless(Behaviour):
    pass


class Slashed(Behaviour):
    attributes = ("door/state",)


class EmptyName(Behaviour):
    attributes = ("ok", "")


class NotText(Behaviour):
    attributes = ("ok", 3)


class Plain:
    attributes = ("a",)


not_a_class = 42
"""


def test_load_imports_a_user_class_by_module_and_class(plugin: Callable[[str], str]) -> None:
    module = plugin(DOORBELL)
    cls = load(f"{module}:Doorbell")
    assert cls.__name__ == "Doorbell"
    assert cls.attributes == ("pressed", "battery")
    doorbell = cls(DEVICE, random.Random(1))
    doorbell.start(START)
    values = doorbell.next_values(START + 1)
    assert values[1] == 99.99
    assert type(values[0]) is bool
    assert doorbell.command("pressed", "1") is False  # the base class obeys nothing


@pytest.mark.parametrize(
    "spec",
    [
        "nope",
        "",
        ":",
        "thermostat:",
        ":Thermostat",
        "os:path",
        "os:sep",
        "missing.module:X",
        "stress.behaviours.base:DeviceInfo",
        "stress.behaviours.base:Behaviour",
        "stress.behaviours:NoSuchClass",
        "Thermostat",
        "stress.behaviours.builtin.Thermostat",
        "../../etc/passwd:X",
    ],
)
def test_load_refuses_a_hostile_spec_in_one_line(spec: str) -> None:
    with pytest.raises(BehaviourError) as caught:
        load(spec)
    message = str(caught.value)
    assert message
    assert "\n" not in message
    assert repr(spec.partition(":")[0])[1:-1] in message  # it names what was asked for


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        ("Nameless", "must name its attributes"),
        ("Slashed", "must name its attributes"),
        ("EmptyName", "must name its attributes"),
        ("NotText", "must name its attributes"),
        ("Plain", "is not a subclass"),
        ("not_a_class", "is not a subclass"),
        ("Missing", "is not a subclass"),
    ],
)
def test_load_refuses_a_user_class_that_cannot_publish(
    plugin: Callable[[str], str], cls: str, words: str
) -> None:
    module = plugin(DOORBELL)
    with pytest.raises(BehaviourError, match=words) as caught:
        load(f"{module}:{cls}")
    assert "\n" not in str(caught.value)
    assert f"{module}:{cls}" in str(caught.value)


def test_load_names_a_module_that_fails_to_import(plugin: Callable[[str], str]) -> None:
    module = plugin("import does_not_exist_anywhere\n")
    with pytest.raises(BehaviourError, match=f"cannot import '{module}'.*does_not_exist_anywhere"):
        load(f"{module}:Anything")
    broken = plugin("class Broken(:\n")
    with pytest.raises(BehaviourError, match=f"cannot import '{broken}'") as caught:
        load(f"{broken}:Broken")
    assert "\n" not in str(caught.value)


def test_load_keeps_to_one_line_when_the_import_error_has_several(plugin: Callable[[str], str]) -> None:
    module = plugin('raise RuntimeError("first line\\nsecond line")\n')
    with pytest.raises(BehaviourError) as caught:
        load(f"{module}:Anything")
    assert "\n" not in str(caught.value)


def test_load_refuses_attributes_given_as_one_string(plugin: Callable[[str], str]) -> None:
    module = plugin(
        'from stress.behaviours import Behaviour\n\n\nclass Door(Behaviour):\n    attributes = ("pressed")\n'
    )
    with pytest.raises(BehaviourError, match="must name its attributes"):
        load(f"{module}:Door")


@pytest.mark.parametrize("attr", ["temp+", "#", "a\x00b"])
def test_load_refuses_attributes_that_are_not_topic_levels(plugin: Callable[[str], str], attr: str) -> None:
    module = plugin(
        f"from stress.behaviours import Behaviour\n\n\nclass Wild(Behaviour):\n    attributes = ({attr!r},)\n"
    )
    with pytest.raises(BehaviourError, match="must name its attributes"):
        load(f"{module}:Wild")


def test_a_command_value_is_read_as_a_finite_number_or_none() -> None:
    assert number(" 21.5 ") == 21.5
    assert number('"7"') == 7.0
    assert number("-1e308") == -1e308
    for text in ("nan", "-nan", "inf", "-inf", "Infinity", "1e400", "", '""', "abc", "0x10"):
        assert number(text) is None
