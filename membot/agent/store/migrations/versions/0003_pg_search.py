"""PostgreSQL conversation search: a weighted tsvector per message, kept by a trigger, under a GIN index.

Each message's vector holds its own `search_text` (weight A) and the text of the previous message of the same
agent and role (weight B), the neighbour context SQLite's FTS5 table keeps in its `context` column. Messages
are never updated (but for `in_context`) and are deleted only with their agent, so a BEFORE INSERT trigger is
all that keeps the vector true. Nothing to do on SQLite: its FTS5 table belongs to the first revision.

Revision ID: 0003_pg_search
Revises: 0002_leases
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

revision = "0003_pg_search"
down_revision = "0002_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 'english' stems as FTS5's porter tokenizer does; spelled out everywhere rather than taken from the server's
# default_text_search_config, which an operator may change under an index built with another.
_VECTOR = """setweight(to_tsvector('english'::regconfig, {text}), 'A')
    || setweight(to_tsvector('english'::regconfig, coalesce({context}, '')), 'B')"""

_FUNCTION = f"""CREATE OR REPLACE FUNCTION search_message_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.search_text IS NULL THEN
        NEW.search_vector := NULL;
    ELSE
        -- Rows inserted earlier by the same statement are visible here, so a batch chains like single rows.
        NEW.search_vector := {_VECTOR.format(text="NEW.search_text", context='''(
            SELECT m.search_text FROM messages AS m
            WHERE m.agent_id = NEW.agent_id AND m.role = NEW.role AND m.id < NEW.id
              AND m.search_text IS NOT NULL
            ORDER BY m.id DESC LIMIT 1)''')};
    END IF;
    RETURN NEW;
END $$"""

_TRIGGER = """CREATE TRIGGER search_message_vector BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION search_message_vector()"""

# Rows written before this revision: the same vectors in one pass, the context by a window over each agent's
# messages of one role.
_BACKFILL = f"""UPDATE messages AS m SET search_vector = {_VECTOR.format(text="m.search_text", context="p.context")}
    FROM (SELECT id, lag(search_text) OVER (PARTITION BY agent_id, role ORDER BY id) AS context
          FROM messages WHERE search_text IS NOT NULL) AS p
    WHERE m.id = p.id"""

# With btree_gin the agent's id is a key of the same GIN index: a search reads the agent's entry and the
# query's lexemes and intersects them inside the index, where a GIN over the vector alone returns every
# agent's hits of a common word to be filtered (or the agent's every row to be matched).
_EXTENSION = "CREATE EXTENSION IF NOT EXISTS btree_gin"
_INDEX_WITH_AGENT = "CREATE INDEX ix_messages_search ON messages USING gin (agent_id, search_vector)"
_INDEX_ALONE = "CREATE INDEX ix_messages_search ON messages USING gin (search_vector)"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # btree_gin stays: an extension belongs to the database, and something else may use it.
    for statement in (
        "DROP INDEX IF EXISTS ix_messages_search",
        "DROP TRIGGER IF EXISTS search_message_vector ON messages",
        "DROP FUNCTION IF EXISTS search_message_vector()",
        "ALTER TABLE messages DROP COLUMN IF EXISTS search_vector",
    ):
        bind.exec_driver_sql(statement)


def _create(bind: Connection) -> None:
    """The column, trigger, vectors of the rows already there (one rewrite of the table), and the index, built
    last: faster over the full table than kept up row by row."""
    for statement in ("ALTER TABLE messages ADD COLUMN search_vector tsvector", _FUNCTION, _TRIGGER, _BACKFILL):
        bind.exec_driver_sql(statement)
    bind.exec_driver_sql(_INDEX_WITH_AGENT if _has_btree_gin(bind) else _INDEX_ALONE)


def _has_btree_gin(bind: Connection) -> bool:
    """Whether btree_gin is (or can be) installed: shipped with PostgreSQL's contrib and trusted, so a database
    owner may create it, but a server without contrib or a role without the right gets the plain index."""
    available = bind.exec_driver_sql(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'btree_gin'"
    ).scalar()
    if not available:
        return False
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(_EXTENSION)
    except DBAPIError:  # no right to create it here: the plain index, rather than a failed upgrade
        return False
    return True
