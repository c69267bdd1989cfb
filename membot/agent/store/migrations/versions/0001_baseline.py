"""The schema of membot before migrations (commit d228cc3): what `create_all` and the FTS statements made.

Written out rather than taken from the models: a revision is a snapshot of its day. Constraints are unnamed,
as `create_all` left them, so a database adopted from that release and one built here are the same.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# SQLite's conversation search: a contentless FTS5 index of each message's text and, at lower weight, the
# previous message of the same role (its context), filled by a trigger.
_FTS = (
    """CREATE VIRTUAL TABLE messages_fts USING fts5(
        search_text, context, content='', tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages
        WHEN new.search_text IS NOT NULL BEGIN
        INSERT INTO messages_fts(rowid, search_text, context) VALUES (new.id, new.search_text,
            coalesce((SELECT search_text FROM messages WHERE agent_id = new.agent_id AND id < new.id
                      AND role = new.role AND search_text IS NOT NULL ORDER BY id DESC LIMIT 1), '')); END""",
)


def _agent_fk() -> sa.ForeignKey:
    return sa.ForeignKey("agents.id", ondelete="CASCADE")


def _source_fk() -> sa.ForeignKey:
    return sa.ForeignKey("sources.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("persona_name", sa.String(100), nullable=False),
        sa.Column("human_name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("summary_hidden", sa.Integer(), nullable=False),
        sa.Column("heartbeats_paused_until", sa.DateTime(), nullable=True),
        sa.Column("last_prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("archival_passages", sa.Integer(), nullable=False),
        sa.Column("token_ratio", sa.Double(), nullable=False),
        sa.Column("pressure_alerted", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("scope", "name"),
    )
    op.create_table(
        "core_blocks",
        sa.Column("agent_id", sa.Integer(), _agent_fk(), primary_key=True),
        sa.Column("label", sa.String(50), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("char_limit", sa.Integer(), nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.Integer(), _agent_fk(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("tool_calls", sa.JSON(), nullable=True),
        sa.Column("tool_call_id", sa.String(100), nullable=True),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("in_context", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_messages_agent_ctx", "messages", ["agent_id", "in_context", "id"])
    op.create_index("ix_messages_agent_time", "messages", ["agent_id", "created_at"])
    op.create_index("ix_messages_agent_role", "messages", ["agent_id", "role", "id"])
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_id", sa.Integer(), _source_fk(), nullable=False),
        sa.Column("filename", sa.String(500), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("passages", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("source_id", "content_hash"),
    )
    op.create_table(
        "agent_sources",
        sa.Column("agent_id", sa.Integer(), _agent_fk(), primary_key=True),
        sa.Column("source_id", sa.Integer(), _source_fk(), primary_key=True),
        sa.Column("attached_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "identities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.Integer(), _agent_fk(), nullable=False),
        sa.UniqueConstraint("platform", "scope", "user_id"),
    )
    if op.get_bind().dialect.name == "sqlite":
        for ddl in _FTS:
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER messages_fts_ai")
        op.execute("DROP TABLE messages_fts")
    for table in ("identities", "agent_sources", "documents", "messages", "core_blocks", "sources", "agents"):
        op.drop_table(table)
