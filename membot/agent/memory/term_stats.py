"""How common each search term is across all messages, so that ranked search stays fast on long histories.

Ranking an OR query costs one BM25 score per message that holds any of its words. A word found in a
twentieth of all messages (a speaker's name, "go", "like") would have tens of thousands scored for a
ranking it barely moves, since its weight (IDF) is small. So, as a search engine's common-terms query does,
terms are split: the rarer ones find and rank the candidates; the common ones only add their weight to the
candidates that contain them (see `rerank`). Queries made only of common words are ranked in full: on
PostgreSQL by every word's weight, on SQLite by the weights of the words each message holds (recall_common.py:
FTS5's BM25 would read each common word's whole list for its weight).

Document frequencies are for the whole index (the share FTS5's own BM25 uses) and cached here: common
words are the ones every search repeats. Counts are refreshed when the index has grown by a tenth. On SQLite
they are counted in the FTS5 table among the newest messages (`SAMPLE_IDS`) and scaled to the whole: reading
a common word's whole list costs as much as the search, and only its share matters. On PostgreSQL, where they
also give each term its IDF weight in the ranking (see recall_pg.py), the commonest words' counts come from the
planner's statistics and the others' from the GIN index over `messages.search_vector`.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from membot.agent.memory.cjk import has_cjk

# Below this many messages holding it, a term is ranked in full whatever the size of the index.
COMMON_MIN_DOCS = 2_000
# Above one message in this many, a term is common.
COMMON_SHARE = 20
CACHE_SIZE = 4_096
# Cached counts stay valid until the index has grown by this factor.
STALE_GROWTH = 1.1
# On SQLite a term's messages are counted among the newest this many ids (all of them, in a smaller index).
SAMPLE_IDS = 50_000

_SIZE = text("SELECT coalesce(max(id), 0) FROM messages")
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Matcher:
    """How one database says "the messages whose text holds this term"."""

    where: str  # a FROM … WHERE clause over the index, with the term as :{name}
    quote: Callable[[str], str]  # the term as that clause takes it
    # (term, messages) for the terms (:terms) whose counts the database's own statistics already estimate.
    estimate: TextClause | None = None
    # Terms are counted in the newest messages: `where` kept to the ids above :lo (see `_sampled`).
    sampled: bool = False

    def capped(self, name: str) -> str:
        return f"(SELECT count(*) FROM (SELECT 1 FROM {self.where.format(name=name)} LIMIT :cap) AS {name})"

    def count(self) -> TextClause:
        return text(f"SELECT count(*) FROM {self.where.format(name='term')}")


# PostgreSQL's statistics (ANALYZE, run by autovacuum) list the lexemes most common in the vectors, with the
# share of messages holding each: the very terms whose exact count would read a large part of the table (a
# GIN index cannot count without visiting each row). Rarer terms are counted, which reads few rows; so is a
# term whose lexemes are not all listed, and every term before the first ANALYZE. The list is ten times the
# default's length (migration 0016), so that the words left to count are rare ones.
_PG_COMMON = text(
    """SELECT t.term, min(e.freq) * max(c.reltuples) * (1 - max(s.null_frac)) AS docs
    FROM unnest(CAST(:terms AS text[])) AS t(term)
    CROSS JOIN LATERAL unnest(tsvector_to_array(to_tsvector('english', t.term))) AS l(lexeme)
    LEFT JOIN (pg_stats AS s CROSS JOIN LATERAL unnest(
                 CAST(CAST(s.most_common_elems AS text) AS text[]), s.most_common_elem_freqs) AS e(lexeme, freq))
      ON s.schemaname = current_schema() AND s.tablename = 'messages' AND s.attname = 'search_vector'
         AND e.lexeme = l.lexeme
    LEFT JOIN pg_class AS c ON c.oid = CAST('messages' AS regclass)
    GROUP BY t.term
    HAVING count(e.freq) = count(*)"""
)

_MATCHERS = {
    # The text columns only: a word spelled like an agent's token (a12) must not count that agent's rows.
    "sqlite": _Matcher(
        "messages_fts WHERE messages_fts MATCH :{name}", lambda term: "{search_text context}: " + fts_phrase(term),
        sampled=True,
    ),
    # plainto_tsquery takes any text (a stop word gives an empty query, which matches nothing).
    "postgresql": _Matcher(
        "messages WHERE search_vector @@ plainto_tsquery('english', :{name})", lambda term: term, _PG_COMMON
    ),
}


def light_stem(word: str) -> str:
    """A rough stem for matching a query word inside a candidate's text (FTS5 itself uses Porter)."""
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def idf(docs: int, total: int) -> float:
    return math.log(1 + (total - docs + 0.5) / (docs + 0.5))


@dataclass(frozen=True)
class TermSplit:
    #: The terms that find and rank the candidates: the rare ones, or all of them when none or all are rare.
    rare: list[str]
    #: Common terms with their IDF, added to the score of candidates that contain them.
    common: dict[str, float]


def _inflections(term: str) -> re.Pattern[str]:
    """The term's light stem with any of the suffixes `light_stem` strips, as a whole word; a CJK term (a
    bigram or character, see cjk.py) anywhere, as it stands inside unspaced text."""
    if has_cjk(term):
        return re.compile(re.escape(term))
    alternatives = "|".join(_SUFFIXES)
    return re.compile(rf"\b{re.escape(light_stem(term))}(?:{alternatives})?\b", re.IGNORECASE)


