"""The base function set (DESIGN.md): the agent's only ways to speak and to manage its memory."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from membot.agent.memory.paging import check_page
from membot.agent.messages import describe
from membot.agent.store.schema import utcnow
from membot.agent.tools.context import ToolContext

BlockName = Literal["persona", "human"]

MAX_MESSAGE_CHARS = 20_000
MAX_PASSAGE_CHARS = 20_000


async def send_message(ctx: ToolContext, message: str) -> str | None:
    """Send a message to the user. This is the only thing the user ever sees of you; your inner monologue
    stays private.

    Args:
        message: The message text. Full Unicode, including emoji, is supported.
    """
    if not message.strip():
        raise ValueError("message is empty; write what the user should read")
    if len(message) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message is {len(message)} characters; keep it under {MAX_MESSAGE_CHARS}")
    ctx.outbox.append(message)
    return None


async def pause_heartbeats(ctx: ToolContext, minutes: int) -> str | None:
    """Stop timed heartbeats for a while. Heartbeats you request with request_heartbeat are not affected.

    Args:
        minutes: How many minutes to pause timed heartbeats for (at most 360).
    """
    minutes = max(0, min(int(minutes), 360))
    ctx.heartbeats_paused_until = utcnow() + timedelta(minutes=minutes)
    return f"Timed heartbeats paused for {minutes} minutes."


async def core_memory_append(
    ctx: ToolContext, name: BlockName, content: str, request_heartbeat: bool = False
) -> str | None:
    """Append text to a block of your core memory (always in your prompt).

    Args:
        name: The block to edit: persona (who you are) or human (what you know of the user).
        content: The text to add, on a new line.
        request_heartbeat: True to be woken right after this returns, to keep working.
    """
    ctx.core.append(name, content)
    ctx.core_changed = True
    return None


async def core_memory_replace(
    ctx: ToolContext, name: BlockName, old_content: str, new_content: str, request_heartbeat: bool = False
) -> str | None:
    """Replace text in a block of your core memory. The old text must match exactly; an empty new_content
    deletes it.

    Args:
        name: The block to edit: persona or human.
        old_content: The exact text to replace.
        new_content: The text to put in its place; empty to delete.
        request_heartbeat: True to be woken right after this returns, to keep working.
    """
    ctx.core.replace(name, old_content, new_content)
    ctx.core_changed = True
    return None


async def conversation_search(
    ctx: ToolContext, query: str, page: int = 0, request_heartbeat: bool = False
) -> str | None:
    """Search your whole conversation history (recall memory), best matches first, including what is no
    longer in your context window.

    Args:
        query: Words to look for.
        page: Which page of results to show, from 0.
        request_heartbeat: True to be woken right after this returns, to keep working.
    """
    results = await ctx.recall.search(query, check_page(page))
    lines = [results.describe("results")] + [describe(row) for row in results.items]
    return "\n".join(lines)


async def conversation_search_date(
    ctx: ToolContext, start_date: str, end_date: str, page: int = 0, request_heartbeat: bool = False
) -> str | None:
    """Find messages of your conversation history between two dates (both included, UTC), oldest first.

    Args:
        start_date: The first day, written YYYY-MM-DD.
        end_date: The last day, written YYYY-MM-DD.
        page: Which page of results to show, from 0.
        request_heartbeat: True to be woken right after this returns, to keep working.
    """
    results = await ctx.recall.search_dates(start_date, end_date, check_page(page))
    lines = [results.describe("messages")] + [describe(row) for row in results.items]
    return "\n".join(lines)


async def archival_memory_insert(ctx: ToolContext, content: str, request_heartbeat: bool = False) -> str | None:
    """Store a passage in your archival memory, a store with no size limit that you search on demand.
    Write it so that it makes sense on its own later.

    Args:
        content: The passage to store.
        request_heartbeat: True to be woken right after this returns, to keep working.
    """
    if not content.strip():
        raise ValueError("content is empty")
    if len(content) > MAX_PASSAGE_CHARS:
        raise ValueError(
            f"content is {len(content)} characters; store at most {MAX_PASSAGE_CHARS} at a time (split it)"
        )
    await ctx.archival.insert(content)
    return None


async def archival_memory_search(
    ctx: ToolContext, query: str, page: int = 0, request_heartbeat: bool = False
) -> str | None:
    """Search your archival memory and the data sources attached to you, by meaning and by words, best
    matches first.

    Args:
        query: What to look for.
        page: Which page of results to show, from 0.
        request_heartbeat: True to be woken right after this returns, to keep working.
    """
    results = await ctx.archival.search(query, check_page(page))
    lines = [results.describe("passages")] + [hit.describe() for hit in results.items]
    return "\n".join(lines)


BASE_FUNCTIONS = [
    send_message,
    pause_heartbeats,
    core_memory_append,
    core_memory_replace,
    conversation_search,
    conversation_search_date,
    archival_memory_insert,
    archival_memory_search,
]
