"""Promises a memory bot must keep: nothing lost under concurrency, secrets never shown."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import aclosing

import pytest
from sqlalchemy import text as sql_text

from membot.agent.engine import UnknownAgent
from membot.agent.events import AssistantMessage, ErrorMessage
from membot.bot.service import CRASHED, BotService
from membot.bot.settings import Settings
from tests.cli_helpers import membot
from tests.conftest import collect
from tests.fakes.openai_server import error, send, tool_call


async def test_fifty_messages_from_one_user_all_answered_in_order(service, model, user):
    alice = user("alice")
    model.default = lambda body: send("re: " + body["messages"][-1]["content"].split('"message": "')[1][:4])
    tasks = []
    for i in range(50):
        tasks.append(asyncio.create_task(collect(service.chat(alice, f"m{i:03d} hello"))))
        await asyncio.sleep(0)  # each task enters the agent's queue in order
    results = await asyncio.gather(*tasks)
    replies = [next(e.text for e in r if isinstance(e, AssistantMessage)) for r in results]
    assert replies == [f"re: m{i:03d}" for i in range(50)]
    asked = [r["messages"][-1]["content"] for r in model.requests]
    assert [a.split('"message": "')[1][:4] for a in asked] == [f"m{i:03d}" for i in range(50)]


async def test_two_hundred_users_at_once_lose_nothing(service, model, user):
    model.latency = 0.05
    model.default = lambda body: send("ok")
    results = await asyncio.gather(*(collect(service.chat(user(f"u{i}"), f"hello from u{i}")) for i in range(200)))
    assert all(any(isinstance(e, AssistantMessage) for e in r) for r in results)
    for i in (0, 57, 199):
        found = await service.search_memory(user(f"u{i}"), f"u{i}", limit=1)
        assert found and f"hello from u{i}" in found[0]


async def test_secrets_never_reach_logs_or_users(model, home, caplog):
    secret_key, discord_token, slack_token = "sk-SECRET-KEY-123", "DISCORD-SECRET-456", "xoxb-SLACK-SECRET-789"
    model.script(error(401, "Incorrect API key provided: sk-SECR***123"))
    code, out, err = await membot(
        model, home, "-v", "chat", "--user", "alice", stdin="hello\n",
        env={"OPENAI_API_KEY": secret_key, "DISCORD_TOKEN": discord_token, "SLACK_BOT_TOKEN": slack_token},
    )
    assert code == 0
    assert "refused the API key" in out  # the user is told, briefly
    for secret in (secret_key, discord_token, slack_token):
        assert secret not in out and secret not in err
    settings = Settings(_env_file=None, OPENAI_API_KEY=secret_key, DISCORD_TOKEN=discord_token)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("membot").debug("settings: %r %s", settings, settings)
    assert secret_key not in caplog.text and discord_token not in caplog.text


async def test_a_step_cancelled_while_the_model_thinks_keeps_the_message(service, model, user):
    model.latency = 0.5
    model.default = lambda body: send("ok")
    talking = asyncio.create_task(collect(service.chat(user("dan"), "remember the blue door")))
    await asyncio.sleep(0.2)  # the step waits on the model; the message was committed before the call
    talking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await talking
    model.latency = 0
    found = await service.search_memory(user("dan"), "blue door", limit=1)
    assert found and "remember the blue door" in found[0]
    # The agent is loaded afresh from what was committed, and talks on.
    again = await collect(service.chat(user("dan"), "hello again"))
    assert [e.text for e in again if isinstance(e, AssistantMessage)] == ["ok"]
    assert "remember the blue door" in json.dumps(model.requests[-1]["messages"])


async def test_a_listener_that_stops_early_ends_the_step_before_the_next_one(service, model, user):
    model.script(
        tool_call("core_memory_append", {"name": "human", "content": "Likes green tea.", "request_heartbeat": True},
                  "Worth remembering."),
        send("Noted."),
    )
    async with aclosing(service.chat(user("eve"), "I like green tea")) as events:
        async for _ in events:
            break  # a platform gave up after the first event
    # The next message starts only after the closed step ended (under the agent's lock); the first message
    # was committed and is in the reloaded context.
    after = await collect(service.chat(user("eve"), "and biscuits"))
    assert [e.text for e in after if isinstance(e, AssistantMessage)] == ["Noted."]
    asked = json.dumps(model.requests[-1]["messages"])
    assert "I like green tea" in asked and "and biscuits" in asked


async def test_a_restarted_bot_loads_each_agent_with_only_its_own_memory(settings, model, user):
    model.default = lambda body: send("ok")
    first = await BotService.open(settings)
    try:
        for i in range(3):
            await collect(first.chat(user(f"p{i}"), f"my locker code is {i}{i}{i}"))
        await collect(first.chat(user("p1"), "and my bike is red"))
    finally:
        await first.close()
    service = await BotService.open(settings)
    try:
        ids = [(await service.agent_id(user(f"p{i}")))[0] for i in range(3)]
        loaded = await asyncio.gather(*(service.engine.load_agent(i) for i in [*ids, max(ids) + 1]),
                                      return_exceptions=True)
        assert isinstance(loaded[3], UnknownAgent)
        for i, agent in enumerate(loaded[:3]):
            said = " ".join(row.content or "" for row in agent.context)
            assert f"{i}{i}{i}" in said and not any(f"{j}{j}{j}" in said for j in range(3) if j != i)
            assert ("bike" in said) == (i == 1)
            assert (await agent.report()).recall_messages == (6 if i == 1 else 3)
    finally:
        await service.close()


async def test_a_commit_that_fails_shows_no_reply_and_the_agent_recovers(service, model, user, caplog):
    model.default = lambda body: send("ok")
    await collect(service.chat(user("gil"), "hi"))
    # A real failure inside SQLite: a message whose searchable text says "poison" is refused.
    await service.engine.db.write(lambda session: session.execute(sql_text(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN new.search_text LIKE '%poison%' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")))

    def replies(events: list) -> list[str]:
        return [e.text for e in events if isinstance(e, (AssistantMessage, ErrorMessage))]

    # The reply is shown only once its step's commit landed: here it never does, and the user is told.
    model.script(send("poison apple"))
    assert replies(await collect(service.chat(user("gil"), "name a fruit"))) == [CRASHED]
    assert "refused by the test" in caplog.text
    # The agent is loaded afresh from what was committed (the user's message, not the failed reply), and its
    # lease was given back: the next message is answered at once.
    assert replies(await asyncio.wait_for(collect(service.chat(user("gil"), "name a vegetable")), 5)) == ["ok"]
    stored = await service.search_memory(user("gil"), "fruit vegetable poison", limit=20)
    said = " ".join(stored)
    assert "name a fruit" in said and "name a vegetable" in said and "poison" not in said


async def test_an_unreadable_agent_fails_alone(settings, model, user):
    model.default = lambda body: send("ok")
    first = await BotService.open(settings)
    try:
        ids = []
        for name in ("hal", "ida", "jo"):
            await collect(first.chat(user(name), "hello"))
            ids.append((await first.agent_id(user(name)))[0])
        # ida's stored function call is damaged on disk.
        await first.engine.db.write(lambda session: session.execute(
            sql_text("UPDATE messages SET tool_calls = '{not json' WHERE agent_id = :agent AND tool_calls IS NOT NULL"),
            {"agent": ids[1]}))
    finally:
        await first.close()
    service = await BotService.open(settings)
    try:
        loaded = await asyncio.gather(*(service.engine.load_agent(i) for i in ids), return_exceptions=True)
        assert isinstance(loaded[1], ValueError)  # the JSON error of ida's row, for ida alone
        assert [agent.id for agent in (loaded[0], loaded[2])] == [ids[0], ids[2]]
        replies = await collect(service.chat(user("jo"), "still there?"))
        assert [e.text for e in replies if isinstance(e, AssistantMessage)] == ["ok"]
    finally:
        await service.close()
