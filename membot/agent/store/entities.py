"""Entity memory in SQL, for one agent (see agent/memory/entities.py for what an entity is). Every statement
filters on the agent's id, and every read says whether the step asking is private: a shared step reads only
the entities learnt in shared conversations (agent/place.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial

from sqlalchemy import ColumnElement, Row, bindparam, func, insert, select, true, update
from sqlalchemy.orm import Session

from membot.agent.memory.entities import Entity, counted, extract, mentioned, merged, renamed
from membot.agent.messages import Message
from membot.agent.store.schema import EntityMentionRow, EntityRow

# Messages whose words are the user's or the agent's: events and function results name no entity of theirs.
ROLES = frozenset({"user", "assistant"})

_E, _M = EntityRow.__table__, EntityMentionRow.__table__
_COLUMNS = (_E.c.id, _E.c.key, _E.c.name, _E.c.aliases, _E.c.private, _E.c.mentions, _E.c.weight,
            _E.c.first_seen, _E.c.last_seen)


def _seen_by(private: bool) -> ColumnElement[bool]:
    """The entities a step may see: a private step all, a shared one the shared ones."""
    return true() if private else _E.c.private.is_(False)


# Built once: building a statement costs about as much as running it.
_OF_KEYS = select(*_COLUMNS).where(_E.c.agent_id == bindparam("agent"),
                                   _E.c.key.in_(bindparam("keys", expanding=True)))
_INSERT = insert(_E).returning(_E.c.id, _E.c.private, _E.c.key)
_UPDATE = (update(_E).where(_E.c.id == bindparam("entity"), _E.c.agent_id == bindparam("agent"))
           .values(name=bindparam("name"), aliases=bindparam("aliases"), mentions=bindparam("mentions"),
                   weight=bindparam("weight"), last_seen=bindparam("last_seen"),
                   first_seen=bindparam("first_seen")))
_LINK = insert(_M)


def _entity(row: Row) -> Entity:
    return Entity(key=row.key, name=row.name, mentions=row.mentions, weight=row.weight, last_seen=row.last_seen,
                  first_seen=row.first_seen, private=row.private, aliases=tuple(row.aliases or ()))


def record(session: Session, agent_id: int, messages: Iterable[Message]) -> list[Entity]:
    """Count the entities these newly stored messages name (their `search_text`, user and assistant messages
    only), each message once per entity, in the scope it was said in; link each message to them. Returns the
    rows of every entity it touched, in both scopes (what `TopEntities.update` takes). A few statements for all
    the messages, whatever their number: one read, one insert, one update, one insert of the links."""
    said = [(m, found) for m in messages if m.role in ROLES and m.search_text and (found := extract(m.search_text))]
    if not said:
        return []
    for message, _ in said:
        if message.agent_id != agent_id or message.id is None:
            raise ValueError(f"message {message.id} of agent {message.agent_id} cannot be recorded for agent "
                             f"{agent_id}: record an agent's own messages, after they are stored")
    keys = sorted({mention.key for _, found in said for mention in found})
    ids: dict[tuple[bool, str], int] = {}
    states: dict[tuple[bool, str], Entity] = {}
    for row in session.execute(_OF_KEYS, {"agent": agent_id, "keys": keys}):
        ids[(row.private, row.key)] = row.id
        states[(row.private, row.key)] = _entity(row)
    links: list[tuple[tuple[bool, str], int]] = []
    touched: set[tuple[bool, str]] = set()
    for message, found in said:
        at = message.created_at
        for mention in counted(found, partial(_known, states, message.private)):
            where = (message.private, mention.key)
            before = states.get(where) or Entity(mention.key, mention.name, 0, 0.0, at, at, message.private)
            name, aliases = renamed(before.name, before.aliases, mention.name)
            weight, last_seen = mentioned(before.weight, before.last_seen if before.mentions else None, at)
            states[where] = replace(before, name=name, aliases=aliases, mentions=before.mentions + 1,
                                    weight=weight, last_seen=last_seen, first_seen=min(before.first_seen, at))
            links.append((where, message.id))
            touched.add(where)
    new = [where for where in touched if where not in ids]
    if new:
        rows = [{"agent_id": agent_id, **_values(states[where])} for where in sorted(new)]
        for row in session.execute(_INSERT, rows):
            ids[(row.private, row.key)] = row.id
    changed = [{"entity": ids[where], "agent": agent_id, **_values(states[where])}
               for where in sorted(touched) if where not in new]
    if changed:
        session.execute(_UPDATE, changed)
    if links:
            session.execute(_LINK, [{"entity_id": ids[where], "message_id": message_id, "agent_id": agent_id}
                                for where, message_id in links])
    keys_touched = {key for _, key in touched}
    return [entity for (_, key), entity in states.items() if key in keys_touched]


def _known(states: dict[tuple[bool, str], Entity], private: bool, key: str) -> bool:
    """Whether the entity is known where a message was said: a shared message learns from shared talk only."""
    return (False, key) in states or (private and (True, key) in states)


def _values(entity: Entity) -> dict[str, object]:
    return {"key": entity.key, "name": entity.name, "aliases": list(entity.aliases), "private": entity.private,
            "mentions": entity.mentions, "weight": entity.weight, "first_seen": entity.first_seen,
            "last_seen": entity.last_seen}


def top(session: Session, agent_id: int, *, private: bool, now: datetime, limit: int) -> list[Entity]:
    """The agent's most talked-about entities at `now` as a step sees them (a private step: both scopes, merged
    by key). Ranked in Python over the agent's entities: the decay is a power of time that the two databases
    write differently, and it runs when an agent loads, not per step."""
    rows = session.execute(select(*_COLUMNS).where(_E.c.agent_id == agent_id, _seen_by(private)))
    return merged((_entity(row) for row in rows), now)[:limit]


def rare(session: Session, agent_id: int, keys: Sequence[str], *, private: bool, most: int) -> list[str]:
    """Of these keys, the entities the agent knows as the step sees them (scopes added up) that are named in at
    most `most` messages: a name said in a great many messages points at none of them (a speaker's name in a
    chat). One statement, on the (agent, private, key) index. Aliases share their entity's key (a written form
    differs only in case or dots), so looking up the key finds them too."""
    if not keys:
        return []
    query = (select(_E.c.key).where(_E.c.agent_id == agent_id, _E.c.key.in_(list(keys)), _seen_by(private))
             .group_by(_E.c.key).having(func.sum(_E.c.mentions) <= most))
    return list(session.scalars(query))


def mentioning(session: Session, agent_id: int, keys: Sequence[str], message_ids: Sequence[int], *,
               private: bool) -> dict[int, set[str]]:
    """Which of these entities each of these messages names, as a step sees them (a shared step: the entities
    learnt in shared talk, whose links are to shared messages only). Bounded by the messages asked about."""
    if not keys or not message_ids:
        return {}
    query = (select(_M.c.message_id, _E.c.key).join(_E, _E.c.id == _M.c.entity_id)
             .where(_M.c.agent_id == agent_id, _E.c.agent_id == agent_id, _M.c.message_id.in_(list(message_ids)),
                    _E.c.key.in_(list(keys)), _seen_by(private)))
    named: dict[int, set[str]] = {}
    for message_id, key in session.execute(query):
        named.setdefault(message_id, set()).add(key)
    return named
