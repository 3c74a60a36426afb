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
``PORTAL_PORT``           5000         HTTP port (used by the launcher's bind)
``PORTAL_ADMIN_USER``     admin        login name of the portal administrator
``PORTAL_ADMIN_PASSWORD`` (required)   password of the portal administrator
``PORTAL_SECRET_KEY``     (required)   key that signs the session cookie
========================  ===========  =============================================

Variables set in the process environment win over the same names in a `.env` file in the
working directory. Secrets must be non-empty: a missing or blank one is refused with a
:class:`SettingsError` whose message is one line naming the variable.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL

#: The database and its owner are both called this (see docker-compose.yml and ./lab).
DATABASE_NAME = "lab"
DATABASE_USER = "lab"
#: The broker account the portal connects as.
MQTT_USERNAME = "portal"


_EMPTY = "must not be empty"


class SettingsError(ValueError):
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
    topic_root: str = "office"

    portal_port: int = Field(default=5000, ge=1, le=65535)
    portal_admin_user: str = Field(default="admin", min_length=1)
    portal_admin_password: SecretStr
    portal_secret_key: SecretStr

    @field_validator("topic_root")
    @classmethod
    def _plain_topic_level(cls, value: str) -> str:
        if not value or any(char in value for char in "+#/") or "\x00" in value:
            raise ValueError("must be one topic level: non-empty, without '+', '#' or '/'")
        return value

    @property
    def mqtt_username(self) -> str:
        """The broker account name, fixed by the lab's ACL."""
        return MQTT_USERNAME
