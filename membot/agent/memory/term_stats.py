"""How common each search term is across all messages, so that ranked search stays fast on long histories.

Ranking an OR query costs one BM25 score per message that holds any of its words. A word found in a
twentieth of all messages (a speaker's name, "go", "like") would have tens of thousands scored for a
ranking it barely moves, since its weight (IDF) is small. So, as a search engine's common-terms query does,
terms are split: the rarer ones find and rank the candidates; the common ones only add their weight to the
candidates that contain them (see `rerank`). Queries made only of common words are ranked in full.

Document frequencies are counted over the whole index (as FTS5's own BM25 does) and cached here: common
words are the ones every search repeats. Counts are refreshed when the index has grown by a tenth.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

# Below this many messages holding it, a term is ranked in full whatever the size of the index.
COMMON_MIN_DOCS = 2_000
# Above one message in this many, a term is common.
COMMON_SHARE = 20
CACHE_SIZE = 4_096
# Cached counts stay valid until the index has grown by this factor.
STALE_GROWTH = 1.1

_COUNT = text("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH :term")
_SIZE = text("SELECT coalesce(max(id), 0) FROM messages")
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


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
    """The term's light stem with any of the suffixes `light_stem` strips, as a whole word."""
    alternatives = "|".join(_SUFFIXES)
    return re.compile(rf"\b{re.escape(light_stem(term))}(?:{alternatives})?\b", re.IGNORECASE)


def rerank(candidates: Sequence[tuple[int, str, float]], common: dict[str, float]) -> list[int]:
    """Order (id, text, bm25) candidates, FTS5 scores being negative (lower is better), after adding the
    weight of each common term a candidate contains; ties go to the newer message."""
    patterns = [(_inflections(term), weight) for term, weight in common.items()]
    scored = []
    for row_id, body, score in candidates:
        bonus = sum(weight for pattern, weight in patterns if pattern.search(body))
        scored.append((score - bonus, -row_id))
    scored.sort()
    return [-neg_id for _, neg_id in scored]


class TermFrequencies:
    """Process-wide cache of document frequencies in the message index (one per engine)."""

    def __init__(self) -> None:
        self._cache: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Searches run on the database's reader threads, several at once.
        self._lock = threading.Lock()

    def split(self, session: Session, terms: list[str]) -> TermSplit:
        total = int(session.execute(_SIZE).scalar_one())
        cap = max(COMMON_MIN_DOCS, total // COMMON_SHARE)
        with self._lock:
            cached = {term: self._cached(term, total) for term in terms}
        missing = [term for term, count in cached.items() if count is None]
        docs = {term: count for term, count in cached.items() if count is not None}
        if missing:
            docs.update(self._count(session, missing, total, cap))
        rare = [term for term in terms if docs[term] <= cap]
        if not rare or len(rare) == len(terms):
            return TermSplit(terms, {})  # nothing to split: every term ranks
        return TermSplit(rare, {term: idf(docs[term], total) for term in terms if docs[term] > cap})

    def _cached(self, term: str, total: int) -> int | None:
        cached = self._cache.get(term)
        if cached is None or total > cached[1] * STALE_GROWTH:
            return None
        self._cache.move_to_end(term)
        return cached[0]

    def _count(self, session: Session, terms: list[str], total: int, cap: int) -> dict[str, int]:
        # One statement for all the terms (each statement is a round trip to the database thread). Counting a
        # rare term is cheap; only past the cap is a term's whole list counted, for its IDF.
        capped = ", ".join(
            f"(SELECT count(*) FROM (SELECT 1 FROM messages_fts WHERE messages_fts MATCH :t{i} LIMIT :cap))"
            for i in range(len(terms))
        )
        params: dict[str, object] = {f"t{i}": fts_phrase(term) for i, term in enumerate(terms)}
        counts = dict(zip(terms, session.execute(text(f"SELECT {capped}"), {**params, "cap": cap + 1}).one(),
                          strict=True))
        for term in [t for t, n in counts.items() if n > cap]:
            counts[term] = int(session.execute(_COUNT, {"term": fts_phrase(term)}).scalar_one())
        with self._lock:
            for term, count in counts.items():
                self._cache[term] = (int(count), max(total, 1))
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return {term: int(count) for term, count in counts.items()}
