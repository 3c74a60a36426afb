"""Initial schema: device registry, telemetry, last values, alarms, and the readings view.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Data model
----------
* ``rooms`` -> ``devices`` -> ``attributes`` is the registry, filled by the portal the first time
  a topic ``<root>/<room>/<device>/<attr>`` is seen. Names are stored exactly as in the topic.
* ``telemetry`` holds one row per received value. Numbers **and booleans** go to ``value_num``
  (``true``/``false`` become 1 and 0, so averages of on/off states are duty cycles); strings go to
  ``value_text``. A check constraint makes exactly one of the two set. ``ts`` is the device's
  timestamp when the payload carried one, else the time the portal received the message.
  Indexes: ``(attribute_id, ts)`` for "one attribute over a time range", BRIN on ``ts`` for
  "everything in a time range" (cheap on append-mostly time series).
* ``latest`` keeps the last value per attribute (highest ``ts``), for live snapshots.
* ``alarms`` is a first version of the alarms Node-RED rules raise; later migrations extend it.
* The view ``readings(ts, room, device, attr, value_num, value_text)`` joins it all by name, for
  people querying the lab directly::

      SELECT ts, value_num FROM readings
      WHERE room = 'lab' AND device = 'sensor1' AND attr = 'temperature' ORDER BY ts;

Deleting a room, device or attribute deletes what hangs below it (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONE_VALUE = "(value_num IS NULL) <> (value_text IS NULL)"

_READINGS_VIEW = """
CREATE VIEW readings AS
SELECT t.ts,
       r.name AS room,
       d.name AS device,
       a.name AS attr,
       t.value_num,
       t.value_text
FROM telemetry t
JOIN attributes a ON a.id = t.attribute_id
JOIN devices d ON d.id = a.device_id
JOIN rooms r ON r.id = d.room_id
"""


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.UniqueConstraint("name", name="rooms_name_key"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("room_id", sa.Integer, sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True)),
        sa.Column("last_seen", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("room_id", "name", name="devices_room_id_name_key"),
    )
    op.create_table(
        "attributes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.UniqueConstraint("device_id", "name", name="attributes_device_id_name_key"),
    )
    op.create_table(
        "telemetry",
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "attribute_id",
            sa.Integer,
            sa.ForeignKey("attributes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("value_num", sa.Double),
        sa.Column("value_text", sa.Text),
        sa.CheckConstraint(_ONE_VALUE, name="telemetry_one_value"),
    )
    op.create_index("telemetry_attribute_id_ts_idx", "telemetry", ["attribute_id", "ts"])
    op.create_index("telemetry_ts_brin", "telemetry", ["ts"], postgresql_using="brin")
    op.create_table(
        "latest",
        sa.Column(
            "attribute_id",
            sa.Integer,
            sa.ForeignKey("attributes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value_num", sa.Double),
        sa.Column("value_text", sa.Text),
        sa.CheckConstraint(_ONE_VALUE, name="latest_one_value"),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.BigInteger, primary_key=True),  # BIGSERIAL
        sa.Column("room", sa.Text),
        sa.Column("device", sa.Text),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("severity", sa.Text),
        sa.Column("state", sa.Text, nullable=False, server_default="active"),
        sa.Column("value", postgresql.JSONB),
        sa.Column("ts", sa.DateTime(timezone=True)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("acked_at", sa.DateTime(timezone=True)),
        sa.Column("acked_by", sa.Text),
        sa.Column("cleared_at", sa.DateTime(timezone=True)),
    )
    op.create_index("alarms_room_device_type_idx", "alarms", ["room", "device", "type"])
    op.execute(_READINGS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS readings")
    op.drop_table("alarms")
    op.drop_table("latest")
    op.drop_table("telemetry")
    op.drop_table("attributes")
    op.drop_table("devices")
    op.drop_table("rooms")
