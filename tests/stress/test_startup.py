"""A run that cannot start: when no device connects, it ends early and one line says why.

The rule is tested on seconds alone; the whole behaviour through ``stress run`` against a port
where nothing listens, the lab with a wrong fleet password (one process and two), and a broker
that takes only some of the fleet (which must run to its end as before).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stress import Broker, Scenario, run, timeline
from stress.measure.meter import Second
from stress.startup import STOPPED, StartWatch, patience
from stress.targets.registry import build
from tests.conftest import RunningLab
from tests.stress.plain_broker import PlainBroker, free_port

#: The run asks for two minutes of publishing; one that cannot start ends long before.
ASKED_S = 120
#: A patience of 2 s instead of the default 13.5 s, for the tests that are not about the default.
QUICK = ("--connect-timeout", "1", "--reconnect-min", "0.2", "--reconnect-max", "0.4")


def stress_run(out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``stress run --quiet`` with ``flags`` (the run folder in ``out``), bounded well below ``ASKED_S``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stress",
            "run",
            "--quiet",
            "--out",
            str(out),
            "--duration",
            str(ASKED_S),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=ASKED_S - 30,
        check=False,
    )


def summary_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return data


def scenario(**changes: Any) -> Scenario:
    return Scenario(
        target="mqtt", broker=Broker(port=1883), stages=timeline("steady", 10, 1.0, 60.0), **changes
    )


def watched(scenario: Scenario) -> StartWatch:
    """A start watch of ``scenario``'s run, with its target."""
    return StartWatch(scenario, build(scenario))


def refused(t: int, count: int, *, phase: str = "run", reason: str = "tcp-refused") -> Second:
    second = Second(t, phase=phase)
    second.errors[("connect", reason)] = count
    return second


# ---------------------------------------------------------------------------- the rule


def test_patience_is_one_handshake_and_three_backoffs() -> None:
    assert patience(scenario()) == 10.0 + 0.5 + 1.0 + 2.0
    assert (
        patience(scenario(connect_timeout=2.0, reconnect_min=1.0, reconnect_max=1.5)) == 2.0 + 1.0 + 1.5 + 1.5
    )


def test_a_fleet_nobody_joined_is_stopped_once_patience_has_passed() -> None:
    watch = watched(scenario(connect_timeout=2.0, reconnect_min=0.5, reconnect_max=1.0))  # patience 4.5 s
    stops: list[str] = []
    watch.stop = stops.append
    watch.event(
        {"event": "error", "stage": "connect", "reason": "tcp-refused", "detail": "127.0.0.1:1883: refused"}
    )
    watch.second(refused(1, 10, phase="connect"))
    for t in range(2, 6):
        watch.second(refused(t, 10))
    assert stops == []
    watch.second(refused(6, 10))
    assert stops == [STOPPED]
    watch.second(refused(7, 10))
    assert stops == [STOPPED]  # once
    verdict = watch.verdict()
    assert verdict is not None
    assert (verdict.reason, verdict.detail, verdict.attempts) == (
        "tcp-refused",
        "127.0.0.1:1883: refused",
        70,
    )
    assert verdict.message.startswith(
        "no device could connect (70 attempts in 7 s): mqtt at mqtt://127.0.0.1:1883"
    )
    assert verdict.message.endswith(
        "[tcp-refused]; nothing listens on 127.0.0.1:1883: is the broker running? "
        "(else check --host and --port)"
    )


def test_the_most_frequent_reason_is_the_one_named_with_the_setting_to_check() -> None:
    watch = watched(scenario(options={"username": "fleet", "password": "wrong"}))
    watch.second(refused(1, 2, reason="timeout"))
    watch.second(refused(2, 30, reason="connack-not-authorized"))
    verdict = watch.verdict()
    assert verdict is not None
    assert verdict.reason == "connack-not-authorized"
    assert "cannot connect as 'fleet'" in verdict.message
    assert verdict.message.endswith("; check --username and --password, and the account's rights")


def test_an_anonymous_fleet_refused_is_told_to_log_in() -> None:
    watch = watched(scenario())
    watch.second(refused(1, 3, reason="connack-not-authorized"))
    verdict = watch.verdict()
    assert verdict is not None
    assert verdict.message.endswith(
        "cannot connect anonymously: [connack-not-authorized]; "
        "the broker wants an account: pass --username and --password"
    )


