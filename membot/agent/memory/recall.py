"""Recall memory: every message an agent ever saw or wrote, in SQL, never deleted.

A `RecallMemory` is built for one agent and every query it runs filters on that agent's id: this is where
isolation between agents is enforced, not in callers. Every search also says whether the step asking is private
(agent/place.py): a step in a shared channel finds nothing said in a private conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache, partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Row,
    TextClause,
    and_,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from membot.agent.memory import recall_common, recall_pg, replies
from membot.agent.memory.entities import entity_key
from membot.agent.memory.paging import PAGE_SIZE, Page
from membot.agent.memory.query import STOP_WORDS, query_keys, query_terms
from membot.agent.memory.term_stats import TermFrequencies, TermSplit, fts_phrase, rerank
from membot.agent.memory.when import TimeRange, day_start_utc, find_time, mentions_time
from membot.agent.messages import Message
from membot.agent.store import entities, facts, wakeups
from membot.agent.store.db import Database
from membot.agent.store.schema import MessageRow, utcnow

# The MATCH itself keeps to the agent (see `fts_query`), so FTS5 reads only the agent's hits; the agent_id
# test on the joined row stays as the store's own guarantee. CROSS JOIN fixes the join order: the FTS index is
# read first. Left to itself the planner may walk the agent's messages and probe the index once per row (100x
# slower). Every hit is scored to be ranked anyway, so counting them all (the window count) comes almost free.
# (bm25() cannot sit beside a window function, hence the subquery.) Only the top rows' texts are read, by
# the outer join: carrying every hit's text through the sort cost a fifth of the search. bm25 weights: the
# text 1, its context 0.5, the agent column 0 (it only selects; its one token does count in each row's length,
# which bm25 normalises by, so near ties may order otherwise than before that column).
_FTS_RANKED_SQL = """SELECT t.id, t.score, t.total, m.role, m.kind, m.search_text, m.content, m.created_at, m.in_context,
       m.private
     FROM (
         SELECT id, score, count(*) OVER () AS total FROM (
           SELECT m.id AS id, bm25(messages_fts, 1.0, 0.5, 0.0) AS score FROM messages_fts
           CROSS JOIN messages AS m ON m.id = messages_fts.rowid
           WHERE messages_fts MATCH :query AND m.agent_id = :agent_id AND (:private OR NOT m.private){dated})
         ORDER BY score, id DESC LIMIT :limit) AS t
       CROSS JOIN messages AS m ON m.id = t.id
       ORDER BY t.score, t.id DESC"""


@lru_cache(maxsize=2)
def _fts_ranked(dated: bool) -> TextClause:
    """The ranked search, kept to the messages from :lo to :hi when `dated` (a time the query names)."""
    if not dated:
        return text(_FTS_RANKED_SQL.format(dated="")).columns(created_at=DateTime())
    return (
        text(_FTS_RANKED_SQL.format(dated=" AND m.created_at >= :lo AND m.created_at < :hi"))
        .bindparams(bindparam("lo", type_=DateTime()), bindparam("hi", type_=DateTime()))
        .columns(created_at=DateTime())
    )


_FTS_RANKED = _fts_ranked(False)
_TABLE = MessageRow.__table__
#: A Message's fields: every column but the index's CJK words, which the column's default makes on insert.
MESSAGE_FIELDS = [column for column in _TABLE.columns if column.key != "search_cjk"]
_COLUMNS = [column.key for column in MESSAGE_FIELDS if column.key != "id"]
_INSERT = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)
# Read when agents load, many at once (see `load_recall`); built once, as building costs as much as running.
_IN_CONTEXT = (
    select(*MESSAGE_FIELDS)
    .where(MessageRow.agent_id.in_(bindparam("agents", expanding=True)), MessageRow.in_context.is_(True))
    .order_by(MessageRow.agent_id, MessageRow.id)
)
_TALLY = (
    select(MessageRow.agent_id, func.count(), func.max(MessageRow.id))
    .where(MessageRow.agent_id.in_(bindparam("agents", expanding=True)))
    .group_by(MessageRow.agent_id)
)
_NEWEST = select(MessageRow.agent_id, MessageRow.role, MessageRow.created_at).where(
    MessageRow.id.in_(bindparam("ids", expanding=True))
)
# Candidates ranked by the rare terms beyond the page asked for, among which common terms re-order.
RERANK_DEPTH = 40
# Following entities (issue 23): a candidate that names an entity of the query has its score times 1 + the first
# weight, one naming a neighbour of it (a fact's other end, or named beside it) 1 + the second. Only candidates
# are re-ordered: the entity's name is a query word already, and a neighbour's turns that share no word with
# the query are too many to take in unranked.
ENTITY_BOOST = 0.5
NEIGHBOUR_BOOST = 0.25
# An entity named in more messages than this points at none of them (a chat's speakers, named in most turns).
ENTITY_MOST = 100
# Bounds the statements a query naming entities costs: each one's neighbours are two.
MAX_QUERY_ENTITIES = 3
MAX_NEIGHBOURS = 10


def fts_query(agent_id: int, terms: Sequence[str]) -> str:
    """The FTS5 query for any of the terms in the agent's messages. Each row's `agent` column holds the token
    `a<agent id>` (migration 0005): FTS5 intersects the agent's doclist with the terms' inside the index, rather
    than every agent's hits being found and filtered after. The terms are kept to the text columns, so that a
    word like "a12" never matches an agent's token."""
    return f'agent:"a{agent_id}" AND {{search_text context}}: ({" OR ".join(map(fts_phrase, terms))})'


