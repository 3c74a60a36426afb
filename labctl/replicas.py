"""Several portal replicas (PORTAL_REPLICAS above 1): Redis, the replicas and the front.

With N replicas the native lab runs, after `db`, `mosquitto` and `nodered`: `redis`, `web-1` ...
`web-N` and `front`, in that order (they stop in reverse). Each replica is the portal exactly as
a single one runs (`Portal.spec`), on 127.0.0.1:PORTAL_REPLICA_PORT+i-1, with these variables on
top of the lab's; they are the contract the portal reads (`web.settings`):

* `MQTT_CLIENT_ID`: `<MQTT_CLIENT_ID>-<i>`, the replica's own persistent broker session;
* `MQTT_SHARE_GROUP`: `<MQTT_CLIENT_ID>`, the shared subscription every replica joins;
* `MQTT_SHARE_PEERS`: every replica's client id, so that a survivor takes over the share of one
  that died;
* `REDIS_URL`: Redis, with its password, which carries Socket.IO's messages between replicas;
* `PORTAL_REPLICA`: `web-<i>`, the replica's name as users see it.

The front (HAProxy, `labctl.front`) serves them all on PORTAL_PORT. Compose's profile `replicas`
runs the same with two replicas (docker-compose.yml).
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from labctl import front, health
from labctl.config import LabConfig
from labctl.process import ProcessSpec
from labctl.services import Portal, Service, ServiceError, system_user

#: Connections Redis accepts per replica (its Socket.IO queue and live values use a few each),
#: and beside them for probes and `redis-cli`.
REDIS_CLIENTS_PER_REPLICA = 256
REDIS_SPARE_CLIENTS = 32
#: The port inside the Compose network (docker-compose.yml publishes REDIS_PORT to it).
REDIS_CONTAINER_PORT = 6379


def replica_name(number: int) -> str:
    """The name of replica `number` (1-based): in `./lab`, its log file, the front and the portal."""
    return f"web-{number}"


def replica_variables(env: Mapping[str, str], number: int, count: int, redis: str) -> dict[str, str]:
    """What replica `number` of `count` reads on top of the lab's variables (`env`, from `.env`).

    `redis` is the `host:port` where the replicas reach Redis.
    """
    group = env["MQTT_CLIENT_ID"]
    return {
        "MQTT_CLIENT_ID": f"{group}-{number}",
        "MQTT_SHARE_GROUP": group,
        "MQTT_SHARE_PEERS": ",".join(f"{group}-{peer}" for peer in range(1, count + 1)),
        "REDIS_URL": f"redis://:{quote(env['REDIS_PASSWORD'], safe='')}@{redis}/0",
        "PORTAL_REPLICA": replica_name(number),
    }


def redis_directives(replicas: int) -> dict[str, str]:
    """Redis settings shared by the native run and Compose (beside the password): no persistence."""
    return {
        "protected-mode": "yes",
        # It carries live messages only: nothing is worth keeping across a restart.
        "save": "",
        "appendonly": "no",
        "maxclients": str(REDIS_CLIENTS_PER_REPLICA * replicas + REDIS_SPARE_CLIENTS),
    }


def _quoted(value: str) -> str:
    """A redis.conf value in double quotes: kept whole with spaces in it, `""` when empty."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Redis(Service):
    """Redis from Debian's packages, on 127.0.0.1 only, with a password and no persistence."""

    name = "redis"
    title = "Redis"
    port_variable = "REDIS_PORT"
    run_user = "redis"
    start_timeout = 15.0

    @property
    def config_file(self) -> Path:
        """`redis.conf` in the state folder (it holds the password: its owner alone reads it)."""
        return self.state_dir / "redis.conf"

    def render_config(self) -> str:
        """redis.conf for this lab."""
        directives = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "requirepass": self.lab.env["REDIS_PASSWORD"],
            "daemonize": "no",
            "logfile": "",  # standard output: data/logs/redis.log
            "dir": str(self.state_dir),
            **redis_directives(self.lab.replicas),
        }
        return "".join(f"{key} {_quoted(value)}\n" for key, value in directives.items())

    def prepare(self) -> None:
        """Write redis.conf, readable by the user Redis runs as and no one else."""
        user = system_user("redis")
        state = self.state_dir
        state.mkdir(parents=True, exist_ok=True)
        state.chmod(0o700)
        path = self.config_file
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(self.render_config())
        if user is not None:
            entry = pwd.getpwnam(user)
            for owned in (state, path):
                os.chown(owned, entry.pw_uid, entry.pw_gid)

    def spec(self) -> ProcessSpec:
        """redis-server in the foreground, as the `redis` user when the lab is started by root."""
        server = shutil.which("redis-server")
        if server is None:
            raise ServiceError("redis-server not found; install it: apt-get install redis-server")
        return ProcessSpec(
            name=self.name,
            argv=[server, str(self.config_file)],
            env=self.lab.service_env(),
            cwd=self.state_dir,
            user=system_user("redis"),
        )

    def probe(self) -> str | None:
        """AUTH with the password of `.env`, then PING."""
        problem = health.redis_ping(self.port, self.lab.env["REDIS_PASSWORD"])
        if problem == "password refused":
            return (
                "REDIS_PASSWORD in .env differs from the one this Redis was started with; "
                "restart it: ./lab restart redis"
            )
        return problem

    def url(self) -> str:
        """The address, without the password."""
        return f"redis://127.0.0.1:{self.port}"


