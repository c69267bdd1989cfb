"""The search index's context of a shared message comes from shared messages only.

Each message is indexed with the text of its agent's previous message of the same role (its context, at half
weight). A channel message said right after a DM was therefore found by the DM's words, in a channel step's
search: a side channel out of the DM. From this revision a shared message's context is the previous *shared*
message of its role; a private message's stays the previous one of any kind (only private steps find it).

On SQLite the FTS5 table is refilled (a contentless table cannot change a row without its old values); on
PostgreSQL the vectors of shared messages are made again. Messages from before revision 0009 all count as
private, so on an upgraded database there are few shared messages to redo.

Revision ID: 0013_private_context
Revises: 0012_cjk_search
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision = "0013_private_context"
down_revision = "0012_cjk_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOKENIZE = "tokenize='porter unicode61 remove_diacritics 2'"


def _indexed(prefix: str) -> str:
    """What the index holds of a message's text (revision 0012), the row's columns named with `prefix`."""
    return f"{prefix}search_text || coalesce(' ' || {prefix}search_cjk, '')"


def _which(new: str, private_only: bool) -> str:
    """The condition on the context row `m` for the new row `new`: a shared message's is shared."""
    return f"AND ({new}private OR NOT m.private)" if private_only else ""


def _sqlite_trigger(private_only: bool) -> list[str]:
    context = f"""coalesce((SELECT {_indexed("m.")} FROM messages AS m WHERE m.agent_id = new.agent_id
        AND m.id < new.id AND m.role = new.role AND m.search_text IS NOT NULL {_which("new.", private_only)}
        ORDER BY m.id DESC LIMIT 1), '')"""
    return [
        "DROP TRIGGER IF EXISTS messages_fts_ai",
        f"""CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages WHEN new.search_text IS NOT NULL BEGIN
            INSERT INTO messages_fts(rowid, search_text, context, agent)
            VALUES (new.id, {_indexed("new.")}, {context}, 'a' || new.agent_id); END""",
    ]


# The context of each message as the trigger gives it: any previous message of the role for a private one,
# the previous shared one for a shared one (a window over the shared messages alone).
_CONTEXTS = f"""SELECT id, agent_id, private, indexed,
        CASE WHEN private THEN lag(indexed) OVER (PARTITION BY agent_id, role ORDER BY id)
             ELSE lag(indexed) OVER (PARTITION BY agent_id, role, private ORDER BY id) END AS context
    FROM (SELECT id, agent_id, role, private, {_indexed("")} AS indexed FROM messages
          WHERE search_text IS NOT NULL) AS t"""


def _sqlite_refill() -> list[str]:
    return [
        "DROP TABLE IF EXISTS messages_fts",
        f"CREATE VIRTUAL TABLE messages_fts USING fts5(search_text, context, agent, content='', {_TOKENIZE})",
        f"""INSERT INTO messages_fts(rowid, search_text, context, agent)
            SELECT id, indexed, coalesce(context, ''), 'a' || agent_id FROM ({_CONTEXTS}) ORDER BY id""",
    ]


def _pg_function(private_only: bool) -> str:
    context = f"""(SELECT {_indexed("m.")} FROM messages AS m
            WHERE m.agent_id = NEW.agent_id AND m.role = NEW.role AND m.id < NEW.id
              AND m.search_text IS NOT NULL {_which("NEW.", private_only)}
            ORDER BY m.id DESC LIMIT 1)"""
    return f"""CREATE OR REPLACE FUNCTION search_message_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.search_text IS NULL THEN
        NEW.search_vector := NULL;
    ELSE
        NEW.search_vector := setweight(to_tsvector('english'::regconfig, {_indexed("NEW.")}), 'A')
            || setweight(to_tsvector('english'::regconfig, coalesce({context}, '')), 'B');
    END IF;
    RETURN NEW;
END $$"""


_PG_REVECTOR = f"""UPDATE messages AS m SET search_vector =
        setweight(to_tsvector('english'::regconfig, p.indexed), 'A')
        || setweight(to_tsvector('english'::regconfig, coalesce(p.context, '')), 'B')
    FROM ({_CONTEXTS}) AS p
    WHERE m.id = p.id AND NOT p.private"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _sqlite_trigger(True) + _sqlite_refill():
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_pg_function(True))
        bind.exec_driver_sql(_PG_REVECTOR)


def downgrade() -> None:
    # The trigger of 0012 again; rows indexed meanwhile keep their (stricter) context, which 0012 finds too.
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _sqlite_trigger(False):
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        bind.exec_driver_sql(_pg_function(False))
