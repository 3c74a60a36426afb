"""The portal's settings, read once from environment variables (and `.env`).

The variable names are a user-facing contract shared by the native run and Docker Compose:

========================  ===========  =============================================
variable                  default      meaning
========================  ===========  =============================================
``MQTT_HOST``             127.0.0.1    broker address
``MQTT_PORT``             1883         broker port
``MQTT_PORTAL_PASSWORD``  (required)   password of the broker account ``portal``
``TOPIC_ROOT``            office       first topic level of telemetry
``POSTGRES_HOST``         127.0.0.1    database address
``POSTGRES_PORT``         5432         database port
``POSTGRES_PASSWORD``     (required)   password of the database user ``lab``
``GRAFANA_DB_PASSWORD``   (none)       migrations only: password of the read-only role ``grafana``
``PORTAL_PORT``           5000         HTTP port (used by the launcher's bind)
``PORTAL_ADMIN_USER``     admin        login name of the portal administrator
``PORTAL_ADMIN_PASSWORD`` (required)   password of the portal administrator
``PORTAL_SECRET_KEY``     (required)   key that signs the session cookie
``PORTAL_LIVE_FLUSH_MS``  100          live updates: shortest time between two flushes
``PORTAL_OFFLINE_AFTER_S`` 60          pages mark a device offline after this much silence
``PORTAL_MAX_DEVICES_PER_ROOM`` 10000  most devices kept in one room (new ones past it refused)
``PORTAL_MAX_DEVICES``    100000       most devices kept in the lab (new ones past it refused)
``RETENTION_DAYS``        30           days of telemetry kept (whole UTC days dropped after); 0 keeps all
``MQTT_CLIENT_ID``        lab-portal   client id of the portal's persistent session
``INGEST_BATCH_MAX``      5000         most readings stored per transaction
``INGEST_LINGER_MS``      20           wait for more readings before a partial batch
``INGEST_BUFFER_MAX``     20000        readings held in memory before ingest blocks
``MQTT_SHARE_GROUP``      (none)       replicas: the shared subscription group they ingest through
``MQTT_SHARE_PEERS``      (none)       replicas: every replica's ``MQTT_CLIENT_ID``, comma-separated
``REDIS_URL``             (none)       replicas: the Redis that carries live values between them
``PORTAL_REPLICA``        (none)       replicas: this one's name, shown to its viewers
========================  ===========  =============================================

Ingest acknowledges a QoS 1 message only once the batch holding it is committed, so the broker's
in-flight window (``max_inflight_messages`` in ``mosquitto/mosquitto.conf.template``, 20000) must
stay well above ``INGEST_BATCH_MAX``, or batches stop filling up. Replicas of the portal need one
``MQTT_CLIENT_ID`` each: the broker keeps one session (and its queued messages) per id.

Variables set in the process environment win over the same names in a `.env` file in the
working directory. Secrets must be non-empty: a missing or blank one is refused with a
:class:`SettingsError` whose message is one line naming the variable.
"""

from __future__ import annotations

from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL

from web.errors import PortalError
from wire.names import name_problem

#: The database and its owner are both called this (see docker-compose.yml and ./lab).
DATABASE_NAME = "lab"
DATABASE_USER = "lab"
#: The broker account the portal connects as.
MQTT_USERNAME = "portal"
#: First topic level of the alarms Node-RED rules publish (never telemetry).
ALARMS_ROOT = "alarms"


_EMPTY = "must not be empty"


class SettingsError(PortalError, ValueError):
    """The environment does not describe a usable configuration; the message says what to fix."""


