"""An agent's rows in SQL, whole: read out as plain data, written back as a new agent, or erased everywhere.

The SQL half of a memory export, import and forget (bot/portable.py does the rest). Each table that holds an
agent's data is one section of plain values, column by column, so a column added to one of these tables is
carried without a change here; a table added with an `agent_id` is caught by the tests, which list them from
the schema (`agent_tables`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, delete, insert, select, text
from sqlalchemy.orm import Session

from membot.agent.messages import Message
from membot.agent.store import entities, facts
from membot.agent.store.schema import (
    AgentRow,
    AttachmentRow,
    Base,
    BlockRow,
    EntityMentionRow,
    EntityRow,
    FactRow,
    IdentityRow,
    LeaseRow,
    MessageRow,
    SourceRow,
    WakeupRow,
)

Section = list[dict[str, Any]]

#: Section name -> table, for the tables carried column by column.
SECTIONS: dict[str, Table] = {
    "agent": AgentRow.__table__,  # type: ignore[dict-item]
    "core_blocks": BlockRow.__table__,  # type: ignore[dict-item]
    "messages": MessageRow.__table__,  # type: ignore[dict-item]
    "wakeups": WakeupRow.__table__,  # type: ignore[dict-item]
}
#: Tables holding agent data that travel otherwise: who the agent is for (the importing user decides), the
#: attached sources (by name: ids differ between deployments), and a running step's lease (not memory).
OTHER_TABLES = {
    IdentityRow.__tablename__: "the user: the import names whose agent it becomes",
    AttachmentRow.__tablename__: "the attached sources, by scope and name",
    LeaseRow.__tablename__: "a running step's lock, not memory",
    EntityRow.__tablename__: "made again from the messages on import (store/entities.py)",
    EntityMentionRow.__tablename__: "made again from the messages on import, with the new message ids",
    FactRow.__tablename__: "the section facts, linked by position (store/facts.py exported/imported)",
}
#: Columns never exported: row ids (made anew), and what is the deployment's bookkeeping rather than memory
#: (the cache version, the quota counters, the count of passages an import recounts, a claim's process).
SKIPPED: dict[str, frozenset[str]] = {
    "agents": frozenset({"id", "version", "usage_day", "tokens_today", "usage_minute", "messages_this_minute",
                         "unsolicited_day", "unsolicited_sent", "archival_passages"}),
    "core_blocks": frozenset({"agent_id"}),
    "messages": frozenset({"id", "agent_id", "search_cjk"}),  # search_cjk: made from search_text on insert
    "wakeups": frozenset({"id", "agent_id", "claimed_by"}),
}


def agent_tables() -> list[Table]:
    """Every table that holds an agent's data, from the schema itself: `agents`, the tables with an
    `agent_id`, and any table linked to one of those by a foreign key."""
    tables = list(Base.metadata.sorted_tables)
    found = [t for t in tables if t.name == AgentRow.__tablename__ or "agent_id" in t.c]
    grew = True
    while grew:
        grew = False
        for table in tables:
            if table not in found and any(fk.column.table in found for fk in table.foreign_keys):
                found.append(table)
                grew = True
    return found


def _columns(table: Table) -> list[Column[Any]]:
    return [c for c in table.columns if c.name not in SKIPPED.get(table.name, frozenset())]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _typed(column: Column[Any], value: Any) -> Any:
    """A value of the file, as the column takes it (times are ISO text in the file)."""
    if value is not None and isinstance(value, str) and column.type.python_type is datetime:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    return value


def _rows(session: Session, table: Table, agent_id: int) -> Section:
    key = table.c.id if table.name == "agents" else table.c.agent_id
    order = [table.c[name] for name in ("id", "label") if name in table.c]
    rows = session.execute(select(*_columns(table)).where(key == agent_id).order_by(*order)).mappings()
    return [{name: _plain(value) for name, value in row.items()} for row in rows]


def dump(session: Session, agent_id: int) -> dict[str, Any]:
    """The agent's rows as plain data: one list per section, plus its attached sources (scope, name)."""
    data: dict[str, Any] = {name: _rows(session, table, agent_id) for name, table in SECTIONS.items()}
    data["agent"] = data["agent"][0] if data["agent"] else None
    attached = session.execute(
        select(SourceRow.scope, SourceRow.name)
        .join(AttachmentRow, AttachmentRow.source_id == SourceRow.id)
        .where(AttachmentRow.agent_id == agent_id)
        .order_by(SourceRow.scope, SourceRow.name)
    )
    data["sources"] = [{"scope": scope, "name": name} for scope, name in attached]
    data["facts"] = facts.exported(session, agent_id)
    return data


