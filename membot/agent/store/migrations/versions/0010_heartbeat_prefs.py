"""Limits on what reaches a user unasked, and wake-ups that survive a process dying mid-step: each agent records
whether its user wants timed heartbeats (`/heartbeats on|off`) and how many heartbeat-started messages they got
today (MEMBOT_UNSOLICITED_PER_DAY); each wake-up records when its step finished and how often it was claimed, so
that one whose process died before it finished is fired once more (store/wakeups.py).

Wake-ups fired before this revision count as finished: nothing is fired again because of it.

Revision ID: 0010_heartbeat_prefs
Revises: 0009_places
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0010_heartbeat_prefs"
down_revision = "0009_places"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as agents:
        agents.add_column(sa.Column("heartbeats_on", sa.Boolean(), nullable=False, server_default=sa.true()))
        agents.add_column(sa.Column("unsolicited_day", sa.String(10), nullable=True))
        agents.add_column(sa.Column("unsolicited_sent", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("wakeups") as wakeups:
        wakeups.add_column(sa.Column("finished_at", sa.DateTime(), nullable=True))
        wakeups.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE wakeups SET finished_at = fired_at, attempts = 1 WHERE fired_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("wakeups") as wakeups:
        wakeups.drop_column("attempts")
        wakeups.drop_column("finished_at")
    with op.batch_alter_table("agents") as agents:
        agents.drop_column("unsolicited_sent")
        agents.drop_column("unsolicited_day")
        agents.drop_column("heartbeats_on")