def test_one_connection_anywhere_keeps_the_run_going() -> None:
    watch = watched(scenario(connect_timeout=1.0, reconnect_min=0.1, reconnect_max=0.1))
    stops: list[str] = []
    watch.stop = stops.append
    watch.second(refused(1, 5))
    joined = refused(2, 5)
    joined.connects = 1
    watch.second(joined)
    for t in range(3, 20):
        watch.second(refused(t, 5))
    assert stops == []
    assert watch.verdict() is None


def test_no_failure_no_verdict() -> None:
    watch = watched(scenario(connect_timeout=1.0))
    stops: list[str] = []
    watch.stop = stops.append
    for t in range(1, 20):
        watch.second(Second(t, phase="connect"))  # handshakes still waiting for an answer
    assert stops == []
    assert watch.verdict() is None


# ---------------------------------------------------------------------------- whole runs

integration = pytest.mark.integration


@integration
def test_nothing_listening_ends_the_run_early_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "run"
    result = stress_run(out, "--target", "mqtt", "--port", str(port), "--devices", "20")
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("stress: error: no device could connect (")
    assert f"mqtt at mqtt://127.0.0.1:{port} (MQTT 3.1.1): cannot connect anonymously: " in line
    assert line.endswith(
        f"[tcp-refused]; nothing listens on 127.0.0.1:{port}: is the broker running? "
        "(else check --host and --port)"
    )
    summary = summary_of(out)
    assert summary["stopped"] == STOPPED
    assert summary["cannot_start"]["reason"] == "tcp-refused"
    assert summary["cannot_start"]["message"] in line
    assert summary["duration_s"] < ASKED_S / 4
    assert summary["connections_peak"] == 0
    assert (out / "timeseries.csv").is_file()
    assert "no device could connect" in (out / "report.html").read_text()


@integration
def test_the_lab_not_running_points_at_lab_status(lab: RunningLab, tmp_path: Path) -> None:
    port = free_port()
    result = stress_run(
        tmp_path / "run",
        "--target",
        "lab",
        "--env-file",
        str(lab.config.env_file),
        "--port",
        str(port),
        *QUICK,
    )
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.endswith(
        f"[tcp-refused]; nothing listens on 127.0.0.1:{port}: is the broker running? (./lab status)"
    )


@integration
@pytest.mark.parametrize("processes", [1, 2])
def test_a_wrong_fleet_password_ends_early_naming_the_setting(
    lab: RunningLab, tmp_path: Path, processes: int
) -> None:
    wrong = tmp_path / "wrong.env"
    wrong.write_text(
        "\n".join(
            "LAB_FLEET_PASSWORD=not-the-password" if line.startswith("LAB_FLEET_PASSWORD=") else line
            for line in lab.config.env_file.read_text().splitlines()
        )
        + "\n"
    )
    out = tmp_path / "run"
    result = stress_run(
        out,
        "--target",
        "lab",
        "--env-file",
        str(wrong),
        "--devices",
        "20",
        "--processes",
        str(processes),
        *QUICK,
    )
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("stress: error: no device could connect (")
    assert f"cannot connect as {lab.env['LAB_FLEET_USER']!r}: the broker refused the connection" in line
    assert re.search(r"\[connack-(bad-credentials|not-authorized)\]; ", line), line
    assert f"check LAB_FLEET_USER and LAB_FLEET_PASSWORD in {wrong}" in line
    summary = summary_of(out)
    assert summary["processes"] == processes
    assert summary["stopped"] == STOPPED
    assert summary["cannot_start"]["reason"].startswith("connack-")
    assert summary["cannot_start"]["attempts"] >= 20
    assert summary["duration_s"] < ASKED_S / 4


@integration
@pytest.mark.parametrize("processes", [1, 2])
def test_a_fleet_that_partly_connects_runs_to_its_end(tmp_path: Path, processes: int) -> None:
    limited = PlainBroker(extra="max_connections 5\n")  # the sixth connection on is closed at once
    limited.start()
    try:
        summary = run(
            Scenario(
                target="mqtt",
                broker=Broker(port=limited.port),
                stages=timeline("steady", 20, 0.5, 5.0),
                out=tmp_path / "run",
                e2e_devices=0,
                drain=1.0,
                processes=processes,
                connect_timeout=1.0,  # patience 1.7 s: well inside the 5 s of publishing
                reconnect_min=0.1,
                reconnect_max=0.5,
            ),
            quiet=True,
        )
    finally:
        limited.close()
    assert summary["stopped"] == "completed"
    assert summary["cannot_start"] is None
    assert 1 <= summary["connections_peak"] < 20
    assert sum(summary["errors_by_stage"]["connect"].values()) > 20  # the others kept trying
    assert summary["duration_s"] >= 4.5
