"""Promises a memory bot must keep: nothing lost under concurrency, secrets never shown."""

from __future__ import annotations

import asyncio
import logging

from membot.agent.events import AssistantMessage
from membot.bot.settings import Settings
from tests.cli_helpers import membot
from tests.conftest import collect
from tests.fakes.openai_server import error, send


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
