"""Per-user quotas (messages a minute, model tokens a day), counted in the database so that processes count
together, and /cancel, which stops a running chain at its next model call from any process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from membot.agent.events import AssistantMessage, SystemNote
from membot.agent.notices import CANCELLED
from membot.agent.store.schema import AgentRow
from membot.bot.errors import QuotaReached
from membot.bot.service import CANCELLING, NOTHING_RUNNING, BotService
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import send, tool_call

pytestmark = pytest.mark.both_databases

# Today's (a step counts its tokens on the real day), at a time that makes the texts known.
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=30, microsecond=0)


async def _open(home, model, database_url, **quotas: Any) -> BotService:
    return await BotService.open(make_settings(home, model, MEMBOT_DATABASE_URL=database_url, **quotas))


async def _tokens(service: BotService, agent_id: int) -> tuple[str | None, int]:
    row = await service.engine.db.read(
        lambda s: s.execute(select(AgentRow.usage_day, AgentRow.tokens_today).where(AgentRow.id == agent_id)).one()
    )
    return row.usage_day, row.tokens_today


async def test_each_model_call_adds_its_tokens_to_the_day(service, model, user):
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Likes tea.", "request_heartbeat": True}),
                 send("Tea it is."))
    await collect(service.chat(user("ann"), "I like tea"))
    agent_id, _ = await service.agent_id(user("ann"))
    day, spent = await _tokens(service, agent_id)
    # The fake server reports usage: both calls' prompt and completion tokens are counted.
    assert day == datetime.now(UTC).strftime("%Y-%m-%d") and spent > 2 * 500


async def test_a_user_past_the_daily_tokens_is_told_plainly_and_nothing_is_taken(home, model, database_url, user):
    service = await _open(home, model, database_url, MEMBOT_USER_TOKENS_PER_DAY=100)
    try:
        service.quotas.clock = lambda: NOON
        model.script(send("Hello!"))
        assert [e.text for e in await collect(service.chat(user("bo"), "hi")) if isinstance(e, AssistantMessage)]
        with pytest.raises(QuotaReached, match=r"today's 100 tokens .* midnight UTC, in 12 h 0 min"):
            await collect(service.chat(user("bo"), "hi again"))
        assert len(model.requests) == 1
        # Another user's quota is their own.
        model.script(send("Hi Cy."))
        await collect(service.chat(user("cy"), "hi"))
        # A new day starts from zero.
        service.quotas.clock = lambda: NOON + timedelta(days=1)
        model.script(send("Morning!"))
        await collect(service.chat(user("bo"), "good morning"))
        assert len(model.requests) == 3
    finally:
        await service.close()


async def test_messages_a_minute_are_counted_across_processes(home, model, database_url, user):
    first = await _open(home, model, database_url, MEMBOT_USER_MESSAGES_PER_MINUTE=2)
    second = await _open(home, model, database_url, MEMBOT_USER_MESSAGES_PER_MINUTE=2)
    try:
        for service in (first, second):
            service.quotas.clock = lambda: NOON
        model.script(send("One."), send("Two."))
        await collect(first.chat(user("di"), "one"))
        await collect(second.chat(user("di"), "two"))
        with pytest.raises(QuotaReached, match=r"2 a minute.* again in 30 s"):
            await collect(first.chat(user("di"), "three"))
        second.quotas.clock = lambda: NOON + timedelta(minutes=1)
        model.script(send("Three."))
        events = await collect(second.chat(user("di"), "three"))
        assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["Three."]
    finally:
        await first.close()
        await second.close()


async def test_cancel_from_another_process_stops_the_chain_after_the_call_in_flight(home, model, database_url, user):
    running = await _open(home, model, database_url)
    other = await _open(home, model, database_url)
    in_flight, go_on = asyncio.Event(), asyncio.Event()

    async def slow_first_call(body: dict[str, Any]) -> Any:
        in_flight.set()
        await go_on.wait()
        return tool_call("core_memory_append", {"name": "human", "content": "Plays chess.", "request_heartbeat": True},
                         "Keep that.")

    try:
        assert await other.cancel(user("ed")) == NOTHING_RUNNING
        model.script(slow_first_call, send("Checkmate."))
        step = asyncio.ensure_future(collect(running.chat(user("ed"), "I play chess")))
        await asyncio.wait_for(in_flight.wait(), 10)
        assert await other.cancel(user("ed")) == CANCELLING
        go_on.set()
        events = await asyncio.wait_for(step, 10)
        assert any(isinstance(e, SystemNote) and e.text == CANCELLED for e in events)
        assert not any(isinstance(e, AssistantMessage) for e in events)
        assert len(model.requests) == 1 and model.pending == 1  # the next call was never made
        assert "Plays chess." in (await other.memory(user("ed"))).blocks["private"][0]  # what it did is kept
        assert await other.cancel(user("ed")) == NOTHING_RUNNING
        # The next message runs in full (the reply the cancelled chain did not ask for is still scripted).
        later = await collect(other.chat(user("ed"), "good game"))
        assert [e.text for e in later if isinstance(e, AssistantMessage)] == ["Checkmate."]
    finally:
        await running.close()
        await other.close()
