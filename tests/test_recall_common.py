"""Ranked search when common words must find messages (memory/recall_common.py on SQLite): a query of common
words only, or one whose rare words find too few, is ranked by the weights of the words each message holds,
with no bm25() over a common word; still one agent's messages, private ones only for a private step. Term
counts on SQLite come from the newest messages (term_stats.SAMPLE_IDS)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from membot.agent.memory import recall_common, term_stats
from membot.agent.memory.recall import RecallMemory
from membot.agent.memory.term_stats import TermFrequencies, rerank, rescore
from membot.agent.messages import Message, user_message
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow
from tests.conftest import store_messages

pytestmark = pytest.mark.both_databases


@pytest.fixture(autouse=True)
def _few_make_common(monkeypatch: pytest.MonkeyPatch) -> None:
    """A word in more than three messages is common: the common-word paths without thousands of rows."""
    monkeypatch.setattr(term_stats, "COMMON_MIN_DOCS", 3)


async def _agents(db: Database, *names: str) -> list[int]:
    rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
    await db.add(*rows)
    return [row.id for row in rows]


def _said(agent: int, texts: list[str], private: bool = False) -> list[Message]:
    first = user_message(agent, "").created_at
    return [replace(user_message(agent, text), private=private, created_at=first + timedelta(seconds=i))
            for i, text in enumerate(texts)]


async def _texts(db: Database, agent: int, query: str, *, private: bool, page: int = 0, size: int = 5
                 ) -> tuple[list[str], int]:
    found = await RecallMemory(db, agent, TermFrequencies()).search(query, page, size, private=private)
    assert all(m.agent_id == agent for m in found.items)
    return [m.search_text or "" for m in found.items], found.total


async def test_a_query_of_common_words_ranks_the_messages_holding_more_of_them_first(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    await store_messages(db, *_said(alice, [f"hello number {i}" for i in range(6)] + [f"world tour {i}" for i in
                                                                                     range(5)]))
    await store_messages(db, *_said(alice, ["hello world at last"]), *_said(alice, ["hello world secret"], True),
                         *_said(bob, ["hello world hello world from bob"]))
    texts, total = await _texts(db, alice, "hello world", private=False)
    assert texts[0] == "hello world at last" and total == 12
    assert "hello world secret" not in texts and not any("bob" in t for t in texts)
    # A private step finds the private message too; of two holding both words, the newer first.
    texts, total = await _texts(db, alice, "hello world", private=True)
    assert texts[:2] == ["hello world secret", "hello world at last"] and total == 13
    # Pages follow one another: every hit once, each page in order.
    pages = [(await _texts(db, alice, "hello world", private=False, page=p))[0] for p in range(3)]
    assert sorted(sum(pages, [])) == sorted([f"hello number {i}" for i in range(6)] + [f"world tour {i}" for i in
                                                                                       range(5)] + ["hello world at last"])


async def test_a_rare_word_that_finds_too_few_comes_first_then_the_common_ones(db: Database):
    (alice,) = await _agents(db, "alice")
    await store_messages(db, *_said(alice, [f"hello number {i}" for i in range(6)] + [f"world tour {i}" for i in
                                                                                     range(5)]))
    await store_messages(db, *_said(alice, ["hello world at last", "a zebra"]))  # none has zebra as context
    texts, total = await _texts(db, alice, "hello world zebra", private=False)
    assert texts[:2] == ["a zebra", "hello world at last"] and len(texts) == 5 and total == 13


async def test_past_the_candidates_weighed_the_newest_and_every_rare_hit_are_kept(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(recall_common, "MOST_CANDIDATES", 4)
    (alice,) = await _agents(db, "alice")
    # The oldest holds the rare word: past the newest four common-word hits, it is still found first.
    await store_messages(db, *_said(alice, ["hello world zebra", "a zebra"] + [f"hello number {i}" for i in range(6)]
                                    + [f"world tour {i}" for i in range(5)]))
    texts, total = await _texts(db, alice, "hello world zebra", private=False)
    assert texts[0] == "hello world zebra" and "a zebra" in texts and total == 13


async def test_a_time_named_keeps_the_common_words_to_it_first(db: Database):
    (alice,) = await _agents(db, "alice")
    now = datetime(2026, 12, 3, 17, 0)
    old = [f"hello number {i}" for i in range(6)] + [f"world tour {i}" for i in range(5)]
    await store_messages(db, *[replace(m, created_at=now - timedelta(days=3)) for m in _said(alice, old)])
    yesterday = ["world peace", "hello world at last", "hello there"]
    await store_messages(db, *[replace(m, created_at=now - timedelta(days=1)) for m in _said(alice, yesterday)])
    found = await RecallMemory(db, alice, TermFrequencies()).search("hello world yesterday", private=False,
                                                                    tz=ZoneInfo("UTC"), now=now)
    texts = [m.search_text for m in found.items]
    # That day's three first, the one holding both words ahead; the other hits follow them.
    assert texts[0] == "hello world at last" and set(texts[1:3]) == {"world peace", "hello there"}
    assert len(texts) == 5 and found.total == 14


async def test_a_word_in_most_messages_only_weighs_unless_the_others_find_too_few(db: Database):
    if not db.is_sqlite:
        pytest.skip("SQLite's common-word search (recall_common); PostgreSQL ranks every word (recall_pg)")
    (alice,) = await _agents(db, "alice")
    await store_messages(db, *_said(alice, [f"yeah sure {i}" for i in range(12)] + ["hello yeah", "hello there",
                                                                                    "hello again", "hello you"]))
    texts, _ = await _texts(db, alice, "yeah hello", private=False, size=3)
    assert texts[0] == "hello yeah" and all("hello" in t for t in texts)
    texts, total = await _texts(db, alice, "yeah hello", private=False, size=10)
    assert texts[0] == "hello yeah" and all("hello" in t for t in texts[:4]) and len(texts) == 10
    assert total == 16


async def test_term_counts_come_from_the_newest_messages_scaled_to_all(db: Database):
    if not db.is_sqlite:
        pytest.skip("PostgreSQL counts from its statistics and its index (term_stats)")
    (alice,) = await _agents(db, "alice")
    await store_messages(db, *_said(alice, [f"apple {i}" for i in range(20)]))
    await store_messages(db, *_said(alice, [f"pear {i}" if i % 2 else f"plum {i}" for i in range(20)]))
    # A message is counted for a word in its text or its context (the previous message's text): "plum 0" has
    # "apple 19" as context, each plum after a pear has that pear.
    whole = await db.read(lambda s: TermFrequencies().counts(s, ["apple", "pear"]))
    assert whole.docs == {"apple": 21, "pear": 19} and whole.total == 40
    # Among the newest 20 of 40 ids: apple once ("plum 0"), pear 19 times; each count doubled.
    sampled = await db.read(lambda s: TermFrequencies(sample=20).counts(s, ["apple", "pear"]))
    assert sampled.docs == {"apple": 2, "pear": 38}


def test_rescore_gives_each_candidate_its_new_score_best_first():
    candidates = [(1, "a sunrise", -5.0), (2, "Caroline painted a sunrise", -4.5), (3, "CAFÉ PAINTING", 0.0)]
    assert rescore(candidates, {"painting": 1.0}) == [(2, -5.5), (1, -5.0), (3, -1.0)]
    # A text outside ASCII is searched as it is (the quick ASCII test is left out).
    assert rerank([(1, "ÉCOLE", 0.0), (2, "other", 0.0)], {"école": 1.0}) == [1, 2]


def test_the_share_past_which_a_word_only_weighs_matches_its_weight():
    assert term_stats.idf(251, 1_000) < recall_common._FINDER_IDF < term_stats.idf(249, 1_000)
