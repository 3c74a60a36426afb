"""The database tables as SQLAlchemy Core objects, for building queries.

The schema itself is owned by the Alembic migrations in ``db/migrations``; this module mirrors the
columns the portal reads and writes and must change together with a new migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

rooms = Table(
    "rooms",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("room_id", Integer, ForeignKey("rooms.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("first_seen", DateTime(timezone=True)),
    Column("last_seen", DateTime(timezone=True)),
    Column("presence", Text),
    Column("presence_at", DateTime(timezone=True)),
)

attributes = Table(
    "attributes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("unit", Text),
    Column("unit_at", DateTime(timezone=True)),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("attribute_id", Integer, ForeignKey("attributes.id"), nullable=False),
    Column("value_num", Double),
    Column("value_text", Text),
)

telemetry_1m = Table(
    "telemetry_1m",
    metadata,
    Column("attribute_id", Integer, ForeignKey("attributes.id"), primary_key=True),
    Column("bucket", DateTime(timezone=True), primary_key=True),
    Column("n_all", BigInteger, nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("total", Double),
    Column("lo", Double),
    Column("hi", Double),
    Column("last_ts", DateTime(timezone=True), nullable=False),
    Column("last_num", Double),
    Column("last_text", Text),
)

latest = Table(
    "latest",
    metadata,
    Column("attribute_id", Integer, ForeignKey("attributes.id"), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("value_num", Double),
    Column("value_text", Text),
)

alarms = Table(
    "alarms",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("room", Text),
    Column("device", Text),
    Column("type", Text, nullable=False),
    Column("severity", Text),
    Column("state", Text, nullable=False),
    Column("value", JSONB),
    Column("ts", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("acked_at", DateTime(timezone=True)),
    Column("acked_by", Text),
    Column("cleared_at", DateTime(timezone=True)),
    Column("cleared_by", Text),
    Column("raised_at", DateTime(timezone=True), nullable=False),
)

alarm_events = Table(
    "alarm_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("alarm_id", BigInteger, ForeignKey("alarms.id"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("actor", Text),
    Column("severity", Text),
    Column("value", JSONB),
    Column("ts", DateTime(timezone=True)),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_name", Text, nullable=False),
    Column("label", Text),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", Text, primary_key=True),
    Column("user_name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
)
