"""Facts with time: what an agent learnt, as (subject, relation, object) from a time on. Units of work over a
Session, for `Database.read` / `write`; every statement filters on the agent.

A newer object for the same subject and relation supersedes the current one: the old row keeps its object and
gets `valid_to` and `superseded_by`, so the history stays. Nothing is deleted but with the agent.

Scopes (agent/place.py): a fact keeps the scope it was learnt in. A shared step sees, and supersedes, shared facts
only. A private step sees both, but its fact supersedes only private ones: a shared fact ended from a DM would
vanish from the channels, telling them something by its absence. So a private step's reads merge the two: of
one subject and relation, a later fact with another object ends an earlier one in that view (`_timeline`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from itertools import groupby
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, tuple_
from sqlalchemy.orm import Session, aliased

from membot.agent.memory.entities import AROUND_NAMES, entity_key
from membot.agent.store.schema import EntityMentionRow, EntityRow, FactRow, MessageRow

MAX_NAME = 300
MAX_RELATION = 60


class FactRefused(ValueError):
    """A fact that cannot be recorded; the message says what to change."""


def _key_of(name: str) -> str:
    # A name of punctuation alone keeps a key of its own.
    return entity_key(name) or name.casefold()


def relation_name(relation: str) -> str:
    """A relation as stored: lower case, words joined by underscores ("Lives in" -> "lives_in")."""
    return "_".join(unicodedata.normalize("NFKC", relation).casefold().replace("_", " ").split()).strip(AROUND_NAMES)


def _day(moment: datetime, tz: tzinfo) -> str:
    """A naive UTC time (as stored) as a date in the zone `tz`."""
    return f"{moment.replace(tzinfo=UTC).astimezone(tz):%Y-%m-%d}"


@dataclass(frozen=True)
class Fact:
    """A fact as one view sees it: `valid_to` is its end in that view (None while current)."""

    id: int
    subject: str
    subject_key: str
    relation: str
    object: str
    object_key: str
    private: bool
    valid_from: datetime
    valid_to: datetime | None

    @property
    def current(self) -> bool:
        return self.valid_to is None

    def touches(self, key: str) -> bool:
        return key in (self.subject_key, self.object_key)

    def describe(self, tz: tzinfo = UTC) -> str:
        """'Caroline lives_in Sweden (since 2023-05-08)', or '(2021-01-01 to 2023-05-08)' once superseded; days in
        the user's zone `tz`."""
        start = _day(self.valid_from, tz)
        span = f"since {start}" if self.valid_to is None else f"{start} to {_day(self.valid_to, tz)}"
        return f"{self.subject} {self.relation} {self.object} ({span})"

    def other_end(self, key: str) -> str:
        """The name at the other end of the fact from the entity `key`."""
        return self.object if self.subject_key == key else self.subject


@dataclass(frozen=True)
class Added:
    """What `add_fact` did. `known`: nothing new was stored (`fact` is the known one). `replaced`: the facts the
    new one ends in this view. `until`: for a fact dated before a later one, that later fact (which ends it)."""

    fact: Fact
    known: bool
    replaced: list[Fact]
    until: Fact | None = None


def _fact(row: FactRow, valid_to: datetime | None) -> Fact:
    return Fact(row.id, row.subject, row.subject_key, row.relation, row.object, row.object_key, row.private,
                row.valid_from, valid_to)


def _visible(query: Select[Any], agent_id: int, private: bool) -> Select[Any]:
    query = query.where(FactRow.agent_id == agent_id)
    return query if private else query.where(FactRow.private.is_(False))


def _ordered(rows: Iterable[FactRow]) -> list[FactRow]:
    return sorted(rows, key=lambda row: (row.valid_from, row.id))


def _timeline(rows: list[FactRow]) -> list[Fact]:
    """One subject and relation's rows (oldest first) as the view that read them sees them. A row ends at its
    stored end or where a later row with another object starts, whichever is first (the merge of a private
    step); a row that repeats the object of the fact still holding at its start adds nothing but, if it holds
    longer, the length of that fact (a private row dated back before a shared one must not end it)."""
    facts: list[Fact] = []
    for index, row in enumerate(rows):
        end = row.valid_to
        later = next((r.valid_from for r in rows[index + 1:] if r.object_key != row.object_key), None)
        if later is not None and (end is None or later < end):
            end = later
        last = facts[-1] if facts else None
        if last is not None and last.object_key == row.object_key and (last.valid_to is None
                                                                        or last.valid_to >= row.valid_from):
            if last.valid_to is not None and (end is None or end > last.valid_to):
                facts[-1] = replace(last, valid_to=end)
            continue
        facts.append(_fact(row, end))
    return facts


def _group(session: Session, agent_id: int, subject_key: str, relation: str, private: bool) -> list[FactRow]:
    query = select(FactRow).where(FactRow.subject_key == subject_key, FactRow.relation == relation)
    return _ordered(session.scalars(_visible(query, agent_id, private)))


