"""Conversation search that follows entities: a query naming an entity the agent knows lifts the turns that name
it, and those naming its neighbours (a fact's other end, or an entity named beside it); never another agent's
entities, and for a shared step never what was learnt in a private conversation."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from membot.agent.memory.query import query_keys
from membot.agent.memory.recall import ENTITY_MOST, RecallMemory
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import Message, user_message
from membot.agent.store import entities, facts
from membot.agent.store.db import Database
from membot.agent.store.schema import AgentRow
from tests.conftest import store_messages

pytestmark = pytest.mark.both_databases

START = datetime(2026, 5, 1, 12)
NOW = datetime(2026, 12, 3, 17, 0)
# Fillers between the turns: each message's search context is the one before it, which these keep apart.
FILLER = "the weather was mild"
BACKGROUND = 30
# The turn that names the entity but not the query's other word, and one that has that word twice: on words
# alone the second ranks first.
NAMED = "the dog Oscar slept by the fire"
WORDY = "food, more food at the market"
# A turn naming a neighbour of the query's entity, and its twin naming another: on words alone a tie, which goes
# to the newer (the twin, said after it).
NEIGHBOUR = "then Oscar got food"
TWIN = "then Rex got food"


async def _agents(db: Database, *names: str) -> list[int]:
    rows = [AgentRow(name=name, persona_name="p", human_name="h") for name in names]
    await db.add(*rows)
    return [row.id for row in rows]


def _turns(agent: int, texts: list[tuple[str, bool]]) -> list[Message]:
    return [replace(user_message(agent, text), created_at=START + timedelta(hours=i), private=private)
            for i, (text, private) in enumerate(texts)]


async def _remember(db: Database, agent: int, texts: list[tuple[str, bool]], *, learn: bool = True) -> None:
    """Store the turns as a step does; `learn`: count their entities too (as the step's own transaction does)."""
    # Other talk before them, so that the words searched for are rare enough to weigh (BM25's IDF).
    messages = _turns(agent, [(f"{FILLER} on day {i}", True) for i in range(BACKGROUND)] + texts)
    await store_messages(db, *messages)
    if learn:
        await db.write(lambda session: entities.record(session, agent, messages))


async def _order(db: Database, agent: int, query: str, *, private: bool = True) -> list[str]:
    page = await RecallMemory(db, agent, TermFrequencies()).search(query, private=private, now=NOW)
    assert all(m.agent_id == agent for m in page.items)
    return [m.search_text or "" for m in page.items]


def _before(order: list[str], first: str, second: str) -> bool:
    return order.index(first) < order.index(second)


def _fact(agent: int, subject: str, relation: str, obj: str, *, private: bool):
    def write(session: Session) -> None:
        facts.add_fact(session, agent, subject, relation, obj, private=private, valid_from=START, now=START)

    return write


def test_query_keys_are_the_names_a_query_may_hold():
    keys = query_keys("What did Caroline's dog eat in New York?")
    assert {"caroline", "new york", "dog"} <= set(keys)
    assert "caroline s" not in keys and "what" not in keys and "in" not in keys
    assert query_keys("明日は山田さんと")[0] == "山田"


async def test_a_turn_naming_the_entity_ranks_higher(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    texts = [(WORDY, True), (FILLER, True), (NAMED, True), (FILLER, True)]
    await _remember(db, bob, texts, learn=False)
    await _remember(db, alice, texts)
    query = "what food did Oscar like"
    # Bob's memory holds the same words but no entities: words alone rank the wordy turn first.
    assert _before(await _order(db, bob, query), WORDY, NAMED)
    assert _before(await _order(db, alice, query), NAMED, WORDY)


async def test_a_neighbour_through_a_fact_counts_and_only_for_its_own_agent(db: Database):
    alice, bob = await _agents(db, "alice", "bob")
    texts = [("we heard from Caroline today", True), (FILLER, True), (NEIGHBOUR, True), (FILLER, True),
             (TWIN, True), (FILLER, True)]
    await _remember(db, alice, texts)
    await _remember(db, bob, texts)
    query = "what food does Caroline's pet like"
    assert _before(await _order(db, alice, query), TWIN, NEIGHBOUR)  # Oscar is nothing to Caroline yet
    # Bob learns that Caroline has a dog named Oscar: Alice's search does not change.
    await db.write(_fact(bob, "Caroline", "has pet", "Oscar", private=True))
    assert _before(await _order(db, alice, query), TWIN, NEIGHBOUR)
    assert _before(await _order(db, bob, query), NEIGHBOUR, TWIN)
    await db.write(_fact(alice, "Caroline", "has pet", "Oscar", private=True))
    assert _before(await _order(db, alice, query), NEIGHBOUR, TWIN)


async def test_a_shared_step_ignores_what_was_learnt_in_private(db: Database):
    (alice,) = await _agents(db, "alice")
    # Caroline and Oscar are named together only in a DM: neighbours there, strangers in the channels.
    await _remember(db, alice, [("we heard from Caroline today", False), (FILLER, False), (NEIGHBOUR, False),
                                (FILLER, False), (TWIN, False), (FILLER, True),
                                ("our Caroline and Oscar are inseparable", True)])
    query = "what food does Caroline's pet like"
    shared = await _order(db, alice, query, private=False)
    assert "our Caroline and Oscar are inseparable" not in shared
    assert _before(shared, TWIN, NEIGHBOUR)
    assert _before(await _order(db, alice, query, private=True), NEIGHBOUR, TWIN)
    # Nor does a fact learnt in private link them for a shared step.
    await db.write(_fact(alice, "Oscar", "belongs to", "Caroline", private=True))
    assert _before(await _order(db, alice, query, private=False), TWIN, NEIGHBOUR)


async def test_an_entity_named_in_most_turns_lifts_none(db: Database):
    (alice,) = await _agents(db, "alice")
    # Mel is named in nearly every turn (as LoCoMo's speakers are): naming her points at no turn in particular.
    texts = [(f"{FILLER}, said Mel {i}", True) for i in range(ENTITY_MOST + 1)] + [(NAMED, True)]
    await _remember(db, alice, texts)

    def rare(private: bool):
        return lambda session: entities.rare(session, alice, ["mel", "oscar", "rex"], private=private,
                                             most=ENTITY_MOST)

    assert await db.read(rare(True)) == ["oscar"]
    assert await db.read(rare(False)) == []  # Oscar was named in private only
