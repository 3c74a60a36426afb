"""A private, plain Mosquitto for the fleet benchmark: anonymous, no persistence, no connection cap.

Unlike the lab's broker (accounts, ACLs, WebSocket and TLS listeners), this one measures only the
broker itself: one loopback listener on a free port, anonymous clients allowed, ``$SYS`` published
every second, and an open-file limit raised so it can hold tens of thousands of connections.

    from plain_broker import PlainBroker

    with PlainBroker() as broker:
        print(broker.port, broker.pid)

It is stopped when the block ends, on Ctrl-C included. Started as root, Mosquitto drops to the
``mosquitto`` user by itself, so its folder and log are handed to that user.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from labctl.config import free_ports

MOSQUITTO = "/usr/sbin/mosquitto"
#: Open files allowed to the broker (the machine's per-process maximum).
OPEN_FILES = 20_000
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

_CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
sys_interval 1
connection_messages false
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""


def _raise_open_files() -> None:  # runs in the child, between fork and exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


class PlainBroker:
    """A Mosquitto started on a free loopback port; a context manager that stops it on exit."""

    def __init__(self, mosquitto: str = MOSQUITTO) -> None:
        self.mosquitto = shutil.which("mosquitto") if not Path(mosquitto).exists() else mosquitto
        self.port = 0
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The broker's process id."""
        if self.process is None:
            raise RuntimeError("the broker is not running")
        return self.process.pid

    @property
    def log(self) -> Path:
        """The broker's log file."""
        if self.folder is None:
            raise RuntimeError("the broker was never started")
        return self.folder / "mosquitto.log"

    def log_tail(self, lines: int = 10) -> str:
        """The last lines of the broker's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def version(self) -> str:
        """What ``mosquitto -h`` says first, e.g. "mosquitto version 2.0.11"."""
        if self.mosquitto is None:
            return "mosquitto (not found)"
        done = subprocess.run([self.mosquitto, "-h"], capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"

    def start(self) -> None:
        """Write the configuration, start Mosquitto and wait until it accepts connections."""
        if self.mosquitto is None:
            raise RuntimeError("mosquitto not found: apt-get install mosquitto")
        self.folder = Path(tempfile.mkdtemp(prefix="bench-broker-"))
        # Below the range of outgoing connections: the fleets' client sockets cannot take it.
        self.port = free_ports(1)[0]
        config = self.folder / "mosquitto.conf"
        config.write_text(_CONFIG.format(port=self.port, log=self.log))
        if os.geteuid() == 0:
            # Mosquitto drops to this user right after reading its configuration; it writes the
            # log, and rereads the configuration on SIGHUP, as that user.
            user = pwd.getpwnam("mosquitto")
            for path in (self.folder, config):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o755)
        self.process = subprocess.Popen(
            [self.mosquitto, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_raise_open_files,  # noqa: PLW1509 - called before the harness starts threads
            start_new_session=True,  # Ctrl-C reaches the harness, which stops the broker itself
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode} at start:\n{self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} in {START_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PlainBroker:
        self.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def plain_broker() -> Iterator[int]:
    """A private broker for the duration of the block; yields its port."""
    with PlainBroker() as broker:
        yield broker.port