def rescore(
    candidates: Sequence[tuple[int, str, float]], common: dict[str, float], boost: dict[int, float] | None = None
) -> list[tuple[int, float]]:
    """(id, score) of (id, text, bm25) candidates, best first, FTS5 scores being negative (lower is better),
    after adding the weight of each common term a candidate contains and multiplying by the candidate's `boost`
    (an entity of the query it names); ties go to the newer message."""
    boost = boost or {}
    patterns = [(light_stem(term).lower(), _inflections(term), weight) for term, weight in common.items()]
    scored = []
    for row_id, body, score in candidates:
        # An ASCII text without the stem cannot match: the search, slower, is left out (most candidates hold few
        # of the common terms).
        lower = body.lower() if body.isascii() else None
        bonus = sum(weight for stem, pattern, weight in patterns
                    if (lower is None or stem in lower) and pattern.search(body))
        scored.append(((score - bonus) * boost.get(row_id, 1.0), -row_id))
    scored.sort()
    return [(-neg_id, score) for score, neg_id in scored]


def rerank(
    candidates: Sequence[tuple[int, str, float]], common: dict[str, float], boost: dict[int, float] | None = None
) -> list[int]:
    """The ids of `rescore`, best first."""
    return [row_id for row_id, _ in rescore(candidates, common, boost)]


@dataclass(frozen=True)
class TermCounts:
    docs: dict[str, int]  # messages holding each term
    total: int  # messages in all
    cap: int  # past this many messages, a term is common

    def common(self, term: str) -> bool:
        return self.docs[term] > self.cap

    def idf(self, term: str) -> float:
        return idf(self.docs[term], self.total)


class TermFrequencies:
    """Process-wide cache of document frequencies in the message index (one per engine). `sample`: on SQLite,
    how many of the newest ids terms are counted among."""

    def __init__(self, sample: int = SAMPLE_IDS) -> None:
        self._sample = sample
        self._cache: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Searches run on the database's reader threads, several at once.
        self._lock = threading.Lock()

    def split(self, session: Session, terms: list[str]) -> TermSplit:
        counts = self.counts(session, terms)
        rare = [term for term in terms if not counts.common(term)]
        if not rare or len(rare) == len(terms):
            return TermSplit(terms, {})  # nothing to split: every term ranks
        return TermSplit(rare, {term: counts.idf(term) for term in terms if counts.common(term)})

    def common(self, session: Session, terms: list[str]) -> dict[str, float]:
        """The common ones of these terms, each with its IDF."""
        counts = self.counts(session, terms)
        return {term: counts.idf(term) for term in terms if counts.common(term)}

    def counts(self, session: Session, terms: list[str]) -> TermCounts:
        """How many messages hold each term, of how many (the newest id: near enough, and read at once)."""
        total = int(session.execute(_SIZE).scalar_one())
        cap = max(COMMON_MIN_DOCS, total // COMMON_SHARE)
        with self._lock:
            cached = {term: self._cached(term, total) for term in terms}
        missing = [term for term, count in cached.items() if count is None]
        docs = {term: count for term, count in cached.items() if count is not None}
        if missing:
            docs.update(self._count(session, missing, total, cap))
        return TermCounts(docs, total, cap)

    def _cached(self, term: str, total: int) -> int | None:
        cached = self._cache.get(term)
        if cached is None or total > cached[1] * STALE_GROWTH:
            return None
        self._cache.move_to_end(term)
        return cached[0]

    def _count(self, session: Session, terms: list[str], total: int, cap: int) -> dict[str, int]:
        # One statement for all the terms (each statement is a round trip to the database): on SQLite among the
        # newest messages; on PostgreSQL after the estimates its statistics keep. Counting a rare term is cheap;
        # only past the cap is a term's whole list counted, for its IDF.
        matcher = _MATCHERS[session.get_bind().dialect.name]
        counts: dict[str, int] = {}
        if matcher.sampled:
            counts = self._sampled(session, matcher.where + " AND rowid > :lo", matcher.quote, terms, total)
        elif matcher.estimate is not None:
            counts.update((term, round(docs)) for term, docs in session.execute(matcher.estimate, {"terms": terms}))
        rest = [term for term in terms if term not in counts]
        if rest:
            capped = ", ".join(matcher.capped(f"t{i}") for i in range(len(rest)))
            params: dict[str, object] = {f"t{i}": matcher.quote(term) for i, term in enumerate(rest)}
            row = session.execute(text(f"SELECT {capped}"), {**params, "cap": cap + 1}).one()
            counts.update(zip(rest, row, strict=True))
        for term in [t for t in rest if counts[t] > cap]:
            counts[term] = int(session.execute(matcher.count(), {"term": matcher.quote(term)}).scalar_one())
        self._keep(counts, total)
        return {term: int(count) for term, count in counts.items()}

    def _sampled(
        self, session: Session, where: str, quote: Callable[[str], str], terms: list[str], total: int
    ) -> dict[str, int]:
        """Each term's messages among the newest `sample` ids, scaled to all `total`: one statement, which reads
        at most that many of each term's list."""
        lo = max(0, total - self._sample)
        counted = ", ".join(f"(SELECT count(*) FROM {where.format(name=f't{i}')})" for i in range(len(terms)))
        params: dict[str, object] = {f"t{i}": quote(term) for i, term in enumerate(terms)}
        row = session.execute(text(f"SELECT {counted}"), {**params, "lo": lo}).one()
        return {term: round(hits * total / (total - lo)) if hits else 0 for term, hits in zip(terms, row, strict=True)}

    def _keep(self, counts: dict[str, int], total: int) -> None:
        with self._lock:
            for term, count in counts.items():
                self._cache[term] = (int(count), max(total, 1))
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
