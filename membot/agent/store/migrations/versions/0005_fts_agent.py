"""SQLite conversation search by agent inside FTS5: the search table gains an `agent` column.

The FTS5 table of the baseline knew nothing of agents, so a search matched its terms over every agent's
messages and dropped the other agents' hits afterwards: 99 ms p50, 447 ms p95 for one agent among 1,000
with 1,000,000 messages. With each row's agent as a token of its own column (`a<agent id>`), the search asks
for `agent:"a<id>" AND (…)` and FTS5 intersects the agent's short doclist with the terms' inside the index.
The column carries no weight in the ranking (bm25 weight 0, see recall.py), though its one token counts
in each row's length, which bm25 normalises by.

FTS5 cannot add a column, so the table is rebuilt: dropped with its trigger, made again, and filled from the
messages in one pass (the context of each by a window over the agent's messages of one role, what the trigger
computes row by row). Nothing to do on PostgreSQL: its GIN index already has the agent's id as a key
(0003_pg_search).

Revision ID: 0005_fts_agent
Revises: 0004_deployment
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision = "0005_fts_agent"
down_revision = "0004_deployment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOKENIZE = "tokenize='porter unicode61 remove_diacritics 2'"
# The previous message of the same agent and role that has text: the context column of a new row.
_CONTEXT = """coalesce((SELECT search_text FROM messages WHERE agent_id = new.agent_id AND id < new.id
    AND role = new.role AND search_text IS NOT NULL ORDER BY id DESC LIMIT 1), '')"""
# The same for every row at once; rows in id order, as the trigger would have added them.
_LAG = "coalesce(lag(search_text) OVER (PARTITION BY agent_id, role ORDER BY id), '')"


def _statements(with_agent: bool) -> list[str]:
    """Drop the search table and its trigger, make them again (with or without the agent column), refill."""
    agent_column, agent_new, agent_old = (", agent", ", 'a' || new.agent_id", ", 'a' || agent_id") if with_agent \
        else ("", "", "")
    return [
        "DROP TRIGGER IF EXISTS messages_fts_ai",
        "DROP TABLE IF EXISTS messages_fts",
        f"CREATE VIRTUAL TABLE messages_fts USING fts5(search_text, context{agent_column}, content='', {_TOKENIZE})",
        f"""CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages WHEN new.search_text IS NOT NULL BEGIN
            INSERT INTO messages_fts(rowid, search_text, context{agent_column})
            VALUES (new.id, new.search_text, {_CONTEXT}{agent_new}); END""",
        f"""INSERT INTO messages_fts(rowid, search_text, context{agent_column})
            SELECT id, search_text, {_LAG}{agent_old} FROM messages WHERE search_text IS NOT NULL ORDER BY id""",
    ]


def _rebuild(with_agent: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in _statements(with_agent):
        op.execute(statement)


def upgrade() -> None:
    _rebuild(with_agent=True)


def downgrade() -> None:
    _rebuild(with_agent=False)
