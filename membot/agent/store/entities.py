"""Entity memory in SQL, for one agent (see agent/memory/entities.py for what an entity is). Every statement
filters on the agent's id, and every read says whether the step asking is private: a shared step reads only
the entities learnt in shared conversations (agent/place.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial

from sqlalchemy import ColumnElement, Row, bindparam, func, insert, select, true, update
from sqlalchemy.orm import Session

from membot.agent.memory.entities import Entity, Mention, counted, extract, mentioned, merged, renamed
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


def _said(messages: Iterable[Message]) -> list[tuple[Message, list[Mention]]]:
    return [(m, found) for m in messages if m.role in ROLES and m.search_text and (found := extract(m.search_text))]


def keys_named(messages: Iterable[Message]) -> list[str]:
    """The keys of the entities these messages name, as `record` counts them (none: it writes nothing)."""
    return sorted({mention.key for _, found in _said(messages) for mention in found})


def keys_to_read(messages: Iterable[Message], absent: Collection[str]) -> list[str]:
    """The keys `keys_named` gives, or none when `record` would write nothing, given keys known to have no entity
    of the agent: every mention sentence-initial and of such a key (those count only once the entity is known,
    and nothing else would make it known), so the read of their entities can be spared."""
    mentions = [mention for _, found in _said(messages) for mention in found]
    if all(mention.initial and mention.key in absent for mention in mentions):
        return []
    return sorted({mention.key for mention in mentions})


def of_keys(session: Session, agent_id: int, keys: Sequence[str]) -> list[Row]:
    """The agent's entities with these keys, in both scopes (`_COLUMNS`): what `record` takes as `known`."""
    return list(session.execute(_OF_KEYS, {"agent": agent_id, "keys": list(keys)})) if keys else []


@dataclass
class Counted:
    """What recording some messages' entities writes, worked out from the entities' rows: the new entities (by
    scope and key), the changed ones (by id), each with its values, and the links, each to a message by its
    position in the messages given. `entities`: every entity touched, in both scopes (`record`'s answer)."""

    new: list[dict[str, object]]
    changed: list[dict[str, object]]
    links: list[tuple[bool, str, int | None, int]]  # scope, key, entity id if known, message position
    entities: list[Entity]


def count(agent_id: int, messages: Sequence[Message], known: Iterable[Row]) -> Counted:
    """Pure: what `record` writes for these messages (see there), given the agent's rows (`_COLUMNS`) of the
    entities they name."""
    ids: dict[tuple[bool, str], int] = {}
    states: dict[tuple[bool, str], Entity] = {}
    for row in known:
        ids[(row.private, row.key)] = row.id
        states[(row.private, row.key)] = _entity(row)
    links: list[tuple[bool, str, int | None, int]] = []
    touched: set[tuple[bool, str]] = set()
    for position, message in enumerate(messages):
        found = extract(message.search_text) if message.role in ROLES and message.search_text else []
        at = message.created_at
        for mention in counted(found, partial(_known, states, message.private)):
            where = (message.private, mention.key)
            before = states.get(where) or Entity(mention.key, mention.name, 0, 0.0, at, at, message.private)
            name, aliases = renamed(before.name, before.aliases, mention.name)
            weight, last_seen = mentioned(before.weight, before.last_seen if before.mentions else None, at)
            states[where] = replace(before, name=name, aliases=aliases, mentions=before.mentions + 1,
                                    weight=weight, last_seen=last_seen, first_seen=min(before.first_seen, at))
            links.append((*where, ids.get(where), position))
            touched.add(where)
    new = [{"agent_id": agent_id, **_values(states[where])} for where in sorted(touched) if where not in ids]
    changed = [{"entity": ids[where], "agent": agent_id, **_values(states[where])}
               for where in sorted(touched) if where in ids]
    keys_touched = {key for _, key in touched}
    return Counted(new, changed, links, [entity for (_, key), entity in states.items() if key in keys_touched])


def record(session: Session, agent_id: int, messages: Sequence[Message], known: Iterable[Row] | None = None
           ) -> list[Entity]:
    """Count the entities these newly stored messages name (their `search_text`, user and assistant messages
    only), each message once per entity, in the scope it was said in; link each message to them. Returns the
    rows of every entity it touched, in both scopes (what `TopEntities.update` takes). A few statements for all
    the messages, whatever their number: one read, one insert, one update, one insert of the links. `known`:
    the agent's rows (`_COLUMNS`) of the entities with the keys `keys_named` gives, read by the caller earlier in
    the same transaction; the read is then spared."""
    said = _said(messages)
    if not said:
        return []
    for message, _ in said:
        if message.agent_id != agent_id or message.id is None:
            raise ValueError(f"message {message.id} of agent {message.agent_id} cannot be recorded for agent "
                             f"{agent_id}: record an agent's own messages, after they are stored")
    if known is None:
        known = of_keys(session, agent_id, keys_named(messages))
    counts = count(agent_id, messages, known)
    ids = {(row.private, row.key): row.id for row in session.execute(_INSERT, counts.new)} if counts.new else {}
    if counts.changed:
        session.execute(_UPDATE, counts.changed)
    if counts.links:
        session.execute(_LINK, [{"entity_id": ids[(private, key)] if entity is None else entity,
                                 "message_id": messages[position].id, "agent_id": agent_id}
                                for private, key, entity, position in counts.links])
    return counts.entities


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
