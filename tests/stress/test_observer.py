"""The end-to-end observer: a refusal is an error the console states, the summary records and the
exit status shows."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningLab

pytestmark = pytest.mark.integration


def stress_run(*flags: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", "run", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def summary_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return data


def fleet_account(lab: RunningLab) -> list[str]:
    """``--target mqtt`` flags for the lab's broker, logging in with its fleet account."""
    return [
        "--target",
        "mqtt",
        "--port",
        str(lab.port("MQTT_PORT")),
        "--username",
        lab.env["LAB_FLEET_USER"],
        "--password",
        lab.env["LAB_FLEET_PASSWORD"],
    ]


def small_fleet(out: Path, *flags: str) -> list[str]:
    prefix = f"obs{uuid.uuid4().hex[:6]}"
    return ["--prefix", prefix, "--devices", "20", "--interval", "0.5", "--duration", "2", "--qos", "1",
            "--drain", "1", "--out", str(out), *flags]  # fmt: skip


@pytest.mark.parametrize(("processes", "quiet"), [(1, False), (2, True)])
def test_a_refused_observer_is_an_error_stated_once(
    lab: RunningLab, tmp_path: Path, processes: int, quiet: bool
) -> None:
    # The fleet account may subscribe only under the lab's TOPIC_ROOT: an observer of "stress/..." is refused
    out = tmp_path / "run"
    result = stress_run(
        *fleet_account(lab),
        "--root",
        "stress",
        *small_fleet(
            out, "--e2e-devices", "5", "--processes", str(processes), *(["--quiet"] if quiet else [])
        ),
    )
    assert result.returncode == 1, result.stderr
    said = [line for line in result.stderr.splitlines() if "observer" in line]
    assert len(said) == 1, result.stderr
    [line] = said
    user = lab.env["LAB_FLEET_USER"]
    assert line.startswith(
        "stress: error: end-to-end observer refused: the broker refused the subscription to stress/"
    )
    assert f"as {user!r} [suback-refused]; " in line
    assert (
        "use an account that may subscribe to the sampled devices' topics (--username and --password)" in line
    )
    assert line.endswith("or pass --e2e-devices 0 to run without it")

    summary = summary_of(out)
    observer = summary["observer"]
    assert (observer["state"], observer["reason"], observer["account"]) == ("refused", "suback-refused", user)
    assert observer["message"] in line
    assert summary["delivered"] is None  # not measured, rather than none delivered
    assert summary["e2e_expected"] > 0
    assert summary["stopped"] == "completed"
    assert summary["cannot_start"] is None
    assert summary["connections_peak"] == 20  # the fleet itself ran
    assert "not measured (observer refused: suback-refused)" in result.stdout
    assert "ERROR: end-to-end observer refused: " in result.stdout
    assert "observer refused" in (out / "report.html").read_text()


def test_without_an_observer_nothing_is_refused(lab: RunningLab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = stress_run(
        *fleet_account(lab), "--root", "stress", *small_fleet(out, "--e2e-devices", "0", "--quiet")
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    summary = summary_of(out)
    assert summary["observer"] == {"state": "off"}
    assert summary["errors_by_reason"] == {}


def test_an_observer_allowed_to_subscribe_measures(lab: RunningLab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = stress_run(
        *fleet_account(lab),
        "--root",
        lab.env["TOPIC_ROOT"],
        *small_fleet(out, "--e2e-devices", "5", "--quiet"),
    )
    assert result.returncode == 0, result.stderr
    summary = summary_of(out)
    assert summary["observer"] == {"state": "measured"}
    assert summary["delivered"] == summary["e2e_expected"] > 0
