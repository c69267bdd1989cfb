"""Context window management: a small window, a long conversation, oversized input, and overflow recovery."""

from __future__ import annotations

import json

import pytest

from membot.agent.context.tokens import TokenCounter
from membot.agent.context.window import ContextQueue, PromptBudget
from membot.agent.events import AssistantMessage, FunctionResult, SystemNote
from membot.agent.messages import assistant_message, tool_result, user_message
from tests.conftest import collect, small_window
from tests.fakes.openai_server import send, text, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)

WINDOW = 3200  # the fixed prompt (system, core memory, 9 tool schemas) is ~1,900 tokens by the fake's count


def is_summary_request(body: dict) -> bool:
    return "tools" not in body


def responder(body: dict):
    if is_summary_request(body):
        return text("The user has been telling me numbered notes with secret words.")
    return send("ok")


@pytest.fixture
async def small(home, database_url):
    async with small_window(home, database_url, WINDOW, responder) as running:
        yield running


async def test_long_conversation_stays_inside_a_small_window(small, user):
    service, model = small
    alice = user("alice")
    notes = []
    for i in range(200):
        events = await collect(service.chat(alice, f"Note {i}: today the secret word is zq{i}x, remember it."))
        assert any(isinstance(e, AssistantMessage) for e in events), i
        notes += [e.text for e in events if isinstance(e, SystemNote)]
    chat_requests = [r for r in model.requests if not is_summary_request(r)]
    summaries = [r for r in model.requests if is_summary_request(r)]
    assert model.max_prompt_tokens <= WINDOW  # the server never saw an oversized prompt
    # Each summary frees half the room, so they come every few turns, never every turn.
    assert len(chat_requests) >= 200 and 2 <= len(summaries) <= 100
    alerts = [n for n in notes if n.startswith("Memory pressure")]
    evictions = [n for n in notes if "evicted" in n]
    # One alert per filling: never more alerts than fillings.
    assert 1 <= len(alerts) <= len(evictions) + 1
    # Every message is still in recall memory and found by the same search conversation_search uses.
    for i in range(200):
        found = await service.search_memory(alice, f"zq{i}x", limit=1)
        assert found and f"secret word is zq{i}x" in found[0], i
    report = await service.memory(alice)
    assert report.summary_hidden > 0 and report.summary
    assert report.context_tokens <= WINDOW
    summary_msg = json.loads(chat_requests[-1]["messages"][1]["content"])
    assert summary_msg["type"] == "system_summary" and "conversation_search" in summary_msg["message"]


async def test_huge_message_and_huge_function_result(small, user):
    service, model = small
    alice = user("alice")
    huge = "word " * 20_000  # 100,000 characters
    events = await collect(service.chat(alice, huge + " marker-huge"))
    assert any(isinstance(e, AssistantMessage) for e in events)
    # A search whose result holds the whole message: a 100,000-character function result.
    replies = [tool_call("conversation_search", {"query": "marker-huge", "request_heartbeat": True}),
               send("found it")]
    # Summary calls may come in between; they get summaries, the chat gets the scripted replies in order.
    model.default = lambda body: responder(body) if is_summary_request(body) else replies.pop(0)
    events = await collect(service.chat(alice, "find the long one"))
    result = next(e for e in events if isinstance(e, FunctionResult))
    assert result.ok and len(result.result) > 50_000
    assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["found it"]
    assert model.max_prompt_tokens <= WINDOW
    # Whole in recall, cut (with a note) in the context.
    found = await service.search_memory(alice, "marker-huge", limit=1)
    assert len(found[0]) > 100_000
    cut = [m for r in model.requests for m in r["messages"] if "cut here" in (m.get("content") or "")]
    assert cut and all(len(m["content"]) < 10_000 for m in cut)


async def test_summariser_down_still_frees_room(small, user):
    service, model = small
    alice = user("alice")

    def no_summaries(body: dict):
        if is_summary_request(body):
            from tests.fakes.openai_server import error

            return error(500, "summariser down")
        return send("ok")

    model.default = no_summaries
    for i in range(60):
        events = await collect(service.chat(alice, f"Message {i} with some padding text to fill the window up."))
        assert any(isinstance(e, AssistantMessage) for e in events), (i, events)
    assert model.max_prompt_tokens <= WINDOW
    report = await service.memory(alice)
    assert report.summary_hidden > 0 and "without a summary" in report.summary


def test_the_context_queue_keeps_each_message_beside_its_prompt_form_and_tokens() -> None:
    budget = PromptBudget(window=2000, counter=TokenCounter())
    first = [user_message(1, "hello"), assistant_message(1, "thinking", None)]
    queue = ContextQueue(budget, first)
    queue.append(user_message(1, "x" * 5000))  # oversized: cut in the prompt, whole in recall memory
    queue.extend([tool_result(1, "c1", "send_message", True, None)])

    def consistent() -> bool:
        fresh = [budget.entry(row) for row in queue.rows]
        return list(zip(queue.forms, queue.sizes, strict=True)) == fresh and queue.tokens == sum(queue.sizes)

    assert len(queue) == 4 and consistent()
    assert "cut here" in queue.forms[2]["content"] and len(queue.rows[2].content or "") > 5000
    assert queue.drop_oldest(2) == first
    assert list(queue) == queue.rows and len(queue) == 2 and consistent()
