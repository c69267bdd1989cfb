"""Two processes, one agent: two `membot chat` for the same user, talking at once over one database. Every
message is answered, no step runs inside another's, and no memory edit or count is lost."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from sqlalchemy import select

from membot.agent.store.db import Database
from membot.agent.store.schema import BlockRow, MessageRow
from tests.fakes.openai_server import ScriptedModel, send, tool_call

pytestmark = pytest.mark.both_databases

PER_PROCESS = 4
_TAG = re.compile(r"\b([ab]\d)\b")


def _chain(body: dict):
    """A user message "tag" -> remember "fact-tag" -> reply "done tag"; a login -> greet."""
    messages = body["messages"]
    events = [(i, json.loads(m["content"])) for i, m in enumerate(messages) if m["role"] == "user"]
    last, said = next((i, e) for i, e in reversed(events) if e.get("type") in ("user_message", "login"))
    if said["type"] == "login":
        return send("ready")
    tag = _TAG.search(said["message"]).group(1)
    if not any(m["role"] == "assistant" for m in messages[last:]):
        return tool_call("core_memory_append", {"name": "human", "content": f"fact-{tag}.", "request_heartbeat": True})
    return send(f"done {tag}")


async def test_two_processes_talking_to_one_agent_never_interleave_and_lose_nothing(home, database_url, membot_forks):
    membot = membot_forks.membot
    env = {"MEMBOT_DATABASE_URL": database_url}
    async with ScriptedModel(default=_chain, latency=0.05) as model:
        # The same user's agent created once, before both start: a race to create it is another test's.
        code, _, err = await membot(model, home, "chat", "--user", "shared", stdin="", env=env)
        assert code == 0, err
        runs = await asyncio.gather(*(
            membot(model, home, "chat", "--user", "shared", env=env,
                   stdin="".join(f"message {who}{i}\n" for i in range(PER_PROCESS)))
            for who in "ab"
        ))
    for who, (code, out, err) in zip("ab", runs, strict=True):
        assert code == 0, err
        assert [line for line in out.splitlines() if line.startswith("done")] == [
            f"done {who}{i}" for i in range(PER_PROCESS)]

    db = await Database.open(database_url)
    try:
        rows = await db.rows(select(MessageRow.kind, MessageRow.content, MessageRow.tool_calls).order_by(MessageRow.id))
        human = await db.scalar(select(BlockRow.value).where(BlockRow.label == "private"))  # said privately
    finally:
        await db.close()
    # Split into steps at each incoming event: every tag within a step is that step's own.
    steps: list[list[str]] = []
    for kind, content, calls in rows:
        if kind in ("user_message", "login"):
            steps.append([])
        steps[-1].extend(_TAG.findall(f"{content or ''} {json.dumps(calls or '')}"))
    tagged = [step for step in steps if step]
    assert len(tagged) == 2 * PER_PROCESS
    assert all(len(set(step)) == 1 for step in tagged), tagged
    # Each process saw the other's core memory edits before making its own: none was written over.
    assert all(f"fact-{who}{i}." in human for who in "ab" for i in range(PER_PROCESS)), human
