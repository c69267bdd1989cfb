"""Common-terms search: rare words find the candidates, common ones only re-rank them (memory/term_stats.py)."""

from __future__ import annotations

import pytest

from membot.agent.memory.term_stats import COMMON_MIN_DOCS, idf, light_stem, rerank
from membot.agent.messages import user_message
from tests.conftest import store_messages

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)


def test_light_stem_matches_simple_inflections() -> None:
    assert light_stem("painting") == light_stem("painted") == light_stem("paints") == "paint"
    assert light_stem("is") == "is" and light_stem("bus") == "bus"  # too short to strip


def test_rerank_adds_the_weight_of_common_terms_a_candidate_holds() -> None:
    candidates = [(1, "a sunrise", -5.0), (2, "Caroline painted a sunrise", -4.5), (3, "sunrise again", -4.9)]
    assert rerank(candidates, {}) == [1, 3, 2]
    assert rerank(candidates, {"painting": 1.0}) == [2, 1, 3]
    # Equal scores: the newer message first.
    assert rerank([(1, "x", -1.0), (2, "x", -1.0)], {}) == [2, 1]


def test_idf_falls_as_a_term_gets_common() -> None:
    assert idf(10, 100_000) > idf(5_000, 100_000) > idf(50_000, 100_000) > 0


async def test_a_common_word_reorders_but_does_not_flood_the_results(service, user):
    alice, bob = user("alice"), user("bob")
    alice_id, _ = await service.agent_id(alice)
    bob_id, _ = await service.agent_id(bob)
    common = COMMON_MIN_DOCS + 100
    rows = [user_message(alice_id, f"Caroline said hello number {i}") for i in range(common)]
    rows += [
        user_message(alice_id, "Caroline painted the sunrise"),
        *(user_message(alice_id, f"sunrise photo number {i}") for i in range(12)),
        user_message(bob_id, "Caroline sunrise secret of bob"),
    ]
    await store_messages(service.engine.db, *rows)
    lines = await service.search_memory(alice, "When did Caroline paint a sunrise?", limit=10)
    # The rare word fills the page, the message that also names Caroline first; never bob's.
    assert len(lines) == 10 and all("sunrise" in line for line in lines)
    assert "Caroline painted the sunrise" in lines[0]
    assert not any("bob" in line for line in lines)
    # The same search twice gives the same answer (document frequencies come from the cache the second time).
    assert await service.search_memory(alice, "When did Caroline paint a sunrise?", limit=10) == lines
    # A word common in everyone's messages is still found for an agent whose rare words find nothing.
    assert any("secret of bob" in line for line in await service.search_memory(bob, "Caroline recipe"))
    # ...and fills a page the rare word cannot: the rare match first, then the common ones.
    lines = await service.search_memory(alice, "Caroline painted recipe", limit=10)
    assert "Caroline painted the sunrise" in lines[0] and len(lines) == 10
    # A query of common words only is still ranked in full.
    assert len(await service.search_memory(alice, "Caroline hello", limit=10)) == 10
