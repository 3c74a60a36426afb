"""Units: each attribute's unit of measure, as its device last sent it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

A payload may carry ``{"value": 21.5, "unit": "°C"}``; the unit named by an attribute's newest value
that named one is kept in ``attributes.unit``, with that value's time in ``unit_at`` (so a late,
older value never changes it back). Attributes that never sent one take theirs from the portal's units
file (``web/units.json``, or ``PORTAL_UNITS_FILE``), by attribute name.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attributes", sa.Column("unit", sa.Text))
    op.add_column("attributes", sa.Column("unit_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("attributes", "unit_at")
    op.drop_column("attributes", "unit")
