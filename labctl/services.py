"""The four services of the native run: how each is prepared, started and probed.

The order of `SERVICE_CLASSES` is the start order; they stop in reverse. Several portal
replicas (PORTAL_REPLICAS above 1) take the portal's place with Redis and a front: see
`labctl.replicas`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from labctl import broker, health
from labctl.config import LabConfig
from labctl.errors import LabError
from labctl.process import ProcessSpec, run_as


class ServiceError(LabError):
    """A service that cannot be prepared or started; the message says what to do."""


def _chown_for(user: str, *paths: Path) -> None:
    """Give `paths` to `user` when we are root and will run the service as that user."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def system_user(name: str) -> str | None:
    """The unprivileged account a service runs as when the lab is started by root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError as exc:
        raise ServiceError(f"user {name!r} does not exist; reinstall the {name} package") from exc
    return name


class Service(ABC):
    """One long-running process of the lab."""

    name: str
    title: str
    port_variable: str
    start_timeout: float = 30.0
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, lab: LabConfig) -> None:
        self.lab = lab

    @property
    def port(self) -> int:
        """The service's main port from `.env`."""
        return self.lab.port(self.port_variable)

    @property
    def port_source(self) -> str:
        """Where `port` comes from in `.env`, as a user would set it."""
        return self.port_variable

    # The unprivileged user the service runs as when the lab is started by root.
    run_user: str | None = None

    @property
    def state_dir(self) -> Path:
        """The service's own folder (see `LabConfig.state_dir`)."""
        return self.lab.state_dir(self.name, self.run_user)

    def prepare(self) -> None:  # noqa: B027 - optional hook, most services need nothing
        """Create or refresh files the service needs before it starts."""

    def after_start(self) -> None:  # noqa: B027 - optional hook
        """Finish setting up once the service answers (e.g. create a database)."""

    @abstractmethod
    def spec(self) -> ProcessSpec:
        """The command that runs the service in the foreground."""

    @abstractmethod
    def probe(self) -> str | None:
        """None when the service answers as it should, else a short reason."""

    def url(self) -> str:
        """Where a user reaches the service."""
        return f"127.0.0.1:{self.port}"