class _EnvSettings(BaseSettings):
    """Shared behaviour: frozen, names read verbatim, unrelated variables in `.env` ignored."""

    model_config = SettingsConfigDict(
        frozen=True,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    @field_validator("*", mode="after")
    @classmethod
    def _secrets_not_blank(cls, value: Any) -> Any:
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            raise ValueError(_EMPTY)
        return value

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Read the settings from the environment, turning validation errors into one clear line.

        Raises:
            SettingsError: a variable is missing, blank or malformed.
        """
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
        if error["type"] == "missing":
            problems.append(f"{name} is not set")
        elif str(error["msg"]).endswith(_EMPTY):
            problems.append(f"{name} is empty")
        else:
            problems.append(f"{name} is invalid ({error['msg']})")
    return (
        "configuration error: "
        + "; ".join(problems)
        + " - set it in the environment or in .env (see .env.example)"
    )


class DatabaseSettings(_EnvSettings):
    """What a program needs to reach the lab database (the portal and the migrations)."""

    postgres_host: str = "127.0.0.1"
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    postgres_password: SecretStr
    # Read by the migrations, which create the read-only role `grafana` when it is set
    # (db/migrations/grafana_role.py); the portal itself never logs in as that role.
    grafana_db_password: SecretStr | None = None

    @property
    def database_url(self) -> URL:
        """SQLAlchemy URL for psycopg 3; the password is escaped by :class:`URL`, never formatted in."""
        return URL.create(
            "postgresql+psycopg",
            username=DATABASE_USER,
            password=self.postgres_password.get_secret_value(),
            host=self.postgres_host,
            port=self.postgres_port,
            database=DATABASE_NAME,
        )


class Settings(DatabaseSettings):
    """Everything the portal reads from its environment."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_portal_password: SecretStr
    mqtt_client_id: str = Field(default="lab-portal", min_length=1, max_length=128, pattern=r"^[!-~]+$")
    #: Portal replicas share ingest: each subscribes as a member of this shared subscription group
    #: (``$share/<group>/...``), with its own ``MQTT_CLIENT_ID``; unset, one portal takes everything.
    mqtt_share_group: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[!-~]+$")
    #: The client ids of every member of the group (``MQTT_SHARE_PEERS``, comma-separated): a member
    #: takes over the broker session of one that died (:mod:`web.takeover`).
    mqtt_share_peers: str = Field(default="", max_length=4096, pattern=r"^[!-~]*$")
    topic_root: str = "office"
    #: Several replicas: live values and events for everybody travel between them through this
    #: Redis (``redis://:<password>@host:port/db``, :mod:`web.fanout`); unset, one portal serves all.
    redis_url: SecretStr | None = None
    #: This replica's name, shown to its viewers (``./lab`` sets ``web-1``, ``web-2``, ...).
    portal_replica: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[!-~]+$")

    ingest_batch_max: int = Field(default=5000, ge=1, le=50_000)
    ingest_linger_ms: int = Field(default=20, ge=0, le=10_000)
    ingest_buffer_max: int = Field(default=20_000, ge=1, le=10_000_000)

    portal_port: int = Field(default=5000, ge=1, le=65535)
    portal_admin_user: str = Field(default="admin", min_length=1)
    portal_admin_password: SecretStr
    portal_secret_key: SecretStr
    portal_live_flush_ms: int = Field(default=100, ge=10, le=60_000)
    portal_offline_after_s: int = Field(default=60, ge=1)
    portal_max_devices_per_room: int = Field(default=10_000, ge=1, le=10_000_000)
    portal_max_devices: int = Field(default=100_000, ge=1, le=10_000_000)
    retention_days: int = Field(default=30, ge=0, le=36_500)

    @field_validator("mqtt_share_group")
    @classmethod
    def _group_name(cls, value: str | None) -> str | None:
        if value is not None and any(char in value for char in "/+#"):
            raise ValueError("must be a shared subscription group name: without '/', '+' or '#'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = urlsplit(value.get_secret_value())
            if url.scheme not in ("redis", "rediss") or not url.hostname:
                raise ValueError("must be a Redis URL: redis://:<password>@<host>:<port>/<db>")
            try:
                url.port  # noqa: B018 - raises for a port out of range
            except ValueError as exc:
                raise ValueError("must be a Redis URL with a valid port") from exc
        return value

    @field_validator("topic_root")
    @classmethod
    def _plain_topic_level(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(f"must be one topic level: non-empty, without '+', '#' or '/' ({problem})")
        if value == ALARMS_ROOT:
            raise ValueError(f"{ALARMS_ROOT!r} is the root of alarm topics; choose another")
        return value

    @property
    def share_peers(self) -> tuple[str, ...]:
        """The other members of the share group, by client id (none without a group)."""
        if self.mqtt_share_group is None:
            return ()
        peers = self.mqtt_share_peers.split(",")
        return tuple(dict.fromkeys(peer for peer in peers if peer and peer != self.mqtt_client_id))

    @property
    def mqtt_username(self) -> str:
        """The broker account name, fixed by the lab's ACL."""
        return MQTT_USERNAME
