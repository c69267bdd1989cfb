"""Conversation threads (bot/threads.py): the platform threads in which a user talks with the bot, whose further
messages reach their agent without a mention.

Revision ID: 0011_threads
Revises: 0010_heartbeat_prefs
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0011_threads"
down_revision = "0010_heartbeat_prefs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_threads",
        sa.Column("platform", sa.String(20), primary_key=True),
        sa.Column("thread", sa.String(200), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_conversation_threads_joined_at", "conversation_threads", ["joined_at"])


def downgrade() -> None:
    op.drop_index("ix_conversation_threads_joined_at", table_name="conversation_threads")
    op.drop_table("conversation_threads")
