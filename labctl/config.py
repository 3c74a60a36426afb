"""One lab instance: its repository, `.env` file and state folder, validated once.

`./lab` uses the repository's `.env` and `data/`; the test suite starts further instances
with their own env file and state folder, on free ports, through the same code.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from labctl import envfile
from labctl.errors import LabError
from wire.names import name_problem

ROOT = Path(__file__).resolve().parent.parent

PORT_VARIABLES = (
    "MQTT_PORT",
    "MQTT_WS_PORT",
    "MQTT_TLS_PORT",
    "PORTAL_PORT",
    "NODERED_PORT",
    "POSTGRES_PORT",
)


#: Where services that run as their own users keep their state when they cannot reach the data folder.
PRIVATE_STATE = Path("/var/lib/iot-lab")


def _others_can_reach(folder: Path) -> bool:
    """True when every existing folder on the way to `folder` lets other users pass."""
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now on 127.0.0.1 (held open together, so all distinct).

    They are chosen below the kernel's range for outgoing connections: a load test opening
    thousands of client connections could otherwise take a port between its choice here and
    the service binding it.
    """
    high = _ephemeral_floor()
    low = 10_000 if high > 11_000 else 1_024
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", secrets.randbelow(high - low) + low))
            except OSError:
                sock.close()  # in use: draw again
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def new_instance(folder: Path, **overrides: str) -> LabConfig:
    """A fresh lab instance in `folder`: `.env` with new secrets and free ports, state in `data/`.

    The test suite and the benchmarks run their labs this way, beside any lab already running.
    """
    ports = dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))
    envfile.ensure(folder / ".env", ROOT / ".env.example", {**ports, **overrides})
    return LabConfig.load(folder / ".env", folder / "data")


class ConfigError(LabError):
    """A configuration value the lab cannot run with; the message says which and why."""


def remove_private_state(folder: Path) -> None:
    """Delete the state that the services of the lab instances under `folder` kept under
    /var/lib/iot-lab/ (see :meth:`LabConfig.state_dir`); their logs stay. The instances must be
    stopped."""
    if not folder.exists():
        return
    elsewhere = set()
    for link in folder.rglob("*"):
        if link.is_symlink():
            target = Path(os.path.realpath(link))
            if target.is_relative_to(PRIVATE_STATE) and len(target.relative_to(PRIVATE_STATE).parts) >= 2:
                elsewhere.add(PRIVATE_STATE / target.relative_to(PRIVATE_STATE).parts[0])
    for state in elsewhere:
        shutil.rmtree(state, ignore_errors=True)


def remove_instance(folder: Path) -> None:
    """Delete `folder` (one or several stopped lab instances) and their state kept elsewhere."""
    remove_private_state(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _check_topic_level(name: str, value: str) -> None:
    problem = name_problem(value)
    if problem is not None:
        raise ConfigError(
            f"{name}={value!r} must be a non-empty topic level without '+', '#' or '/' ({problem})"
        )


@dataclass(frozen=True)
class LabConfig:
    """Paths and validated variables of one lab instance."""

    root: Path
    env_file: Path
    data_dir: Path
    env: dict[str, str]
    python_env: Path | None = None  # another virtual environment than the checkout's .venv

    @classmethod
    def load(cls, env_file: Path | None = None, data_dir: Path | None = None) -> LabConfig:
        """Read and validate the env file (which must exist; see `envfile.ensure`)."""
        env_file = (env_file or ROOT / ".env").resolve()
        data_dir = (data_dir or ROOT / "data").resolve()
        if not env_file.exists():
            raise ConfigError(f"{env_file} does not exist; run ./lab up (or ./lab env) to create it")
        env = envfile.read_with_defaults(env_file, ROOT / ".env.example")
        example = envfile.read(ROOT / ".env.example")
        empty = envfile.missing_secrets(env, example)
        if empty:
            raise ConfigError(
                f"{env_file}: missing or empty secret(s) {', '.join(empty)}; set a value for each "
                "(or remove the file and run ./lab env to generate a new one)"
            )
        config = cls(root=ROOT, env_file=env_file, data_dir=data_dir, env=env)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse ports out of range or shared, and topic levels the broker cannot use."""
        seen: dict[int, str] = {}
        for name in PORT_VARIABLES:
            port = self.port(name)
            if port in seen:
                raise ConfigError(f"{name} and {seen[port]} are both {port}; give each service its own port")
            seen[port] = name
        _check_topic_level("TOPIC_ROOT", self.env["TOPIC_ROOT"])
        _check_topic_level("LAB_DEVICE_ID", self.env["LAB_DEVICE_ID"])
        accounts = {
            "MQTT_ADMIN_USER": self.env["MQTT_ADMIN_USER"],
            "the portal": "portal",
            "Node-RED": "nodered",
            "LAB_DEVICE_ID": self.env["LAB_DEVICE_ID"],
            "LAB_FLEET_USER": self.env["LAB_FLEET_USER"],
        }
        owners: dict[str, str] = {}
        for owner, username in accounts.items():
            if not username:
                raise ConfigError(f"{owner} is empty; every broker account needs a user name")
            if username in owners:
                raise ConfigError(
                    f"{owners[username]} and {owner} are both the broker account {username!r}; "
                    "give each its own name"
                )
            owners[username] = owner

    def port(self, name: str) -> int:
        """A port variable as an int, with a clear error when it is not a valid port."""
        raw = self.env.get(name, "")
        try:
            port = int(raw)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise ConfigError(f"{name}={raw!r} in {self.env_file} is not a port number (1-65535)")
        return port

    def state_dir(self, name: str, run_user: str | None = None) -> Path:
        """The state folder of one service: `<data>/<name>`.

        A service that runs as another (unprivileged) user must be able to reach it. When
        the data folder lies where that user cannot go (a checkout under /root, say), the
        state lives under /var/lib/iot-lab/ instead and `<data>/<name>` links to it.
        """
        default = self.data_dir / name
        if run_user is None or os.geteuid() != 0 or _others_can_reach(self.data_dir):
            return default
        key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        target = PRIVATE_STATE / key / name
        target.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o755)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not default.is_symlink():
            default.symlink_to(target)
        return target

    @property
    def venv(self) -> Path:
        """The project's Python environment (shared by every instance of one checkout)."""
        return self.python_env or self.root / ".venv"

    @property
    def logs_dir(self) -> Path:
        """Where each service writes `<service>.log`."""
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Where pid files live."""
        return self.data_dir / "run"

    @property
    def tls_dir(self) -> Path:
        """Folder holding `server.crt` and `server.key` for the broker's TLS listener."""
        return Path(self.env.get("MQTT_TLS_DIR") or self.root / "mosquitto" / "certs")

    def service_env(self) -> dict[str, str]:
        """Environment for the lab's processes: the machine's, plus the lab's variables."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(
            MQTT_HOST="127.0.0.1",
            POSTGRES_HOST="127.0.0.1",
            NODERED_HOST="127.0.0.1",
        )
        return env
