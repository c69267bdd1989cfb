"""Conversation search keeps to the searching agent inside the index: another agent's messages never come back,
however much better they match, and no word of a query matches the agent column SQLite's index keeps."""

from __future__ import annotations

import pytest

from membot.agent.memory.recall import RecallMemory, fts_query
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import user_message
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow
from tests.conftest import store_messages

pytestmark = pytest.mark.both_databases


async def _agents(db: Database, *names: str) -> list[int]:
    rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
    await db.add(*rows)
    return [row.id for row in rows]


async def test_search_for_one_agent_never_returns_anothers_better_matches(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    # Bob's messages hold every query word, many times over, and outnumber Alice's: ranked over all agents,
    # they would fill the first pages.
    await store_messages(db, *(user_message(bob, f"tabby cat tabby cat sleeps on the tabby mat {i}")
                               for i in range(30)))
    await store_messages(db, user_message(alice, "I like tea"), user_message(alice, "my neighbour has a cat"))
    await store_messages(db, *(user_message(bob, f"the tabby cat again {i}") for i in range(30)))
    recall = RecallMemory(db, alice, TermFrequencies())
    for page_size in (1, 5, 50):
        page = await recall.search("tabby cat mat sleeps", page_size=page_size, private=True)
        assert [m.search_text for m in page.items] == ["my neighbour has a cat"]
        assert page.total == 1 and all(m.agent_id == alice for m in page.items)
    assert (await recall.search("tabby", private=True)).total == 0
    assert (await RecallMemory(db, bob, TermFrequencies()).search("neighbour", private=True)).total == 0


async def test_a_query_word_that_spells_an_agent_token_matches_only_text(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    await store_messages(db, user_message(alice, "hello there"), user_message(bob, "hello again"),
                         user_message(alice, f"room a{bob} is booked"))
    recall = RecallMemory(db, alice, TermFrequencies())
    # Alice's own token is in her every row's agent column, Bob's in his: neither is a word either wrote.
    assert (await recall.search(f"a{alice}", private=True)).total == 0
    assert [m.search_text for m in (await recall.search(f"a{bob}", private=True)).items] == [f"room a{bob} is booked"]
    assert (await RecallMemory(db, bob, TermFrequencies()).search(f"a{bob}", private=True)).total == 0


def test_the_fts_query_names_the_agent_and_keeps_the_terms_to_the_text():
    assert fts_query(7, ["cat", 'say "hi"']) == 'agent:"a7" AND {search_text context}: ("cat" OR "say ""hi""")'
