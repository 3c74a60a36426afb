"""Alembic environment: connects to the lab database described by the environment variables.

The URL comes from :class:`web.settings.DatabaseSettings` (``POSTGRES_HOST``, ``POSTGRES_PORT``,
``POSTGRES_PASSWORD``; database and user ``lab``), never from alembic.ini, so migrations and the
portal always agree on where the database is. Only those variables are needed to migrate.

With ``GRAFANA_DB_PASSWORD`` set too, each run also creates or updates the read-only role
``grafana`` (see ``db/migrations/grafana_role.py``) after the migrations, inside the same lock.
Emitting SQL (``--sql``) leaves the role out: its password has no place in a script.
"""

from __future__ import annotations

from logging.config import fileConfig

import psycopg
from alembic import context
from pydantic import SecretStr
from sqlalchemy import URL, Connection, create_engine, pool, text
from sqlalchemy.exc import DBAPIError, OperationalError

from db.migrations.grafana_role import ROLE, ensure_grafana_role
from web.db_errors import first_line
from web.settings import DatabaseSettings, SettingsError

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The migrations are written by hand (no autogenerate): there is no target metadata.
target_metadata = None
# Held for the duration of a migration so two processes (say, two portal replicas starting at
# once) never migrate concurrently. Any constant works; this one spells "lab" in ASCII.
MIGRATION_LOCK_ID = 0x6C6162


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (``alembic ... upgrade head --sql``) without a database."""
    context.configure(
        url=URL.create("postgresql+psycopg"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _set_up_grafana_role(connection: Connection, password: SecretStr) -> None:
    """The read-only role with the password of ``GRAFANA_DB_PASSWORD``, committed."""
    try:
        ensure_grafana_role(connection, password.get_secret_value())
        connection.commit()
    except (DBAPIError, psycopg.Error) as exc:
        raise SystemExit(f"cannot set up the read-only role {ROLE}: {first_line(exc)}") from None


def run_migrations_online() -> None:
    """Apply the migrations to the database named by the environment."""
    try:
        settings = DatabaseSettings.from_env()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    url = settings.database_url
    # hide_parameters: an error never shows a bound value (the role's password verifier is one)
    engine = create_engine(
        url, poolclass=pool.NullPool, connect_args={"connect_timeout": 10}, hide_parameters=True
    )
    try:
        try:
            connection = engine.connect()
        except OperationalError as exc:
            raise SystemExit(
                f"cannot reach PostgreSQL at {url.host}:{url.port} as user {url.username}: {first_line(exc)}"
            ) from None
        with connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
            try:
                context.configure(connection=connection, target_metadata=target_metadata)
                with context.begin_transaction():
                    context.run_migrations()
                if settings.grafana_db_password is not None:
                    _set_up_grafana_role(connection, settings.grafana_db_password)
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