class PortalReplica(Portal):
    """One of several portals: `web-<number>`, on its own port, sharing ingest and live updates."""

    port_variable = "PORTAL_REPLICA_PORT"

    def __init__(self, lab: LabConfig, number: int) -> None:
        super().__init__(lab)
        self.number = number
        self.name = replica_name(number)
        self.title = f"Portal {self.name}"

    @property
    def port(self) -> int:
        """PORTAL_REPLICA_PORT + number - 1."""
        return self.lab.replica_port(self.number)

    @property
    def port_source(self) -> str:
        """The replica's place in the range of PORTAL_REPLICA_PORT."""
        return f"PORTAL_REPLICA_PORT+{self.number - 1}" if self.number > 1 else self.port_variable

    def prepare(self) -> None:
        """Nothing: the lab migrates the database once, before the first replica starts."""

    def environment(self) -> dict[str, str]:
        """The lab's variables and this replica's (see the module's docstring)."""
        redis = f"127.0.0.1:{self.lab.port('REDIS_PORT')}"
        return {
            **super().environment(),
            **replica_variables(self.lab.env, self.number, self.lab.replicas, redis),
        }


class Front(Service):
    """HAProxy from Debian's packages: the portal's address (PORTAL_PORT) for every replica."""

    name = "front"
    title = "Front (HAProxy)"
    port_variable = "PORTAL_PORT"
    start_timeout = 15.0

    @property
    def config_file(self) -> Path:
        """`haproxy.cfg` in the state folder (no secret in it)."""
        return self.state_dir / "haproxy.cfg"

    def profile(self) -> front.Profile:
        """On 127.0.0.1:PORTAL_PORT, every replica behind; as `haproxy` when started by root."""
        replicas = tuple(
            (replica_name(number), f"127.0.0.1:{self.lab.replica_port(number)}")
            for number in range(1, self.lab.replicas + 1)
        )
        return front.Profile(bind=f"127.0.0.1:{self.port}", replicas=replicas, user=system_user("haproxy"))

    def prepare(self) -> None:
        """Write haproxy.cfg for the replicas of `.env`."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(front.render_config(self.profile()))

    def spec(self) -> ProcessSpec:
        """haproxy in the foreground (-db); started by root, it drops to `haproxy` after binding."""
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise ServiceError("haproxy not found; install it: apt-get install haproxy")
        return ProcessSpec(
            name=self.name,
            argv=[haproxy, "-db", "-f", str(self.config_file)],
            env=self.lab.service_env(),
            cwd=self.state_dir,
        )

    def probe(self) -> str | None:
        """The portal's readiness, asked through the front."""
        return health.http_ok(f"http://127.0.0.1:{self.port}/readyz")

    def url(self) -> str:
        """The portal's address."""
        return f"http://127.0.0.1:{self.port}/"


def replica_services(lab: LabConfig) -> list[Service]:
    """What takes the single portal's place: Redis, every replica, then the front."""
    replicas: list[Service] = [PortalReplica(lab, number) for number in range(1, lab.replicas + 1)]
    return [Redis(lab), *replicas, Front(lab)]
