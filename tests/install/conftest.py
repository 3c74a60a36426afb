"""The user's install: Python environments built exactly as `./lab up` builds them.

`./lab test` runs the suite in `.venv`, which also holds the test extras. The tests under
`tests/install/` run the product from environments without them instead: `lab_env` is what
`./lab up` makes (the lab's lock, hash-checked, then the project, editable). Environments are
kept under `data/user-envs/`, one per lock hash, so only a changed lock builds them again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from labctl import install
from labctl.config import ROOT

ENVS = ROOT / "data" / "user-envs"


@dataclass(frozen=True)
class PythonEnv:
    """A virtual environment and a way to run its programs as a user would."""

    venv: Path

    def bin(self, name: str) -> str:
        """A program of the environment (`python`, `stress`, `gunicorn`...)."""
        return str(self.venv / "bin" / name)

    def environ(self, **extra: str) -> dict[str, str]:
        """This machine's environment without what points at the test environment or steers
        `stress` (`PYTHONPATH`, `VIRTUAL_ENV`, `STRESS_*` but the control folder, `TB_*`)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
            and (not key.startswith(("STRESS_", "TB_")) or key == "STRESS_CONTROL_DIR")
        }
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(extra)
        return env

    def run(
        self, program: str, *args: str, cwd: Path, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the environment's programs in `cwd` (never the checkout)."""
        return subprocess.run(
            [self.bin(program), *args],
            cwd=cwd,
            env=self.environ(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def cached_env(name: str, build: Callable[[Path], None]) -> PythonEnv:
    """`data/user-envs/<name>-<lock hash>`, built by `build(venv)` unless already there; older
    builds of `name` are removed."""
    key = install.lock_key(ROOT)[:16]
    venv = ENVS / f"{name}-{key}"
    for old in ENVS.glob(f"{name}-*"):
        if old != venv:
            shutil.rmtree(old, ignore_errors=True)
    build(venv)
    return PythonEnv(venv)


@pytest.fixture(scope="session")
def lab_env() -> PythonEnv:
    """The environment `./lab up` makes: the lab's lock, then the project; no test extras."""
    return cached_env("lab", lambda venv: install.ensure_python_env(ROOT, venv, "lab"))


def _pip(venv: Path, *args: str, cwd: Path, **env: str) -> str:
    """`pip install ARGS` in `venv`, run from `cwd`; its output, or the test fails with it."""
    done = PythonEnv(venv).run(
        "python", "-m", "pip", "install", "--disable-pip-version-check", *args, cwd=cwd, timeout=600, **env
    )
    if done.returncode != 0:
        pytest.fail(f"pip install {' '.join(args)} failed:\n{done.stderr[-2000:]}", pytrace=False)
    return done.stdout


def _stress_dependencies(venv: Path) -> None:
    """A virtual environment with the build backend's lock and the `stress` extra's, hash-checked:
    everything `pip install '.[stress]'` needs but the project. A stamp records the lock."""
    stamp = venv / ".stress-dependencies"
    key = install.lock_key(ROOT)
    if stamp.is_file() and stamp.read_text().strip() == key:
        return
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    for lock in ("build", "stress"):
        _pip(venv, "-q", "--require-hashes", "-r", str(ROOT / "locks" / f"{lock}.txt"), cwd=ROOT)
    stamp.write_text(f"{key}\n")


@pytest.fixture(scope="session")
def stress_env(tmp_path_factory: pytest.TempPathFactory) -> PythonEnv:
    """`pip install '.[stress]'` as a user runs it, in a clean environment of its own.

    The locked dependencies are cached (`data/user-envs/stress-<lock hash>`); each session
    copies them and installs the project from the current source with the user's command, run
    outside the checkout: a wheel built from it, not an editable install. Nothing is fetched:
    the lock already satisfies every dependency, and pip may not look at an index.
    """
    cached = cached_env("stress", _stress_dependencies)
    home = tmp_path_factory.mktemp("stress-install")
    venv = home / "venv"
    shutil.copytree(cached.venv, venv, symlinks=True)
    output = _pip(venv, "--no-build-isolation", f"{ROOT}[stress]", cwd=home, PIP_NO_INDEX="1")
    installed = [line for line in output.splitlines() if line.startswith("Successfully installed")]
    assert installed == ["Successfully installed iot-lab-0.1.0"], output
    return PythonEnv(venv)