def _values(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """The row's values this schema knows (a file from a newer membot may carry more)."""
    return {c.name: _typed(c, row[c.name]) for c in _columns(table) if c.name in row}


def create(session: Session, data: dict[str, Any], passages: int) -> int:
    """A new agent made of `data` (as `dump` gives it), with no identity yet; its id. Messages keep their order
    (and the search index's triggers index them as they go in), and their entities are counted again from
    them; wake-ups are added by `link`."""
    values = _values(SECTIONS["agent"], data["agent"])
    agent_id = int(session.execute(insert(AgentRow).values(**values, archival_passages=passages)
                                   .returning(AgentRow.id)).scalar_one())
    for name in ("core_blocks", "messages"):
        table = SECTIONS[name]
        rows = [{**_values(table, row), "agent_id": agent_id} for row in data.get(name) or []]
        for start in range(0, len(rows), 500):  # executemany, in bounded batches
            session.execute(insert(table), rows[start:start + 500])
    _record_entities(session, agent_id)
    facts.imported(session, agent_id, data.get("facts") or [])
    return agent_id


def _record_entities(session: Session, agent_id: int) -> None:
    """Count the entities of the agent's messages, as its steps would have (they are not in the export: the
    messages are what they come from, and their ids are new here)."""
    m = MessageRow.__table__
    said = session.execute(select(m.c.id, m.c.role, m.c.kind, m.c.search_text, m.c.private, m.c.created_at)
                           .where(m.c.agent_id == agent_id, m.c.role.in_(entities.ROLES),
                                  m.c.search_text.is_not(None)).order_by(m.c.id)).all()
    for start in range(0, len(said), 500):  # bounded: each batch reads the entities of its keys
        entities.record(session, agent_id, [
            Message(agent_id=agent_id, role=r.role, kind=r.kind, search_text=r.search_text, private=r.private,
                    created_at=r.created_at, id=r.id) for r in said[start:start + 500]])


def link(session: Session, agent_id: int, data: dict[str, Any], who: dict[str, str], viewer: str) -> list[str]:
    """Make the new agent `who`'s (platform, scope, user_id, display_name), with its wake-ups and the attached
    sources that still exist here and that `viewer` may attach (shared ones, or private ones of theirs); returns
    the names of those that could not be attached."""
    session.add(IdentityRow(agent_id=agent_id, **who))
    table = SECTIONS["wakeups"]
    wakeups = [{**_values(table, row), "agent_id": agent_id} for row in data.get("wakeups") or []]
    if wakeups:
        session.execute(insert(table), wakeups)
    missing = []
    for source in data.get("sources") or []:
        found = session.execute(
            select(SourceRow.id, SourceRow.private, SourceRow.owner)
            .where(SourceRow.scope == source["scope"], SourceRow.name == source["name"])
        ).first()
        if found is None or (found.private and found.owner != viewer):
            missing.append(str(source["name"]))
            continue
        session.add(AttachmentRow(agent_id=agent_id, source_id=found.id))
    session.flush()
    return missing


def erase(session: Session, agent_id: int) -> None:
    """Delete every row of the agent, in every table that holds its data (its lease too: whoever held it for
    this delete has nothing left to give back). On SQLite the conversation search index is contentless, so
    its rows are deleted by their values first; on PostgreSQL they go with the messages."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(_FTS_DELETE, {"agent": agent_id, "token": f"a{agent_id}"})
    for table in reversed(agent_tables()):
        if table.name == "agents":
            continue
        if "agent_id" in table.c:
            session.execute(delete(table).where(table.c.agent_id == agent_id))
    session.execute(delete(AgentRow).where(AgentRow.id == agent_id))


# The values the insert trigger gave each row (migrations 0005, 0012, 0013): its text with its CJK words, the
# previous such text of the same agent and role (for a shared message, the previous shared one), and the agent's
# token. A contentless FTS5 table forgets a row only when told exactly these.
_FTS_DELETE = text(
    """INSERT INTO messages_fts(messages_fts, rowid, search_text, context, agent)
       SELECT 'delete', id, indexed, coalesce(CASE WHEN private
                  THEN lag(indexed) OVER (PARTITION BY role ORDER BY id)
                  ELSE lag(indexed) OVER (PARTITION BY role, private ORDER BY id) END, ''), :token
       FROM (SELECT id, role, private, search_text || coalesce(' ' || search_cjk, '') AS indexed
             FROM messages WHERE agent_id = :agent AND search_text IS NOT NULL)"""
)
