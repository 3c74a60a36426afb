"""Day partitions: telemetry and its rollups partitioned by time, so old days are dropped whole.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

``telemetry`` becomes partitioned by range of ``ts`` and ``telemetry_1m`` by range of ``bucket``,
with the same columns, constraints and indexes as before. Each gets a default partition,
``telemetry_default`` and ``telemetry_1m_default``, which takes any row no day partition takes: the
existing table *becomes* that default partition (renamed, then attached), so the upgrade copies
nothing and is instant whatever the size of the data.

The portal then keeps one partition per UTC day, ``<table>_pYYYYMMDD`` (``web/retention.py``): it
creates them ahead, moves a kept day's rows out of the default partition, and drops the days older
than ``RETENTION_DAYS``. The view ``readings`` is created again over the partitioned table (a view
follows a renamed table, which here would be the default partition alone).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
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

_TELEMETRY_COLUMNS = f"""
    ts timestamptz NOT NULL,
    attribute_id integer NOT NULL,
    value_num double precision,
    value_text text,
    CONSTRAINT telemetry_attribute_id_fkey
        FOREIGN KEY (attribute_id) REFERENCES attributes (id) ON DELETE CASCADE,
    CONSTRAINT telemetry_one_value CHECK ({_ONE_VALUE})
"""

_ROLLUP_COLUMNS = """
    attribute_id integer NOT NULL,
    bucket timestamptz NOT NULL,
    n_all bigint NOT NULL,
    n bigint NOT NULL,
    total double precision,
    lo double precision,
    hi double precision,
    last_ts timestamptz NOT NULL,
    last_num double precision,
    last_text text,
    CONSTRAINT telemetry_1m_attribute_id_fkey
        FOREIGN KEY (attribute_id) REFERENCES attributes (id) ON DELETE CASCADE,
    CONSTRAINT telemetry_1m_pkey PRIMARY KEY (attribute_id, bucket)
"""

_TELEMETRY_INDEXES = (
    "CREATE INDEX telemetry_attribute_id_ts_idx ON telemetry (attribute_id, ts)",
    "CREATE INDEX telemetry_ts_brin ON telemetry USING brin (ts)",
)


def upgrade() -> None:
    op.execute("DROP VIEW readings")

    op.execute("ALTER TABLE telemetry RENAME TO telemetry_default")
    op.execute("ALTER INDEX telemetry_attribute_id_ts_idx RENAME TO telemetry_default_attribute_id_ts_idx")
    op.execute("ALTER INDEX telemetry_ts_brin RENAME TO telemetry_default_ts_brin")
    op.execute(f"CREATE TABLE telemetry ({_TELEMETRY_COLUMNS}) PARTITION BY RANGE (ts)")
    for statement in _TELEMETRY_INDEXES:
        op.execute(statement)  # the default partition's matching indexes are attached, not rebuilt
    op.execute("ALTER TABLE telemetry ATTACH PARTITION telemetry_default DEFAULT")

    op.execute("ALTER TABLE telemetry_1m RENAME TO telemetry_1m_default")
    op.execute("ALTER INDEX telemetry_1m_pkey RENAME TO telemetry_1m_default_pkey")
    op.execute(f"CREATE TABLE telemetry_1m ({_ROLLUP_COLUMNS}) PARTITION BY RANGE (bucket)")
    op.execute("ALTER TABLE telemetry_1m ATTACH PARTITION telemetry_1m_default DEFAULT")

    op.execute(_READINGS_VIEW)


def downgrade() -> None:
    """Back to plain tables: every partition's rows copied into one table each."""
    op.execute("DROP VIEW readings")

    op.execute("ALTER TABLE telemetry RENAME TO telemetry_partitioned")
    op.execute(
        "ALTER INDEX telemetry_attribute_id_ts_idx RENAME TO telemetry_partitioned_attribute_id_ts_idx"
    )
    op.execute("ALTER INDEX telemetry_ts_brin RENAME TO telemetry_partitioned_ts_brin")
    op.execute(f"CREATE TABLE telemetry ({_TELEMETRY_COLUMNS})")
    op.execute("INSERT INTO telemetry SELECT * FROM telemetry_partitioned")
    op.execute("DROP TABLE telemetry_partitioned")  # with its partitions
    for statement in _TELEMETRY_INDEXES:
        op.execute(statement)

    op.execute("ALTER TABLE telemetry_1m RENAME TO telemetry_1m_partitioned")
    op.execute("ALTER INDEX telemetry_1m_pkey RENAME TO telemetry_1m_partitioned_pkey")
    op.execute(f"CREATE TABLE telemetry_1m ({_ROLLUP_COLUMNS})")
    op.execute("INSERT INTO telemetry_1m SELECT * FROM telemetry_1m_partitioned")
    op.execute("DROP TABLE telemetry_1m_partitioned")

    op.execute(_READINGS_VIEW)
