"""The end-to-end observer: a refusal is an error the console states, the summary records and the
exit status shows; and the README's ``--target mqtt`` example, run as written against the lab."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningLab

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


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
    assert summary["observed"] is None  # not measured, rather than none observed
    assert summary["sampled"] > 0
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
    assert summary["observer"] == {
        "state": "off",
        "reason": None,
        "detail": None,
        "account": None,
        "message": None,
    }
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
    assert summary["observer"]["state"] == "measured"
    assert summary["observer"]["reason"] is None
    assert summary["observed"] == summary["sampled"] > 0


def readme_mqtt_example() -> list[str]:
    """The shell lines of the README's ``--target mqtt`` example (the .env line and the command)."""
    section = (ROOT / "README.md").read_text().split("\n## Stress testing\n", 1)[1]
    lines = section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(".venv/bin/stress run --target mqtt"))
    end = start
    while lines[end].endswith("\\"):
        end += 1
    settings = [line for line in lines[:start] if line.startswith("set -a")]
    return [*settings, *lines[start : end + 1]]


def test_the_readme_mqtt_example_runs_against_the_lab_as_written(lab: RunningLab, tmp_path: Path) -> None:
    lines = readme_mqtt_example()
    assert lines[0] == "set -a; . ./.env; set +a"
    # The lab's folder as the README's reader has it: its .env, and .venv/bin/stress
    shutil.copy(lab.config.env_file, tmp_path / ".env")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "stress").write_text(f'#!/bin/sh\nexec {sys.executable} -m stress "$@"\n')
    (bin_dir / "stress").chmod(0o755)
    out = tmp_path / "run"
    shortened = f" --duration 3 --drain 2 --prefix readme{uuid.uuid4().hex[:6]} --out {out} --quiet"
    result = subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(lines) + shortened],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = summary_of(out)
    assert (summary["target"], summary["devices"], summary["qos"], summary["processes"]) == (
        "mqtt",
        1000,
        1,
        2,
    )
    assert summary["connections_peak"] == 1000
    assert summary["acked"] == summary["sent"] > 0
    assert summary["observer"]["state"] == "measured"
    assert summary["observer"]["reason"] is None
    assert summary["observed"] == summary["sampled"] > 0