def _check(name: str, what: str, limit: int) -> str:
    name = " ".join(name.split())
    if not name:
        raise FactRefused(f"The {what} is empty; name it.")
    if len(name) > limit:
        raise FactRefused(f"The {what} is {len(name)} characters; keep it under {limit}.")
    return name


def _checked(subject: str, relation: str, object: str) -> tuple[str, str, str]:
    """A fact's three parts as stored, or FactRefused saying which part to change."""
    subject, object = _check(subject, "subject", MAX_NAME), _check(object, "object", MAX_NAME)
    relation = relation_name(_check(relation, "relation", MAX_RELATION))
    if not relation:
        raise FactRefused("The relation has no letters or digits; name it, e.g. lives_in.")
    return subject, relation, object


def add_fact(session: Session, agent_id: int, subject: str, relation: str, object: str, *, private: bool,
             valid_from: datetime | None, now: datetime) -> Added:
    """Record that `subject relation object` holds from `valid_from` (None: `now`), learnt in a private step or
    not. A fact the view already holds at that time is not stored again."""
    subject, relation, object = _checked(subject, relation, object)
    subject_key, object_key = _key_of(subject), _key_of(object)
    start = valid_from or now
    group = _group(session, agent_id, subject_key, relation, private)
    view = {fact.id: fact for fact in _timeline(group)}
    before = [row for row in group if row.valid_from <= start]
    after = [row for row in group if row.valid_from > start]
    previous, following = (before[-1] if before else None), (after[0] if after else None)
    if previous is not None and previous.object_key == object_key:
        return Added(view.get(previous.id) or _fact(previous, previous.valid_to), known=True, replaced=[])
    if following is not None and following.object_key == object_key and following.private == private:
        # Known from a later time: it held since earlier.
        if previous is not None and previous.private == private and previous.valid_to == following.valid_from:
            previous.valid_to = start
        following.valid_from = start
        session.flush()
        return Added(_fact(following, view[following.id].valid_to if following.id in view else None), True, [])
    row = FactRow(agent_id=agent_id, subject=subject, subject_key=subject_key, relation=relation, object=object,
                  object_key=object_key, private=private, valid_from=start, recorded_at=now,
                  valid_to=following.valid_from if following else None,
                  superseded_by=following.id if following else None)
    session.add(row)
    session.flush()
    replaced: list[Fact] = []
    if previous is not None:
        replaced.append(_fact(previous, start))
    for old in before:
        # Never a shared fact from a private step (see the module's docstring): the view merges them instead.
        if old.private == private and old.object_key != object_key and (old.valid_to is None or old.valid_to > start):
            old.valid_to, old.superseded_by = start, row.id
    session.flush()
    until = view.get(following.id) if following is not None else None
    return Added(_fact(row, row.valid_to), known=False, replaced=replaced, until=until)


def _touching(session: Session, agent_id: int, key: str, private: bool) -> list[Fact]:
    """Every fact of the view with `key` at either end, each timed within its subject and relation."""
    groups = _visible(select(FactRow.subject_key, FactRow.relation), agent_id, private).where(
        or_(FactRow.subject_key == key, FactRow.object_key == key)
    )
    query = _visible(select(FactRow), agent_id, private).where(
        tuple_(FactRow.subject_key, FactRow.relation).in_(groups)
    ).order_by(FactRow.subject_key, FactRow.relation)
    facts: list[Fact] = []
    for _, rows in groupby(session.scalars(query), key=lambda row: (row.subject_key, row.relation)):
        facts.extend(fact for fact in _timeline(_ordered(rows)) if fact.touches(key))
    return sorted(facts, key=lambda fact: (fact.valid_from, fact.id))


def current(session: Session, agent_id: int, key: str, *, private: bool) -> list[Fact]:
    """The facts about the entity `key` (as subject or object) that hold now, oldest first."""
    return [fact for fact in _touching(session, agent_id, key, private) if fact.current]


def recent(session: Session, agent_id: int, *, private: bool, limit: int = 10) -> tuple[list[Fact], int]:
    """The facts that hold now, newest first (at most `limit`), and how many hold in all: what `/memory` shows.
    Of one subject and relation, the latest fact without an end is the one that holds in the view (a later fact
    with another object ends the earlier ones there, see `_timeline`)."""
    open_rows = _visible(select(FactRow), agent_id, private).where(FactRow.valid_to.is_(None))
    latest: dict[tuple[str, str], FactRow] = {}
    for row in session.scalars(open_rows.order_by(FactRow.valid_from.desc(), FactRow.id.desc())):
        latest.setdefault((row.subject_key, row.relation), row)
    holding = [_fact(row, None) for row in latest.values()]
    return holding[:limit], len(holding)


def history(session: Session, agent_id: int, key: str, *, private: bool) -> list[Fact]:
    """Every fact about the entity `key`, current and superseded, oldest first."""
    return _touching(session, agent_id, key, private)


