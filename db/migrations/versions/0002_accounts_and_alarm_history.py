"""Portal accounts and API tokens; alarm history.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

* ``users``: portal accounts besides the administrator of ``.env`` (who is never stored). The
  password is kept only as a salted scrypt hash (``scrypt$n$r$p$salt$hash``, see ``web/users.py``).
* ``api_tokens``: bearer tokens for API clients. Only the SHA-256 of a token is stored; the token
  itself is shown once, when created. A revoked token keeps its row (``revoked_at``) for the record.
* ``alarms`` holds one row per alarm *occurrence* of a (room, device, type): raised, maybe
  acknowledged, then cleared. At most one row per (room, device, type) is ``active`` at a time (a
  partial unique index), so "the current alarm" is one indexed lookup. ``ts`` is the timestamp of
  the latest message about it from the rule; ``cleared_by`` names the user who cleared it (NULL when
  the rule cleared it over MQTT).
* ``alarm_events`` is the history: one row per state change (raised, updated, acked, cleared),
  with who did it (``actor``; NULL for the rule) and the severity and value at that moment.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column(
            "password_changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("name", name="users_name_key"),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 64", name="users_name_length"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("token_hash", name="api_tokens_token_hash_key"),
    )
    op.create_index("api_tokens_user_name_idx", "api_tokens", ["user_name"])

    op.add_column("alarms", sa.Column("cleared_by", sa.Text))
    op.create_check_constraint("alarms_state", "alarms", "state IN ('active', 'cleared')")
    op.create_index(
        "alarms_one_active_idx",
        "alarms",
        ["room", "device", "type"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_index("alarms_received_at_idx", "alarms", ["received_at"])
    op.create_table(
        "alarm_events",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("alarm_id", sa.BigInteger, sa.ForeignKey("alarms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("actor", sa.Text),
        sa.Column("severity", sa.Text),
        sa.Column("value", postgresql.JSONB),
        sa.Column("ts", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('raised', 'updated', 'acked', 'cleared')", name="alarm_events_kind"),
    )
    op.create_index("alarm_events_alarm_id_idx", "alarm_events", ["alarm_id", "id"])


def downgrade() -> None:
    op.drop_table("alarm_events")
    op.drop_index("alarms_received_at_idx", table_name="alarms")
    op.drop_index("alarms_one_active_idx", table_name="alarms")
    op.drop_constraint("alarms_state", "alarms", type_="check")
    op.drop_column("alarms", "cleared_by")
    op.drop_index("api_tokens_user_name_idx", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
