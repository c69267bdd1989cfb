"""Reflection at rest: what one reflection costs (MEMBOT_REFLECT_AFTER_MINUTES), and that it costs nothing when
off. A user talks for a while (LoCoMo-like turns of ordinary length); the conversation then rests, and the
scheduler fires the reflection the last message set. The scripted model reflects as an agent would: it
archives a fact (with a heartbeat) and tidies core memory, then stops, sending nothing. Its cost is what the
step spends, as the quotas count it: model calls and tokens (the server's count of prompt and completion)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from bench import Row, Target, drain, log, open_service, scripted_model, user
from membot.agent.store.schema import utcnow
from membot.agent.store.usage import today, tokens_on
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from tests.fakes.openai_server import ChatReply, send, text, tool_call

NAME = "reflection"
REFLECT_MINUTES = 30
TURNS = 20


def _reflecting(body: dict[str, Any]) -> ChatReply:
    """Replies to the user; on a reflection, archives (with a heartbeat), then edits core memory and stops."""
    if not body.get("tools"):
        return text("The user and I talked about their week.")
    last = body["messages"][-1].get("content") or ""
    if '"reflection"' in last:
        return tool_call("archival_memory_insert", {"content": "The user's week: work, tea, a trip in May.",
                                                    "request_heartbeat": True}, "Worth keeping for later.")
    if '"heartbeat"' in last:
        return tool_call("core_memory_append", {"name": "human", "content": "Plans a trip in May."},
                         "Core memory gets the gist.")
    return send("I see. Tell me more.")


async def _spent(service: BotService, agent_id: int) -> int:
    return await service.engine.db.read(partial(tokens_on, agent_id=agent_id, day=today()))


async def _one(reflect: bool) -> tuple[int, int, int]:
    """(model calls of the reflection, tokens it spent, messages it sent)."""
    env = {"MEMBOT_REFLECT_AFTER_MINUTES": REFLECT_MINUTES} if reflect else {}
    async with scripted_model() as model, open_service(model, **env) as service:
        model.default = _reflecting
        who = user("traveller")
        for turn in range(TURNS):
            await drain(service.chat(who, f"Turn {turn}: this week I worked, drank tea and planned a trip."))
        agent_id, _ = await service.agent_id(who)
        calls, tokens = len(model.requests), await _spent(service, agent_id)
        sent: list[str] = []

        async def deliver(_: int, events: Any) -> None:
            async for event in events:
                if event.visible:
                    sent.append(event.text)

        fired = await Scheduler(service, deliver).tick(utcnow() + timedelta(minutes=REFLECT_MINUTES + 1))
        log(f"reflection {'on' if reflect else 'off'}: {fired} wake-ups fired")
        return len(model.requests) - calls, await _spent(service, agent_id) - tokens, len(sent)


async def run(quick: bool) -> list[Row]:
    del quick  # one reflection is the measurement
    calls, tokens, sent = await _one(True)
    off_calls, off_tokens, _ = await _one(False)
    return [
        Row(NAME, "model calls of one reflection", float(calls), "calls",
            note=f"after {TURNS} turns; archive with a heartbeat, then a core memory edit"),
        Row(NAME, "tokens of one reflection (prompt + completion, as the quota counts)", float(tokens), "tokens"),
        Row(NAME, "messages it sent the user", float(sent), "messages", target=Target("<=", 0)),
        Row(NAME, "model calls with reflection off", float(off_calls), "calls", target=Target("<=", 0),
            note=f"{off_tokens} tokens"),
    ]
