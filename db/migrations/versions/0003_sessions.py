"""Sign-in sessions kept by the server, so that signing out ends them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

* ``sessions``: one row per signed-in browser session. The cookie carries a random secret; only
  its SHA-256 is stored (``id_hash``), so a leaked database does not leak usable sessions. Signing
  out deletes the row, and so do removing a user or changing their password (every row of that
  user); a cookie whose row is gone is refused, over HTTP and Socket.IO. ``last_seen_at`` moves
  at most once a minute; sessions idle for a week are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.Text, primary_key=True),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("sessions_user_name_idx", "sessions", ["user_name"])
    op.create_index("sessions_last_seen_at_idx", "sessions", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("sessions")
