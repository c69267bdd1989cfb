"""Conversation search on PostgreSQL: its own full-text search over `messages.search_vector` (the message's
text at weight A, the previous message of its agent and role at weight B; see migration 0003_pg_search).

The ranking is a BM25-like sum over the query's terms: each term's `ts_rank` in the message (stemmed term
frequency, weighted by where it stands, damped by the message's length) times the term's IDF over every
message, from the counts `TermFrequencies` keeps (see term_stats). `ts_rank_cd` alone, or `ts_rank` of the
whole OR query, has no IDF: a speaker's name then outweighs the one rare word a question is about. The IDF
is over all agents' messages, as FTS5's BM25 has it: an IDF within the agent alone would need every hit of
every term scored, which grows with the agent's history.

User text reaches the database only as bind parameters, each term through `plainto_tsquery`, which accepts
any text; the terms are OR-ed with `||` (a question's words ANDed would find nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Row, TextClause, text
from sqlalchemy.orm import Session

from membot.agent.memory.term_stats import TermCounts, TermFrequencies
from membot.agent.memory.when import TimeRange

# Weights of D, C, B, A: the neighbour context (B) counts half as much as the message itself (A), as FTS5's
# bm25(messages_fts, 1.0, 0.5) has it on SQLite.
WEIGHTS = "{0.1, 0.2, 0.5, 1.0}"
# ts_rank's normalization 1: divide by 1 + log(the message's length), a mild length penalty like BM25's.
NORMALIZATION = 1
# When the rare terms find at least this many of the agent's messages (two of conversation_search's pages),
# those are the results; when fewer, every term finds them. A fixed number, not the end of the page asked
# for, so that every page of one search comes from the same hits and reports the same total.
ENOUGH_RARE_HITS = 10


def ranked(
    session: Session, agent_id: int, terms: list[str], limit: int, stats: TermFrequencies, *, private: bool,
    split: bool = True, span: TimeRange | None = None,
) -> Sequence[Row[Any]]:
    """This agent's best `limit` messages for the terms, best first (ties to the newer message), each row with
    the number of hits in all (`total`) and the message's columns; private messages only if `private` (the step
    asking is private); only those of the time `span` if one is given. `split=False` (for the benchmark) has
    every term find the messages."""
    counts = stats.counts(session, terms)
    # Rare terms find the candidates and every term ranks them (see term_stats): a common word's hits are
    # then neither read from the index nor scored, unless the rare ones find too few.
    rare = [term for term in terms if not counts.common(term)]
    if split and rare and len(rare) < len(terms):
        ordered = rare + [term for term in terms if counts.common(term)]
        rows = session.execute(_statement(len(terms), len(rare), span is not None),
                               _params(agent_id, ordered, counts, limit, private, span)).all()
        if rows and rows[0].total >= ENOUGH_RARE_HITS:
            return rows
    return session.execute(_statement(len(terms), len(terms), span is not None),
                           _params(agent_id, terms, counts, limit, private, span)).all()


def boosted(rows: Sequence[Row[Any]], boost: dict[int, float]) -> list[Row[Any]]:
    """The rows re-ordered after multiplying each one's score by its `boost` (an entity of the query it names);
    ties to the newer message."""
    return sorted(rows, key=lambda row: (-row.score * boost.get(row.id, 1.0), -row.id))


def _params(
    agent_id: int, terms: list[str], counts: TermCounts, limit: int, private: bool, span: TimeRange | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"agent_id": agent_id, "limit": limit, "private": private}
    if span is not None:
        params |= {"lo": span.start, "hi": span.end}
    for i, term in enumerate(terms):
        params[f"t{i}"] = term
        params[f"w{i}"] = counts.idf(term)
    return params


@lru_cache(maxsize=256)
def _statement(terms: int, finding: int, dated: bool = False) -> TextClause:
    """The search for this many terms, of which the first `finding` find the messages and all rank them, kept
    to the messages from :lo to :hi if `dated`. Only parameter names are formatted in; the terms are bound.

    The agent and the OR of the terms both filter the GIN index (agent_id, search_vector), which intersects
    them inside the index; a GIN over the vector alone would hand over every agent's hits of a common word,
    or have the planner read all of the agent's messages to match each. Every hit is scored to be ranked, so counting them all (the window count) comes almost free;
    only the top rows' texts are read, by the outer join."""
    queries = ", ".join(f"plainto_tsquery('english', :t{i}) AS q{i}" for i in range(terms))
    any_term = " || ".join(f"q.q{i}" for i in range(finding))
    score = " + ".join(
        f"CAST(:w{i} AS float8) * ts_rank('{WEIGHTS}', m.search_vector, q.q{i}, {NORMALIZATION})"
        for i in range(terms)
    )
    between = " AND m.created_at >= :lo AND m.created_at < :hi" if dated else ""
    return text(
        f"""SELECT t.id, t.score, t.total, m.role, m.kind, m.search_text, m.content, m.created_at, m.in_context,
       m.private
        FROM (
          SELECT id, score, count(*) OVER () AS total FROM (
            SELECT m.id AS id, {score} AS score FROM messages AS m, (SELECT {queries}) AS q
            WHERE m.agent_id = :agent_id AND m.search_vector @@ ({any_term})
              AND (CAST(:private AS boolean) OR NOT m.private){between}) AS hits
          ORDER BY score DESC, id DESC LIMIT :limit) AS t
        JOIN messages AS m ON m.id = t.id
        ORDER BY t.score DESC, t.id DESC"""
    ).columns(created_at=DateTime())
