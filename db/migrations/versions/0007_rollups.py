"""Rollups: each attribute's values summed up per minute, kept as data arrives.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

``telemetry_1m`` holds, per attribute and minute (``bucket``, the minute's start): how many values
arrived (``n_all``), how many of them numbers (``n``) with their sum, least and greatest, and the
newest value of the minute (``last_ts`` with ``last_num`` or ``last_text``). The portal's writer
adds each batch to it in the batch's transaction, so it always matches ``telemetry``; history over
long ranges (buckets of whole minutes) reads it instead of every stored value, and the raw rows
only for the minutes the range cuts at its ends. Existing telemetry is summed up here once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry_1m",
        sa.Column(
            "attribute_id", sa.Integer, sa.ForeignKey("attributes.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_all", sa.BigInteger, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Double),
        sa.Column("lo", sa.Double),
        sa.Column("hi", sa.Double),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_num", sa.Double),
        sa.Column("last_text", sa.Text),
        sa.PrimaryKeyConstraint("attribute_id", "bucket", name="telemetry_1m_pkey"),
    )
    op.execute(
        """
        INSERT INTO telemetry_1m (attribute_id, bucket, n_all, n, total, lo, hi, last_ts, last_num, last_text)
        SELECT attribute_id, date_trunc('minute', ts), count(*), count(value_num), sum(value_num),
               min(value_num), max(value_num), max(ts),
               (array_agg(value_num ORDER BY ts DESC))[1], (array_agg(value_text ORDER BY ts DESC))[1]
        FROM telemetry
        GROUP BY attribute_id, date_trunc('minute', ts)
        """
    )


def downgrade() -> None:
    op.drop_table("telemetry_1m")
