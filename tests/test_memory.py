"""Core, recall and archival memory through the functions the model calls."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from membot.agent.events import AssistantMessage, FunctionResult
from membot.agent.place import PRIVATE, Place
from membot.agent.store.schema import MessageRow, utcnow
from tests.conftest import collect
from tests.fakes.openai_server import send, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)


#: Core memory's `human` block changes only in a shared channel (agent/place.py).
CHANNEL = Place.shared("test:general", "#general")


async def call(service, model, user, name, args, place=PRIVATE):
    """Have the agent run one function (no heartbeat), asked in `place`, and return its result event."""
    model.script(tool_call(name, args))
    events = await collect(service.chat(user, f"please run {name}", place))
    return next(e for e in events if isinstance(e, FunctionResult))


async def test_core_append_replace_and_limit(service, model, user):
    alice = user("alice")
    assert (await call(service, model, alice, "core_memory_append", {"name": "human", "content": "Likes tea"}, CHANNEL)).ok
    result = await call(service, model, alice, "core_memory_replace",
                        {"name": "human", "old_content": "Likes tea", "new_content": "Likes green tea"}, CHANNEL)
    assert result.ok
    before = (await service.memory(alice)).blocks["human"][0]
    assert "Likes green tea" in before
    result = await call(service, model, alice, "core_memory_append", {"name": "human", "content": "x" * 2500}, CHANNEL)
    assert not result.ok and "limit of 2000" in result.result and f"holds {len(before)}" in result.result
    assert (await service.memory(alice)).blocks["human"][0] == before  # nothing cut, nothing changed
    result = await call(service, model, alice, "core_memory_replace",
                        {"name": "human", "old_content": "Likes green tea", "new_content": ""}, CHANNEL)
    assert result.ok and "green tea" not in (await service.memory(alice)).blocks["human"][0]
    result = await call(service, model, alice, "core_memory_replace",
                        {"name": "persona", "old_content": "no such text", "new_content": "y"}, CHANNEL)
    assert not result.ok and "not found" in result.result


async def test_conversation_search_ranks_and_pages(service, model, user):
    alice = user("alice")
    model.default = lambda body: send("ok")
    for i in range(12):
        await collect(service.chat(alice, f"filler message number {i} about the weather"))
    await collect(service.chat(alice, "My dog Rex loves chasing the red ball in the park"))
    await collect(service.chat(alice, "I went to the park yesterday"))
    result = await call(service, model, alice, "conversation_search", {"query": "Rex dog ball"})
    lines = result.result.splitlines()
    # The Rex message first; the next one only through its context (the message before it), so below.
    assert lines[0].startswith("Showing results 1-2 of 2")
    assert "My dog Rex loves" in lines[1] and "I went to the park" in lines[2]
    result = await call(service, model, alice, "conversation_search", {"query": "park dog"})
    lines = result.result.splitlines()
    assert "Rex" in lines[1] and "I went to the park" in lines[2]  # both words beat one
    result = await call(service, model, alice, "conversation_search", {"query": "weather", "page": 1})
    # 12 fillers, and the Rex message whose context is the last filler.
    assert result.result.startswith("Showing results 6-10 of 13 (page 1 of pages 0-2")
    assert len(result.result.splitlines()) == 6
    result = await call(service, model, alice, "conversation_search", {"query": "weather", "page": 9})
    assert "No results on page 9" in result.result


async def test_conversation_search_by_date(service, model, user):
    alice = user("alice")
    model.default = lambda body: send("ok")
    await collect(service.chat(alice, "an old memory from last month"))
    old_day = utcnow() - timedelta(days=30)
    await service.engine.db.write(
        lambda session: session.execute(
            update(MessageRow).where(MessageRow.search_text == "an old memory from last month")
            .values(created_at=old_day)
        )
    )
    await collect(service.chat(alice, "something said today"))
    day = old_day.strftime("%Y-%m-%d")
    result = await call(service, model, alice, "conversation_search_date", {"start_date": day, "end_date": day})
    assert "of 1" in result.result and "an old memory" in result.result and "today" not in result.result
    today = utcnow().strftime("%Y-%m-%d")
    result = await call(service, model, alice, "conversation_search_date", {"start_date": day, "end_date": today})
    assert "an old memory" in result.result and "something said today" in result.result
    result = await call(service, model, alice, "conversation_search_date", {"start_date": today, "end_date": day})
    assert not result.ok and "before" in result.result


async def test_archival_insert_search_paging_and_isolation(service, model, user):
    alice, bob = user("alice"), user("bob")
    facts = [f"Alice fact {i}: she collects stamps from country {i}" for i in range(7)]
    for fact in facts:
        assert (await call(service, model, alice, "archival_memory_insert", {"content": fact})).ok
    assert (await call(service, model, alice, "archival_memory_insert", {"content": "Her cat Tom eats tuna"})).ok
    result = await call(service, model, alice, "archival_memory_search", {"query": "cat tuna"})
    lines = result.result.splitlines()
    assert lines[0].startswith("Showing passages 1-5 of 8") and "Her cat Tom eats tuna" in lines[1]
    result = await call(service, model, alice, "archival_memory_search", {"query": "stamps", "page": 1})
    assert result.result.startswith("Showing passages 6-8 of 8 (page 1 of pages 0-1)")
    # Bob's agent sees none of it, by search or by count.
    result = await call(service, model, bob, "archival_memory_search", {"query": "cat tuna stamps"})
    assert result.result == "No passages found."
    assert (await service.memory(bob)).archival_passages == 0
    assert (await service.memory(alice)).archival_passages == 8


async def test_two_messages_to_one_agent_never_interleave(service, model, user):
    alice = user("alice")
    model.latency = 0.2
    model.default = lambda body: send("reply to " + body["messages"][-1]["content"][-30:])
    first = asyncio.create_task(collect(service.chat(alice, "first message")))
    second = asyncio.create_task(collect(service.chat(alice, "second message")))
    await asyncio.gather(first, second)
    # The second request already holds the whole first exchange: they ran one after the other.
    assert len(model.requests) == 2
    later = [m.get("content") or "" for m in model.requests[1]["messages"]]
    assert any("first message" in c for c in later) and "second message" in later[-1]
    assert not any("second message" in (m.get("content") or "") for m in model.requests[0]["messages"])


async def test_different_agents_run_concurrently(service, model, user):
    model.latency = 0.5
    model.default = lambda body: send("hi")
    start = asyncio.get_running_loop().time()
    results = await asyncio.gather(*(collect(service.chat(user(f"u{i}"), "hello")) for i in range(4)))
    elapsed = asyncio.get_running_loop().time() - start
    assert all(any(isinstance(e, AssistantMessage) for e in r) for r in results)
    assert elapsed < 1.5  # four 0.5 s model calls overlapped


async def test_archival_store_failing_mid_use_is_a_function_failure(service, model, user):
    alice = user("alice")
    assert (await call(service, model, alice, "archival_memory_insert", {"content": "Alice likes tea"})).ok
    # The store breaks under the agent (a Milvus server gone away, say): its client is closed behind its back.
    service.engine.passages._opened.client.close()
    result = await call(service, model, alice, "archival_memory_insert", {"content": "Alice likes cake"})
    assert not result.ok and "archival store failed" in result.result
    # The agent goes on talking.
    model.script(send("Still here."))
    events = await collect(service.chat(alice, "hello?"))
    assert [e.text for e in events if getattr(e, "visible", False)] == ["Still here."]
