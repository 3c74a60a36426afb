"""Scenario files: ``stress run --scenario FILE`` (YAML, or TOML by its ``.toml`` extension).

A file says what the flags of ``stress run`` say, one key per flag (``connect-rate`` or
``connect_rate`` for ``--connect-rate``; ``true``/``false`` for the flags without a value),
plus an optional timeline::

    target: mqtt
    port: 1883
    qos: 1
    interval: 1          # what a stage leaves out, it takes from here
    stages:
      - {devices: 100, duration: 30}
      - {devices: 500, duration: 60, interval: 0.5}
      - {devices: 500, duration: 30, shape: burst}

Every value is checked as its flag would check it, and an error names the file, the line and
the field: ``ramp.yaml:7: stages[2].duration: -5 must be more than 0 seconds``. Flags given on
the command line win over the file; the file wins over ``STRESS_*`` variables.
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stress.errors import ScenarioError
from stress.scenario import MAX_DEVICES
from stress.shapes import MAX_AMPLITUDE, Stage

#: Keys of a stage, with what they must be (the top level may give the defaults of the last three).
STAGE_KEYS = ("devices", "duration", "interval", "shape", "wave-period", "wave-amplitude")
#: Shapes a stage of a timeline may have.
STAGE_SHAPES = ("steady", "burst", "wave", "random-burst")
#: Flags a file cannot set (they are about the command line itself).
NOT_IN_FILES = {"scenario", "help"}
#: Largest scenario file read.
MAX_BYTES = 1024 * 1024

Path_ = tuple[str | int, ...]


@dataclass
class ScenarioFile:
    """What a file says: flag values by ``dest``, and its timeline (None: built from the flags)."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    stages: tuple[Stage, ...] | None = None


def load(path: Path, parser: argparse.ArgumentParser) -> ScenarioFile:
    """Read and check ``path`` against the flags of ``parser`` (``stress run``'s)."""
    try:
        raw = path.read_bytes()[: MAX_BYTES + 1]
    except OSError as exc:
        raise ScenarioError(f"cannot read --scenario {path}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ScenarioError(f"{path}: larger than {MAX_BYTES // 1024} KiB; is it a scenario file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    data, lines = _parse_toml(path, text) if path.suffix.lower() == ".toml" else _parse_yaml(path, text)
    return _Checker(path, lines, parser).check(data)


# ---------------------------------------------------------------------- parsing, with lines


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[Path_, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    lines: dict[Path_, int] = {}
    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node, where: Path_) -> Any:
        lines[where] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = build(key_node, (*where, "<key>"))
                if not isinstance(key, str):
                    raise ScenarioError(
                        f"{path}:{key_node.start_mark.line + 1}: a key must be a name, not {key!r}"
                    )
                if key in out:
                    raise ScenarioError(
                        f"{path}:{key_node.start_mark.line + 1}: {_name((*where, key))}: given twice"
                    )
                out[key] = build(value_node, (*where, key))
                lines[(*where, key)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*where, index)) for index, item in enumerate(node.value)]
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{path}:{lines[where]}: {_name(where)}: {exc}") from None

    data = build(node, ()) if node is not None else {}
    return data, lines


_TOML_TABLE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')\s*=")