def co_mentioned(session: Session, agent_id: int, key: str, *, private: bool, limit: int = 10) -> list[str]:
    """The entities named in the same messages as the entity `key` (entity memory), most often first; a shared
    view counts shared messages only."""
    named, other = aliased(EntityRow), aliased(EntityRow)
    mention, beside = aliased(EntityMentionRow), aliased(EntityMentionRow)
    query = (
        select(other.key, other.name, func.count().label("times"))
        .select_from(named)
        .join(mention, mention.entity_id == named.id)
        .join(beside, and_(beside.message_id == mention.message_id, beside.entity_id != named.id))
        .join(other, other.id == beside.entity_id)
        .join(MessageRow, MessageRow.id == mention.message_id)
        .where(named.agent_id == agent_id, named.key == key, mention.agent_id == agent_id,
               beside.agent_id == agent_id, other.agent_id == agent_id, MessageRow.agent_id == agent_id,
               other.key != key)
        .group_by(other.key, other.name)
        .order_by(func.count().desc(), other.key)
        .limit(limit * 2)  # a private view may hold an entity twice, once per scope
    )
    if not private:
        query = query.where(named.private.is_(False), other.private.is_(False), MessageRow.private.is_(False))
    names: dict[str, str] = {}
    for row in session.execute(query):
        names.setdefault(row.key, row.name)
    return list(names.values())[:limit]


def neighbours(session: Session, agent_id: int, key: str, *, private: bool, limit: int = 20,
               known: Sequence[Fact] | None = None) -> list[str]:
    """The entities one hop from `key`: the other end of any fact touching it (those of current facts first),
    then those named in the same messages. `known`: the key's `history`, when the caller read it already."""
    touching = known if known is not None else _touching(session, agent_id, key, private)
    names: dict[str, str] = {}
    for fact in sorted(touching, key=lambda fact: (not fact.current, -fact.id)):
        other = fact.other_end(key)
        names.setdefault(_key_of(other), other)
    for name in co_mentioned(session, agent_id, key, private=private):
        names.setdefault(_key_of(name), name)
    names.pop(key, None)
    return list(names.values())[:limit]


# ----- export and import (bot/portable.py, through store/agent_data.py) ---------------------------------------


def exported(session: Session, agent_id: int) -> list[dict[str, Any]]:
    """The agent's facts as plain data, in the order they were stored: times as ISO text, and `superseded_by` as
    the position in this list of the fact that replaced it (ids differ between deployments). Keys are left out:
    the import makes them again."""
    rows = list(session.scalars(select(FactRow).where(FactRow.agent_id == agent_id).order_by(FactRow.id)))
    position = {row.id: index for index, row in enumerate(rows)}

    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return [{"subject": row.subject, "relation": row.relation, "object": row.object, "private": row.private,
             "valid_from": iso(row.valid_from), "recorded_at": iso(row.recorded_at), "valid_to": iso(row.valid_to),
             "superseded_by": position.get(row.superseded_by) if row.superseded_by is not None else None}
            for row in rows]


def imported(session: Session, agent_id: int, items: list[dict[str, Any]]) -> int:
    """Store exported facts (as `exported` gives them) as the agent's; how many. Their links to the facts that
    replaced them are set once all have ids (a fact dated back is replaced by one stored before it)."""

    def when(number: int, fact: dict[str, Any], field: str) -> datetime | None:
        text = fact.get(field)
        if not text:
            return None
        try:
            return datetime.fromisoformat(str(text)).replace(tzinfo=None)
        except ValueError:
            raise ValueError(f"Entry {number} of the export's 'facts' has {field} {str(text)[:40]!r}, "
                             "not an ISO time.") from None

    rows: list[FactRow] = []
    for number, fact in enumerate(items, 1):
        if not isinstance(fact, dict) or any(not fact.get(key) for key in ("subject", "relation", "object",
                                                                            "valid_from")):
            raise ValueError(f"Entry {number} of the export's 'facts' lacks subject, relation, object or valid_from.")
        try:  # checked as a fact the agent records is: a hand-edited file gets no further
            subject, relation, object = _checked(str(fact["subject"]), str(fact["relation"]), str(fact["object"]))
        except FactRefused as exc:
            raise ValueError(f"Entry {number} of the export's 'facts': {exc}") from None
        rows.append(FactRow(agent_id=agent_id, subject=subject, subject_key=_key_of(subject), relation=relation,
                            object=object, object_key=_key_of(object), private=bool(fact.get("private", True)),
                            valid_from=when(number, fact, "valid_from"),
                            recorded_at=when(number, fact, "recorded_at") or when(number, fact, "valid_from"),
                            valid_to=when(number, fact, "valid_to")))
    session.add_all(rows)
    session.flush()
    for row, fact in zip(rows, items, strict=True):
        link = fact.get("superseded_by")
        if isinstance(link, int) and 0 <= link < len(rows):
            row.superseded_by = rows[link].id
    session.flush()
    return len(rows)
