"""Facts with time (store/facts.py): what the agent learnt, as subject, relation, object, and when it held.

Revision ID: 0015_facts
Revises: 0014_entities
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0015_facts"
down_revision = "0014_entities"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "facts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("subject_key", sa.String(300), nullable=False),
        sa.Column("relation", sa.String(60), nullable=False),
        sa.Column("object", sa.String(300), nullable=False),
        sa.Column("object_key", sa.String(300), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("valid_from", sa.DateTime(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("valid_to", sa.DateTime(), nullable=True),
        sa.Column("superseded_by", sa.Integer(), sa.ForeignKey("facts.id"), nullable=True),
    )
    op.create_index("ix_facts_agent_subject", "facts", ["agent_id", "subject_key"])
    op.create_index("ix_facts_agent_object", "facts", ["agent_id", "object_key"])


def downgrade() -> None:
    op.drop_index("ix_facts_agent_object", table_name="facts")
    op.drop_index("ix_facts_agent_subject", table_name="facts")
    op.drop_table("facts")