class Postgres(Service):
    """PostgreSQL from Debian's packages; database and superuser both `lab`, as in Compose."""

    name = "db"
    title = "PostgreSQL"
    port_variable = "POSTGRES_PORT"
    run_user = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, then stop

    @staticmethod
    def bin_dir() -> Path:
        """The newest installed PostgreSQL server's programs."""
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if not found:
            raise ServiceError("PostgreSQL server not found; install it: apt-get install postgresql")
        return found[-1].parent

    def prepare(self) -> None:
        """Run initdb once, as an unprivileged user (PostgreSQL refuses to run as root)."""
        data = self.state_dir
        if (data / "PG_VERSION").exists():
            return
        user = system_user("postgres")
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        _chown_for("postgres", data)
        with tempfile.TemporaryDirectory(prefix="lab-initdb-") as tmp:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(self.lab.env["POSTGRES_PASSWORD"] + "\n")
            if user:
                _chown_for(user, Path(tmp), pwfile)
            result = subprocess.run(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(data),
                    "--username=lab",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                capture_output=True,
                **run_as(user),
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")

    def spec(self) -> ProcessSpec:
        """postgres in the foreground, on 127.0.0.1 only, without a Unix socket."""
        return ProcessSpec(
            name=self.name,
            argv=[
                str(self.bin_dir() / "postgres"),
                "-D",
                str(self.state_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            env=self.lab.service_env(),
            cwd=self.lab.data_dir,
            user=system_user("postgres"),
            stop_signal=self.stop_signal,
        )

    def probe(self) -> str | None:
        """pg_isready on the lab's port."""
        return health.postgres_ready(str(self.bin_dir() / "pg_isready"), self.port)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement as `lab` over TCP; returns its unaligned output."""
        env = dict(os.environ, PGPASSWORD=self.lab.env["POSTGRES_PASSWORD"])
        result = subprocess.run(
            [
                str(self.bin_dir() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "lab",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "psql failed"
            if "password authentication failed" in message:
                message += (
                    " (POSTGRES_PASSWORD in .env differs from the one the database was created with;"
                    " restore it, or remove data/db to start an empty database)"
                )
            raise ServiceError(message)
        return result.stdout.strip()

    def after_start(self) -> None:
        """Create the `lab` database if it does not exist."""
        if self.psql("SELECT 1 FROM pg_database WHERE datname = 'lab'") != "1":
            self.psql("CREATE DATABASE lab OWNER lab")

    def url(self) -> str:
        """A libpq URL without the password."""
        return f"postgresql://lab@127.0.0.1:{self.port}/lab"


class Mosquitto(Service):
    """The MQTT broker, with the dynamic security plugin holding its accounts."""

    name = "mosquitto"
    title = "Mosquitto"
    port_variable = "MQTT_PORT"
    run_user = "mosquitto"  # mosquitto drops to this user itself when started as root
    start_timeout = 15.0

    def profile(self) -> broker.Profile:
        """The native profile: 127.0.0.1, ports from `.env`, this machine's plugin."""
        return broker.Profile(
            name="native",
            bind_address="127.0.0.1",
            mqtt_port=self.port,
            ws_port=self.lab.port("MQTT_WS_PORT"),
            tls_port=self.lab.port("MQTT_TLS_PORT"),
            state_dir=self.state_dir,
            tls_dir=self.lab.tls_dir,
            plugin=broker.find_plugin(),
        )

    def prepare(self) -> None:
        """Render the configuration and bring the seeded accounts up to date."""
        owner = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam(system_user("mosquitto") or "mosquitto")
            owner = (entry.pw_uid, entry.pw_gid)
        try:
            broker.write_state(self.profile(), self.lab.env, owner=owner)
        except FileNotFoundError as exc:
            raise ServiceError(str(exc)) from exc

    def spec(self) -> ProcessSpec:
        """mosquitto in the foreground (as root it drops to the `mosquitto` user itself)."""
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return ProcessSpec(
            name=self.name,
            # Line-buffered stdout, so its log file shows each line as it happens.
            argv=["stdbuf", "-oL", mosquitto, "-c", str(self.state_dir / "mosquitto.conf")],
            env=self.lab.service_env(),
            cwd=self.lab.data_dir,
        )

    def probe(self) -> str | None:
        """An MQTT login as the admin, and the WebSocket listener accepting connections."""
        problem = health.mqtt_connect(
            self.port, self.lab.env["MQTT_ADMIN_USER"], self.lab.env["MQTT_ADMIN_PASSWORD"]
        )
        if problem is None and not health.port_open(self.lab.port("MQTT_WS_PORT")):
            problem = "WebSocket listener closed"
        return problem

    def url(self) -> str:
        """MQTT and WebSocket addresses (and TLS when enabled)."""
        urls = f"mqtt://127.0.0.1:{self.port}  ws://127.0.0.1:{self.lab.port('MQTT_WS_PORT')}"
        if broker.tls_enabled(self.lab.tls_dir):
            urls += f"  mqtts://127.0.0.1:{self.lab.port('MQTT_TLS_PORT')}"
        return urls


#: Node.js code writing Node-RED's encrypted form of "no credentials" (aes-256-ctr under the
#: SHA-256 of the secret, the initial vector in hex before the base64 text) to argv[1].
_EMPTY_CREDENTIALS = """
const crypto = require("crypto");
const key = crypto.createHash("sha256").update(process.env.SECRET).digest();
const iv = crypto.randomBytes(16);
const cipher = crypto.createCipheriv("aes-256-ctr", key, iv);
const text = iv.toString("hex") + cipher.update("{}", "utf8", "base64") + cipher.final("base64");
require("fs").writeFileSync(process.argv[1], JSON.stringify({ $: text }, null, 4), { mode: 0o600 });
"""


class NodeRed(Service):
    """Node-RED, installed from npm as pinned in `nodered/package.json`."""

    name = "nodered"
    title = "Node-RED"
    port_variable = "NODERED_PORT"
    start_timeout = 90.0

    def prepare(self) -> None:
        """Node-RED keeps its user folder (credentials, installed nodes) in the state folder.

        The shipped flows hold no credentials (the broker password comes from the environment),
        so no credentials file would exist until a first deploy from the editor, and Node-RED
        warns at every start that it found none. The empty, encrypted file it would write is
        written here instead, with the key from .env (NODERED_CREDENTIAL_SECRET).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        credentials = self.state_dir / "flows_cred.json"
        node = shutil.which("node")
        if credentials.exists() or node is None:
            return
        subprocess.run(
            [node, "-e", _EMPTY_CREDENTIALS, str(credentials)],
            env={"PATH": os.environ.get("PATH", ""), "SECRET": self.lab.env["NODERED_CREDENTIAL_SECRET"]},
            check=True,
            timeout=30,
        )

    def spec(self) -> ProcessSpec:
        """node red.js with the repository's settings.js (which loads nodered/flows.json)."""
        red = self.lab.root / "nodered" / "node_modules" / "node-red" / "red.js"
        if not red.exists():
            raise ServiceError("Node-RED is not installed; run ./lab up (it runs npm ci in nodered/)")
        node = shutil.which("node")
        if node is None:
            raise ServiceError("Node.js not found; install it: apt-get install nodejs npm")
        return ProcessSpec(
            name=self.name,
            argv=[
                node,
                str(red),
                "--settings",
                str(self.lab.root / "nodered" / "settings.js"),
                "--userDir",
                str(self.state_dir),
            ],
            env=self.lab.service_env(),
            cwd=self.lab.root / "nodered",
        )

    def probe(self) -> str | None:
        """The flows' own health endpoint: rules loaded, broker connection up."""
        return health.http_ok(f"http://127.0.0.1:{self.port}/health")

    def url(self) -> str:
        """The editor's address."""
        return f"http://127.0.0.1:{self.port}/"


# Connections the portal's single gevent worker holds at once (each live browser keeps one open).
PORTAL_CONNECTIONS = 5000


class Portal(Service):
    """The Flask-SocketIO portal under gunicorn, from the project's environment."""

    name = "web"
    title = "Portal"
    port_variable = "PORTAL_PORT"

    def prepare(self) -> None:
        """Bring the database schema up to date first, as the portal's container does."""
        self.migrate()

    def migrate(self) -> None:
        """Apply the Alembic migrations of `db/` (the database must be running)."""
        result = subprocess.run(
            [
                str(self.lab.venv / "bin" / "alembic"),
                "-c",
                str(self.lab.root / "db" / "alembic.ini"),
                "upgrade",
                "head",
            ],
            cwd=self.lab.root,
            env=self.lab.service_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise ServiceError(f"database migrations failed:\n{tail}")

    def spec(self) -> ProcessSpec:
        """gunicorn with one gevent worker (Socket.IO needs a single process).

        Greenlets, not threads: pushing one update to hundreds of browsers is hundreds of
        cooperative socket writes, where threads would queue for the interpreter lock.
        """
        return ProcessSpec(
            name=self.name,
            argv=[
                str(self.lab.venv / "bin" / "gunicorn"),
                "--worker-class",
                "web.server.Worker",  # gevent, with gunicorn's own error answers in JSON
                "--workers",
                "1",
                "--worker-connections",
                str(PORTAL_CONNECTIONS),
                "--limit-request-line",
                "8190",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--graceful-timeout",
                "5",
                "--no-control-socket",  # its default path is shared by every gunicorn of the user
                "web:create_app()",
            ],
            env=self.environment(),
            cwd=self.lab.root,
        )

    def environment(self) -> dict[str, str]:
        """What the portal reads: the lab's variables (see `web.settings`)."""
        return self.lab.service_env()

    def probe(self) -> str | None:
        """Ready means the portal reaches both the broker and the database."""
        return health.http_ok(f"http://127.0.0.1:{self.port}/readyz")

    def url(self) -> str:
        """The portal's address."""
        return f"http://127.0.0.1:{self.port}/"


SERVICE_CLASSES: tuple[type[Service], ...] = (Postgres, Mosquitto, NodeRed, Portal)
SERVICE_NAMES = tuple(cls.name for cls in SERVICE_CLASSES)
