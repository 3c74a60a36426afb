"""Presence: what each device last said of its connection.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Devices announce themselves on ``<root>/<room>/<device>/$state`` (retained): ``online`` once
connected, ``offline`` before a clean disconnect, and the broker publishes their Last Will,
``lost``, when a connection ends otherwise (see ``web/presence.py``). ``devices.presence`` holds
the latest of these, ``devices.presence_at`` its time (the device's ``ts``, else when the portal
received it; 1970 for a retained message of unknown age). Presence is not telemetry: it is not in
``telemetry`` or ``latest`` and does not move ``last_seen``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("presence", sa.Text))
    op.add_column("devices", sa.Column("presence_at", sa.DateTime(timezone=True)))
    op.create_check_constraint("devices_presence", "devices", "presence IN ('online', 'offline', 'lost')")


def downgrade() -> None:
    op.drop_constraint("devices_presence", "devices")
    op.drop_column("devices", "presence_at")
    op.drop_column("devices", "presence")
