"""Several processes on one database: each agent's version (bumped by every commit that changes it, so a
process that cached the agent knows to reload it) and the lease a process holds while it runs a step.

Revision ID: 0002_leases
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_leases"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite takes a NOT NULL column that has a default without copying the table.
    op.add_column("agents", sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "agent_leases",
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_leases")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("version")
