"""SQLite ranked search when common words must find messages too: a query made only of common words, or one
whose rare words find too few of the agent's messages (see term_stats and recall.py).

FTS5's bm25() weighs each term by its count over the whole index, every agent's, and counts it afresh in each
query by reading the term's whole list: for a word in a large share of all messages that read is most of the
search. So common words are not given to bm25() here: the agent's messages holding any of the query's words
are found by the index without a score, the rare words' bm25 scores are read for the few that hold them, and
each message then gains the weight of the common words it holds (term_stats.rescore), as the candidates of an
ordinary search do.

A word in most messages (the "s" of every possessive) only weighs, unless too few messages are found without
it: the messages it alone finds would rank last, and finding them walks its list at each of the agent's
messages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, TextClause, bindparam, text
from sqlalchemy.orm import Session

from membot.agent.memory.term_stats import rescore

# A common word in more than this share of all messages finds nothing by itself while others find enough.
FINDER_SHARE = 0.25
# The weight (IDF, see term_stats.idf) of a word in that share of all messages.
_FINDER_IDF = math.log(1 + (1 - FINDER_SHARE) / FINDER_SHARE)

# The most candidates weighed in Python (a pass of each common word over each text, holding the GIL): the
# newest, beside every message a rare word finds. Only an agent with a very long history has more.
MOST_CANDIDATES = 5000

# The same conditions as the ranked search (recall.py), without bm25(): the index only lists the messages.
_CANDIDATES_SQL = """SELECT m.id, m.search_text, count(*) OVER () AS total FROM messages_fts
    CROSS JOIN messages AS m ON m.id = messages_fts.rowid
    WHERE messages_fts MATCH :query AND m.agent_id = :agent_id AND (:private OR NOT m.private){dated}
    ORDER BY m.id DESC LIMIT :most"""
# The texts of messages found already, by the same conditions (the rare words' hits).
_TEXTS = text("SELECT id, search_text FROM messages WHERE id IN :ids AND agent_id + 0 = :agent_id").bindparams(
    bindparam("ids", expanding=True))

_ROWS = text(
    """SELECT id, role, kind, search_text, content, created_at, in_context, private FROM messages
    WHERE id IN :ids AND agent_id + 0 = :agent_id"""
).bindparams(bindparam("ids", expanding=True)).columns(created_at=DateTime())


@lru_cache(maxsize=2)
def _candidates(dated: bool) -> TextClause:
    """The agent's messages matching :query, kept to those from :lo to :hi when `dated`."""
    if not dated:
        return text(_CANDIDATES_SQL.format(dated=""))
    return text(_CANDIDATES_SQL.format(dated=" AND m.created_at >= :lo AND m.created_at < :hi")).bindparams(
        bindparam("lo", type_=DateTime()), bindparam("hi", type_=DateTime())
    )


@dataclass(frozen=True)
class Hit:
    """One ranked message, with the fields a row of the ranked search (recall.py) has."""

    id: int
    score: float
    total: int  # the hits in all
    role: str
    kind: str
    search_text: str | None
    content: str
    created_at: datetime
    in_context: bool
    private: bool


def ranked(
    session: Session, terms: list[str], query: Callable[[list[str]], str], params: dict[str, Any],
    common: dict[str, float], scores: dict[int, float], limit: int, dated: bool,
) -> list[Hit]:
    """The best `limit` of the messages any of the terms finds, best first. `query`: the index's query for some
    terms; `params`: the ranked search's (agent_id, private, and lo, hi when `dated`); `common`: the common terms
    with their IDF; `scores`: the bm25 scores of the messages the rare terms find."""
    statement = _candidates(dated)
    params = {k: v for k, v in params.items() if k not in ("limit", "query")} | {"most": MOST_CANDIDATES}
    finders = [term for term in terms if common.get(term, math.inf) >= _FINDER_IDF] or terms
    found = session.execute(statement, params | {"query": query(finders)}).all()
    if len(found) < limit and len(finders) < len(terms):
        found = session.execute(statement, params | {"query": query(terms)}).all()
    total = found[0].total if found else 0
    have = {row.id for row in found}
    if missing := [row_id for row_id in scores if row_id not in have]:  # rare hits older than the newest found
        found += session.execute(_TEXTS, {"ids": missing, "agent_id": params["agent_id"]}).all()
    best = rescore([(row.id, row.search_text or "", scores.get(row.id, 0.0)) for row in found], common)[:limit]
    if not best:
        return []
    rows = {row.id: row for row in session.execute(_ROWS, {"ids": [i for i, _ in best],
                                                           "agent_id": params["agent_id"]})}
    return [_hit(rows[row_id], score, max(total, len(found))) for row_id, score in best if row_id in rows]


def _hit(row: Any, score: float, total: int) -> Hit:
    return Hit(row.id, score, total, row.role, row.kind, row.search_text, row.content, row.created_at,
               bool(row.in_context), bool(row.private))
