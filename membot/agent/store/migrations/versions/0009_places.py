"""Where things were said (agent/place.py): each message records whether it was private (a DM) and where; the
agent keeps a second summary for shared channels and a `private` core memory block; sources record their
owner and whether they are private.

Messages stored before this revision are counted private: where they were said is unknown, and a DM must not
reach a shared channel. Sources loaded in a Discord DM (scope `discord:dm:<user>`) are private to that user.

Revision ID: 0009_places
Revises: 0008_wakeups
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0009_places"
down_revision = "0008_wakeups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch copy: a copy of `messages` would drop its search triggers on SQLite.
    op.add_column("messages", sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("messages", sa.Column("place", sa.String(300), nullable=True))
    with op.batch_alter_table("agents") as agents:
        agents.add_column(sa.Column("shared_summary", sa.Text(), nullable=False, server_default=sa.text("''")))
        agents.add_column(sa.Column("shared_hidden", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("sources") as sources:
        sources.add_column(sa.Column("owner", sa.String(300), nullable=True))
        sources.add_column(sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE sources SET private = true WHERE scope LIKE 'discord:dm:%'")
    # Every agent gets its private block, as long as its `human` block may be.
    op.execute(
        "INSERT INTO core_blocks (agent_id, label, value, char_limit) "
        "SELECT agent_id, 'private', '', char_limit FROM core_blocks WHERE label = 'human'"
    )


def downgrade() -> None:
    op.execute("DELETE FROM core_blocks WHERE label = 'private'")
    with op.batch_alter_table("sources") as sources:
        sources.drop_column("private")
        sources.drop_column("owner")
    with op.batch_alter_table("agents") as agents:
        agents.drop_column("shared_hidden")
        agents.drop_column("shared_summary")
    op.drop_column("messages", "place")
    op.drop_column("messages", "private")
