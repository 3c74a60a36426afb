"""The read-only PostgreSQL role ``grafana``: it may log in and read the view ``readings``, nothing else.

Every migration run (``db/migrations/env.py``) brings the role to this state, inside the migration
lock and after the migrations, when ``GRAFANA_DB_PASSWORD`` is set; so a password changed in `.env`
holds from the portal's next start (``./lab up``, or its container's ``alembic upgrade head``).

What the role may do, and what enforces it:

* **Read** ``readings`` (telemetry joined with its room, device and attribute names): ``SELECT`` on
  that view and no privilege on any other table, view or sequence (any granted by hand is revoked
  at each run). The view reads the tables with its owner's rights, so they stay closed to the role.
* **Write nothing.** It holds no privilege that writes, and may not do what PostgreSQL lets any
  login do by default: create temporary tables, or large objects (``lo_create`` even works in a
  read-only transaction). Those defaults are revoked from ``PUBLIC`` in the lab's database; the
  lab's own user is its owner and a superuser, so it keeps them.
* **Hold the database up for little**: at most :data:`CONNECTION_LIMIT` sessions at once.

Its sessions also start read-only, stop a statement after :data:`STATEMENT_TIMEOUT` and end a
transaction left idle after :data:`IDLE_IN_TRANSACTION_TIMEOUT`. Those are defaults a session may
change with ``SET``; the privileges above are the boundary, the defaults a second line behind it.

The password itself never leaves this process, so no log on either side can hold it: libpq turns
it into the SCRAM verifier PostgreSQL stores (as psql's ``\\password`` does), and PostgreSQL quotes
that verifier into the statement (``format('%L')``); nothing is formatted into SQL here.
"""

from __future__ import annotations

from typing import cast

import psycopg
from sqlalchemy import Connection, text

from web.settings import DATABASE_NAME

#: The role's name: the user Grafana's data source logs in as.
ROLE = "grafana"
#: The one relation the role may read.
READABLE = "readings"
#: Most sessions the role may hold at once.
CONNECTION_LIMIT = 10
#: Defaults of the role's sessions.
STATEMENT_TIMEOUT = "30s"
IDLE_IN_TRANSACTION_TIMEOUT = "1min"

_ATTRIBUTES = (
    f"ALTER ROLE {ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION "
    f"NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT}"
)
_SESSION_DEFAULTS = (
    f"ALTER ROLE {ROLE} RESET ALL",
    f"ALTER ROLE {ROLE} IN DATABASE {DATABASE_NAME} RESET ALL",
    f"ALTER ROLE {ROLE} SET default_transaction_read_only = on",
    f"ALTER ROLE {ROLE} SET statement_timeout = '{STATEMENT_TIMEOUT}'",
    f"ALTER ROLE {ROLE} SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'",
)
# What any login may do in a new database and no reader should: create objects in the schema
# (PostgreSQL 15 no longer allows it, older clusters did), temporary tables and large objects.
_PUBLIC_DEFAULTS = (
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    f"REVOKE TEMPORARY ON DATABASE {DATABASE_NAME} FROM PUBLIC",
    "REVOKE EXECUTE ON FUNCTION lo_creat(integer), lo_create(oid), lo_from_bytea(oid, bytea) FROM PUBLIC",
)
_PRIVILEGES = (
    f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE}",
    f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ROLE}",
    f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {ROLE}",
    f"REVOKE ALL ON SCHEMA public FROM {ROLE}",
    f"REVOKE ALL ON DATABASE {DATABASE_NAME} FROM {ROLE}",
    f"GRANT CONNECT ON DATABASE {DATABASE_NAME} TO {ROLE}",
    f"GRANT USAGE ON SCHEMA public TO {ROLE}",
)


def ensure_grafana_role(connection: Connection, password: str) -> None:
    """Create the role or bring it up to date, with this password; the caller commits.

    Statements run on `connection` (the lab's owner, in the migration's lock); the password is
    sent only as a SCRAM verifier, bound as a parameter and quoted by PostgreSQL.
    """
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": ROLE})
    if exists.first() is None:
        connection.execute(text(f"CREATE ROLE {ROLE}"))
    connection.execute(text(_ATTRIBUTES))
    driver = cast(psycopg.Connection[object], connection.connection.driver_connection)
    # The SCRAM-SHA-256 verifier PostgreSQL stores, computed by libpq on this side.
    verifier = driver.pgconn.encrypt_password(password.encode(), ROLE.encode(), b"scram-sha-256")
    statement = connection.execute(
        text(f"SELECT format('ALTER ROLE {ROLE} PASSWORD %L', CAST(:verifier AS text))"),
        {"verifier": verifier.decode()},
    ).scalar_one()
    # Sent as it is, in the same transaction: SQLAlchemy and psycopg would each read placeholders
    # in it (":name", "%s") when run through them with parameters.
    with driver.cursor() as cursor:
        cursor.execute(statement.encode())
    for sql in (*_SESSION_DEFAULTS, *_PUBLIC_DEFAULTS, *_PRIVILEGES):
        connection.execute(text(sql))
    if connection.execute(text("SELECT to_regclass(:name)"), {"name": READABLE}).scalar() is not None:
        connection.execute(text(f"GRANT SELECT ON {READABLE} TO {ROLE}"))