def check_owner(agent_id: int, rows: Sequence[Message]) -> None:
    """Every message stored for an agent must be that agent's: what keeps one agent's words out of another's
    recall memory where messages are written."""
    for row in rows:
        if row.agent_id != agent_id:
            raise PermissionError("a message may only be stored in its own agent's recall memory")


def insert_messages(session: Session, rows: Sequence[Message]) -> None:
    """Insert messages (each already checked against its agent, see `check_owner`) and give each its id: one
    Core INSERT … RETURNING for all of them (SQLAlchemy runs it row by row on SQLite, to keep the ids in order)."""
    if not rows:
        return
    values = [{name: getattr(row, name) for name in _COLUMNS} for row in rows]
    ids = session.connection().execute(_INSERT, values).scalars().all()
    for row, row_id in zip(rows, ids, strict=True):
        row.id = row_id


def parse_day(value: str, field: str) -> date:
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{field} must be a date written YYYY-MM-DD, got {value!r}") from None


@dataclass
class RecallState:
    """What an agent keeps of its recall memory between steps, read when it loads."""

    context: list[Message] = field(default_factory=list)  # its context window's messages, oldest first
    count: int = 0  # messages in all
    newest: tuple[str, datetime] | None = None  # role and time of the newest message


def load_recall(session: Session, agent_ids: Sequence[int]) -> dict[int, RecallState]:
    """The recall state of each of these agents, in three statements for all of them. Every statement filters
    on the agents asked for, and each row goes to the state of the agent it belongs to."""
    states = {agent_id: RecallState() for agent_id in agent_ids}
    for row in session.execute(_IN_CONTEXT, {"agents": list(agent_ids)}):
        states[row.agent_id].context.append(Message(**row._mapping))
    newest: list[int] = []
    for agent_id, count, last_id in session.execute(_TALLY, {"agents": list(agent_ids)}):
        states[agent_id].count = count
        newest.append(last_id)
    if newest:
        for agent_id, role, created_at in session.execute(_NEWEST, {"ids": newest}):
            states[agent_id].newest = (role, created_at)
    return states


