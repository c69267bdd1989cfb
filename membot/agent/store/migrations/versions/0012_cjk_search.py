"""Conversation search inside Chinese, Japanese and Korean text: each message keeps the CJK words of its text
(`messages.search_cjk`: characters and overlapping bigrams, see memory/cjk.py), and the search index holds
them beside the text.

Neither index cuts an unspaced run of CJK characters into words ("我对花生过敏" is one token to both), and
neither trigger can call Python, so the words are made when a message is inserted (the column's default in
schema.py) and the triggers add `search_text || ' ' || search_cjk` to the index, for the message and for its
context (the previous message of the same agent and role). A message without CJK has no `search_cjk` and is
indexed exactly as before, so English ranking does not move.

Rows written before this revision get their words here, in Python, in batches (only rows holding a CJK
character are read). On SQLite the FTS5 table is refilled when any did (a contentless table cannot update a
row without its old values, and 0005's refill is the one pass that is known right); on PostgreSQL only the
vectors of those rows and of the rows they are the context of are made again.

Revision ID: 0012_cjk_search
Revises: 0011_threads
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from membot.agent.memory.cjk import CJK, index_tokens

revision = "0012_cjk_search"
down_revision = "0011_threads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2_000


def _indexed(prefix: str, with_cjk: bool) -> str:
    """What the index holds of a message's text, the row's columns named with `prefix` (`new.`, `m.`)."""
    return f"{prefix}search_text || coalesce(' ' || {prefix}search_cjk, '')" if with_cjk else f"{prefix}search_text"


# ----- SQLite: the FTS5 table of 0005, its text and context now with the CJK words -------------------------

_TOKENIZE = "tokenize='porter unicode61 remove_diacritics 2'"


def _sqlite_trigger(with_cjk: bool) -> list[str]:
    context = f"""coalesce((SELECT {_indexed("", with_cjk)} FROM messages WHERE agent_id = new.agent_id
        AND id < new.id AND role = new.role AND search_text IS NOT NULL ORDER BY id DESC LIMIT 1), '')"""
    return [
        "DROP TRIGGER IF EXISTS messages_fts_ai",
        f"""CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages WHEN new.search_text IS NOT NULL BEGIN
            INSERT INTO messages_fts(rowid, search_text, context, agent)
            VALUES (new.id, {_indexed("new.", with_cjk)}, {context}, 'a' || new.agent_id); END""",
    ]


def _sqlite_refill(with_cjk: bool) -> list[str]:
    """The table made again and filled from the messages in one pass, rows in id order (as the trigger adds
    them), the context by a window over each agent's messages of one role."""
    return [
        "DROP TABLE IF EXISTS messages_fts",
        f"CREATE VIRTUAL TABLE messages_fts USING fts5(search_text, context, agent, content='', {_TOKENIZE})",
        f"""INSERT INTO messages_fts(rowid, search_text, context, agent)
            SELECT id, indexed, coalesce(lag(indexed) OVER (PARTITION BY agent_id, role ORDER BY id), ''),
                   'a' || agent_id
            FROM (SELECT id, agent_id, role, {_indexed("", with_cjk)} AS indexed FROM messages
                  WHERE search_text IS NOT NULL) ORDER BY id""",
    ]


# ----- PostgreSQL: the vector of 0003_pg_search, its text and context now with the CJK words ---------------


def _pg_vector(text: str, context: str) -> str:
    return f"""setweight(to_tsvector('english'::regconfig, {text}), 'A')
    || setweight(to_tsvector('english'::regconfig, coalesce({context}, '')), 'B')"""


def _pg_function(with_cjk: bool) -> str:
    context = f"""(SELECT {_indexed("m.", with_cjk)} FROM messages AS m
            WHERE m.agent_id = NEW.agent_id AND m.role = NEW.role AND m.id < NEW.id
              AND m.search_text IS NOT NULL
            ORDER BY m.id DESC LIMIT 1)"""
    return f"""CREATE OR REPLACE FUNCTION search_message_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.search_text IS NULL THEN
        NEW.search_vector := NULL;
    ELSE
        NEW.search_vector := {_pg_vector(_indexed("NEW.", with_cjk), context)};
    END IF;
    RETURN NEW;
END $$"""


def _pg_revector(with_cjk: bool) -> str:
    """The vectors of the messages with CJK words and of those whose context has them."""
    return f"""UPDATE messages AS m SET search_vector = {_pg_vector("p.indexed", "p.context")}
    FROM (SELECT id, indexed, lag(indexed) OVER (PARTITION BY agent_id, role ORDER BY id) AS context,
                 search_cjk IS NOT NULL OR lag(search_cjk) OVER (PARTITION BY agent_id, role ORDER BY id)
                     IS NOT NULL AS touched
          FROM (SELECT id, agent_id, role, search_cjk, {_indexed("", with_cjk)} AS indexed FROM messages
                WHERE search_text IS NOT NULL) AS t) AS p
    WHERE m.id = p.id AND p.touched"""


# ----- both ---------------------------------------------------------------------------------------------------


def _backfill(bind: Connection) -> int:
    """Give the rows holding a CJK character their words, in batches by id; how many got some."""
    holds = "search_text GLOB :pattern" if bind.dialect.name == "sqlite" else "search_text ~ :pattern"
    pattern = f"*[{CJK}]*" if bind.dialect.name == "sqlite" else f"[{CJK}]"
    read = sa.text(f"""SELECT id, search_text FROM messages WHERE id > :after AND search_text IS NOT NULL
        AND {holds} ORDER BY id LIMIT :batch""")
    write = sa.text("UPDATE messages SET search_cjk = :words WHERE id = :id")
    after, done = 0, 0
    while rows := bind.execute(read, {"after": after, "pattern": pattern, "batch": BATCH}).all():
        words = [{"id": row.id, "words": index_tokens(row.search_text)} for row in rows]
        words = [w for w in words if w["words"] is not None]
        if words:
            bind.execute(write, words)
        after, done = rows[-1].id, done + len(words)
    return done


def upgrade() -> None:
    bind = op.get_bind()
    # Plain ADD COLUMN, not a batch copy: a copy of `messages` would drop its search triggers on SQLite.
    op.add_column("messages", sa.Column("search_cjk", sa.Text(), nullable=True))
    found = _backfill(bind)
    if bind.dialect.name == "sqlite":
        for statement in _sqlite_trigger(True) + (_sqlite_refill(True) if found else []):
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_pg_function(True))
        if found:
            bind.exec_driver_sql(_pg_revector(True))


def downgrade() -> None:
    bind = op.get_bind()
    found = bind.execute(sa.text("SELECT 1 FROM messages WHERE search_cjk IS NOT NULL LIMIT 1")).first()
    # The triggers first: SQLite refuses to drop a column a trigger names.
    if bind.dialect.name == "sqlite":
        for statement in _sqlite_trigger(False) + (_sqlite_refill(False) if found else []):
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_pg_function(False))
        if found:
            bind.exec_driver_sql(_pg_revector(False))
    op.drop_column("messages", "search_cjk")
