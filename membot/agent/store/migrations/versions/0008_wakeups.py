"""Scheduled wake-ups (store/wakeups.py): reminders and timed heartbeats; and the user's time zone on the agent.

Revision ID: 0008_wakeups
Revises: 0007_seen_events
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0008_wakeups"
down_revision = "0007_seen_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wakeups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("fired_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(100), nullable=True),
    )
    op.create_index("ix_wakeups_due", "wakeups", ["fired_at", "due_at"])
    op.create_index("ix_wakeups_agent", "wakeups", ["agent_id", "fired_at"])
    with op.batch_alter_table("agents") as agents:
        agents.add_column(sa.Column("timezone", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as agents:
        agents.drop_column("timezone")
    op.drop_index("ix_wakeups_agent", table_name="wakeups")
    op.drop_index("ix_wakeups_due", table_name="wakeups")
    op.drop_table("wakeups")
