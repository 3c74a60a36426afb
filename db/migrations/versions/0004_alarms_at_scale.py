"""Alarms at scale: when each was raised, and indexes for filtering and paging.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

* ``alarms.raised_at``: when the alarm was raised, by the rule's clock (the ``ts`` of the message
  that raised it; the portal's ``received_at`` when that message had none). ``ts`` stays the time
  of the latest message about it. Existing rows take the ``ts`` of their first event.
* Alarms are listed newest first by id, filtered by state, type, severity, room and device, and
  paged with ``before=<id>``: ``(state, id)`` and ``(type, id)`` indexes serve the common filters;
  room and device use the existing ``(room, device, type)`` index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("alarms", sa.Column("raised_at", sa.DateTime(timezone=True)))
    op.execute(
        """
        UPDATE alarms SET raised_at = coalesce(
            (SELECT e.ts FROM alarm_events e WHERE e.alarm_id = alarms.id ORDER BY e.id LIMIT 1),
            alarms.received_at)
        """
    )
    op.alter_column("alarms", "raised_at", nullable=False, server_default=sa.func.now())
    op.create_index("alarms_state_id_idx", "alarms", ["state", "id"])
    op.create_index("alarms_type_id_idx", "alarms", ["type", "id"])


def downgrade() -> None:
    op.drop_index("alarms_type_id_idx", table_name="alarms")
    op.drop_index("alarms_state_id_idx", table_name="alarms")
    op.drop_column("alarms", "raised_at")
