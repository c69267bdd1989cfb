"""Entity memory (agent/memory/entities.py): per agent, the entities its conversation names, with their written
forms, mention counts, decayed weights and first and last times (`entities`), and which messages name them
(`entity_mentions`). An entity named in private and in shared conversations has a row in each scope, so a
shared step never learns one that only a DM named.

Existing messages are read here, in batches by id, by the same extractor that every step runs: a first pass
counts the entities, a second records which messages name them (re-extracting is cheaper than holding every
mention in memory).

Revision ID: 0014_entities
Revises: 0013_private_context
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from datetime import datetime
from functools import partial

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from membot.agent.memory.entities import counted, extract, mentioned, renamed

revision = "0014_entities"
down_revision = "0013_private_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2_000

_ENTITIES = sa.table(
    "entities", sa.column("agent_id", sa.Integer), sa.column("key", sa.String), sa.column("name", sa.String),
    sa.column("aliases", sa.JSON), sa.column("private", sa.Boolean), sa.column("mentions", sa.Integer),
    sa.column("weight", sa.Double), sa.column("first_seen", sa.DateTime), sa.column("last_seen", sa.DateTime),
)
_MENTIONS = sa.table("entity_mentions", sa.column("entity_id", sa.Integer), sa.column("message_id", sa.Integer),
                     sa.column("agent_id", sa.Integer))


def _create() -> None:
    op.create_table(
        "entities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("mentions", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Double(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("agent_id", "private", "key"),
    )
    op.create_table(
        "entity_mentions",
        sa.Column("entity_id", sa.Integer(), sa.ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("agent_id", sa.Integer(), nullable=False),
    )
    op.create_index("ix_entity_mentions_message_id", "entity_mentions", ["message_id"])


# ----- the backfill -------------------------------------------------------------------------------------------

_READ = sa.text("""SELECT id, agent_id, private, search_text, created_at FROM messages
    WHERE id > :after AND role IN ('user', 'assistant') AND search_text IS NOT NULL ORDER BY id LIMIT :batch""")


class _Counted:
    # A plain class: Alembic loads this file outside sys.modules, where @dataclass cannot resolve annotations.
    __slots__ = ("aliases", "first_seen", "last_seen", "mentions", "name", "weight")

    def __init__(self, name: str, first_seen: datetime) -> None:
        self.name, self.first_seen = name, first_seen
        self.aliases: tuple[str, ...] = ()
        self.mentions, self.weight = 0, 0.0
        self.last_seen: datetime | None = None


def _said(bind: Connection) -> Iterator[tuple[sa.Row, list]]:
    """Every stored user and assistant message with its mentions, in id order, a batch at a time."""
    after = 0
    while rows := bind.execute(_READ, {"after": after, "batch": BATCH}).all():
        for row in rows:
            yield row, extract(row.search_text)
        after = rows[-1].id


def _at(value: datetime | str) -> datetime:
    # SQLite hands a raw SELECT's timestamps back as text.
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _known(known: Container[tuple[int, bool, str]], agent: int, private: bool, key: str) -> bool:
    """As store/entities.py decides it: known where the message was said (a shared one: in shared talk)."""
    return (agent, False, key) in known or (private and (agent, True, key) in known)


def _backfill(bind: Connection) -> None:
    found: dict[tuple[int, bool, str], _Counted] = {}
    for row, mentions in _said(bind):
        at, agent, private = _at(row.created_at), row.agent_id, bool(row.private)
        for mention in counted(mentions, partial(_known, found, agent, private)):
            entity = found.setdefault((agent, private, mention.key), _Counted(mention.name, at))
            entity.name, entity.aliases = renamed(entity.name, entity.aliases, mention.name)
            entity.weight, entity.last_seen = mentioned(entity.weight, entity.last_seen, at)
            entity.mentions += 1
            entity.first_seen = min(entity.first_seen, at)
    if not found:
        return
    rows = [{"agent_id": agent, "private": private, "key": key, "name": e.name,
             "aliases": list(e.aliases), "mentions": e.mentions, "weight": e.weight, "first_seen": e.first_seen,
             "last_seen": e.last_seen} for (agent, private, key), e in found.items()]
    for start in range(0, len(rows), BATCH):
        bind.execute(sa.insert(_ENTITIES), rows[start : start + BATCH])
    ids = {(r.agent_id, bool(r.private), r.key): r.id
           for r in bind.execute(sa.text("SELECT id, agent_id, private, key FROM entities"))}
    pending: list[dict[str, int]] = []
    seen: set[tuple[int, bool, str]] = set()  # the first pass again: which entities were known by each message
    for row, mentions in _said(bind):
        agent, private = row.agent_id, bool(row.private)
        kept = counted(mentions, partial(_known, seen, agent, private))
        seen.update((agent, private, m.key) for m in kept)
        pending += [{"entity_id": ids[(agent, private, m.key)], "message_id": row.id, "agent_id": agent}
                    for m in kept]
        if len(pending) >= BATCH:
            bind.execute(sa.insert(_MENTIONS), pending)
            pending = []
    if pending:
        bind.execute(sa.insert(_MENTIONS), pending)


def upgrade() -> None:
    _create()
    _backfill(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_entity_mentions_message_id", "entity_mentions")
    op.drop_table("entity_mentions")
    op.drop_table("entities")
