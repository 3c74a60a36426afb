"""One lab instance: its repository, `.env` file and state folder, validated once.

`./lab` uses the repository's `.env` and `data/`; the test suite starts further instances
with their own env file and state folder, on free ports, through the same code.
"""

from __future__ import annotations

import hashlib
import os
import re
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
    "REDIS_PORT",
    "PORTAL_REPLICA_PORT",
)

#: Ports used only with several portal replicas (PORTAL_REPLICAS above 1).
REPLICA_PORT_VARIABLES = ("REDIS_PORT", "PORTAL_REPLICA_PORT")

#: Most portal replicas one lab runs (PORTAL_REPLICAS); each is a gunicorn process of its own.
MAX_REPLICAS = 16


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


def _port_window() -> tuple[int, int]:
    """Where free ports are drawn: below the kernel's range for outgoing connections.

    A load test opening thousands of client connections could otherwise take a port between
    its choice here and the service binding it.
    """
    high = _ephemeral_floor()
    return (10_000 if high > 11_000 else 1_024), high


def _bound(port: int) -> socket.socket | None:
    """A socket bound to 127.0.0.1:`port`, or None when the port is in use."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def free_ports(count: int, block: int = 1) -> list[int]:
    """Ports nothing listens on right now on 127.0.0.1 (held open together, so all distinct).

    With `block` above 1, the last one is the first of `block` consecutive free ports (all
    distinct from the others): the portal replicas' range.
    """
    low, high = _port_window()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count - 1 + block:
            size = block if len(sockets) == count - 1 else 1
            first = secrets.randbelow(high - low - size) + low
            run = [_bound(port) for port in range(first, first + size)]
            if all(run):
                sockets.extend(sock for sock in run if sock is not None)
                continue
            for sock in run:  # one of them in use: draw again
                if sock is not None:
                    sock.close()
        return [sock.getsockname()[1] for sock in sockets[:count]]
    finally:
        for sock in sockets:
            sock.close()


def new_instance(folder: Path, **overrides: str) -> LabConfig:
    """A fresh lab instance in `folder`: `.env` with new secrets and free ports, state in `data/`.

    PORTAL_REPLICA_PORT starts a range of ports free for the most replicas. The test suite and
    the benchmarks run their labs this way, beside any lab already running.
    """
    names = [name for name in PORT_VARIABLES if name != "PORTAL_REPLICA_PORT"] + ["PORTAL_REPLICA_PORT"]
    ports = dict(zip(names, map(str, free_ports(len(names), block=MAX_REPLICAS)), strict=True))
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
            if name in REPLICA_PORT_VARIABLES and self.replicas == 1:
                continue  # unused by a single portal: an older .env may use the port for another
            if port in seen:
                raise ConfigError(f"{name} and {seen[port]} are both {port}; give each service its own port")
            seen[port] = name
        self._check_replicas(seen)
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

    @property
    def replicas(self) -> int:
        """How many portal processes run (PORTAL_REPLICAS); above 1 they share Redis and a front."""
        raw = self.env.get("PORTAL_REPLICAS", "1")
        if not re.fullmatch(r"[0-9]{1,2}", raw) or not 1 <= int(raw) <= MAX_REPLICAS:
            raise ConfigError(
                f"PORTAL_REPLICAS={raw!r} in {self.env_file} is not a whole number from 1 to {MAX_REPLICAS}"
            )
        return int(raw)

    def replica_port(self, number: int) -> int:
        """The port of portal replica `number` (1-based): PORTAL_REPLICA_PORT + number - 1."""
        return self.port("PORTAL_REPLICA_PORT") + number - 1

    def _check_replicas(self, taken: dict[int, str]) -> None:
        """With several replicas: a client id that can name their group, and a range of ports that
        fits and meets no other port variable."""
        count = self.replicas
        if count == 1:
            return
        group = self.env["MQTT_CLIENT_ID"]
        if not re.fullmatch(r"[!-~]{1,60}", group) or any(char in group for char in "/+#"):
            raise ConfigError(
                f"MQTT_CLIENT_ID={group!r} in {self.env_file} names the replicas' shared subscription: "
                "use 1 to 60 printable ASCII characters, without spaces, '/', '+' or '#'"
            )
        first, last = self.replica_port(1), self.replica_port(count)
        span = f"PORTAL_REPLICA_PORT..+{count - 1} ({first}-{last}, for PORTAL_REPLICAS={count})"
        if last > 65535:
            raise ConfigError(f"{span} in {self.env_file} goes past port 65535; lower PORTAL_REPLICA_PORT")
        for port in range(first + 1, last + 1):
            if port in taken:
                raise ConfigError(
                    f"{span} in {self.env_file} includes {taken[port]}={port}; "
                    "give the replicas a range of their own"
                )

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
