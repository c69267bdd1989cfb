"""Crash consistency: `membot chat` killed with SIGKILL at seeded random points of a multi-function chain.

Each chain appends a fact to core memory, inserts a passage into archival memory, then replies. After every
kill the next process must load the agent and answer; at the end every user message is in recall memory
and no memory edit is applied twice or by half.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

from sqlalchemy import select

from membot.agent.store.schema import MessageRow
from membot.bot.identity import UserRef
from membot.bot.service import BotService
from tests.conftest import collect, make_settings, store_messages
from tests.fakes.openai_server import ScriptedModel, send, tool_call

KILLS = 20
_N = re.compile(r"crash test message (\d+)")


def chain(body: dict):
    """login -> greet; message i -> append fact i -> insert passage i -> reply."""
    messages = body["messages"]
    last_user = next(
        (json.loads(m["content"]) for m in reversed(messages) if m["role"] == "user"
         and json.loads(m["content"]).get("type") == "user_message"),
        None,
    )
    if messages[-1]["role"] == "user" and json.loads(messages[-1]["content"])["type"] == "login":
        return send("ready")
    if last_user is None:
        return send("ready")
    i = _N.search(last_user["message"]).group(1)
    done = [m for m in messages if m["role"] == "assistant" and i in json.dumps(m.get("tool_calls") or "")]
    names = [c["function"]["name"] for m in done for c in m["tool_calls"]]
    if "core_memory_append" not in names:
        return tool_call("core_memory_append", {"name": "human", "content": f"fact-{i}.", "request_heartbeat": True})
    if "archival_memory_insert" not in names:
        return tool_call("archival_memory_insert", {"content": f"passage-{i}.", "request_heartbeat": True})
    return send(f"done {i}")


async def test_sigkill_at_random_points_loses_nothing(home, membot_forks):
    rng = random.Random(20261121)
    async with ScriptedModel(default=chain, latency=0.08) as model:
        for i in range(KILLS):
            proc = await membot_forks.start(model, home, "chat", "--user", "victim")
            # Wait until the process is up (it greets on login), then send and kill mid-chain.
            greeting = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert greeting.strip() in (b"ready", b"") or greeting.startswith(b"done"), greeting
            proc.stdin.write(f"crash test message {i}\n".encode())
            await proc.stdin.drain()
            # Once the model is asked, the message was received (it is committed before the first call);
            # from there the kill lands anywhere in the chain: before, during or after each memory edit.
            for _ in range(2000):
                if any(f"crash test message {i}" in json.dumps(r["messages"][-1]) for r in model.requests):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError(f"message {i} never reached the model: {(await proc.stderr.read(2000))!r}")
            await asyncio.sleep(rng.uniform(0.0, 0.35))
            proc.kill()
            await proc.wait()

        service = await BotService.open(make_settings(home, model))
        try:
            victim = UserRef("terminal", "local", "victim", "victim")
            for i in range(KILLS):
                found = await service.search_memory(victim, f"crash test message {i}", limit=1)
                assert found and f"crash test message {i}" in found[0], i
            human = (await service.memory(victim)).blocks["private"][0]
            for i in range(KILLS):
                assert human.count(f"fact-{i}.") <= 1, (i, human)
            # Every fact line is whole: no half-applied edit.
            assert all(line.startswith(("fact-", "First name")) for line in human.splitlines()), human
            # A passage a search can show was stored by a step that committed: never an orphan, never twice.
            found = await service.search_memory(victim, "passage", archival=True, limit=100)
            calls = await service.engine.db.rows(select(MessageRow.tool_calls).where(MessageRow.role == "assistant"))
            recalled = json.dumps([c for (c,) in calls if c])
            for i in range(KILLS):
                hits = [line for line in found if f"passage-{i}." in line]
                assert len(hits) <= 1, (i, hits)
                if hits:
                    assert f"passage-{i}." in recalled, i
            # The agent still works.
            events = await collect(service.chat(victim, "crash test message 999"))
            assert [e.text for e in events if e.visible] == ["done 999"]
        finally:
            await service.close()


async def test_a_passage_whose_step_never_committed_is_not_shown(home, model, user):
    """The window between the Milvus write and the SQL commit, hit on purpose."""
    from membot.agent.memory.archival import agent_owner
    from membot.agent.store.passages import PassageRow
    from tests.fakes.openai_server import embed_text

    model.default = lambda body: send("ok")
    service = await BotService.open(make_settings(home, model))
    alice = user("alice")
    model.script(tool_call("archival_memory_insert", {"content": "a real passage about zebras and lions"}))
    await collect(service.chat(alice, "hello"))
    agent_id, _ = await service.agent_id(alice)
    # As if the next step committed its user message, ran archival_memory_insert (Milvus), and died
    # before committing the function's result.
    from membot.agent.messages import user_message

    await store_messages(service.engine.db, user_message(agent_id, "remember zebras"))
    await service.engine.passages.insert(
        agent_owner(agent_id), [PassageRow("orphaned passage about zebras", embed_text("orphaned passage about zebras", 64))]
    )
    await service.close()

    service = await BotService.open(make_settings(home, model))
    try:
        found = await service.search_memory(alice, "zebras", archival=True)
        assert len(found) == 1 and "a real passage" in found[0]
        assert (await service.memory(alice)).archival_passages == 1
        # The interrupted user message itself is kept.
        assert "remember zebras" in (await service.search_memory(alice, "zebras"))[0]
    finally:
        await service.close()
