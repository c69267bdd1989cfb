"""The deployment: one row naming this database, so that its archival passages cannot be mistaken for another
database's in a shared Milvus (see store/deployment.py).

The id is made here, once, in the migration's transaction: processes that start together migrate once, so
they all read the same id. A database that already holds agents or sources has passages under the plain
owner names (`agent:1`); it keeps them (`legacy_owners`) rather than rewriting every row in Milvus.

Revision ID: 0004_deployment
Revises: 0003_pg_search
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004_deployment"
down_revision = "0003_pg_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "deployment",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("legacy_owners", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    bind = op.get_bind()
    had_data = any(
        bind.execute(sa.text(f"SELECT 1 FROM {name} LIMIT 1")).first() is not None for name in ("agents", "sources")
    )
    op.bulk_insert(
        table,
        [
            {
                # A letter first: the id starts Milvus partition names, which may not start with a digit.
                "id": "d" + secrets.token_hex(6),
                "legacy_owners": had_data,
                "created_at": datetime.now(UTC).replace(tzinfo=None),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("deployment")