class RecallMemory:
    def __init__(self, db: Database, agent_id: int, terms: TermFrequencies) -> None:
        self.db = db
        self.agent_id = agent_id
        self.terms = terms

    # Writes take the caller's session so that a step's messages commit together with its memory edits.
    def add(self, session: Session, *rows: Message) -> None:
        """Insert the messages and give each its id: one Core INSERT … RETURNING."""
        check_owner(self.agent_id, rows)
        insert_messages(session, rows)

    def _own(self, ids: Sequence[int]) -> ColumnElement[bool]:
        """These messages, if they are this agent's. `agent_id + 0` keeps SQLite from walking the agent's whole
        index (ix_messages_agent_*) instead of looking the ids up by primary key: 11 ms vs 0.5 ms at 100,000."""
        return and_(MessageRow.id.in_(list(ids)), (MessageRow.agent_id + 0) == self.agent_id)

    def evict(self, session: Session, ids: Sequence[int]) -> None:
        """Take messages out of the context window; they stay in recall memory."""
        session.execute(
            update(MessageRow)
            .where(self._own(ids))
            .values(in_context=False)
        )

    async def search(
        self, query: str, page: int = 0, page_size: int = PAGE_SIZE, *, private: bool, tz: ZoneInfo | None = None,
        now: datetime | None = None,
    ) -> Page[Message]:
        """Ranked full-text search, best first, ties to the newer message: BM25 on SQLite's FTS5, an IDF-weighted
        ts_rank on PostgreSQL (see recall_pg). `private`: the step asking is private, and may find private
        messages. A time the query names ("last May", 上周; see when.py) in the zone `tz` (by default the
        agent's own, else UTC) at `now` keeps the search to messages of that time, the other hits following
        when those are too few to fill the page; a query naming only a time lists that time's messages, newest
        first."""
        terms = query_terms(query)
        if not terms:
            return Page([], 0, page, page_size)
        dated = mentions_time(query)
        return await self.db.read(partial(self._search, query if dated else None, terms, page, page_size, private,
                                          tz, now, query_keys(query)))

    def _search(
        self, query: str | None, terms: list[str], page: int, page_size: int, private: bool, tz: ZoneInfo | None,
        now: datetime | None, keys: list[str], session: Session,
    ) -> Page[Message]:
        window = (page + 1) * page_size
        weights = self._entity_weights(session, keys, private)
        span, every_term = None, terms
        if query is not None:
            zone = tz or wakeups.user_zone(session, self.agent_id)
            span, rest = find_time(query, now or utcnow(), zone)
            if span is not None:
                terms = query_terms(rest)
                if all(term in STOP_WORDS for term in terms):  # "what did we do yesterday": that day, listed
                    return self._listed(session, span, page, page_size, private)
        rows, total = self._ranked_rows(session, terms, window, private, span, weights)
        if span is not None and total < window:
            # Too few hits in that time (or the time was misremembered): the others follow them, found by every
            # word of the query, the time's too, as the text may say it ("in May we went...").
            seen = {row.id for row in rows}
            others, total = self._ranked_rows(session, every_term, window, private, None, weights)
            total = max(total, len(seen))
            rows += [row for row in others if row.id not in seen]
        shown = self._with_replies(session, rows[:window], private)
        # Replies that were not hits push the page's last hits on to the next page, never out of the results. The
        # total counts the replies found so far: exact once the page reaches the last hit.
        total = max(total, len(shown))
        return Page([self._message(row) for row in shown[page * page_size : window]], total, page, page_size)

    def _with_replies(self, session: Session, rows: Sequence[Any], private: bool) -> list[Any]:
        """The rows, each question among them with its reply just before it (see replies.py): one statement
        more when one of them asks something."""
        asking = replies.questions(rows)
        if not asking:
            return list(rows)
        found = session.execute(replies.replies_statement(private), {"ids": asking, "agent_id": self.agent_id})
        return replies.with_replies(rows, {row.question: row for row in found})

    def _ranked_rows(
        self, session: Session, terms: list[str], window: int, private: bool, span: TimeRange | None,
        weights: dict[str, float],
    ) -> tuple[list[Row[Any]], int]:
        """The agent's best `window` hits, best first, and how many there are in all. `weights`: the entities
        whose naming lifts a candidate (see `_entity_weights`)."""
        deeper = RERANK_DEPTH if weights else 0
        if not self.db.is_sqlite:
            found = recall_pg.ranked(session, self.agent_id, terms, window + deeper, self.terms, private=private,
                                     span=span)
            if weights:
                found = recall_pg.boosted(found, self._boosts(session, weights, [row.id for row in found], private))
            return list(found[:window]), found[0].total if found else 0
        # Rare terms find the candidates, common ones re-order them (see term_stats). Commonness is counted
        # over everyone's messages: when this agent's rare-term hits do not fill the page, every term ranks.
        split = self.terms.split(session, terms)
        ranked = self._ranked(session, split.rare, window + (RERANK_DEPTH if split.common else deeper), private,
                              span)
        if split.common and len(ranked) < window:
            split = TermSplit(terms, {})
            ranked = self._ranked(session, terms, window + deeper, private, span)
        by_id = {row.id: row for row in ranked}
        boost = self._boosts(session, weights, list(by_id), private) if weights else {}
        ids = rerank([(row.id, row.search_text or "", row.score) for row in ranked], split.common, boost)
        return [by_id[i] for i in ids[:window]], ranked[0].total if ranked else 0

    def _entity_weights(self, session: Session, keys: list[str], private: bool) -> dict[str, float]:
        """The entities the query names that the step may see and that are rare enough to point somewhere, and
        their neighbours one hop away, each with its weight; empty (after one indexed look-up) when it names
        none, so a plain query costs one statement more."""
        named = sorted(entities.rare(session, self.agent_id, keys, private=private, most=ENTITY_MOST))
        if not named:
            return {}
        weights = dict.fromkeys(named[:MAX_QUERY_ENTITIES], ENTITY_BOOST)
        near = {entity_key(name) for key in weights
                for name in facts.neighbours(session, self.agent_id, key, private=private, limit=MAX_NEIGHBOURS)}
        near -= weights.keys()
        for key in entities.rare(session, self.agent_id, sorted(near), private=private, most=ENTITY_MOST):
            weights[key] = NEIGHBOUR_BOOST
        return weights

    def _boosts(self, session: Session, weights: dict[str, float], ids: list[int], private: bool) -> dict[int, float]:
        """Each candidate's score factor: 1 + the largest weight among the entities it names."""
        named = entities.mentioning(session, self.agent_id, list(weights), ids, private=private)
        return {message_id: 1 + max(weights[key] for key in keys) for message_id, keys in named.items()}

    def _ranked(
        self, session: Session, terms: list[str], limit: int, private: bool, span: TimeRange | None
    ) -> Sequence[Row[Any] | recall_common.Hit]:
        """The agent's best `limit` hits for any of the terms, best first, each with its score and the count of
        all hits. Common terms (see term_stats) are not given to bm25(), whose weights would read their whole
        lists: they are ranked as recall_common says."""
        params: dict[str, Any] = {"query": fts_query(self.agent_id, terms), "agent_id": self.agent_id,
                                  "limit": limit, "private": private}
        if span is not None:
            params |= {"lo": span.start, "hi": span.end}
        common = self.terms.common(session, terms)
        if not common:
            return session.execute(_fts_ranked(span is not None), params).all()
        rare = [term for term in terms if term not in common]
        scores: dict[int, float] = {}
        if rare:  # every message a rare term finds (limit -1: no limit), to add to the common terms' weights
            found = session.execute(_fts_ranked(span is not None),
                                    params | {"query": fts_query(self.agent_id, rare), "limit": -1})
            scores = {row.id: row.score for row in found}
        return recall_common.ranked(session, terms, partial(fts_query, self.agent_id), params, common, scores, limit,
                                    span is not None)

    def _message(self, row: Row[Any]) -> Message:
        return Message(id=row.id, agent_id=self.agent_id, role=row.role, kind=row.kind, content=row.content,
                       search_text=row.search_text, created_at=row.created_at, in_context=bool(row.in_context),
                       private=bool(row.private))

    def _listed(self, session: Session, span: TimeRange, page: int, page_size: int, private: bool) -> Page[Message]:
        """The messages of that time, newest first: what a query naming only a time asks for."""
        return self._between(session, span.start, span.end, page, page_size, private, newest_first=True)

    def _between(
        self, session: Session, lo: datetime, hi: datetime, page: int, page_size: int, private: bool, *,
        newest_first: bool,
    ) -> Page[Message]:
        where = (
            MessageRow.agent_id == self.agent_id,
            MessageRow.search_text.is_not(None),
            MessageRow.created_at >= lo,
            MessageRow.created_at < hi,
        )
        if not private:
            where = (*where, MessageRow.private.is_(False))
        order = (MessageRow.created_at.desc(), MessageRow.id.desc()) if newest_first else (
            MessageRow.created_at, MessageRow.id)
        total = session.scalar(select(func.count()).select_from(MessageRow).where(*where)) or 0
        rows = session.execute(
            select(*MESSAGE_FIELDS).where(*where).order_by(*order).limit(page_size).offset(page * page_size)
        )
        return Page([Message(**row._mapping) for row in rows], total, page, page_size)

    async def search_dates(
        self, start: str, end: str, page: int = 0, page_size: int = PAGE_SIZE, *, private: bool
    ) -> Page[Message]:
        """Messages from start to end, both days included as the user's time zone has them (the same days a
        time named to `search` means), oldest first; private ones only for a private step."""
        first, last = parse_day(start, "start_date"), parse_day(end, "end_date")
        if last < first:
            raise ValueError(f"end_date {end} is before start_date {start}")

        def read(session: Session) -> Page[Message]:
            tz = wakeups.user_zone(session, self.agent_id)
            return self._between(session, day_start_utc(first, tz), day_start_utc(last + timedelta(days=1), tz),
                                 page, page_size, private, newest_first=False)

        return await self.db.read(read)
