"""Start, find and stop the lab's background processes, without a hand-kept PID.

Each service runs detached in its own session, writes to `<data>/logs/<name>.log`, and is
recorded in `<data>/run/<name>.pid` with the kernel's start time of the process. A recorded
pid counts as the service only while a process with that pid and that start time is alive,
so a pid reused by an unrelated program is never mistaken for (or killed as) a lab service.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one service process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    user: str | None = None  # run as this user (only when we are root)
    stop_signal: signal.Signals = signal.SIGTERM


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess keyword arguments that drop to `user` (with its group) when we are root."""
    if user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state is [0], start time [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot; None if there is no such process."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def is_running(pid: int) -> bool:
    """Running: exists and is not a zombie (exited, not yet reaped by its parent)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


class ProcessTable:
    """The pid files of one lab instance."""

    def __init__(self, run_dir: Path, logs_dir: Path) -> None:
        self.run_dir = run_dir
        self.logs_dir = logs_dir

    def pid_file(self, name: str) -> Path:
        """Path of a service's pid file."""
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        """Path of a service's log file."""
        return self.logs_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The pid of the running service, or None (a stale pid file is removed)."""
        path = self.pid_file(name)
        try:
            pid_text, started = path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if is_running(pid) and start_time(pid) == started:
            return pid
        path.unlink(missing_ok=True)
        return None

    def start(self, spec: ProcessSpec) -> int:
        """Start the process detached from this terminal; returns its pid."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file(spec.name).open("ab")
        try:
            with log:
                log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    spec.argv,
                    cwd=spec.cwd,
                    env=spec.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **run_as(spec.user),
                )
        except FileNotFoundError as exc:
            raise RuntimeError(f"cannot start {spec.name}: {exc.filename} not found") from exc
        self.pid_file(spec.name).write_text(f"{process.pid} {start_time(process.pid)}\n")
        return process.pid

    def exited_early(self, pid: int) -> bool:
        """True when a process we started has already exited."""
        return not is_running(pid)

    def stop(self, name: str, sig: signal.Signals, timeout: float = 20.0) -> bool:
        """Stop the service: its signal, then SIGKILL for the whole group after `timeout`.

        Returns True if a process was running.
        """
        pid = self.pid(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Whatever is left in the service's session (children that ignored the signal) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while is_running(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        self.pid_file(name).unlink(missing_ok=True)
        return True
