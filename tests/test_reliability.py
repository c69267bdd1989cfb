"""Promises a memory bot must keep: nothing lost under concurrency, secrets never shown."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import aclosing

import pytest

from membot.agent.events import AssistantMessage, FunctionCall
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
    await asyncio.sleep(0.2)  # the step waits on the model; its first commit runs behind that call
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


async def test_a_step_cancelled_while_its_commit_waits_ends_only_after_that_commit(service, model, user):
    model.default = lambda body: send("ok")
    await collect(service.chat(user("dan"), "hi"))
    # Another agent's long commit holds the writer, so this step's first commit queues behind it.
    busy = asyncio.ensure_future(service.engine.db.write(lambda session: time.sleep(0.5)))
    model.script(tool_call("core_memory_append", {"name": "human", "content": "x", "request_heartbeat": True}, "t"))
    called = asyncio.Event()

    async def listen() -> None:
        async for event in service.chat(user("dan"), "remember the blue door"):
            if isinstance(event, FunctionCall):
                called.set()

    talking = asyncio.create_task(listen())
    await called.wait()
    await asyncio.sleep(0.05)  # the step waits on its commit before the function runs
    talking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await talking
    # The next message reloads the agent: only after the cancelled step's commit landed.
    await collect(service.chat(user("dan"), "hello again"))
    await busy
    assert "remember the blue door" in json.dumps(model.requests[-1]["messages"])
