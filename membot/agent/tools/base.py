"""The base function set (DESIGN.md): the agent's only ways to speak and to manage its memory."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Literal

from membot.agent.memory.paging import check_page
from membot.agent.messages import describe
from membot.agent.store import wakeups
from membot.agent.store.schema import utcnow
from membot.agent.tools.context import ToolContext

BlockName = Literal["persona", "human", "private"]

MAX_MESSAGE_CHARS = 20_000
MAX_PASSAGE_CHARS = 20_000


async def send_message(ctx: ToolContext, message: str) -> str | None:
    """Send a message to the user: the only thing they ever see of you.

    Args:
        message: The message text.
    """
    if not message.strip():
        raise ValueError("message is empty; write what the user should read")
    if len(message) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message is {len(message)} characters; keep it under {MAX_MESSAGE_CHARS}")
    ctx.outbox.append(message)
    return None


async def pause_heartbeats(ctx: ToolContext, minutes: int) -> str | None:
    """Pause timed heartbeats (not the ones you request).

    Args:
        minutes: How long, in minutes (at most 360).
    """
    minutes = max(0, min(int(minutes), 360))
    ctx.heartbeats_paused_until = utcnow() + timedelta(minutes=minutes)
    return f"Timed heartbeats paused for {minutes} minutes."


async def core_memory_append(
    ctx: ToolContext, name: BlockName, content: str, request_heartbeat: bool = False
) -> str | None:
    """Append a line to a core memory block.

    Args:
        name: The block.
        content: The text to add.
    """
    note = ctx.core.edit_append(name, content, private=ctx.place.private)
    ctx.core_changed = True
    return note


async def core_memory_replace(
    ctx: ToolContext, name: BlockName, old_content: str, new_content: str, request_heartbeat: bool = False
) -> str | None:
    """Replace exact text in a core memory block; empty new_content deletes it.

    Args:
        name: The block.
        old_content: The exact text to replace.
        new_content: The new text.
    """
    note = ctx.core.edit_replace(name, old_content, new_content, private=ctx.place.private)
    ctx.core_changed = True
    return note


async def conversation_search(
    ctx: ToolContext, query: str, page: int = 0, request_heartbeat: bool = False
) -> str | None:
    """Search all past conversation (recall memory) by words, best first.

    Args:
        query: Words to look for.
        page: Page, from 0.
    """
    results = await ctx.recall.search(query, check_page(page), private=ctx.place.private)
    lines = [results.describe("results")] + [describe(row) for row in results.items]
    return "\n".join(lines)


async def conversation_search_date(
    ctx: ToolContext, start_date: str, end_date: str, page: int = 0, request_heartbeat: bool = False
) -> str | None:
    """List past messages between two dates (inclusive, user's zone), oldest first.

    Args:
        start_date: First day, YYYY-MM-DD.
        end_date: Last day, YYYY-MM-DD.
        page: Page, from 0.
    """
    results = await ctx.recall.search_dates(start_date, end_date, check_page(page), private=ctx.place.private)
    lines = [results.describe("messages")] + [describe(row) for row in results.items]
    return "\n".join(lines)


async def archival_memory_insert(ctx: ToolContext, content: str, request_heartbeat: bool = False) -> str | None:
    """Store a self-contained passage in archival memory (unlimited, searched on demand).

    Args:
        content: The passage to store.
    """
    if not content.strip():
        raise ValueError("content is empty")
    if len(content) > MAX_PASSAGE_CHARS:
        raise ValueError(
            f"content is {len(content)} characters; store at most {MAX_PASSAGE_CHARS} at a time (split it)"
        )
    await ctx.archival.insert(content, private=ctx.place.private)
    return None


async def archival_memory_search(
    ctx: ToolContext, query: str, page: int = 0, request_heartbeat: bool = False
) -> str | None:
    """Search archival memory and attached data sources, by meaning and words, best first.

    Args:
        query: What to look for.
        page: Page, from 0.
    """
    results = await ctx.archival.search(query, check_page(page), private=ctx.place.private)
    lines = [results.describe("passages")] + [hit.describe() for hit in results.items]
    return "\n".join(lines)


async def schedule_wakeup(
    ctx: ToolContext, when: str, note: str, timezone: str = "", request_heartbeat: bool = False
) -> str | None:
    """Set a reminder: you are woken at that time with the note.

    Args:
        when: ISO time, "in 2 hours", "tomorrow 9:00"... (user's zone).
        note: What for.
        timezone: User's IANA zone, if known (kept).
    """
    db, now = ctx.recall.db, utcnow()
    if timezone:
        tz = wakeups.zone(timezone)
        await ctx.write(partial(wakeups.set_zone, agent_id=ctx.agent_id, name=tz.key))
    else:
        tz = await db.read(partial(wakeups.user_zone, agent_id=ctx.agent_id))
    due_at = wakeups.parse_when(when, now, tz)
    wakeup_id = await ctx.write(partial(wakeups.add_reminder, agent_id=ctx.agent_id, due_at=due_at, note=note, now=now))
    ctx.announce_wakeup()
    return f"Reminder {wakeup_id} set for {wakeups.local_text(due_at, tz)}."


BASE_FUNCTIONS = [
    send_message,
    pause_heartbeats,
    schedule_wakeup,
    core_memory_append,
    core_memory_replace,
    conversation_search,
    conversation_search_date,
    archival_memory_insert,
    archival_memory_search,
]
