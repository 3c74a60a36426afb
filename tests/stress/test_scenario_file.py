"""Scenario files (``stress run --scenario FILE``): what they say, what wins, and hostile files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stress.cli.main import build_parser
from stress.errors import ScenarioError
from stress.scenario_file import load
from stress.scenarios import EXAMPLES_DIR, examples, find
from stress.shapes import Stage, scaled
from tests.stress.plain_broker import PlainBroker

EXAMPLES = sorted(examples().values())


def run_parser() -> Any:
    parser = build_parser("run")
    return parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr,index]


def loaded(tmp_path: Path, name: str, text: str) -> Any:
    path = tmp_path / name
    path.write_text(text)
    return load(path, run_parser())


def stress(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


# ---------------------------------------------------------------------------- what a file says


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_the_shipped_examples_are_valid(example: Path) -> None:
    result = load(example, run_parser())
    assert result.values["target"] in ("lab", "mqtt")


def test_every_example_file_is_listed() -> None:
    files = sorted(path.name for path in EXAMPLES_DIR.iterdir() if path.suffix in (".yaml", ".toml"))
    assert files == [path.name for path in EXAMPLES]
    assert list(examples()) == ["broker-capacity", "lab-morning", "ramp-steps"]


def test_an_example_is_found_by_name_and_a_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shipped = EXAMPLES_DIR / "lab-morning.yaml"
    assert find("lab-morning") == find("lab-morning.yaml") == shipped
    (tmp_path / "lab-morning").write_text("target: mqtt\n")
    assert find("lab-morning") == Path("lab-morning")  # a file of that name is what the user means
    assert find("lab-morning.yaml") == shipped
    for hostile in ("./lab-morning.yaml", "lab-morning.yml", "../scenarios/lab-morning", "__init__", "a\0b"):
        with pytest.raises(ScenarioError, match=r"no such file, nor an example .*lab-morning, ramp-steps\)$"):
            find(hostile)


def test_duration_scale_shortens_every_stage_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "timeline.yaml"
    path.write_text("interval: 2\nstages:\n  - {devices: 5, duration: 100}\n  - {devices: 9, duration: 50}\n")
    stages = load(path, run_parser()).stages
    assert stages is not None
    assert scaled(stages, 0.1) == (Stage(5, 2.0, 10.0), Stage(9, 2.0, 5.0))
    assert scaled(stages, 1) is stages
    for bad in ("0", "-1", "nan", "x"):
        result = stress(
            "run", "--scenario", str(path), "--duration-scale", bad, "--out", str(tmp_path / "run")
        )
        assert result.returncode == 2 and "--duration-scale" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_yaml_flags_and_a_timeline_with_defaults_from_the_top(tmp_path: Path) -> None:
    result = loaded(
        tmp_path,
        "s.yaml",
        "target: mqtt\nconnect_rate: 50\nconnect-timeout: 3\ntls: false\ninterval: 2\nqos: 1\n"
        "stages:\n  - {devices: 10, duration: 5}\n  - devices: 20\n    duration: 4\n    shape: burst\n"
        "    interval: 0.5\n",
    )
    assert result.values == {
        "target": "mqtt",
        "connect_rate": 50.0,
        "connect_timeout": 3.0,
        "tls": False,
        "interval": 2.0,
        "qos": 1,
    }
    assert result.stages == (Stage(10, 2.0, 5.0), Stage(20, 0.5, 4.0, burst=True))


def test_toml_says_the_same(tmp_path: Path) -> None:
    result = loaded(
        tmp_path,
        "s.toml",
        'target = "mqtt"\nqos = 1\ninterval = 2\n\n[[stages]]\ndevices = 10\nduration = 5\n\n'
        '[[stages]]\ndevices = 20\nduration = 4\nshape = "burst"\ninterval = 0.5\n',
    )
    assert result.values == {"target": "mqtt", "qos": 1, "interval": 2.0}
    assert result.stages == (Stage(10, 2.0, 5.0), Stage(20, 0.5, 4.0, burst=True))


def test_an_empty_file_changes_nothing(tmp_path: Path) -> None:
    result = loaded(tmp_path, "empty.yaml", "# nothing yet\n")
    assert (result.values, result.stages) == ({}, None)


# ---------------------------------------------------------------------------- hostile files

HOSTILE = [
    ("unknown.yaml", "target: mqtt\ndevcies: 10\n", ":2: devcies: unknown field (did you mean 'devices'?)"),
    ("type.yaml", "devices: ten\n", ":1: devices: 'ten' is not a whole number"),
    ("list.yaml", "devices: [1, 2]\n", ":1: devices: must be a single value, not [1, 2]"),
    ("bool.yaml", "tls: maybe\n", ":1: tls: must be true or false, not 'maybe'"),
    ("number-bool.yaml", "qos: true\n", ":1: qos: must be a single value, not True"),
    ("choice.yaml", "target: coap\n", ":1: target: 'coap' is not one of lab, mqtt"),
    ("qos.yaml", "qos: 3\n", ":1: qos: '3' is not 0, 1 or 2"),
    ("port.toml", 'target = "mqtt"\n\nport = 70000\n', ":3: port: 70000 is not a port (1..65535)"),
    (
        "negative.yaml",
        "stages:\n  - {devices: 5, duration: 10}\n  - {devices: 5,\n     duration: -5}\n",
        ":4: stages[1].duration: -5 must be more than 0 seconds",
    ),
    (
        "negative.toml",
        "[[stages]]\ndevices = 5\nduration = 10\n\n[[stages]]\ndevices = 5\nduration = -5\n",
        ":7: stages[1].duration: -5 must be more than 0 seconds",
    ),
    ("no-duration.yaml", "stages:\n  - {devices: 5}\n", ":2: stages[0]: needs a duration"),
    ("stage-key.yaml", "stages:\n  - {devices: 5, duration: 1, rate: 3}\n", "stages[0].rate: unknown field"),
    (
        "stage-shape.yaml",
        "stages:\n  - {devices: 5, duration: 1, shape: ramp}\n",
        "a stage is steady or burst",
    ),
    ("stages-text.yaml", "stages: lots\n", ":1: stages: must be a list of one or more stages"),
    ("stages-empty.yaml", "stages: []\n", "stages: must be a list of one or more stages"),
    ("top-list.yaml", "- devices: 5\n", "must hold keys and values, not a list"),
    ("twice.yaml", "devices: 5\ndevices: 6\n", ":2: devices: given twice"),
    ("syntax.yaml", "devices: [5\n", "not valid YAML"),
    ("syntax.toml", "devices = \n", ":1: not valid TOML"),
    ("scenario.yaml", "scenario: other.yaml\n", "scenario: unknown field"),
    ("huge.yaml", "target: mqtt\ndevices: 99999999999\nduration: 1\n", "at most 9,999,999 devices"),
    ("behaviour.yaml", "behaviour: os:system\n", ":1: behaviour:"),
    (
        "ramp.yaml",
        "shape: ramp\nstages:\n  - {devices: 5, duration: 1}\n",
        ":1: shape: ramp builds its own stages",
    ),
]


@pytest.mark.parametrize(("name", "text", "says"), HOSTILE, ids=[name for name, _, _ in HOSTILE])
def test_hostile_files_are_one_line_naming_the_line_and_field(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = stress("run", "--scenario", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stress run: error: ")
    assert says in lines[0]
    assert not (tmp_path / "run").exists()


def test_binary_and_missing_files_are_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    for path, says in ((binary, "not UTF-8 text"), (tmp_path / "missing.yaml", "cannot read --scenario")):
        result = stress("run", "--scenario", str(path), "--out", str(tmp_path / "run"))
        assert result.returncode == 2
        assert says in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_flags_that_would_change_a_timeline_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "timeline.yaml"
    path.write_text("stages:\n  - {devices: 5, duration: 1}\n")
    result = stress("run", "--scenario", str(path), "--devices", "9", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--devices cannot change the timeline of stages in" in result.stderr


def test_the_loader_raises_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"s\.yaml:1: rooms: 0 must be 1 or more"):
        loaded(tmp_path, "s.yaml", "rooms: 0\n")


# ---------------------------------------------------------------------------- runs


def series(out: Path) -> list[dict[str, str]]:
    with (out / "timeseries.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.integration
def test_a_timeline_runs_stage_by_stage(broker: PlainBroker, tmp_path: Path) -> None:
    path = tmp_path / "timeline.yaml"
    path.write_text(
        f"target: mqtt\nport: {broker.port}\ne2e-devices: 0\nquiet: true\ninterval: 0.5\n"
        "stages:\n  - {devices: 4, duration: 2}\n  - {devices: 10, duration: 2, interval: 0.25}\n"
    )
    out = tmp_path / "run"
    result = stress("run", "--scenario", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shape"] == "timeline"
    assert summary["devices"] == 10
    assert summary["offered"] == summary["sent"] == (4 * 4 + 10 * 8) * 3  # samples per stage x 3 attributes
    assert summary["connections_peak"] == 10
    rows = [row for row in series(out) if row["phase"] == "run"]
    assert [int(row["sent"]) for row in rows[:2]] == [4 * 2 * 3] * 2
    assert [int(row["sent"]) for row in rows[2:4]] == [10 * 4 * 3] * 2


@pytest.mark.integration
def test_flags_win_over_the_file_and_the_file_over_variables(broker: PlainBroker, tmp_path: Path) -> None:
    path = tmp_path / "steady.toml"
    path.write_text(
        f'target = "mqtt"\nport = {broker.port}\ndevices = 3\ninterval = 0.5\nduration = 1\n'
        'e2e-devices = 0\nquiet = true\nprefix = "file"\n'
    )
    out = tmp_path / "run"
    result = stress(
        "run",
        "--scenario",
        str(path),
        "--devices",
        "5",
        "--out",
        str(out),
        env={"STRESS_PREFIX": "variable", "STRESS_ROOMS": "2"},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == 5  # the flag
    connected = [
        json.loads(line)["device"]
        for line in (out / "events.jsonl").read_text().splitlines()
        if '"connected"' in line
    ]
    assert sorted(connected) == [f"file{n:05d}" for n in range(1, 6)]  # the file, not the variable


def test_stages_can_be_waves_and_random_bursts(tmp_path: Path) -> None:
    result = loaded(
        tmp_path,
        "shapes.yaml",
        "interval: 1\nwave-amplitude: 0.3\nstages:\n"
        "  - {devices: 5, duration: 4, shape: wave, wave_period: 2}\n"
        "  - {devices: 5, duration: 4, shape: random-burst}\n",
    )
    assert result.stages == (
        Stage(5, 1.0, 4.0, wave=(2.0, 0.3)),
        Stage(5, 1.0, 4.0, burst=True, random_bursts=True),
    )


def test_a_wave_too_deep_names_its_stage(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"w\.yaml:2: stages\[0\]\.wave-amplitude: at most 0\.95"):
        loaded(
            tmp_path, "w.yaml", "stages:\n  - {devices: 5, duration: 4, shape: wave, wave-amplitude: 0.99}\n"
        )
