"""A private, plain Mosquitto for the stress tests: loopback, a free port, restartable.

"Plain" means what a user's own broker looks like: a password file (or anonymous access),
no dynamic security, no lab around it. TLS is added when a certificate is given (asking clients
for theirs when an authority to check them is given too), and MQTT over WebSocket on request
(with TLS as well when there is a certificate).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from labctl.broker import websocket_address
from labctl.config import free_ports


def free_port() -> int:
    return free_ports(1)[0]


class PlainBroker:
    """One Mosquitto process; ``stop``/``start`` keep the port, so clients can reconnect."""

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        extra: str = "",
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
        websocket: bool = False,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="stress-broker-"))
        self.dir.chmod(0o755)  # mosquitto drops to its own user when started as root
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        #: MQTT over WebSocket, plain and (with a certificate) with TLS.
        self.ws_port = free_port() if websocket else None
        self.wss_port = free_port() if websocket and tls else None
        self.users = users or {}
        self.process: subprocess.Popen[bytes] | None = None
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'false' if users else 'true'}",
            "persistence false",
            "sys_interval 1",
            "max_connections -1",
            "max_queued_messages 100000",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        if users:
            password_file = self.dir / "passwords"
            password_file.touch()
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                )
            lines.insert(1, f"password_file {password_file}")
        if websocket:
            lines += [f"listener {self.ws_port} {websocket_address('127.0.0.1')}", "protocol websockets"]
        if tls:
            cert, key = (shutil.copy(path, self.dir / path.name) for path in tls)
            secured = [f"certfile {cert}", f"keyfile {key}"]
            if client_ca is not None:
                secured += [
                    f"cafile {shutil.copy(client_ca, self.dir / 'clients-ca.crt')}",
                    "require_certificate true",
                ]
            lines += [f"listener {self.tls_port} 127.0.0.1", *secured]
            if websocket:
                address = websocket_address("127.0.0.1")
                lines += [f"listener {self.wss_port} {address}", "protocol websockets", *secured]
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n" + extra)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("mosquitto")
            for path in self.dir.iterdir():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.log = self.dir / "mosquitto.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(self.dir / "mosquitto.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                for port in self.ports:  # (the WebSocket listeners open a little after the others)
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its ports within 10 s")

    @property
    def ports(self) -> list[int]:
        """Every port it listens on."""
        return [port for port in (self.port, self.tls_port, self.ws_port, self.wss_port) if port is not None]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self.resume()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
