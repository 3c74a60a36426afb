"""Install what the lab needs and is missing: Debian packages, the Python environment, npm packages.

Every step is skipped when its result is already there and up to date, so `./lab up` is
quick after the first run. Debian packages are installed only when running as root;
otherwise the exact command to run is printed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from labctl import ui
from labctl.errors import LabError

# Programs the lab runs, and the Debian package that provides each.
LAB_PROGRAMS = {
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "node": "nodejs",
    "npm": "npm",
    # Clients the README's examples use against the running lab.
    "psql": "postgresql-client",
    "curl": "curl",
}
# Programs of several portal replicas (PORTAL_REPLICAS above 1): the suite runs them too.
REPLICA_PROGRAMS = {"redis-server": "redis-server", "haproxy": "haproxy"}
TEST_PROGRAMS = {"chromium": "chromium", **REPLICA_PROGRAMS}
NPM_FOLDERS_LAB = ("nodered", "web/assets")
NPM_FOLDERS_TEST = ("tests",)


class InstallError(LabError):
    """Something could not be installed; the message says what to run instead."""


def _has_program(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


def missing_debian_packages(programs: dict[str, str]) -> list[str]:
    """Debian packages to install so that every program (and a PostgreSQL server) exists."""
    missing = sorted({package for program, package in programs.items() if not _has_program(program)})
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        missing.append("postgresql")
    return missing


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise InstallError(f"`{' '.join(argv)}` failed:\n{tail}")


def ensure_debian_packages(programs: dict[str, str]) -> None:
    """Install missing Debian packages with apt-get (root), or say exactly which (not root)."""
    missing = missing_debian_packages(programs)
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise InstallError(
            f"missing Debian packages; install them, then run ./lab again:\n"
            f"  sudo apt-get update && sudo {' '.join(command)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with ui.step(f"Debian packages: {' '.join(missing)}", done="installed") as step:
        step.note("apt-get update")
        _run(["apt-get", "update", "-qq"], env=env)
        step.note("apt-get install")
        _run(command, env=env)


def _digest(*parts: bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part)
        sha.update(b"\0")
    return sha.hexdigest()


#: The exported requirement files in `locks/`, each with the extras (or group) of uv.lock it
#: holds: exact versions with their hashes. `./lab lock` writes them; installs read only them.
LOCK_EXPORTS: dict[str, tuple[str, ...]] = {
    "portal": ("--extra", "portal"),
    "stress": ("--extra", "stress"),
    "lab": ("--extra", "portal", "--extra", "stress"),
    "test": ("--extra", "portal", "--extra", "stress", "--extra", "dev"),
    "build": ("--only-group", "build", "--no-default-groups"),
}
#: The extras each Python environment installs: `./lab up` the lab's lock, `./lab test` the test
#: lock; the portal's alone is what the container image holds.
ENVIRONMENTS = {"lab": ("portal", "stress"), "test": ("portal", "stress", "dev"), "portal": ("portal",)}


def lock_key(root: Path) -> str:
    """The hash of everything an install follows: pyproject.toml, uv.lock and every export."""
    files = [root / "pyproject.toml", root / "uv.lock", *(root / "locks" / f"{n}.txt" for n in LOCK_EXPORTS)]
    missing = [str(path.relative_to(root)) for path in files if not path.is_file()]
    if missing:
        raise InstallError(f"{', '.join(missing)} missing; the checkout is incomplete (git status)")
    return _digest(*(path.read_bytes() for path in files))


def ensure_python_env(root: Path, venv: Path, environment: str) -> None:
    """Create `venv` with the locked packages of `environment` and the project (editable).

    Every package comes from `locks/<environment>.txt` with its hash checked; then the project
    itself is installed without dependencies. A stamp records the lock's hash, so a changed
    lock installs again and an unchanged one costs nothing.
    """
    extras = ENVIRONMENTS[environment]
    stamp = venv / ".lab-installed"
    key = lock_key(root)
    if stamp.exists():
        recorded_key, _, recorded_extras = stamp.read_text().partition("\n")
        if recorded_key == key and set(extras) <= set(recorded_extras.split()):
            return
    with ui.step(f"Python environment in {venv.name} [{','.join(extras)}]", done="installed") as step:
        if not (venv / "bin" / "python").exists():
            step.note("creating")
            result = subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise InstallError(
                    f"cannot create {venv}: {result.stderr.strip()[-200:]} "
                    "(on Debian: apt-get install python3-venv)"
                )
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        step.note("locked packages")
        _run([*pip, "--require-hashes", "-r", "locks/build.txt"], cwd=root)
        _run([*pip, "--require-hashes", "-r", f"locks/{environment}.txt"], cwd=root)
        step.note("the project")
        _run([*pip, "--no-deps", "--no-build-isolation", "-e", "."], cwd=root)
    stamp.write_text(f"{key}\n{' '.join(extras)}\n")


def export_command(name: str) -> list[str]:
    """The `uv export` arguments that write `locks/<name>.txt` from uv.lock (without `-o`)."""
    return ["export", "--frozen", "--no-emit-project", *LOCK_EXPORTS[name]]


def refresh_locks(root: Path, uv: Path, packages: Iterable[str] = ()) -> None:
    """Re-resolve uv.lock (only `packages` when given, else everything) and rewrite `locks/`."""
    upgrade = [f"--upgrade-package={package}" for package in packages] or ["--upgrade"]
    with ui.step("uv.lock", done="resolved") as step:
        step.note(" ".join(upgrade))
        _run([str(uv), "lock", *upgrade], cwd=root)
    with ui.step("locks/", done="exported"):
        for name in LOCK_EXPORTS:
            _run([str(uv), *export_command(name), "--quiet", "-o", f"locks/{name}.txt"], cwd=root)


def ensure_npm(folder: Path) -> None:
    """`npm ci` in `folder` unless its node_modules already matches its package-lock.json."""
    lock = folder / "package-lock.json"
    if not lock.exists():
        raise InstallError(f"{lock} is missing; the checkout is incomplete")
    stamp = folder / "node_modules" / ".lab-installed"
    key = _digest(lock.read_bytes())
    if stamp.exists() and stamp.read_text().strip() == key:
        return
    with ui.step(f"npm packages in {folder.name}/", done="installed"):
        _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder)
    stamp.write_text(key + "\n")


def ensure_all(root: Path, venv: Path, *, for_tests: bool, replicas: bool = False) -> None:
    """Everything `./lab up` needs (with `replicas`, for several portals), plus what the test
    suite needs when `for_tests`."""
    programs = dict(LAB_PROGRAMS)
    if replicas:
        programs.update(REPLICA_PROGRAMS)
    if for_tests:
        programs.update(TEST_PROGRAMS)
    ensure_debian_packages(programs)
    ensure_python_env(root, venv, "test" if for_tests else "lab")
    for folder in (*NPM_FOLDERS_LAB, *(NPM_FOLDERS_TEST if for_tests else ())):
        ensure_npm(root / folder)
