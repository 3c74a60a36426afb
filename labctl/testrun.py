"""`./lab test`: install everything the suite needs, then lint, type-check and run the tests.

The tests start their own lab instances on free ports under `data/tests/<run>/` (see
tests/conftest.py). Whatever they leave running, even after a crash, is stopped here.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from labctl import install, ui
from labctl.config import MAX_REPLICAS, ROOT, remove_instance
from labctl.process import ProcessTable
from labctl.replicas import Front, PortalReplica, Redis, replica_name
from labctl.services import SERVICE_CLASSES

VENV = ROOT / ".venv"
#: Every service a lab instance may run, in the order they stop, with the signal each stops on.
STOP_ORDER = (
    (Front.name, Front.stop_signal),
    *((replica_name(number), PortalReplica.stop_signal) for number in range(MAX_REPLICAS, 0, -1)),
    (Redis.name, Redis.stop_signal),
    *((cls.name, cls.stop_signal) for cls in reversed(SERVICE_CLASSES)),
)


def _tool(name: str) -> str:
    return str(VENV / "bin" / name)


def stop_leftovers(base: Path) -> list[str]:
    """Stop every lab service still recorded under `base`; returns what was stopped."""
    stopped = []
    for run_dir in sorted(base.glob("**/run")):
        table = ProcessTable(run_dir, run_dir.parent / "logs")
        for name, stop_signal in STOP_ORDER:
            if table.stop(name, stop_signal, timeout=10):
                stopped.append(f"{run_dir.parent.name}/{name}")
    return stopped


def run(pytest_args: list[str]) -> int:
    """Run the whole suite; returns the exit status (non-zero if any part failed)."""
    ui.info("Preparing the test environment:")
    install.ensure_all(ROOT, VENV, for_tests=True)
    base = ROOT / "data" / "tests" / time.strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LAB_TEST_DIR=str(base), PYTHONDONTWRITEBYTECODE="1")

    results: dict[str, int] = {}
    for label, argv in (
        ("ruff", [_tool("ruff"), "check", "."]),
        ("ruff format", [_tool("ruff"), "format", "--check", "."]),
        ("mypy", [_tool("mypy")]),
    ):
        ui.info(f"\n== {label}")
        results[label] = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode

    ui.info("\n== pytest")
    try:
        results["pytest"] = subprocess.run(
            [_tool("python"), "-m", "pytest", *pytest_args], cwd=ROOT, env=env, check=False
        ).returncode
    finally:
        leftovers = stop_leftovers(base)
        if leftovers:
            ui.info(f"stopped services the tests left running: {', '.join(leftovers)}")
    if results["pytest"] == 0 or results["pytest"] == 5:
        # Keep the logs of failed runs for inspection; clean up after a passing one.
        remove_instance(base)
    if results["pytest"] == 5:
        ui.error("pytest collected no tests")

    failed = [label for label, code in results.items() if code != 0]
    ui.info(
        "\n" + ", ".join(f"{label}: {'ok' if code == 0 else 'FAILED'}" for label, code in results.items())
    )
    if failed:
        ui.info(f"logs of the test labs: {base}" if base.exists() else "")
    return 1 if failed else 0
