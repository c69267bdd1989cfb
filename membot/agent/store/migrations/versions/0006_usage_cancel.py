"""Per-user quotas and /cancel: what each agent's user spent (model tokens per UTC day, messages per minute) on
the agent's row, and a flag on the lease that asks the step holding it to stop.

Revision ID: 0006_usage_cancel
Revises: 0005_fts_agent
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0006_usage_cancel"
down_revision = "0005_fts_agent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_USAGE = (
    sa.Column("usage_day", sa.String(10), nullable=True),
    sa.Column("tokens_today", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("usage_minute", sa.String(16), nullable=True),
    sa.Column("messages_this_minute", sa.Integer(), nullable=False, server_default="0"),
)


def upgrade() -> None:
    with op.batch_alter_table("agents") as agents:
        for column in _USAGE:
            agents.add_column(column)
    with op.batch_alter_table("agent_leases") as leases:
        leases.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("agent_leases") as leases:
        leases.drop_column("cancel_requested")
    with op.batch_alter_table("agents") as agents:
        for column in reversed(_USAGE):
            agents.drop_column(column.name)