def _parse_toml(path: Path, text: str) -> tuple[Any, dict[Path_, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+)", str(exc))
        line = f":{found.group(1)}" if found else ""
        raise ScenarioError(f"{path}{line}: not valid TOML: {str(exc).split(' (at line')[0]}") from None
    # tomllib keeps no positions: the lines of keys and tables come from the text itself
    lines: dict[Path_, int] = {(): 1}
    table: Path_ = ()
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TOML_TABLE.match(line)
        if header:
            name = header.group(2).strip().strip("\"'")
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = (name, counts[name])
            else:
                table = (name,)
            lines.setdefault(table, number)
            lines.setdefault(table[:1], number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            lines.setdefault((*table, key.group(1).strip("\"'")), number)
    return data, lines


# ---------------------------------------------------------------------- checking


def _name(where: Path_) -> str:
    """``stages[2].duration``."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Checker:
    def __init__(self, path: Path, lines: dict[Path_, int], parser: argparse.ArgumentParser) -> None:
        self.path = path
        self.lines = lines
        self.flags: dict[str, argparse.Action] = {}
        for action in parser._actions:
            long = [option for option in action.option_strings if option.startswith("--")]
            if long and action.dest not in NOT_IN_FILES:
                self.flags[long[0][2:]] = action

    def fail(self, where: Path_, message: str) -> ScenarioError:
        """One line: the file, the line, the field, and ``message``."""
        line = self.line(where)
        named = f"{_name(where)}: " if where else ""
        return ScenarioError(f"{self.path}{f':{line}' if line else ''}: {named}{message}")

    def line(self, where: Path_) -> int | None:
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return None

    def check(self, data: Any) -> ScenarioFile:
        if not isinstance(data, dict):
            raise self.fail((), f"must hold keys and values, not {_kind(data)}")
        result = ScenarioFile(self.path)
        stages = None
        for key, value in data.items():
            name = key.replace("_", "-")
            if name == "stages":
                stages = value
                continue
            action = self.flags.get(name)
            if action is None:
                raise self.fail((key,), f"unknown field{self._suggest(name, [*self.flags, 'stages'])}")
            result.values[action.dest] = self.value((key,), action, value)
        if stages is not None:
            result.stages = self.timeline(stages, result.values)
        return result

    @staticmethod
    def _suggest(name: str, known: list[str]) -> str:
        close = difflib.get_close_matches(name, known, n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def value(self, where: Path_, action: argparse.Action, value: Any) -> Any:
        """``value`` as its flag would take it, or one line naming the field."""
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise self.fail(where, f"must be true or false, not {_shown(value)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(where, f"must be a single value, not {_shown(value)}")
        convert = action.type if callable(action.type) else str
        try:
            converted = convert(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise self.fail(where, str(exc)) from None
        if action.choices is not None and converted not in action.choices:
            raise self.fail(where, f"{_shown(value)} is not one of {', '.join(map(str, action.choices))}")
        return converted

    def timeline(self, stages: Any, values: dict[str, Any]) -> tuple[Stage, ...]:
        if not isinstance(stages, list) or not stages:
            raise self.fail(("stages",), f"must be a list of one or more stages, not {_shown(stages)}")
        if values.get("shape") == "ramp":
            raise self.fail(("shape",), "ramp builds its own stages: give a timeline or a ramp, not both")
        built = []
        for index, given in enumerate(stages):
            where: Path_ = ("stages", index)
            if not isinstance(given, dict):
                raise self.fail(where, f"must be a table of {', '.join(STAGE_KEYS)}, not {_shown(given)}")
            stage = {str(key).replace("_", "-"): value for key, value in given.items()}
            for key in stage:
                if key not in STAGE_KEYS:
                    hint = self._suggest(str(key), list(STAGE_KEYS))
                    raise self.fail(
                        (*where, key), f"unknown field{hint}; a stage has {', '.join(STAGE_KEYS)}"
                    )
            built.append(self.stage(where, stage, values))
        return tuple(built)

    def stage(self, where: Path_, stage: dict[str, Any], values: dict[str, Any]) -> Stage:
        def take(key: str) -> Any:
            if key in stage:
                return self.value((*where, key), self.flags[key], stage[key])
            dest = self.flags[key].dest
            if dest in values:
                return values[dest]
            if key == "duration":
                raise self.fail(where, "needs a duration")
            return self.flags[key].default

        devices = take("devices")
        if devices > MAX_DEVICES:
            raise self.fail((*where, "devices"), f"at most {MAX_DEVICES:,} devices")
        shape = take("shape")
        if shape not in STAGE_SHAPES:
            raise self.fail((*where, "shape"), f"a stage is {' or '.join(STAGE_SHAPES)}, not {shape!r}")
        interval, duration = take("interval"), take("duration")
        if shape == "wave":
            amplitude = take("wave-amplitude")
            if amplitude > MAX_AMPLITUDE:
                raise self.fail((*where, "wave-amplitude"), f"at most {MAX_AMPLITUDE}, not {amplitude:g}")
            return Stage(devices, interval, duration, wave=(take("wave-period"), amplitude))
        return Stage(
            devices,
            interval,
            duration,
            burst=shape in ("burst", "random-burst"),
            random_bursts=shape == "random-burst",
        )


def _kind(value: Any) -> str:
    return {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), "nothing" if value is None else type(value).__name__
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{_kind(value)}"
