"""The one posting path for an agent's events: visible messages to the user (split to Discord's limit),
everything else to the monologue, batched per step."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any

import discord

from membot.adapters.discord.monologue import Monologue
from membot.adapters.discord.render import monologue_line, split_message
from membot.adapters.live_reply import Budget, LiveReplies, LiveReply
from membot.agent.events import Event
from membot.bot.identity import UserRef

log = logging.getLogger(__name__)

#: Posts one message (at most 2,000 characters) where the user reads: a DM, a channel, an ephemeral
#: follow-up.
Say = Callable[[str], Awaitable[object]]


async def relay(
    events: AsyncIterator[Event], say: Say, monologue: Monologue, who: UserRef, live: Sequence[Budget] | None = None,
    where: str = "",
) -> None:
    """Post a step's events. With `live` (the draft budgets: the channel's, the bot's), replies show while they are written
    (adapters/live_reply.py): `say` must then return the message it posted, to be edited. `where` tags the
    step's monologue with its place."""
    lines: list[str] = []
    drafts = LiveReplies(lambda: _live(say, live)) if live is not None else None
    # aclosing: the service holds the agent's lock inside this generator; it must be closed even when
    # we stop early, or the agent would stay locked until garbage collection.
    async with aclosing(events) as stream:
        try:
            async for event in stream:
                if drafts is not None and await drafts.handle(event):
                    continue
                if event.visible:
                    for part in split_message(getattr(event, "text", "")):
                        await _quietly(say(part), who)
                elif (line := monologue_line(event)) is not None:
                    lines.append(line)
        finally:
            if drafts is not None:
                await drafts.close()
            await monologue.post(who, lines, where)


def _live(say: Say, budgets: Sequence[Budget]) -> LiveReply:
    async def post(text: str, final: bool) -> Any:
        try:
            return await say(text)
        except discord.HTTPException as exc:
            if final:
                raise
            log.info("a draft was not posted: %s", exc)
            return None

    async def edit(message: Any, text: str) -> None:
        await message.edit(content=text)

    async def delete(message: Any) -> None:
        await message.delete()

    return LiveReply(post, edit, delete, split_message, budgets)


async def _quietly(posting: Awaitable[object], who: UserRef) -> None:
    try:
        await posting
    except discord.HTTPException as exc:
        # The step goes on (its memory edits are committed) even if Discord refused one post.
        log.warning("could not post a reply for %s: %s", who.user_id, exc)
